"""One log line per decision: text by default, one JSON object with LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from permitchain.contract.settings import LogFormat
from permitchain.runtime.logs import log_decision, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
def test_json_decision_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(LogFormat.JSON, "INFO", "position-brain")
    log_decision(
        logging.getLogger("permitchain.p33"),
        layer="position-brain",
        plan_id="3752d893a6e4f56f",
        symbol="BTCUSDT",
        decision="DENY",
        reason="reconcile_required_qty_mismatch",
        diff="0.06",
    )
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["plan_id"] == "3752d893a6e4f56f" and obj["symbol"] == "BTCUSDT"
    assert obj["layer"] == "position-brain" and obj["decision"] == "DENY"
    assert obj["reason"] == "reconcile_required_qty_mismatch" and obj["diff"] == "0.06"
    assert obj["level"] == "INFO" and obj["msg"].startswith("[DECISION] layer=position-brain")


@pytest.mark.usefixtures("restore_logging")
def test_text_decision_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(LogFormat.TEXT, "INFO", "governor")
    log_decision(
        logging.getLogger("permitchain.governor"),
        layer="governor",
        plan_id="3752d893a6e4f56f",
        symbol="BTCUSDT",
        decision="GRANT",
        reason="testnet_auto_approve",
    )
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "[DECISION] layer=governor plan=3752d893a6e4f56f symbol=BTCUSDT "
        "decision=GRANT reason=testnet_auto_approve"
    )
    assert " INFO governor permitchain.governor: " in line
