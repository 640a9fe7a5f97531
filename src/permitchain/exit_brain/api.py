"""Hand exit decisions to the chain from any strategy.

    from permitchain.exit_brain.api import propose

    p = await propose(redis, keys, "BTCUSDT", "PARTIAL_25", kill_score="0.62",
                      new_sl="100.2", source="my-strategy")
    print(p.proposal_id, expected_plan_id(p))

The proposal lands in ``quantum:harvest:proposal:<SYMBOL>`` (latest, with TTL) and on
``quantum:stream:harvest.proposal`` (wakes the planner); from there it meets the same
checks as the exit brain's own: planner, governor, P3.3, atomic consume.

* :func:`build_proposal`: pure; builds and validates a :class:`Proposal` (no Redis), for
  callers that write with their own client.
* :func:`propose`: build + the current position epoch from P3.3's ledger + submit.
* :func:`submit_proposal`: write an already built proposal.

Identity: the planner derives the plan id from (symbol, action, position epoch, tranche),
see :func:`expected_plan_id`. The same identity twice is the same plan and executes at most
once; to close another quarter in the same epoch, pass another ``tranche``. The exit brain
uses tranches 1–3 for its harvests, the attempt number for full closes and the stop-move
number for UPDATE_SL; hand-made proposals default to tranche 0.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import redis.exceptions

from permitchain.contract.errors import ContractError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, Proposal, make_plan_id, proposal_fault
from permitchain.contract.reasons import UNKNOWN_ACTION
from permitchain.contract.settings import Settings
from permitchain.store import AsyncRedis, is_wrong_type, wrong_type

PROPOSAL_STREAM_MAXLEN = 100_000
DEFAULT_TTL_S: int = Settings.model_fields["proposal_ttl_s"].default
#: Kill score of a proposal that gives neither a score nor components: sigmoid(0), "no
#: evidence either way" (passes the default KILL_SCORE_THRESHOLD of 0.5).
NEUTRAL_KILL_SCORE = Decimal("0.5")

Number = Decimal | str | int


def new_proposal_id() -> str:
    return uuid.uuid4().hex[:16]


def parse_epoch(raw: str | None) -> int:
    """The ledger's ``epoch`` field as an int; absent or malformed → 0."""
    return int(raw) if raw and raw.isdigit() else 0


def expected_plan_id(p: Proposal) -> str:
    """The plan id the planner gives this proposal when it decides EXECUTE."""
    ident = ("external",) if p.executor == "external" else ()
    return make_plan_id(p.symbol, p.action, p.position_epoch, p.tranche, *ident)


def build_proposal(
    symbol: str,
    action: Action | str,
    *,
    kill_score: Number | None = None,
    k_regime_flip: Number = 0,
    k_sigma_spike: Number = 0,
    k_ts_drop: Number = 0,
    k_age_penalty: Number = 0,
    new_sl: Number | None = None,
    r_net: Number | None = None,
    position_epoch: int = 0,
    tranche: int = 0,
    source: str = "api",
    now: float | None = None,
    proposal_id: str | None = None,
) -> Proposal:
    """A validated proposal. Raises :class:`ContractError` naming the offending field.

    Beyond the model's own checks: ``action`` must be one of the contract's actions, and
    UPDATE_SL needs a positive ``new_sl``. Without ``kill_score`` the score is 0.5.
    Numbers are given as ``Decimal``, decimal strings or ints, never floats.
    """
    fault = proposal_fault(str(action), None)
    if fault is not None and fault[0] == UNKNOWN_ACTION:
        raise ContractError(f"Proposal {fault[1]}")
    p = Proposal._validate(
        {
            "proposal_id": proposal_id or new_proposal_id(),
            "symbol": symbol,
            "action": str(action),
            "kill_score": NEUTRAL_KILL_SCORE if kill_score is None else kill_score,
            "k_regime_flip": k_regime_flip,
            "k_sigma_spike": k_sigma_spike,
            "k_ts_drop": k_ts_drop,
            "k_age_penalty": k_age_penalty,
            "new_sl": new_sl,
            "r_net": r_net,
            "position_epoch": position_epoch,
            "tranche": tranche,
            "ts_epoch": time.time() if now is None else now,
            "source": source,
        }
    )
    fault = proposal_fault(p.action, p.new_sl)
    if fault is not None:
        raise ContractError(f"Proposal {fault[1]}")
    return p


async def submit_proposal(r: AsyncRedis, keys: Keys, proposal: Proposal, *, ttl_s: int) -> str:
    """Write the proposal hash and its event in one round trip; returns the stream entry id."""
    fields = proposal.to_fields()
    key = keys.proposal(proposal.symbol)
    pipe = r.pipeline(transaction=False)
    pipe.delete(key)
    pipe.hset(key, mapping=fields)
    pipe.expire(key, ttl_s)
    pipe.xadd(keys.proposal_stream, fields, maxlen=PROPOSAL_STREAM_MAXLEN, approximate=True)
    *_, entry_id = await pipe.execute()
    return str(entry_id)


async def current_epoch(r: AsyncRedis, keys: Keys, symbol: str) -> int:
    """The position epoch P3.3 keeps for the symbol (bumped by reconcile); a ledger of
    another type is :class:`WrongTypeError` naming it."""
    try:
        return parse_epoch(await r.hget(keys.ledger(symbol), "epoch"))
    except redis.exceptions.ResponseError as e:
        if not is_wrong_type(e):
            raise
        raise await wrong_type(r, keys.ledger(symbol), "hash") from e


async def propose(
    r: AsyncRedis,
    keys: Keys,
    symbol: str,
    action: Action | str,
    *,
    ttl_s: int = DEFAULT_TTL_S,
    position_epoch: int | None = None,
    kill_score: Number | None = None,
    new_sl: Number | None = None,
    r_net: Number | None = None,
    tranche: int = 0,
    source: str = "api",
    now: float | None = None,
) -> Proposal:
    """Build, validate and submit a proposal; returns it. The position epoch defaults to
    P3.3's current one, so the plan belongs to the position as the ledger knows it."""
    epoch = await current_epoch(r, keys, symbol) if position_epoch is None else position_epoch
    p = build_proposal(
        symbol,
        action,
        kill_score=kill_score,
        new_sl=new_sl,
        r_net=r_net,
        position_epoch=epoch,
        tranche=tranche,
        source=source,
        now=now,
    )
    await submit_proposal(r, keys, p, ttl_s=ttl_s)
    return p
