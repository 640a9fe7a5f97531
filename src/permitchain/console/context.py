"""What every console request shares: the :class:`Console` (Redis, keys, settings, tokens,
events), the request bodies, the access checks (bearer tokens) and the error answers.

Errors are JSON ``{"error": …}``: a malformed body, a wrong type or an unknown field is a 422
naming the field, Redis unreachable a 503 with the reason, a missing or wrong token a 401,
writes with no token configured a 403. Bad input never yields a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from permitchain.console import auth
from permitchain.console.events import Broadcaster
from permitchain.contract.errors import ContractError, PermitchainError, StoreError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.store import REDIS_FAULTS, AsyncRedis


@dataclass
class Console:
    """What every request needs."""

    redis: AsyncRedis
    keys: Keys
    settings: Settings
    tokens: tuple[auth.Token, ...]
    events: Broadcaster


# -- request bodies ------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReasonBody(Strict):
    reason: str = Field("", max_length=500, description="Why (recorded with your name)")


class ProposalBody(Strict):
    symbol: str = Field(max_length=32, examples=["BTCUSDT"])
    action: str = Field(
        max_length=32, description="PARTIAL_25|PARTIAL_50|PARTIAL_75|FULL_CLOSE_PROPOSED|UPDATE_SL"
    )
    kill_score: str = Field("0.6", max_length=32)
    new_sl: str | None = Field(None, max_length=32)
    r_net: str | None = Field(None, max_length=32)
    tranche: int = Field(0, ge=0, le=1_000_000)
    epoch: int | None = Field(None, ge=0, description="Position epoch (default: P3.3's)")
    source: str = Field("console", max_length=64)


class ReconcileBody(Strict):
    reason: str = Field("", max_length=500)
    confirm: bool = Field(False, description="false: preview only; true: set the ledger")
    force: bool = Field(False, description="even while a close P3.3 allowed is in flight")


# -- errors ----------------------------------------------------------------------------------
def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(
        parts[1:]
        if parts and parts[0] in ("body", "query", "path", "header") and len(parts) > 1
        else parts
    )


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return _error(422, "body: not valid JSON", fields=["body"])
        problems = [f"{_field(err['loc'])}: {err['msg']}" for err in errors]
        fields = [_field(err["loc"]) for err in errors]
        return _error(422, "; ".join(problems), fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http(_req: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(ContractError)
    async def contract(_req: Request, e: ContractError) -> JSONResponse:
        return _error(422, str(e))

    async def store(_req: Request, e: Exception) -> JSONResponse:
        return _error(503, f"redis unreachable: {type(e).__name__}: {e}")

    faults = cast("tuple[type[Exception], ...]", (StoreError, *REDIS_FAULTS))
    for fault in faults:
        app.add_exception_handler(fault, store)

    @app.exception_handler(PermitchainError)
    async def other(_req: Request, e: PermitchainError) -> JSONResponse:
        return _error(503, str(e))


# -- access ----------------------------------------------------------------------------------
def read_access(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Reads: open with CONSOLE_PUBLIC_READ=true or with no token configured (a loopback
    bind: the console refuses any other without one); else a valid token."""
    c: Console = request.app.state.console
    if c.settings.console_public_read or not c.tokens:
        return
    if auth.match(c.tokens, authorization) is None:
        raise HTTPException(401, "a valid bearer token is needed (Authorization header)")


def operator(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_operator: Annotated[str | None, Header(max_length=64)] = None,
) -> str:
    """Writes: a valid token, always; the operator's name for the audit stream."""
    c: Console = request.app.state.console
    if not c.tokens:
        raise HTTPException(403, "writes are refused: no CONSOLE_TOKEN is configured")
    token = auth.match(c.tokens, authorization)
    if token is None:
        raise HTTPException(401, "a valid bearer token is needed (Authorization header)")
    return auth.operator_name(token, x_operator)


Read = Depends(read_access)
Operator = Annotated[str, Depends(operator)]
