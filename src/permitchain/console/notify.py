"""Notifications (``NOTIFY_URLS``, apprise URLs): what to tell, when, and the sender.

:class:`NotifyPolicy` is pure (clock injected): audit and dead-letter entries and health
results in, :class:`Message` s out. It tells about

* a trading-state change (always; who and why),
* the chain turning unhealthy (with the failing checks), and healthy again,
* a plan executed (only with ``NOTIFY_PLAN_EXECUTED=true``),
* a burst of denials of one reason (``NOTIFY_DENIAL_BURST`` within ``NOTIFY_DENIAL_WINDOW_S``),
* dead letters (per service),

each at most once per ``NOTIFY_DEDUPE_S`` for the same subject, and no more than
``NOTIFY_MAX_PER_MIN`` a minute in all (what was held back is counted in the next one).

:class:`Notifier` sends from its own task through a bounded queue: the broadcaster only
queues, so a slow or failing notifier never delays the console's events, let alone the chain
(which never waits for the console at all). A full queue drops the message, logged and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter

from permitchain.contract.settings import Settings

log = logging.getLogger("permitchain.console")

NOTIFICATIONS = Counter(
    "permitchain_console_notifications_total",
    "Notifications by kind and outcome (sent, failed, deduplicated, rate_limited, dropped)",
    ["kind", "outcome"],
)
SEND_TIMEOUT_S = 10.0
QUEUE_SIZE = 100
DENY_DECISIONS = frozenset({"DENY", "BLOCKED"})


@dataclass(frozen=True, slots=True)
class Message:
    kind: str  # trading_state, unhealthy, healthy, executed, denials, deadletter
    subject: str
    title: str
    body: str
    level: str = "warning"  # apprise notify types: info, success, warning, failure


class NotifyPolicy:
    def __init__(
        self,
        *,
        dedupe_s: float,
        max_per_min: int,
        denial_burst: int,
        denial_window_s: float,
        plan_executed: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dedupe_s = dedupe_s
        self.max_per_min = max_per_min
        self.denial_burst = denial_burst
        self.denial_window_s = denial_window_s
        self.plan_executed = plan_executed
        self.clock = clock
        self.last_sent: dict[tuple[str, str], float] = {}
        self.sent_times: deque[float] = deque()
        self.held_back = 0
        self.denials: dict[str, deque[float]] = {}
        self.unhealthy: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, s: Settings) -> NotifyPolicy:
        return cls(
            dedupe_s=s.notify_dedupe_s,
            max_per_min=s.notify_max_per_min,
            denial_burst=s.notify_denial_burst,
            denial_window_s=s.notify_denial_window_s,
            plan_executed=s.notify_plan_executed,
        )

    # -- inputs ---------------------------------------------------------------------------
    def on_audit(self, fields: dict[str, str]) -> list[Message]:
        layer, decision = fields.get("layer", ""), fields.get("decision", "")
        reason, plan, symbol = (
            fields.get("reason", ""),
            fields.get("plan_id", ""),
            fields.get("symbol", ""),
        )
        if layer == "operator" and decision.startswith("TRADING_"):
            state = decision.removeprefix("TRADING_")
            who = _context_value(fields, "operator")
            level = "success" if state == "ACTIVE" else "failure"
            return self._admit(
                Message(
                    "trading_state",
                    f"{state}:{fields.get('ts', '')}",
                    f"permitchain: trading {state}",
                    f"trading state set to {state} by {who}: {reason}",
                    level,
                )
            )
        if layer == "executor" and decision == "EXECUTED" and self.plan_executed:
            return self._admit(
                Message(
                    "executed",
                    plan,
                    f"permitchain: {symbol} executed",
                    f"plan {plan} {symbol} executed ({reason})",
                    "info",
                )
            )
        if decision in DENY_DECISIONS:
            now = self.clock()
            times = self.denials.setdefault(reason, deque())
            times.append(now)
            while times and times[0] < now - self.denial_window_s:
                times.popleft()
            if len(times) >= self.denial_burst:
                return self._admit(
                    Message(
                        "denials",
                        reason,
                        f"permitchain: denials {reason}",
                        f"{len(times)} plans denied with reason {reason} in the last "
                        f"{self.denial_window_s:g}s (latest {plan} {symbol}, {layer})",
                    )
                )
        return []

    def on_deadletter(self, fields: dict[str, str]) -> list[Message]:
        service = fields.get("service") or "unknown"
        return self._admit(
            Message(
                "deadletter",
                service,
                f"permitchain: dead letter from {service}",
                f"{service} dead-lettered an entry of {fields.get('stream', '?')}: "
                f"{fields.get('error', '')[:300]}",
            )
        )

    def on_health(self, problems: Iterable[str]) -> list[Message]:
        """Each health result; tells when a check starts failing and when all pass again."""
        now_failing = frozenset(problems)
        new = sorted(now_failing - self.unhealthy)
        was_unhealthy, self.unhealthy = bool(self.unhealthy), now_failing
        if new:
            return self._admit(
                Message(
                    "unhealthy",
                    "|".join(new),
                    "permitchain: UNHEALTHY",
                    "failing: " + "; ".join(new),
                    "failure",
                )
            )
        if was_unhealthy and not now_failing:
            return self._admit(
                Message(
                    "healthy",
                    "",
                    "permitchain: healthy again",
                    "every status check passes",
                    "success",
                )
            )
        return []

    # -- dedupe and rate limit ------------------------------------------------------------
    def _admit(self, m: Message) -> list[Message]:
        now = self.clock()
        key = (m.kind, m.subject)
        last = self.last_sent.get(key)
        if last is not None and now - last < self.dedupe_s:
            NOTIFICATIONS.labels(m.kind, "deduplicated").inc()
            return []
        while self.sent_times and self.sent_times[0] <= now - 60:
            self.sent_times.popleft()
        if len(self.sent_times) >= self.max_per_min:
            self.held_back += 1
            NOTIFICATIONS.labels(m.kind, "rate_limited").inc()
            return []
        self.last_sent[key] = now
        self.sent_times.append(now)
        if self.held_back:
            m = Message(
                m.kind,
                m.subject,
                m.title,
                f"{m.body}\n({self.held_back} earlier notification(s) held back by "
                "NOTIFY_MAX_PER_MIN)",
                m.level,
            )
            self.held_back = 0
        return [m]


def _context_value(fields: dict[str, str], name: str) -> str:
    try:
        ctx = json.loads(fields.get("context") or "{}")
    except json.JSONDecodeError:
        return "?"
    return str(ctx.get(name, "?")) if isinstance(ctx, dict) else "?"


class Notifier:
    """The sender: a bounded queue drained by its own task (one message at a time)."""

    def __init__(self, urls: list[str], policy: NotifyPolicy) -> None:
        import apprise  # noqa: PLC0415 - only when notifications are configured

        self.policy = policy
        self.apprise = apprise.Apprise()
        for url in urls:
            if not self.apprise.add(url):
                raise ValueError("NOTIFY_URLS: an URL apprise does not understand (check it)")
        self.queue: asyncio.Queue[Message] = asyncio.Queue(QUEUE_SIZE)
        self.sent = 0

    def offer(self, messages: list[Message]) -> None:
        for m in messages:
            try:
                self.queue.put_nowait(m)
            except asyncio.QueueFull:
                NOTIFICATIONS.labels(m.kind, "dropped").inc()
                log.warning("console: notify queue full; dropped %s %s", m.kind, m.subject)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            getter = asyncio.ensure_future(self.queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                return
            await self.send(getter.result())

    async def send(self, m: Message) -> bool:
        ok = False
        with contextlib.suppress(TimeoutError):
            ok = bool(
                await asyncio.wait_for(
                    self.apprise.async_notify(body=m.body, title=m.title, notify_type=m.level),
                    SEND_TIMEOUT_S,
                )
            )
        NOTIFICATIONS.labels(m.kind, "sent" if ok else "failed").inc()
        if ok:
            self.sent += 1
            log.info("[NOTIFY] kind=%s subject=%s sent", m.kind, m.subject)
        else:
            log.warning("[NOTIFY] kind=%s subject=%s failed (see apprise's log)", m.kind, m.subject)
        return ok


def split_urls(raw: str) -> list[str]:
    return [u.strip() for u in raw.replace("\n", " ").replace(",", " ").split() if u.strip()]
