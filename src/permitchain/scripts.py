"""Lua scripts, loaded from ``lua/*.lua`` once and registered once per client.

``Scripts(client)`` wraps each file in redis-py's ``Script`` object: EVALSHA with a NOSCRIPT
fallback to EVAL, usable inside pipelines. Every key a script touches is passed in KEYS.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

_BY_CLIENT: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()


@cache
def source(name: str) -> str:
    return (resources.files("permitchain") / "lua" / f"{name}.lua").read_text()


class Scripts:
    """The registered scripts of one Redis client (sync or asyncio)."""

    def __init__(self, client: Any) -> None:
        self.consume_permits = client.register_script(source("consume_permits"))
        self.publish_plan = client.register_script(source("publish_plan"))
        self.block_plan = client.register_script(source("block_plan"))
        self.sim_order = client.register_script(source("sim_order"))
        self.governor_reserve = client.register_script(source("governor_reserve"))
        self.exec_transition = client.register_script(source("exec_transition"))
        # Redis Cluster only: exec_transition's move on the exec record's slot alone
        self.exec_move = client.register_script(source("exec_move"))
        self.exec_outbox_done = client.register_script(source("exec_outbox_done"))
        self.ledger_apply = client.register_script(source("ledger_apply"))
        self.release_claim = client.register_script(source("release_claim"))
        # P3.3's allow with the symbol's in-flight claim (plain and Sentinel servers)
        self.p33_claim_permit = client.register_script(source("p33_claim_permit"))


def flat_pairs(fields: Mapping[str, str]) -> list[str]:
    """A script argument block: the number of pairs, then name, value, name, value…"""
    out: list[str] = [str(len(fields))]
    for k, v in fields.items():
        out += [k, v]
    return out


def scripts_for(client: Any) -> Scripts:
    """The client's registered scripts, made once per client."""
    s = _BY_CLIENT.get(client)
    if s is None:
        s = _BY_CLIENT[client] = Scripts(client)
    return s
