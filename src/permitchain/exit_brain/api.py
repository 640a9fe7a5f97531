"""Hand exit decisions to the chain from any strategy.

    from permitchain.exit_brain.api import submit_proposal
    await submit_proposal(redis, keys, proposal, ttl_s=60)

The proposal lands in ``quantum:harvest:proposal:<SYMBOL>`` (latest, with TTL) and on
``quantum:stream:harvest.proposal`` (wakes the planner); from there it meets the same
checks as the exit brain's own: planner, governor, P3.3, atomic consume.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from permitchain.keys import Keys
from permitchain.models import Proposal

PROPOSAL_STREAM_MAXLEN = 100_000


def new_proposal_id() -> str:
    return uuid.uuid4().hex[:16]


async def submit_proposal(r: Redis, keys: Keys, proposal: Proposal, *, ttl_s: int) -> str:
    """Write the proposal hash and its event in one transaction; returns the stream entry id."""
    fields = proposal.to_fields()
    key = keys.proposal(proposal.symbol)
    pipe = r.pipeline(transaction=False)
    pipe.delete(key)
    pipe.hset(key, mapping=fields)
    pipe.expire(key, ttl_s)
    pipe.xadd(keys.proposal_stream, fields, maxlen=PROPOSAL_STREAM_MAXLEN, approximate=True)
    *_, entry_id = await pipe.execute()
    return str(entry_id)


async def current_epoch(r: Redis, keys: Keys, symbol: str) -> int:
    """The position epoch P3.3 keeps for the symbol (bumped by reconcile)."""
    raw = await r.hget(keys.ledger(symbol), "epoch")  # type: ignore[misc]
    return int(raw) if raw and raw.isdigit() else 0
