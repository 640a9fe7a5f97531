"""Logging: text by default, one JSON object per line with ``LOG_FORMAT=json``.

Every gatekeeping decision is one line an operator can grep:
``[DECISION] layer=governor plan=… symbol=… decision=GRANT reason=testnet_auto_approve``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from permitchain.contract.settings import LogFormat


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: LogFormat = LogFormat.TEXT, level: str = "INFO", service: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt is LogFormat.JSON:
        handler.setFormatter(_JsonFormatter())
    else:
        prefix = f"{service} " if service else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_decision(
    logger: logging.Logger,
    *,
    layer: str,
    plan_id: str,
    symbol: str,
    decision: str,
    reason: str,
    level: int = logging.INFO,
    **extra: Any,
) -> None:
    """One grep-able line per decision (and the same fields as JSON in json mode)."""
    if not logger.isEnabledFor(level):
        return
    tail = "".join(f" {k}={v}" for k, v in extra.items())
    logger.log(
        level,
        "[DECISION] layer=%s plan=%s symbol=%s decision=%s reason=%s%s",
        layer,
        plan_id,
        symbol,
        decision,
        reason,
        tail,
        extra={
            "fields": {
                "layer": layer,
                "plan_id": plan_id,
                "symbol": symbol,
                "decision": decision,
                "reason": reason,
                **extra,
            }
        },
    )
