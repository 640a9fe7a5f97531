"""Invariants of the checks, for any position, ledger, action and filters (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from permitchain.contract.models import CLOSE_FRACTION, Action
from permitchain.contract.snapshot import Ledger, Snapshot
from permitchain.exchange.base import closing_side, round_down
from permitchain.position_brain.checks import CheckConfig, PlanView, evaluate, side_of

NOW = 1_700_000_000.0
STEPS = [Decimal(s) for s in ("0.0001", "0.001", "0.01", "0.1", "1", "5")]
ACTIONS = [a.value for a in Action] + ["PARTIAL_33", "CLOSE"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[PlanView, Snapshot, Ledger | None, CheckConfig, float]:
    step = draw(st.sampled_from(STEPS))
    min_qty = step * draw(st.integers(1, 20))
    # positions on or off the step grid, long or short or flat
    amt = Decimal(draw(st.integers(-(10**9), 10**9))) * draw(st.sampled_from(STEPS)) / 7
    amt = amt.quantize(Decimal("0.000001"))
    snap = Snapshot(
        position_amt=amt, ts_epoch=NOW - draw(st.floats(0, 12)), step_size=step, min_qty=min_qty
    )
    ledger = draw(
        st.one_of(
            st.none(),
            st.builds(
                Ledger,
                amt=st.one_of(
                    st.just(amt),
                    st.integers(-5, 5).map(lambda k: amt + k * step),
                    st.decimals(-1000, 1000, places=4, allow_nan=False),
                ),
                last_order_time_epoch=st.one_of(st.none(), st.floats(NOW - 100, NOW)),
            ),
        )
    )
    closes = [a.value for a in Action if a is not Action.HOLD]
    action = draw(st.one_of(st.sampled_from(closes), st.sampled_from(ACTIONS)))
    frac = CLOSE_FRACTION.get(Action(action)) if action in Action.__members__ else None
    view = PlanView(action=action, created_at=NOW - draw(st.floats(0, 33)), close_fraction=frac)
    cfg = CheckConfig(cooldown_s=draw(st.sampled_from([0.0, 15.0])))
    return view, snap, ledger, cfg, NOW


@settings(max_examples=400, deadline=None)
@given(cases())
def test_an_allow_never_closes_more_than_the_position(
    case: tuple[PlanView, Snapshot, Ledger | None, CheckConfig, float],
) -> None:
    view, snap, ledger, cfg, now = case
    d = evaluate(plan=view, snapshot=snap, ledger=ledger, cfg=cfg, now=now)
    if not d.allow:
        assert d.reason != "ok" and d.safe_close_qty is None
        return
    qty, pos = d.safe_close_qty, snap.position_amt
    assert qty is not None
    assert qty > 0
    assert qty <= abs(pos)
    assert qty % snap.step_size == 0
    assert qty >= snap.min_qty or qty == abs(pos)
    # the order's side closes the position: it moves it toward zero and never past it
    assert d.side == side_of(pos) != "NONE"
    after = pos - qty if closing_side(pos) == "SELL" else pos + qty
    assert abs(after) < abs(pos) and (after == 0 or side_of(after) == side_of(pos))
    # never more than the action's own fraction (PARTIAL_25 is a quarter), except the last
    # tranche: when the fraction would leave less than the minimum quantity, all of it
    action = Action(view.action)
    assert action is not Action.HOLD
    fraction_qty = round_down(CLOSE_FRACTION.get(action, Decimal(1)) * abs(pos), snap.step_size)
    if abs(pos) - fraction_qty < snap.min_qty:
        assert qty == round_down(abs(pos), snap.step_size)
    else:
        assert qty <= CLOSE_FRACTION.get(action, Decimal(1)) * abs(pos)
