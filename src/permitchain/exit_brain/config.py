"""The exit brain's parameters from the settings: one place, for the service and the replay."""

from __future__ import annotations

from decimal import Decimal

from permitchain.contract.settings import Settings
from permitchain.exit_brain.kernel import ExitParams
from permitchain.exit_brain.market import Windows


def tranche_levels(raw: str) -> tuple[Decimal, ...]:
    """``EXIT_TRANCHE_R`` ("2,4,6", validated by the settings) as decimals."""
    return tuple(Decimal(x) for x in raw.split(","))


def exit_params(s: Settings) -> ExitParams:
    return ExitParams(
        full_close_score=s.full_close_score,
        risk_fraction=s.exit_risk_fraction,
        fee_rate=s.exit_fee_rate,
        full_close_retry_s=s.exit_full_close_retry_s,
        tranche_r=tranche_levels(s.exit_tranche_r),
        break_even_r=s.exit_break_even_r,
        break_even_offset=s.exit_break_even_offset,
        retry_s=s.exit_retry_s,
        trail_r=s.exit_trail_r,
        trail_step_r=s.exit_trail_step_r,
    )


def exit_windows(s: Settings) -> Windows:
    return Windows(short=s.exit_short_window, ref=s.exit_ref_window)
