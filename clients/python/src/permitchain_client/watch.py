"""Following one plan on the result and audit streams, without I/O: the sync and async
clients feed it what ``XREAD`` returned and ask it what it saw."""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

from permitchain_client.contract import Keys
from permitchain_client.messages import parse_audit, parse_result, skipped_result
from permitchain_client.types import Result

Rows = list[tuple[str, dict[str, str]]]
#: Plans this client proposed that it remembers (for SKIP detection): the newest kept.
REMEMBER = 10_000
BLOCK_MS = 1000  # one XREAD's wait; the loop checks its deadline after each


@dataclass(frozen=True, slots=True)
class Proposed:
    """A plan this client proposed: what following it needs."""

    plan_id: str
    proposal_id: str
    symbol: str
    results_from: str  # its result stream's last id before the proposal was written
    decisions_from: str  # same, for the audit stream


class Memory:
    """The plans this client proposed, the newest :data:`REMEMBER` of them."""

    def __init__(self) -> None:
        self.plans: OrderedDict[str, Proposed] = OrderedDict()

    def add(self, p: Proposed) -> None:
        self.plans[p.plan_id] = p
        self.plans.move_to_end(p.plan_id)
        while len(self.plans) > REMEMBER:
            self.plans.popitem(last=False)

    def get(self, plan_id: str) -> Proposed | None:
        return self.plans.get(plan_id)


def last_id(reply: object) -> str:
    """``XREVRANGE key + - COUNT 1`` → that entry's id, or ``0-0`` for an empty stream."""
    if isinstance(reply, list) and reply:
        return str(reply[0][0])
    return "0-0"


class Watch:
    """One plan's outcome on the streams: its result, or the planner's SKIP of its proposal."""

    def __init__(
        self,
        keys: Keys,
        plan_id: str,
        proposed: Proposed | None,
        *,
        results_from: dict[str, str],
        decisions_from: str,
    ) -> None:
        self.keys = keys
        self.plan_id = plan_id
        self.proposal_id = proposed.proposal_id if proposed else ""
        #: the result streams followed (the plan's shard, or all of them) and their positions
        self.result_streams = frozenset(results_from)
        self.positions = {**results_from, keys.decisions: decisions_from}
        self.touched = False  # an entry of this plan went by (claim: look again)

    def feed(self, reply: object) -> Result | None:
        """Take one ``XREAD`` reply; returns the plan's outcome when it was in it."""
        found: Result | None = None
        for stream, entries in reply or []:  # type: ignore[attr-defined]
            for entry_id, fields in entries:
                self.positions[str(stream)] = str(entry_id)
                if found is not None:
                    continue
                if stream in self.result_streams:
                    if fields.get("plan_id") == self.plan_id:
                        found = parse_result(fields)
                    continue
                if fields.get("plan_id") == self.plan_id:
                    self.touched = True
                elif self.proposal_id and fields.get("layer") == "planner":
                    entry = parse_audit(str(entry_id), fields)
                    if entry.decision == "SKIP" and entry.context.get("proposal_id") == (
                        self.proposal_id
                    ):
                        found = skipped_result(entry)
        return found


def claimant() -> str:
    """Who claims: ``host:pid`` (the resolver treats a dead pid on its host as a crash)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def script_text(name: str) -> str:
    return (resources.files("permitchain_client") / "lua" / f"{name}.lua").read_text()
