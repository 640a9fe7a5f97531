"""Commands whose reply is read undecoded (bytes), on every transport (pooled, lean, Cluster).

Our clients decode every reply to ``str``; a value that may not be UTF-8 (a stream entry, the
trading state) is read raw instead, so that it can be shown or judged, never fail the read."""

from __future__ import annotations

from typing import Any

from permitchain.store.lean import NEVER_DECODE


async def execute_raw(r: Any, *args: Any) -> Any:
    """Run one command on client ``r``; its reply undecoded."""
    return await r.execute_command(*args, **{NEVER_DECODE: True})


def queue_raw(pipe: Any, *args: Any) -> None:
    """Queue one command on pipeline ``pipe``; its reply undecoded."""
    pipe.execute_command(*args, **{NEVER_DECODE: True})
