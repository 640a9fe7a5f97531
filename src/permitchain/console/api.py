"""The console's HTTP API (FastAPI) and the page's static files.

Reads are the ops functions behind ``status``, ``plans``, ``permits`` and ``explain``; writes
are the CLI's own operator actions (``cli/control.py``, ``ops/actions.py``), audited with the
operator's name. Access, bodies and error answers: ``context.py``. An unknown plan or symbol
is a 404; a reconcile refused while a close is in flight a 409 with the preview.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from permitchain import __version__
from permitchain.cli.control import set_trading_state
from permitchain.console.context import (
    Console,
    Operator,
    ProposalBody,
    Read,
    ReasonBody,
    ReconcileBody,
    install_errors,
)
from permitchain.console.events import EVENT_ID
from permitchain.contract.trading_state import TradingState, read_trading_state
from permitchain.ops import actions, health, history
from permitchain.ops import reads as rd

log = logging.getLogger("permitchain.console")

STATIC = resources.files("permitchain.console") / "static"
MAX_WAIT_S = 60.0
STATE_OF_ACTION = {
    "halt": TradingState.HALTED,
    "reduce": TradingState.REDUCING,
    "resume": TradingState.ACTIVE,
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


# -- the app ---------------------------------------------------------------------------------
def create_app(console: Console) -> FastAPI:
    app = FastAPI(
        title="permitchain console",
        version=__version__,
        description="The operator API of permitchain (docs/console.md). Every request needs "
        "`Authorization: Bearer <CONSOLE_TOKEN>` (reads do not with CONSOLE_PUBLIC_READ=true).",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_errors(app)
    app.state.console = console
    c = console

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = CSP
        return response

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    install_reads(app, c)
    install_writes(app, c)
    return app


def install_reads(app: FastAPI, c: Console) -> None:
    """Status, plans, explain, permits, positions, trading state, events."""

    @app.get("/api/status", dependencies=[Read], summary="The health box (= status --json)")
    async def status(
        max_lag: Annotated[int, Query(ge=0)] = health.DEFAULT_MAX_LAG,
        deadletter_window: Annotated[float, Query(gt=0)] = health.DEADLETTER_WINDOW_S,
    ) -> dict[str, Any]:
        h = await health.gather(
            c.redis, c.keys, c.settings, max_lag=max_lag, deadletter_window_s=deadletter_window
        )
        return h.to_dict()

    @app.get("/api/plans", dependencies=[Read], summary="The newest plans (= plans --json)")
    async def plans(
        symbol: Annotated[str | None, Query(max_length=32)] = None,
        decision: Annotated[str | None, Query(max_length=32)] = None,
        last: Annotated[int, Query(ge=1, le=1000)] = 20,
    ) -> list[dict[str, Any]]:
        return await history.list_plans(
            c.redis, c.keys, symbol=symbol, decision=decision, last=last
        )

    @app.get(
        "/api/plans/{plan_id}",
        dependencies=[Read],
        summary="One plan's explanation (= explain --json)",
    )
    async def explain(plan_id: Annotated[str, Path(max_length=128)]) -> dict[str, Any]:
        out = await history.explain(c.redis, c.keys, plan_id)
        if out is None:
            raise HTTPException(404, f"plan {plan_id}: nothing in the audit stream or exec records")
        return out

    @app.get("/api/permits", dependencies=[Read], summary="Live permits (= permits --json)")
    async def permits(
        plan: Annotated[str | None, Query(max_length=128)] = None,
    ) -> list[dict[str, Any]]:
        if plan:
            return await history.permits_of(c.redis, c.keys, plan)
        return await history.live_permits(c.redis, c.keys)

    @app.get(
        "/api/positions",
        dependencies=[Read],
        summary="Exchange vs ledger vs tolerance, snapshot age, in-flight claim",
    )
    async def positions() -> dict[str, Any]:
        h = await health.positions(c.redis, c.keys, c.settings)
        return {
            "ts": h.ts,
            "positions": h.positions,
            "problems": [str(p) for p in h.problems],
            "warnings": [str(p) for p in h.warnings],
        }

    @app.get("/api/trading-state", dependencies=[Read], summary="The kill switch")
    async def trading_state() -> dict[str, Any]:
        state = await read_trading_state(c.redis, c.keys)
        recent = await rd.xrevrange(c.redis, c.keys.decisions, count=5000)
        last = next(
            (history.audit_entry(i, f) for i, f in recent if f.get("layer") == "operator"), None
        )
        return {"state": state.value, "last_change": last}

    @app.get(
        "/api/events",
        dependencies=[Read],
        response_class=StreamingResponse,
        summary="Server-Sent Events: every audit decision, result, trading-state change",
    )
    async def events(
        last_event_id: Annotated[str | None, Header(max_length=48)] = None,
        since: Annotated[str | None, Query(max_length=48, description="as Last-Event-ID")] = None,
        compact: Annotated[bool, Query(description="without the full context")] = False,
    ) -> StreamingResponse:
        resume = last_event_id or since
        if resume is not None and not EVENT_ID.match(resume):
            raise HTTPException(422, "Last-Event-ID: not a stream entry id (ms-seq)")
        await c.redis.ping()  # unreachable → 503 now, not a broken stream
        return StreamingResponse(
            c.events.stream(resume, compact_form=compact),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/health", include_in_schema=False)
    async def alive() -> dict[str, Any]:
        return {"ok": True, "version": __version__, "ts": time.time()}


def install_writes(app: FastAPI, c: Console) -> None:
    """The operator actions: trading state, proposals, reconcile (audited with the name)."""

    @app.post("/api/trading-state/{action}", summary="halt, reduce or resume, with a reason")
    async def set_state(
        action: Literal["halt", "reduce", "resume"], body: ReasonBody, who: Operator
    ) -> dict[str, Any]:
        before, after = await set_trading_state(
            c.redis, c.keys, c.settings, STATE_OF_ACTION[action], reason=body.reason, operator=who
        )
        log.info("[OPERATOR] console: trading state %s -> %s by %s", before.value, after.value, who)
        return {"before": before.value, "after": after.value, "operator": who}

    @app.post("/api/proposals", summary="Hand an exit decision to the chain (= propose)")
    async def propose(
        body: ProposalBody,
        who: Operator,
        wait: Annotated[
            float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for the outcome")
        ] = 0,
    ) -> dict[str, Any]:
        tail = await rd.xrevrange(c.redis, c.keys.decisions, count=1)
        after = tail[0][0] if tail else "0-0"
        p, entry = await actions.operator_proposal(
            c.redis,
            c.keys,
            c.settings,
            symbol=body.symbol,
            action=body.action,
            kill_score=body.kill_score,
            new_sl=body.new_sl,
            r_net=body.r_net,
            tranche=body.tranche,
            epoch=body.epoch,
            source=f"{body.source}:{who}",
        )
        plan_id = actions.expected_plan_id(p)
        log.info(
            "[OPERATOR] console: proposal %s %s %s by %s", p.proposal_id, p.symbol, p.action, who
        )
        out: dict[str, Any] = {
            "proposal_id": p.proposal_id,
            "plan_id": plan_id,
            "entry_id": entry,
            "operator": who,
        }
        if wait > 0:
            final = await wait_outcome(c, plan_id, after, wait)
            out["outcome"] = outcome_of(final) if final else "pending"
            out["final"] = final
            out["explain"] = await history.explain(c.redis, c.keys, plan_id) if final else None
        return out

    @app.post(
        "/api/reconcile/{symbol}",
        summary="Preview (confirm=false) or set (confirm=true) P3.3's ledger",
    )
    async def reconcile(
        symbol: Annotated[str, Path(pattern=r"^[A-Z0-9]{2,32}$")],
        body: ReconcileBody,
        who: Operator,
    ) -> dict[str, Any]:
        try:
            return await actions.reconcile_symbol(
                c.redis,
                c.keys,
                c.settings,
                symbol,
                operator=who,
                reason=body.reason,
                dry_run=not body.confirm,
                force=body.force,
            )
        except actions.UnknownSymbol as e:
            raise HTTPException(404, str(e)) from None
        except actions.InFlight as e:
            return JSONResponse({"error": str(e), "preview": e.preview}, status_code=409)  # type: ignore[return-value]


async def wait_outcome(
    c: Console, plan_id: str, after: str, wait_s: float
) -> dict[str, Any] | None:
    """The plan's final audit entry (the executor's result, or the planner's SKIP or
    DUPLICATE), read with blocking XREADs from ``after``; None when ``wait_s`` runs out."""
    deadline = time.monotonic() + wait_s
    cursor = after
    while (left := deadline - time.monotonic()) > 0:
        resp = await rd.xread(
            c.redis, {c.keys.decisions: cursor}, count=500, block_ms=max(1, int(left * 1000))
        )
        for _stream, entries in resp:
            for entry_id, f in entries:
                cursor = entry_id
                if f.get("plan_id") != plan_id:
                    continue
                final_planner = f.get("layer") == "planner" and f.get("decision") != "EXECUTE"
                if f.get("layer") == "executor" or final_planner:
                    return history.audit_entry(entry_id, f)
    return None


def outcome_of(entry: dict[str, Any]) -> str:
    """A final entry's outcome: the result's status (filled, blocked, …) or the decision."""
    ctx = entry.get("context")
    result = ctx.get("result") if isinstance(ctx, dict) else None
    if isinstance(result, dict) and result.get("status"):
        return str(result["status"])
    return str(entry.get("decision", "unknown"))
