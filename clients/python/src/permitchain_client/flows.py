"""What the client does, once for both its faces: each call of :class:`~permitchain_client.Client`
and :class:`~permitchain_client.AsyncClient` is a *flow* here, a generator that yields the
Redis calls to make and receives their replies (a Redis error is thrown into it where the
call was yielded). The flows make no I/O themselves: :mod:`permitchain_client.sync` and
:mod:`permitchain_client.aio` run them on ``redis.Redis`` and ``redis.asyncio.Redis``::

    reply = yield lambda r: r.get(chain.keys.trading_state)   # in a flow
    steps.reply(call(self.redis))                             # the sync driver
    steps.reply(await call(self.redis))                       # the asyncio driver
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Generic, TypeVar, cast

import redis
import redis.asyncio
import redis.exceptions
from redis.commands.core import AsyncScript, Script

from permitchain_client import contract, messages
from permitchain_client.contract import Keys
from permitchain_client.errors import ChainUnavailable, ContractError, ResultTimeout
from permitchain_client.types import Claim, ClaimVerdict, Explanation, Report, Result, TradingState
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

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., object])
Connection = redis.Redis | redis.asyncio.Redis
R = TypeVar("R", bound=Connection)
#: One Redis call: made on the driver's client, its value is the reply (on redis.asyncio, a
#: coroutine of it). redis-py types replies as ``Any``; the flows cast what they read.
Call = Callable[[Connection], Any]
Flow = Generator[Call, Any, T]


@contextmanager
def translated() -> Iterator[None]:
    """Redis's connection errors become :class:`ChainUnavailable` (the one boundary)."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise ChainUnavailable(f"redis: {e}") from e


def checked_url(url: str) -> str:
    """The URL, refused for a Redis Cluster (the gate's steps span slots)."""
    if "+cluster" in url.split("://", 1)[0]:
        raise ContractError(
            "permitchain-client: Redis Cluster URLs are not supported (the gate's steps span slots)"
        )
    return url


class Steps(Generic[T]):
    """A flow as its driver steps it: :attr:`call` is the call to make next (``None`` once the
    flow returned :attr:`result`); hand back its reply, or the Redis error it raised."""

    def __init__(self, flow: Flow[T]) -> None:
        self.flow = flow
        self.result: T
        self.call: Call | None = self._advance(flow.send, None)

    def reply(self, value: object) -> None:
        self.call = self._advance(self.flow.send, value)

    def fail(self, error: redis.exceptions.RedisError) -> None:
        self.call = self._advance(self.flow.throw, error)

    def _advance(self, step: Callable[[Any], Call], value: object) -> Call | None:
        try:
            return step(value)
        except StopIteration as done:
            self.result = cast("T", done.value)
            return None


def method_of(flow: Callable[..., Flow[object]]) -> Callable[[F], F]:
    """Dresses a driver's method as the flow it runs: the flow's name, docstring and
    signature, with ``self`` for the chain and the flow's value as what it returns."""
    signature = inspect.signature(flow)
    chain, *params = signature.parameters.values()
    returns = str(signature.return_annotation).removeprefix("Flow[").removesuffix("]")

    def dress(method: F) -> F:
        functools.update_wrapper(method, flow)
        method.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[chain.replace(name="self", annotation=inspect.Parameter.empty), *params],
            return_annotation=returns,
        )
        return method

    return dress


def pipelined(*calls: Call) -> Call:
    """The calls in one pipeline (no transaction): the reply is the list of their replies."""

    def call(client: Connection) -> Any:
        pipe = client.pipeline(transaction=False)
        for each in calls:
            each(pipe)
        return pipe.execute()

    return call


class Chain(Generic[R]):
    """What a client holds of one chain: its Redis, the key names under its prefix, the
    gate's scripts, and the plans it proposed."""

    def __init__(
        self,
        client: R,
        *,
        key_prefix: str = "quantum",
        proposal_ttl_s: int = 60,
        source: str = "client",
    ) -> None:
        self.redis: R = client
        self.keys = Keys(key_prefix)
        self.proposal_ttl_s = proposal_ttl_s
        self.source = source
        self.memory = Memory()
        self.schema: int | None = None
        self.claim_script: Script | AsyncScript = client.register_script(script_text("gate_claim"))
        self.report_script: Script | AsyncScript = client.register_script(
            script_text("gate_report")
        )


# -- the client's calls ---------------------------------------------------------------------
def check_schema(chain: Chain[R]) -> Flow[int]:
    """The chain's schema (from its heartbeats); raises :class:`SchemaMismatch` when this
    client does not speak it. Checked once, before the first write."""
    if chain.schema is None:
        heartbeats = [chain.keys.heartbeat(s) for s in contract.SERVICES]
        with translated():
            raw = yield lambda r: r.mget(heartbeats)
        chain.schema = contract.check_heartbeats(
            chain.keys.prefix,
            dict(zip(contract.SERVICES, cast("list[str | None]", raw), strict=True)),
        )
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
            lambda r: r.xrevrange(keys.result_stream, count=1),
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
    """A watch over the plan's streams, and its result if it has one already."""
    keys = chain.keys
    proposed = chain.memory.get(contract.check_plan_id(plan_id))
    found: Result | None = None
    with translated():
        rid, results, decisions = yield pipelined(
            lambda r: r.hget(keys.exec_record(plan_id), "result_id"),
            lambda r: r.xrevrange(keys.result_stream, count=1),
            lambda r: r.xrevrange(keys.decisions, count=1),
        )
        if rid:
            rows = cast("Rows", (yield lambda r: r.xrange(keys.result_stream, rid, rid)))
            if rows:
                found = messages.parse_result(rows[0][1])
    return Watch(
        keys,
        plan_id,
        proposed,
        results_from=proposed.results_from if proposed else last_id(results),
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
    script_keys = [keys.exec_record(plan_id), keys.open_index, keys.result_stream, keys.decisions]
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


def logged_report(report: Report) -> Report:
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
