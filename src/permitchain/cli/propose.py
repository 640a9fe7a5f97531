"""``permitchain propose``: hand an exit decision to the chain, by the exit brain's own rules.

The proposal is built and validated before anything is sent (``build_proposal``: the
contract's fields, and ``models.proposal_fault``, the rule the planner applies): an unknown
action or UPDATE_SL without ``--new-sl`` is refused in one line, exit 2. It prints the
proposal and the plan id the planner gives it when it executes it; ``--json`` prints the same
as JSON. ``--wait SECONDS`` follows it by blocking reads (``ops/await_plan.py``) and exits 0
when the plan filled (or ended ``dry_run``), 1 when it was skipped, blocked or rejected, or
no result came in time, printing the reason.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from permitchain.cli.common import console, fail, run_async
from permitchain.contract.errors import ContractError
from permitchain.contract.keys import Keys
from permitchain.contract.models import Action, Proposal
from permitchain.contract.settings import Settings
from permitchain.exit_brain.api import build_proposal, expected_plan_id
from permitchain.ops.actions import operator_proposal
from permitchain.ops.await_plan import PlanOutcome, await_outcome, positions
from permitchain.store import AsyncRedis

ACTIONS = "|".join(Action.__members__)


def propose(
    symbol: str,
    action: Annotated[str, typer.Option(help=ACTIONS)],
    kill_score: Annotated[str, typer.Option()] = "0.6",
    new_sl: Annotated[str | None, typer.Option(help="Stop price (UPDATE_SL needs one)")] = None,
    r_net: Annotated[str | None, typer.Option()] = None,
    tranche: Annotated[int, typer.Option(min=0)] = 0,
    epoch: Annotated[int | None, typer.Option(help="Position epoch (default: P3.3's)")] = None,
    source: Annotated[str, typer.Option()] = "cli",
    wait: Annotated[
        float | None,
        typer.Option(min=0.1, help="Wait this many seconds for the outcome (exit 0 filled, 1 not)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Hand an exit decision to the chain (same checks as the exit brain's own)."""
    try:  # refused before anything is sent, Redis or not
        build_proposal(
            symbol,
            action,
            kill_score=kill_score,
            new_sl=new_sl,
            r_net=r_net,
            position_epoch=epoch or 0,
            tranche=tranche,
            source=source,
        )
    except ContractError as e:
        fail(str(e))

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> tuple[Proposal, str, PlanOutcome | None]:
        pos = await positions(r, k) if wait is not None else {}
        p, entry = await operator_proposal(
            r,
            k,
            s,
            symbol=symbol,
            action=action,
            kill_score=kill_score,
            new_sl=new_sl,
            r_net=r_net,
            tranche=tranche,
            epoch=epoch,
            source=source,
        )
        if wait is None:
            return p, entry, None
        return p, entry, await await_outcome(r, k, p.proposal_id, pos, wait)

    p, entry, outcome = run_async(body)
    plan_id = outcome.plan_id if outcome and outcome.plan_id else expected_plan_id(p)
    if as_json:
        out: dict[str, Any] = {**p.to_fields(), "entry_id": entry, "plan_id": plan_id}
        if outcome is not None:
            out["outcome"] = outcome.to_dict()
        typer.echo(json.dumps(out, indent=2))
    else:
        console.print(
            f"proposal {p.proposal_id} {p.symbol} {p.action} kill_score "
            f"{p.kill_score} epoch {p.position_epoch} tranche {p.tranche} → plan "
            f"{plan_id} (entry {entry})",
            soft_wrap=True,
            highlight=False,
        )
        if outcome is not None:
            console.print(_describe(outcome, wait or 0), soft_wrap=True, highlight=False)
    if outcome is not None and not outcome.ok:
        raise typer.Exit(1)


def _describe(o: PlanOutcome, wait_s: float) -> str:
    f = o.result
    if not o.status:
        got = f"planner {o.decision}" if o.decision else "no planner decision"
        return (
            f"outcome: none within {wait_s:g}s ({got}); see `permitchain explain {o.plan_id}`"
            if o.plan_id
            else f"outcome: none within {wait_s:g}s ({got})"
        )
    if o.status == "skipped":
        return f"outcome: {o.decision} {o.reason} (plan {o.plan_id}): no order"
    if o.ok:
        return (
            f"outcome: {o.status} {f.get('filled_qty', '')} of {f.get('requested_qty', '')} "
            f"{f.get('side', '')} (plan {o.plan_id}, reason {o.reason}, chain "
            f"{f.get('chain_latency_ms', '?')} ms)"
        )
    detail = f.get("error", "")
    return f"outcome: {o.status} {o.reason} (plan {o.plan_id})" + (f": {detail}" if detail else "")
