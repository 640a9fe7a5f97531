"""What the client does, once for both its faces: each call of :class:`~permitchain_client.Client`
and :class:`~permitchain_client.AsyncClient` is a flow here (:mod:`permitchain_client.core`):
a generator that yields the Redis calls to make and receives their replies, making no I/O
itself. :mod:`permitchain_client.sync` and :mod:`permitchain_client.aio` run them."""

from __future__ import annotations

import dataclasses
import logging
import time
from decimal import Decimal
from typing import Any, cast

import redis.exceptions

from permitchain_client import contract, messages
from permitchain_client.core import Call, Chain, Flow, R, pipelined, translated
from permitchain_client.errors import ContractError, ResultTimeout
from permitchain_client.types import Claim, ClaimVerdict, Explanation, Report, Result, TradingState
from permitchain_client.watch import BLOCK_MS, Proposed, Rows, Watch, claimant, last_id

log = logging.getLogger("permitchain_client")
#: How often a waiting claim runs the claim script again without a stream event.
CLAIM_RETRY_MS = 100
EXPLAIN_SCAN = 50_000  # audit entries read back, at most, by explain


# -- the client's calls ---------------------------------------------------------------------
def check_schema(chain: Chain[R]) -> Flow[int]:
    """The chain's schema (from its heartbeats); raises :class:`SchemaMismatch` when this
    client does not speak it. Checked once, before the first write."""
    if chain.schema is None:
        heartbeats = [chain.keys.heartbeat(s) for s in contract.SERVICES]
        with translated():
            raw = yield lambda r: r.mget(heartbeats)
        declared = dict(zip(contract.SERVICES, cast("list[str | None]", raw), strict=True))
        schema = contract.check_heartbeats(chain.keys.prefix, declared)
        shards = contract.check_stream_shards(declared, chain.stream_shards)
        chain.keys = dataclasses.replace(chain.keys, shards=shards)
        chain.schema = schema
    return chain.schema


def propose(
    chain: Chain[R],
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
) -> Flow[str]:
    """Hand an exit decision to the chain; returns the plan id it gets if the planner
    decides EXECUTE. ``executor="external"``: the plan is for the :class:`Gate` (you
    place the order). Same (symbol, action, epoch, tranche): the same plan, run once."""
    yield from check_schema(chain)
    keys = chain.keys
    with translated():
        raw_epoch, results, decisions = yield pipelined(
            lambda r: r.hget(keys.ledger(symbol), "epoch"),
            lambda r: r.xrevrange(keys.result_stream_for(symbol), count=1),
            lambda r: r.xrevrange(keys.decisions, count=1),
        )
    epoch = contract.parse_epoch(raw_epoch) if position_epoch is None else position_epoch
    fields = contract.proposal_fields(
        symbol,
        action,
        kill_score=kill_score,
        epoch=epoch,
        tranche=tranche,
        new_sl=new_sl,
        r_net=r_net,
        source=source or chain.source,
        executor=executor,
    )
    plan_id = contract.plan_id_of(symbol, action, epoch, tranche, executor)
    key, entry = keys.proposal(symbol), cast("dict[Any, Any]", fields)
    with translated():
        yield pipelined(
            lambda r: r.delete(key),
            lambda r: r.hset(key, mapping=entry),
            lambda r: r.expire(key, chain.proposal_ttl_s),
            lambda r: r.xadd(
                keys.proposal_stream,
                entry,
                maxlen=contract.PROPOSAL_STREAM_MAXLEN,
                approximate=True,
            ),
        )
    chain.memory.add(
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


def watch(chain: Chain[R], plan_id: str) -> Flow[tuple[Watch, Result | None]]:
    """A watch over the plan's streams (every shard of the result stream unless the plan's
    symbol is known), and its result if it has one already."""
    yield from check_schema(chain)
    keys = chain.keys
    proposed = chain.memory.get(contract.check_plan_id(plan_id))
    found: Result | None = None
    streams = (keys.result_stream_for(proposed.symbol),) if proposed else keys.result_streams
    with translated():
        (rid, symbol), decisions, *results = yield pipelined(
            lambda r: r.hmget(keys.exec_record(plan_id), ["result_id", "symbol"]),
            lambda r: r.xrevrange(keys.decisions, count=1),
            *[lambda r, s=s: r.xrevrange(s, count=1) for s in streams],
        )
        if rid and symbol:
            rows = cast(
                "Rows", (yield lambda r: r.xrange(keys.result_stream_for(symbol), rid, rid))
            )
            if rows:
                found = messages.parse_result(rows[0][1])
    results_from = {s: last_id(reply) for s, reply in zip(streams, results, strict=True)}
    if proposed:
        results_from[streams[0]] = proposed.results_from
    return Watch(
        keys,
        plan_id,
        proposed,
        results_from=results_from,
        decisions_from=proposed.decisions_from if proposed else last_id(decisions),
    ), found


def remaining_ms(deadline: float) -> int:
    return int((deadline - time.monotonic()) * 1000)


def read(watch: Watch, block_ms: int) -> Flow[Result | None]:
    """One wait (up to ``block_ms``) for the next entries of the plan's streams: the plan's
    outcome if it went by."""
    positions = cast("dict[Any, Any]", watch.positions)
    with translated():
        reply = yield lambda r: r.xread(positions, count=1000, block=max(1, block_ms))
    return watch.feed(reply)


def wait_result(chain: Chain[R], plan_id: str, timeout: float = 10.0) -> Flow[Result]:
    """The plan's one result (``status="skipped"`` when the planner skipped the proposal
    this client made). Raises :class:`ResultTimeout` after ``timeout`` seconds."""
    plan_watch, found = yield from watch(chain, plan_id)
    deadline = time.monotonic() + timeout
    while found is None:
        left_ms = remaining_ms(deadline)
        if left_ms <= 0:
            raise ResultTimeout(f"no result for plan {plan_id} after {timeout:g}s")
        found = yield from read(plan_watch, min(BLOCK_MS, left_ms))
    return found


def explain(chain: Chain[R], plan_id: str) -> Flow[Explanation]:
    """The plan's exec record and every audit entry about it (newest first scan)."""
    contract.check_plan_id(plan_id)
    keys = chain.keys
    audit = []
    with translated():
        record = cast("dict[str, str]", (yield lambda r: r.hgetall(keys.exec_record(plan_id))))
        hi, seen = "+", 0
        while seen < EXPLAIN_SCAN:
            page = xrevrange_page(keys.decisions, hi)
            rows = cast("Rows", (yield page))
            for entry_id, fields in rows:
                if fields.get("plan_id") == plan_id:
                    audit.append(messages.parse_audit(entry_id, fields))
            seen += len(rows)
            if len(rows) < 1000:
                break
            hi = "(" + rows[-1][0]
    return messages.explanation(plan_id, audit, record)


def xrevrange_page(stream: str, hi: str) -> Call:
    return lambda r: r.xrevrange(stream, hi, "-", count=1000)


def trading_state(chain: Chain[R]) -> Flow[TradingState]:
    """The kill switch, read the chain's fail-closed way (garbage or a wrong type: HALTED)."""
    key = chain.keys.trading_state
    with translated():
        try:
            raw = yield lambda r: r.get(key)
        except redis.exceptions.ResponseError:  # a wrong key type
            return TradingState.HALTED
    return contract.parse_trading_state(raw)


# -- the gate -------------------------------------------------------------------------------
def claim(
    chain: Chain[R], plan_id: str, *, symbol: str | None = None, timeout: float = 10.0
) -> Flow[Claim]:
    """Claim the plan's grant, exactly once. Waits (up to ``timeout``) while the chain is
    deciding. Only ``claim.ok`` lets you send: then send exactly ``claim.qty`` with
    ``claim.client_order_id``. ``symbol``: needed for a plan another client proposed."""
    yield from check_schema(chain)
    proposed = chain.memory.get(contract.check_plan_id(plan_id))
    sym = symbol or (proposed.symbol if proposed else "")
    if not sym:
        raise ContractError(f"claim {plan_id}: pass symbol= (a plan this client did not propose)")
    keys, script = chain.keys, chain.claim_script
    script_keys = [keys.exec_record(plan_id), keys.trading_state, keys.decisions]
    script_args: list[str | int] = [plan_id, sym, claimant(), contract.AUDIT_MAXLEN]
    plan_watch, _ = yield from watch(chain, plan_id)
    deadline = time.monotonic() + timeout
    while True:
        with translated():
            reply = yield lambda r: script(keys=script_keys, args=script_args)
        claimed = messages.parse_claim(plan_id, reply)
        if claimed.verdict is not ClaimVerdict.NOT_READY:
            return logged(claimed)
        left_ms = remaining_ms(deadline)
        if left_ms <= 0:
            return logged(
                Claim(
                    plan_id,
                    ClaimVerdict.TIMEOUT,
                    claimed.state,
                    "",
                    None,
                    "",
                    f"not decided after {timeout:g}s",
                )
            )
        skipped = yield from read(plan_watch, min(CLAIM_RETRY_MS, left_ms))
        if skipped is not None and skipped.status == "skipped":
            return logged(
                Claim(plan_id, ClaimVerdict.BLOCKED, "skipped", "", None, "", skipped.reason)
            )


def report(
    chain: Chain[R],
    plan_id: str,
    status: str,
    filled_qty: str | Decimal | int,
    avg_price: str | Decimal | None = None,
    order_id: str = "",
) -> Flow[Report]:
    """Write the claimed plan's one result: ``filled`` / ``partially_filled`` (with the
    quantity filled) or ``rejected``. Refused (``accepted=False``) for a plan not
    claimed, or reported already."""
    contract.check_plan_id(plan_id)
    yield from check_schema(chain)
    keys, script = chain.keys, chain.report_script
    with translated():
        record = cast("dict[str, str]", (yield lambda r: r.hgetall(keys.exec_record(plan_id))))
    if not record or "plan_id" not in record:
        return logged_report(Report(plan_id, False, record.get("state", "none"), "", "not_claimed"))
    fields, to = messages.report_fields(
        record,
        status=status,
        filled_qty=filled_qty,
        avg_price=avg_price,
        order_id=order_id,
        now=time.time(),
    )
    audit = messages.audit_of_report(fields, claimant())
    script_keys = [
        keys.exec_record(plan_id),
        keys.open_index,
        keys.result_stream_for(record["symbol"]),
        keys.decisions,
    ]
    script_args: list[str | int] = [
        plan_id,
        record["symbol"],
        to,
        contract.RESULT_MAXLEN,
        contract.AUDIT_MAXLEN,
        record.get("client_order_id", ""),
        *messages.flat(fields),
        *messages.flat(audit),
    ]
    with translated():
        reply = yield lambda r: script(keys=script_keys, args=script_args)
    ok, state, detail = (str(x) for x in reply)
    if ok == "1":
        return logged_report(Report(plan_id, True, state, detail, ""))
    return logged_report(Report(plan_id, False, state, "", detail))


def logged(claim: Claim) -> Claim:
    if claim.ok:
        gate_line(
            logging.INFO,
            f"CLAIM plan={claim.plan_id} side={claim.side} qty={claim.qty} "
            f"client_order_id={claim.client_order_id}",
        )
    else:
        gate_line(
            logging.WARNING,
            f"NO_CLAIM plan={claim.plan_id} verdict={claim.verdict.value} state={claim.state} "
            f"reason={claim.reason} detail={claim.detail}",
        )
    return claim


def logged_report(report: Report) -> Report:
    if report.accepted:
        text = f"REPORT plan={report.plan_id} state={report.state} result={report.result_id}"
        gate_line(logging.INFO, text)
    else:
        text = f"REPORT_REFUSED plan={report.plan_id} state={report.state} reason={report.reason}"
        gate_line(logging.WARNING, text)
    return report


def gate_line(level: int, text: str) -> None:
    """``[GATE] EVENT name=value …``: the client's grep-able gate log lines."""
    log.log(level, "[GATE] %s", text)
