"""The blocking client: :class:`Client` and its :class:`Gate`::

client = Client.from_url("redis://127.0.0.1:6379/0", source="my-bot")
plan_id = client.propose("BTCUSDT", "PARTIAL_50", kill_score="0.7", tranche=1)
client.wait_result(plan_id, timeout=10).status        # 'filled', 'blocked', 'skipped', …
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from types import TracebackType
from typing import Any, cast

import redis
import redis.exceptions

from permitchain_client import contract, messages
from permitchain_client.contract import Keys
from permitchain_client.errors import ChainUnavailable, ContractError, ResultTimeout
from permitchain_client.types import (
    Claim,
    ClaimVerdict,
    Explanation,
    Report,
    Result,
    TradingState,
)
from permitchain_client.watch import (
    BLOCK_MS,
    Memory,
    Proposed,
    Rows,
    Watch,
    claimant,
    last_id,
    script_text,
)

log = logging.getLogger("permitchain_client")
#: How often a waiting claim runs the claim script again without a stream event.
CLAIM_RETRY_MS = 100
EXPLAIN_SCAN = 50_000  # audit entries read back, at most, by explain


@contextmanager
def translated() -> Iterator[None]:
    """Redis's connection errors become :class:`ChainUnavailable` (the one boundary)."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise ChainUnavailable(f"redis: {e}") from e


class Client:
    """A connection to one chain (one Redis, one key prefix)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = "quantum",
        proposal_ttl_s: int = 60,
        source: str = "client",
    ) -> None:
        self.redis = client
        self.keys = Keys(key_prefix)
        self.proposal_ttl_s = proposal_ttl_s
        self.source = source
        self.memory = Memory()
        self.schema: int | None = None
        self.claim_script = client.register_script(script_text("gate_claim"))
        self.report_script = client.register_script(script_text("gate_report"))
        self.gate = Gate(self)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> Client:
        """``redis://``, ``rediss://`` or ``unix://`` (a Redis Cluster is not supported)."""
        if "+cluster" in url.split("://", 1)[0]:
            raise ContractError(
                "permitchain-client: Redis Cluster URLs are not "
                "supported (the gate's steps span slots)"
            )
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=10), **kw)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------
    def check_schema(self) -> int:
        """The chain's schema (from its heartbeats); raises :class:`SchemaMismatch` when this
        client does not speak it. Checked once, before the first write."""
        if self.schema is None:
            with translated():
                raw = self.redis.mget([self.keys.heartbeat(s) for s in contract.SERVICES])
            self.schema = contract.check_heartbeats(
                self.keys.prefix,
                dict(zip(contract.SERVICES, cast("list[str | None]", raw), strict=True)),
            )
        return self.schema

    # -- proposals ------------------------------------------------------------------------
    def propose(
        self,
        symbol: str,
        action: str,
        *,
        kill_score: str | Decimal | int,
        tranche: int = 0,
        new_sl: str | Decimal | None = None,
        r_net: str | Decimal | None = None,
        position_epoch: int | None = None,
        executor: str = "builtin",
        source: str | None = None,
    ) -> str:
        """Hand an exit decision to the chain; returns the plan id it gets if the planner
        decides EXECUTE. ``executor="external"``: the plan is for the :class:`Gate` (you
        place the order). Same (symbol, action, epoch, tranche): the same plan, run once."""
        self.check_schema()
        with translated():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(self.keys.ledger(symbol), "epoch")
            pipe.xrevrange(self.keys.result_stream, count=1)
            pipe.xrevrange(self.keys.decisions, count=1)
            raw_epoch, results, decisions = pipe.execute()
        epoch = contract.parse_epoch(raw_epoch) if position_epoch is None else position_epoch
        fields = contract.proposal_fields(
            symbol,
            action,
            kill_score=kill_score,
            epoch=epoch,
            tranche=tranche,
            new_sl=new_sl,
            r_net=r_net,
            source=source or self.source,
            executor=executor,
        )
        plan_id = contract.plan_id_of(symbol, action, epoch, tranche, executor)
        key = self.keys.proposal(symbol)
        with translated():
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(key)
            pipe.hset(key, mapping=cast("dict[Any, Any]", fields))
            pipe.expire(key, self.proposal_ttl_s)
            pipe.xadd(
                self.keys.proposal_stream,
                cast("dict[Any, Any]", fields),
                maxlen=contract.PROPOSAL_STREAM_MAXLEN,
                approximate=True,
            )
            pipe.execute()
        self.memory.add(
            Proposed(plan_id, fields["proposal_id"], symbol, last_id(results), last_id(decisions))
        )
        log.info(
            "[CLIENT] PROPOSE plan=%s symbol=%s action=%s tranche=%d executor=%s",
            plan_id,
            symbol,
            action,
            tranche,
            executor,
        )
        return plan_id

    def _watch(self, plan_id: str) -> tuple[Watch, Result | None]:
        """A watch over the plan's streams, and its result if it has one already."""
        proposed = self.memory.get(contract.check_plan_id(plan_id))
        with translated():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(self.keys.exec_record(plan_id), "result_id")
            pipe.xrevrange(self.keys.result_stream, count=1)
            pipe.xrevrange(self.keys.decisions, count=1)
            rid, results, decisions = pipe.execute()
            if rid:
                rows = cast("Rows", self.redis.xrange(self.keys.result_stream, rid, rid))
                if rows:
                    return self._new_watch(plan_id, proposed, results, decisions), (
                        messages.parse_result(rows[0][1])
                    )
        return self._new_watch(plan_id, proposed, results, decisions), None

    def _new_watch(
        self, plan_id: str, proposed: Proposed | None, results: object, decisions: object
    ) -> Watch:
        return Watch(
            self.keys,
            plan_id,
            proposed,
            results_from=proposed.results_from if proposed else last_id(results),
            decisions_from=proposed.decisions_from if proposed else last_id(decisions),
        )

    def wait_result(self, plan_id: str, timeout: float = 10.0) -> Result:
        """The plan's one result (``status="skipped"`` when the planner skipped the proposal
        this client made). Raises :class:`ResultTimeout` after ``timeout`` seconds."""
        watch, found = self._watch(plan_id)
        deadline = time.monotonic() + timeout
        while found is None:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise ResultTimeout(f"no result for plan {plan_id} after {timeout:g}s")
            with translated():
                reply = self.redis.xread(
                    cast("dict[Any, Any]", watch.positions),
                    count=1000,
                    block=max(1, min(BLOCK_MS, remaining_ms)),
                )
            found = watch.feed(reply)
        return found

    # -- reading --------------------------------------------------------------------------
    def explain(self, plan_id: str) -> Explanation:
        """The plan's exec record and every audit entry about it (newest first scan)."""
        contract.check_plan_id(plan_id)
        audit = []
        with translated():
            record = cast("dict[str, str]", self.redis.hgetall(self.keys.exec_record(plan_id)))
            hi, seen = "+", 0
            while seen < EXPLAIN_SCAN:
                rows = cast("Rows", self.redis.xrevrange(self.keys.decisions, hi, "-", count=1000))
                for entry_id, fields in rows:
                    if fields.get("plan_id") == plan_id:
                        audit.append(messages.parse_audit(entry_id, fields))
                seen += len(rows)
                if len(rows) < 1000:
                    break
                hi = "(" + rows[-1][0]
        return messages.explanation(plan_id, audit, record)

    def trading_state(self) -> TradingState:
        """The kill switch, read the chain's fail-closed way (garbage or a wrong type: HALTED)."""
        with translated():
            try:
                raw = self.redis.get(self.keys.trading_state)
            except redis.exceptions.ResponseError:  # a wrong key type
                return TradingState.HALTED
        return contract.parse_trading_state(raw)


class Gate:
    """The gate for external executors: claim a plan's grant, send the order yourself with
    its quantity and client order id, then report the outcome (docs/integrations.md)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def claim(self, plan_id: str, *, symbol: str | None = None, timeout: float = 10.0) -> Claim:
        """Claim the plan's grant, exactly once. Waits (up to ``timeout``) while the chain is
        deciding. Only ``claim.ok`` lets you send: then send exactly ``claim.qty`` with
        ``claim.client_order_id``. ``symbol``: needed for a plan another client proposed."""
        c = self.client
        c.check_schema()
        proposed = c.memory.get(contract.check_plan_id(plan_id))
        sym = symbol or (proposed.symbol if proposed else "")
        if not sym:
            raise ContractError(
                f"claim {plan_id}: pass symbol= (a plan this client did not propose)"
            )
        watch, _ = c._watch(plan_id)
        deadline = time.monotonic() + timeout
        while True:
            with translated():
                reply = c.claim_script(
                    keys=[c.keys.exec_record(plan_id), c.keys.trading_state, c.keys.decisions],
                    args=[plan_id, sym, claimant(), contract.AUDIT_MAXLEN],
                )
            claim = messages.parse_claim(plan_id, reply)
            if claim.verdict is not ClaimVerdict.NOT_READY:
                return _logged(claim)
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                return _logged(
                    Claim(
                        plan_id,
                        ClaimVerdict.TIMEOUT,
                        claim.state,
                        "",
                        None,
                        "",
                        f"not decided after {timeout:g}s",
                    )
                )
            with translated():
                reply = c.redis.xread(
                    cast("dict[Any, Any]", watch.positions),
                    count=1000,
                    block=max(1, min(CLAIM_RETRY_MS, remaining_ms)),
                )
            skipped = watch.feed(reply)
            if skipped is not None and skipped.status == "skipped":
                return _logged(
                    Claim(plan_id, ClaimVerdict.BLOCKED, "skipped", "", None, "", skipped.reason)
                )

    def report(
        self,
        plan_id: str,
        status: str,
        filled_qty: str | Decimal | int,
        avg_price: str | Decimal | None = None,
        order_id: str = "",
    ) -> Report:
        """Write the claimed plan's one result: ``filled`` / ``partially_filled`` (with the
        quantity filled) or ``rejected``. Refused (``accepted=False``) for a plan not
        claimed, or reported already."""
        c = self.client
        contract.check_plan_id(plan_id)
        with translated():
            record = cast("dict[str, str]", c.redis.hgetall(c.keys.exec_record(plan_id)))
        if not record or "plan_id" not in record:
            return _logged_report(
                Report(plan_id, False, record.get("state", "none"), "", "not_claimed")
            )
        fields, to = messages.report_fields(
            record,
            status=status,
            filled_qty=filled_qty,
            avg_price=avg_price,
            order_id=order_id,
            now=time.time(),
        )
        audit = messages.audit_of_report(fields, claimant())
        with translated():
            reply = c.report_script(
                keys=[
                    c.keys.exec_record(plan_id),
                    c.keys.open_index,
                    c.keys.result_stream,
                    c.keys.decisions,
                ],
                args=[
                    plan_id,
                    record["symbol"],
                    to,
                    contract.RESULT_MAXLEN,
                    contract.AUDIT_MAXLEN,
                    record.get("client_order_id", ""),
                    *messages.flat(fields),
                    *messages.flat(audit),
                ],
            )
        ok, state, detail = (str(x) for x in reply)
        if ok == "1":
            return _logged_report(Report(plan_id, True, state, detail, ""))
        return _logged_report(Report(plan_id, False, state, "", detail))


def _logged(claim: Claim) -> Claim:
    if claim.ok:
        log.info(
            "[GATE] CLAIM plan=%s side=%s qty=%s client_order_id=%s",
            claim.plan_id,
            claim.side,
            claim.qty,
            claim.client_order_id,
        )
    else:
        log.warning(
            "[GATE] NO_CLAIM plan=%s verdict=%s state=%s reason=%s detail=%s",
            claim.plan_id,
            claim.verdict.value,
            claim.state,
            claim.reason,
            claim.detail,
        )
    return claim


def _logged_report(report: Report) -> Report:
    if report.accepted:
        log.info(
            "[GATE] REPORT plan=%s state=%s result=%s",
            report.plan_id,
            report.state,
            report.result_id,
        )
    else:
        log.warning(
            "[GATE] REPORT_REFUSED plan=%s state=%s reason=%s",
            report.plan_id,
            report.state,
            report.reason,
        )
    return report
