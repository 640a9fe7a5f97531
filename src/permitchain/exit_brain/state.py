"""The exit brain's bookkeeping in Redis: ``quantum:exit:state:<SYMBOL>`` (HASH, no TTL).

Fields: ``epoch`` (the P3.3 position epoch the book belongs to), ``side`` (LONG, SHORT or
NONE), ``opened_at`` (epoch seconds the exit brain first saw this side open; the age
penalty counts from it), ``tranches_done``, ``stop``, ``sl_moves``, ``full_close_attempts``,
``last_full_close_ts`` (what the chain executed), ``proposals`` (the last proposal's
tranche), ``pending_action``, ``pending_level``, ``pending_sl``, ``pending_since`` (the
proposal awaiting its outcome), ``retry_at``, ``updated_at``.

A pending proposal's outcome is its plan's exec record (``quantum:exec:{plan_id}``, field
``state``), see :func:`outcome`.

Rules (:func:`advance`): a new, higher epoch (``permitchain reconcile``) starts a fresh book,
so every tranche may be proposed again; the same epoch keeps the book, so a restart never
re-proposes; an epoch lower than the book's means the ledger was reset behind our back: the
runner proposes nothing for the symbol until an operator deletes this key. ``opened_at``
survives a new epoch (reconcile does not open a trade) and restarts when the side changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from permitchain.contract.errors import ContractError, WrongTypeError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, fmt_decimal, fmt_ts, make_plan_id, parse_decimal
from permitchain.exit_brain.api import parse_epoch
from permitchain.exit_brain.kernel import Book
from permitchain.store import AsyncRedis, first_fault

SIDES = ("LONG", "SHORT", "NONE")
#: Exec record states: the chain executed the plan (``unknown``: the order may exist, so it
#: counts as executed: fail closed, never send it twice) …
EXECUTED_STATES = frozenset({"filled", "partially_filled", "unknown"})
#: … it did not, and never will.
NOT_EXECUTED_STATES = frozenset({"rejected", "blocked", "dry_run"})


@dataclass(frozen=True, slots=True)
class Stored:
    book: Book
    side: str = "NONE"
    opened_at: float | None = None


def parse_state(h: dict[str, str]) -> Stored | None:
    """The stored state, or None for an empty hash. Malformed → ContractError."""
    if not h:
        return None
    try:
        side = h.get("side", "NONE")
        if side not in SIDES:
            raise ValueError(f"side {side!r}")
        book = Book(
            epoch=int(h["epoch"]),
            tranches_done=int(h.get("tranches_done") or 0),
            stop=parse_decimal(h["stop"], "stop") if h.get("stop") else None,
            sl_moves=int(h.get("sl_moves") or 0),
            full_close_attempts=int(h.get("full_close_attempts") or 0),
            last_full_close_ts=float(h.get("last_full_close_ts") or 0),
            proposals=int(h.get("proposals") or 0),
            pending_action=_pending_action(h.get("pending_action") or ""),
            pending_level=int(h.get("pending_level") or 0),
            pending_sl=parse_decimal(h["pending_sl"], "pending_sl")
            if h.get("pending_sl")
            else None,
            pending_since=float(h.get("pending_since") or 0),
            retry_at=float(h.get("retry_at") or 0),
        )
        opened = float(h["opened_at"]) if h.get("opened_at") else None
    except (KeyError, ValueError) as e:
        raise ContractError(f"exit state: malformed ({e})") from None
    return Stored(book, side, opened)


def state_fields(st: Stored, now: float) -> dict[str, str]:
    b = st.book
    return {
        "epoch": str(b.epoch),
        "side": st.side,
        "opened_at": fmt_ts(st.opened_at) if st.opened_at is not None else "",
        "tranches_done": str(b.tranches_done),
        "stop": fmt_decimal(b.stop) if b.stop is not None else "",
        "sl_moves": str(b.sl_moves),
        "full_close_attempts": str(b.full_close_attempts),
        "last_full_close_ts": fmt_ts(b.last_full_close_ts),
        "proposals": str(b.proposals),
        "pending_action": b.pending_action,
        "pending_level": str(b.pending_level),
        "pending_sl": fmt_decimal(b.pending_sl) if b.pending_sl is not None else "",
        "pending_since": fmt_ts(b.pending_since),
        "retry_at": fmt_ts(b.retry_at),
        "updated_at": fmt_ts(now),
    }


def _pending_action(raw: str) -> str:
    if raw and raw not in Action.__members__:
        raise ValueError(f"pending_action {raw!r}")
    return raw


def pending_plan_id(symbol: str, book: Book) -> str | None:
    """The plan id of the proposal awaiting its outcome (the planner's identity)."""
    if not book.pending:
        return None
    return make_plan_id(symbol, book.pending_action, book.epoch, book.proposals)


def outcome(
    exec_state: str | None, pending_since: float, now: float, timeout_s: float
) -> bool | None:
    """Whether the chain executed the pending plan: True, False, or None (not known yet).
    No exec record after ``timeout_s`` (the planner skipped it, or it expired before a
    permit): not executed; by then the plan can no longer execute."""
    if exec_state in EXECUTED_STATES:
        return True
    if exec_state in NOT_EXECUTED_STATES:
        return False
    if not exec_state and now - pending_since > timeout_s:
        return False
    return None


async def exec_states(r: AsyncRedis, keys: Keys, plan_ids: Sequence[str]) -> list[str | None]:
    """The ``state`` of each plan's exec record (None: no record), in one round trip."""
    pipe = r.pipeline(transaction=False)
    for plan_id in plan_ids:
        pipe.hget(keys.exec_record(plan_id), "state")
    return list(await pipe.execute())


def advance(stored: Stored | None, epoch: int, side: str, now: float) -> Stored | None:
    """The state for the current epoch and side; None when the epoch went backwards."""
    if stored is None:
        return Stored(Book(epoch=epoch), side, now if side != "NONE" else None)
    if epoch < stored.book.epoch:
        return None
    book = stored.book if epoch == stored.book.epoch else Book(epoch=epoch)
    if side == "NONE":
        opened = None
    elif side == stored.side and stored.opened_at is not None:
        opened = stored.opened_at
    else:
        opened = now
    return Stored(book, side, opened)


async def load(
    r: AsyncRedis, keys: Keys, symbols: Sequence[str]
) -> dict[str, tuple[int, dict[str, str]] | WrongTypeError]:
    """Per symbol: the P3.3 position epoch and the raw exit state, in one round trip; or,
    when the ledger or the exit state holds another Redis type, the error naming it (that
    symbol is skipped, the others go on). Any other fault is raised."""
    pipe = r.pipeline(transaction=False)
    for s in symbols:
        pipe.hget(keys.ledger(s), "epoch")
        pipe.hgetall(keys.exit_state(s))
    rows = await pipe.execute(raise_on_error=False)
    out: dict[str, tuple[int, dict[str, str]] | WrongTypeError] = {}
    for i, s in enumerate(symbols):
        read = [(keys.ledger(s), "hash"), (keys.exit_state(s), "hash")]
        fault = await first_fault(r, rows[2 * i : 2 * i + 2], read)
        if fault is None:
            out[s] = (parse_epoch(rows[2 * i]), rows[2 * i + 1])
        elif isinstance(fault, WrongTypeError):
            out[s] = fault
        else:
            raise fault
    return out


async def save(r: AsyncRedis, keys: Keys, symbol: str, st: Stored, now: float) -> None:
    await r.hset(keys.exit_state(symbol), mapping=state_fields(st, now))
