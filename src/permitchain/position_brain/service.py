"""Position brain runner: snapshot poller, ledger consumer, and the P3.3 permit issuer.

* Poller (:mod:`.poller`): every ``POLL_INTERVAL_S`` one exchange call for every position,
  snapshots written in one pipeline; a failed read writes nothing (snapshots go stale). In
  the service it runs on its own thread (:mod:`.poll_thread`), off the plan-judging loop.
* Ledger: consumer group ``p33-ledger`` on the result stream; each plan's result applied once
  (:func:`.state.apply_result`). A result also releases the plan's in-flight claim.
* Permits: consumer group ``p33`` on the plan stream (XREADGROUP BLOCK): each plan is judged
  as it arrives, from the current snapshot, by the six checks (:mod:`.checks`).
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from permitchain.contract.errors import WrongTypeError
from permitchain.contract.keys import GROUP_P33, GROUP_P33_LEDGER, Keys
from permitchain.contract.models import CANARY_SIZE, CANARY_SYMBOL, P33Allow, P33Deny, Plan, Result
from permitchain.contract.reasons import (
    COOLDOWN_IN_FLIGHT,
    OPERATOR_SIGNATURE_INVALID,
    WRONG_KEY_TYPE,
)
from permitchain.contract.settings import Settings
from permitchain.contract.signing import OPERATOR, P33
from permitchain.contract.snapshot import parse_ledger, parse_snapshot
from permitchain.exchange.base import Exchange
from permitchain.exchange.stream import UserStream
from permitchain.exemptions import ExitKind, exit_kind
from permitchain.keyfiles import signer_for, verifier_for
from permitchain.operator_exit import operator_problem
from permitchain.position_brain.checks import (
    CheckConfig,
    P33Decision,
    PlanView,
    canary_decision,
    judge,
)
from permitchain.position_brain.metrics import JUDGED_AGE, LEDGER_AMT, PERMITS
from permitchain.position_brain.poll_thread import PollThread
from permitchain.position_brain.poller import SnapshotPoller
from permitchain.position_brain.pushed import PushedSnapshots
from permitchain.position_brain.state import (
    LAYER,
    LEDGER_CHECK_FIELDS,
    apply_result,
    init_ledgers,
    ledger_fields,
    read_ledger_fields,
)
from permitchain.runtime.clock import Clock
from permitchain.runtime.logs import log_decision
from permitchain.runtime.permits import claim_and_write_permit, permit_json, write_permit
from permitchain.runtime.service import WRONG_TYPES, Consumer, by_symbol, shard_consumers
from permitchain.store import AsyncRedis, first_fault

log = logging.getLogger("permitchain.p33")
#: Longest a plan read right after the start waits for the first snapshot poll.
FIRST_POLL_WAIT_S = 5.0


class PositionBrain:
    def __init__(
        self,
        r: AsyncRedis,
        keys: Keys,
        settings: Settings,
        clock: Clock,
        exchange: Exchange,
        *,
        poll_thread: PollThread | None = None,
        stream: UserStream | None = None,
    ) -> None:
        """``poll_thread``: run the snapshot poller on its own thread (the service does);
        without it, ``poller`` polls in this event loop with ``exchange`` (tests do)."""
        self.redis, self.keys, self.settings, self.clock, self.exchange = (
            r,
            keys,
            settings,
            clock,
            exchange,
        )
        self.poll_thread = poll_thread
        self.stream = stream  # pushed updates when polling in this loop (no poll thread)
        self.signer = signer_for(settings, P33)
        self.verifier = verifier_for(settings, (OPERATOR,))  # operators' emergency exits
        self.cfg = CheckConfig.from_settings(settings)
        self.snapshots = SnapshotPoller(
            r,
            keys,
            exchange,
            clock,
            allow_list=settings.allow_list,
            poll_interval_s=settings.poll_interval_s,
        )

    def consumers(self) -> list[Consumer]:
        owned = self.settings.owned_shards
        return [
            *shard_consumers(
                self.keys.plan_stream_shard, owned, GROUP_P33, self.handle_plan, partition=by_symbol
            ),
            *shard_consumers(
                self.keys.result_stream_shard,
                owned,
                GROUP_P33_LEDGER,
                self.handle_result,
                partition=by_symbol,
            ),
        ]

    async def poller(self, stop: asyncio.Event) -> None:
        if self.poll_thread is not None:
            await self.poll_thread.run(stop)
        elif self.stream is not None:
            pushed = PushedSnapshots(
                self.snapshots, self.stream, self.clock, touch_s=self.settings.push_touch_s
            )
            await asyncio.gather(self.snapshots.run(stop), pushed.run(stop))
        else:
            await self.snapshots.run(stop)

    # -- ledger ------------------------------------------------------------------------------
    async def allow_canary(self, plan: Plan) -> None:
        """``proof --canary``: allow a nominal quantity without reading a snapshot, taking
        the in-flight claim or touching a ledger (the plan ends dry_run at the executor)."""
        d = canary_decision(plan.close_fraction)
        await self.issue(
            plan, d, exchange_amt=CANARY_SIZE, ledger_amt=CANARY_SIZE, now=self.clock.now()
        )

    async def handle_result(self, entry_id: str, fields: dict[str, str]) -> None:
        result = Result.from_fields(fields)
        if result.symbol == CANARY_SYMBOL:  # the canary's result touches no ledger
            return
        # the plan's in-flight claim goes with its ledger write (or right after it)
        change = await apply_result(self.redis, self.keys, result, entry_id, release=True)
        if not change.applied:
            if change.reason == "duplicate_plan":
                log.warning(
                    "[LEDGER] symbol=%s plan=%s result %s already applied; ignored",
                    result.symbol,
                    result.plan_id,
                    entry_id,
                )
            return
        if change.after is not None:
            LEDGER_AMT.set(result.symbol, float(change.after))
        if result.signed_delta != 0:
            log.info(
                "[LEDGER] symbol=%s plan=%s %s -> %s (result %s)",
                result.symbol,
                result.plan_id,
                change.before,
                change.after,
                entry_id,
            )
            (self.poll_thread or self.snapshots).request(result.symbol)  # see the fill now

    # -- permits -----------------------------------------------------------------------------
    async def handle_plan(self, entry_id: str, fields: dict[str, str]) -> None:
        plan = Plan.from_fields(fields)
        if not plan.is_execute:
            return
        if plan.is_canary:
            await self.allow_canary(plan)
            return
        kind = exit_kind(plan)
        emergency = kind is ExitKind.FLATTEN
        if self.poll_thread is not None:  # right after a start: see the exchange first
            await self.poll_thread.first_poll(FIRST_POLL_WAIT_S)
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self.keys.permit_p33(plan.plan_id))
        pipe.hgetall(self.keys.snapshot(plan.symbol))
        # the ledger fields the checks read, not its applied-plans list (which grows)
        pipe.hmget(self.keys.ledger(plan.symbol), LEDGER_CHECK_FIELDS)
        pipe.get(self.keys.inflight(plan.symbol))
        pipe.exists(self.keys.exec_record(plan.plan_id))
        replies = await pipe.execute(raise_on_error=False)
        bad = await self.wrong_types(plan, replies)  # (any other fault is raised)
        decided, snap_h, ledger_vals, holder, consumed = replies
        if decided:  # a redelivery: the first decision stands
            log.info("plan %s already has a P3.3 permit; not judged again", plan.plan_id)
            return
        if bad is not None:  # a key of the wrong type: denied, naming it
            await self.issue(plan, bad, exchange_amt=None, ledger_amt=None, now=self.clock.now())
            return
        if emergency:  # an operator's exit: its signed request first
            problem = operator_problem(plan, self.verifier, self.clock.now())
            if problem:
                d = P33Decision(False, OPERATOR_SIGNATURE_INVALID, {"detail": problem})
                await self.issue(plan, d, exchange_amt=None, ledger_amt=None, now=self.clock.now())
                return
        ledger_h = ledger_fields(ledger_vals)
        snapshot, ledger = parse_snapshot(snap_h), parse_ledger(ledger_h)
        now = self.clock.now()
        fresh = snapshot is not None and now - snapshot.ts_epoch <= self.cfg.stale_threshold_s
        if ledger is None and fresh and snapshot is not None and snapshot.position_amt != 0:
            # first sight of this position: the ledger starts from a fresh exchange amount
            await init_ledgers(self.redis, self.keys, {plan.symbol: snapshot.position_amt})
            ledger = parse_ledger(await read_ledger_fields(self.redis, self.keys, plan.symbol))
        view = PlanView(
            action=plan.action,
            created_at=plan.created_at,
            expires_at=plan.expires_at,
            close_fraction=plan.close_fraction,
        )
        other = holder if holder not in (None, plan.plan_id) else None
        d = judge(
            kind,
            plan=view,
            snapshot=snapshot,
            ledger=ledger,
            cfg=self.cfg,
            now=now,
            in_flight_plan=other,
        )
        exchange_amt = snapshot.position_amt if snapshot else None
        ledger_amt = ledger.amt if ledger else None
        if d.allow and emergency:
            # an emergency exit ignores the symbol's claim but takes it: later plans wait
            await self.issue(plan, d, exchange_amt=exchange_amt, ledger_amt=ledger_amt, now=now)
            if self.cfg.cooldown_s > 0:
                await self.redis.set(
                    self.keys.inflight(plan.symbol),
                    plan.plan_id,
                    px=int(self.cfg.cooldown_s * 1000),
                )
            return
        if d.allow and self.cfg.cooldown_s > 0 and not consumed:
            # (consumed: the executor decided this plan already, e.g. a duplicate plan entry;
            # it sends no order for it, so it takes no claim from the symbol's next plan)
            # Take the symbol's claim; a plan allowed a moment ago by a peer wins.
            await self.issue_claimed(
                plan, d, exchange_amt=exchange_amt, ledger_amt=ledger_amt, now=now
            )
            return
        await self.issue(plan, d, exchange_amt=exchange_amt, ledger_amt=ledger_amt, now=now)

    async def wrong_types(self, plan: Plan, replies: list[Any]) -> P33Decision | None:
        """The deny for a key of the wrong type among what :meth:`handle_plan` read (the
        snapshot, the ledger, the in-flight claim), naming the key and both types; None when
        every key read has its type. Any other fault of the read is raised (retried)."""
        fault = await first_fault(
            self.redis,
            replies,
            [
                None,
                (self.keys.snapshot(plan.symbol), "hash"),
                (self.keys.ledger(plan.symbol), "hash"),
                (self.keys.inflight(plan.symbol), "string"),
                None,
            ],
        )
        if fault is None:
            return None
        if not isinstance(fault, WrongTypeError):
            raise fault
        kind = fault.key.removeprefix(f"{self.keys.prefix}:position:").split(":", 1)[0]
        WRONG_TYPES.labels(LAYER, kind).inc()
        return P33Decision(
            False,
            WRONG_KEY_TYPE,
            {"key": fault.key, "type": fault.actual, "expected": fault.expected},
        )

    async def issue_claimed(
        self,
        plan: Plan,
        d: P33Decision,
        *,
        exchange_amt: Decimal | None,
        ledger_amt: Decimal | None,
        now: float,
    ) -> None:
        """An allow with the symbol's in-flight claim (expiring after ``COOLDOWN_S``): the
        claim, the permit, its event and its audit entry in one step
        (:func:`claim_and_write_permit`). The log line and the metrics follow what the step
        wrote: the allow; or, when another plan holds the claim, nothing, and the
        ``cooldown_in_flight`` deny naming it is written as :meth:`issue` writes any deny;
        or, when the plan has a permit already (a concurrent delivery), nothing at all: the
        first decision stands."""
        value, issued = self.permit(
            plan, d, exchange_amt=exchange_amt, ledger_amt=ledger_amt, now=now
        )
        verdict, holder = await claim_and_write_permit(
            self.redis,
            self.keys,
            claim_key=self.keys.inflight(plan.symbol),
            claim_ms=int(self.cfg.cooldown_s * 1000),
            key=self.keys.permit_p33(plan.plan_id),
            permit_json=value,
            ttl_s=self.settings.permit_ttl_s,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            layer=LAYER,
            reason=d.reason,
            context={"permit": issued},
            ts=now,
        )
        if verdict == "allow":
            self.issued(plan, d)
        elif verdict == "held":
            d = P33Decision(
                False,
                COOLDOWN_IN_FLIGHT,
                {**d.context, "in_flight_plan": holder},
                snapshot_age_s=d.snapshot_age_s,
            )
            await self.issue(plan, d, exchange_amt=exchange_amt, ledger_amt=ledger_amt, now=now)
        else:  # "exists"
            log.info("plan %s already has a P3.3 permit; not judged again", plan.plan_id)

    def permit(
        self,
        plan: Plan,
        d: P33Decision,
        *,
        exchange_amt: Decimal | None,
        ledger_amt: Decimal | None,
        now: float,
    ) -> tuple[str, dict[str, Any]]:
        """The permit for decision ``d`` as ``(value, issued)`` (:func:`permit_json`): signed
        with P3.3's key when one is configured, expiring after ``PERMIT_TTL_SECONDS``."""
        exp = now + self.settings.permit_ttl_s
        permit: P33Allow | P33Deny
        if d.allow:
            assert d.safe_close_qty is not None and d.side in ("LONG", "SHORT")
            assert exchange_amt is not None
            permit = P33Allow(
                plan_id=plan.plan_id,
                symbol=plan.symbol,
                safe_close_qty=d.safe_close_qty,
                side=d.side,
                exchange_position_amt=exchange_amt,
                ledger_position_amt=exchange_amt if ledger_amt is None else ledger_amt,
                snapshot_age_sec=d.snapshot_age_s or Decimal(0),
                created_at=now,
                expires_at=exp,
            )
        else:
            permit = P33Deny(
                plan_id=plan.plan_id,
                symbol=plan.symbol,
                reason=d.reason,
                context=d.context,
                created_at=now,
                expires_at=exp,
            )
        return permit_json(permit, self.signer)

    async def issue(
        self,
        plan: Plan,
        d: P33Decision,
        *,
        exchange_amt: Decimal | None,
        ledger_amt: Decimal | None,
        now: float,
    ) -> None:
        """Write the permit (:meth:`permit`), its wake-up event and its audit entry."""
        value, issued = self.permit(
            plan, d, exchange_amt=exchange_amt, ledger_amt=ledger_amt, now=now
        )
        await write_permit(
            self.redis,
            self.keys,
            key=self.keys.permit_p33(plan.plan_id),
            permit_json=value,
            ttl_s=self.settings.permit_ttl_s,
            plan_id=plan.plan_id,
            symbol=plan.symbol,
            layer=LAYER,
            decision="ALLOW" if d.allow else "DENY",
            reason=d.reason,
            context={"permit": issued},
            ts=now,
        )
        self.issued(plan, d)

    def issued(self, plan: Plan, d: P33Decision) -> None:
        """A permit written: its metric and its decision line."""
        decision = "ALLOW" if d.allow else "DENY"
        PERMITS.inc(plan.symbol, decision, d.reason)
        if d.snapshot_age_s is not None:
            JUDGED_AGE.observe(float(d.snapshot_age_s))
        if log.isEnabledFor(logging.INFO):
            extra: dict[str, Any] = {
                k: v for k, v in d.context.items() if k in ("diff", "tolerance", "safe_close_qty")
            }
            log_decision(
                log,
                layer=LAYER,
                plan_id=plan.plan_id,
                symbol=plan.symbol,
                decision=decision,
                reason=d.reason,
                **extra,
            )
