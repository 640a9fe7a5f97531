"""The gate's pure decisions, applied to a replayed proposal: would the chain execute it?

The same functions the services call, in the chain's order, with the replay's position as
both the exchange snapshot (fresh) and the P3.3 ledger (in agreement), trading state ACTIVE:

1. planner :func:`~permitchain.apply_layer.planner.make_plan` (allow-list, kill-score
   threshold, …): a SKIP → not executed, its reason;
2. governor :func:`~permitchain.governor.policy.decide` with the rate windows of
   :func:`~permitchain.governor.rates.count_windows` over this symbol's executions;
3. P3.3 :func:`~permitchain.position_brain.checks.evaluate`: min quantity, cooldown since the
   last order, the safe close quantity rounded down to the step.

Both permits granted → executed, with P3.3's quantity. Not modelled: permit expiry and the
executor's wait (the replay decides instantly), Redis or exchange faults, signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from permitchain.apply_layer.planner import PlannerPolicy, make_plan
from permitchain.contract.models import PlanDecision
from permitchain.contract.settings import Settings
from permitchain.contract.snapshot import Ledger, Snapshot
from permitchain.contract.trading_state import TradingState
from permitchain.exit_brain.api import build_proposal
from permitchain.exit_brain.kernel import Decision, to4
from permitchain.governor import policy as governor
from permitchain.governor.rates import count_windows
from permitchain.position_brain import checks

SOURCE = "replay"


@dataclass(frozen=True, slots=True)
class Verdict:
    executed: bool
    layer: str  # planner | governor | p33 | "" (executed)
    reason: str
    qty: Decimal  # P3.3's safe close quantity (0 when not executed)


@dataclass(slots=True)
class Gate:
    """One symbol's gate: the policies from the settings, and what it has executed."""

    settings: Settings
    symbol: str
    step_size: Decimal
    min_qty: Decimal
    executed_at: list[float] = field(default_factory=list)
    last_order_s: float | None = None
    planner: PlannerPolicy = field(init=False)
    governor: governor.GovernorPolicy = field(init=False)
    checks: checks.CheckConfig = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        allow = frozenset({self.symbol})
        self.planner = PlannerPolicy(
            allow, s.kill_score_threshold, s.proposal_ttl_s, s.plan_max_age_s, s.apply_mode.value
        )
        self.governor = replace(governor.GovernorPolicy.from_settings(s), allow_list=allow)
        self.checks = checks.CheckConfig.from_settings(s)

    def judge(self, d: Decision, epoch: int, amt: Decimal, mark: Decimal, now: float) -> Verdict:
        """Planner, governor, P3.3 for the decision's proposal at ``now``; ``amt`` signed."""
        c = d.components
        proposal = build_proposal(
            self.symbol,
            d.action,
            kill_score=d.kill_score,
            k_regime_flip=to4(c.regime_flip),
            k_sigma_spike=to4(c.sigma_spike),
            k_ts_drop=to4(c.ts_drop),
            k_age_penalty=to4(c.age_penalty),
            new_sl=d.new_sl,
            r_net=d.r_net,
            position_epoch=epoch,
            tranche=d.tranche,
            source=SOURCE,
            now=now,
            proposal_id=f"{epoch}-{d.tranche}",
        )
        plan = make_plan(proposal, self.planner, now)
        if plan.decision is not PlanDecision.EXECUTE:
            return Verdict(False, "planner", plan.reason_codes[0], Decimal(0))
        counts = count_windows(self.executed_at, (), now)
        inp = governor.GovernorInput(
            trading_state=TradingState.ACTIVE,
            position_amt=amt,
            mark_price=mark,
            step_size=self.step_size,
            exec_last_hour=counts.last_hour,
            exec_last_5min=counts.last_5min,
        )
        g = governor.decide(plan, inp, self.governor, now)
        if not g.granted:
            return Verdict(False, "governor", g.reason, Decimal(0))
        snap = Snapshot(amt, now, self.step_size, self.min_qty, mark)
        p = checks.evaluate(
            plan=checks.PlanView(
                plan.action, plan.created_at, plan.expires_at, plan.close_fraction
            ),
            snapshot=snap,
            ledger=Ledger(amt, self.last_order_s),
            cfg=self.checks,
            now=now,
        )
        if not p.allow or p.safe_close_qty is None:
            return Verdict(False, "p33", p.reason, Decimal(0))
        return Verdict(True, "", "ok", p.safe_close_qty)

    def record(self, at: float) -> None:
        """An order of this symbol went to the exchange at ``at`` (rate windows, cooldown)."""
        self.executed_at = [t for t in self.executed_at if t > at - 3600] + [at]
        self.last_order_s = at
