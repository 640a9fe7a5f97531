"""The operator's emergency exit (``permitchain flatten``): a signed request and its plan.

The request is a JSON object signed with the operator's Ed25519 key (context
``permitchain-operator-request-v1``, see :mod:`permitchain.contract.signing`)::

    {"schema": 1, "kind": "flatten", "request_id": <16 hex, random>, "plan_id": <16 hex>,
     "symbol": "BTCUSDT", "action": "FULL_CLOSE_PROPOSED", "mode": "testnet",
     "reason": "...", "operator": "alice", "created_at": "<epoch s>", "expires_at": "<epoch s>",
     "alg": "ed25519", "kid": "...", "sig": "..."}

It becomes exactly one plan (:func:`flatten_plan`): ``source=operator``, a reduce-only close of
the whole position, the request in the plan's ``operator_request`` field. The governor, P3.3
and the executor each verify it (:func:`operator_problem`): the signature under an operator
public key, and that the plan is exactly the one the request makes (identity, symbol, mode,
times) and the request has not expired. A replay is the same plan id (published once; a
second consume finds its exec record); an altered request or plan fails the signature or
the match: nothing executes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from permitchain.contract.errors import ContractError
from permitchain.contract.models import (
    SCHEMA,
    Action,
    Plan,
    PlanDecision,
    Step,
    canonical_json,
    fmt_ts,
    make_plan_id,
    parse_ts,
)
from permitchain.contract.reasons import OPERATOR_EMERGENCY_EXIT
from permitchain.contract.signing import OPERATOR, OPERATOR_CONTEXT, Signer, Verifier

OPERATOR_SOURCE = "operator"
FLATTEN = "flatten"


def is_operator_plan(plan: Plan) -> bool:
    return plan.source == OPERATOR_SOURCE or bool(plan.operator_request)


def make_request(
    *, symbol: str, reason: str, operator: str, mode: str, now: float, ttl_s: float, signer: Signer
) -> dict[str, Any]:
    """A signed flatten request for ``symbol``, valid ``ttl_s`` seconds from ``now``."""
    request_id = secrets.token_hex(8)
    req: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": FLATTEN,
        "request_id": request_id,
        "plan_id": make_plan_id(
            symbol, Action.FULL_CLOSE_PROPOSED.value, 0, 0, "OPERATOR", request_id
        ),
        "symbol": symbol,
        "action": Action.FULL_CLOSE_PROPOSED.value,
        "mode": mode,
        "reason": reason,
        "operator": operator,
        "created_at": fmt_ts(now),
        "expires_at": fmt_ts(now + ttl_s),
    }
    signer.stamp(req, OPERATOR_CONTEXT)
    return req


def flatten_plan(req: Mapping[str, Any]) -> Plan:
    """The one plan a request makes (raises ContractError for a malformed request)."""
    try:
        if req.get("schema") != SCHEMA or req.get("kind") != FLATTEN:
            raise ValueError("schema/kind")
        if req.get("action") != Action.FULL_CLOSE_PROPOSED.value:
            raise ValueError("action")
        created = parse_ts(req.get("created_at"), "created_at")
        expires = parse_ts(req.get("expires_at"), "expires_at")
        return Plan(
            plan_id=req.get("plan_id"),
            symbol=req.get("symbol"),
            action=Action.FULL_CLOSE_PROPOSED.value,
            decision=PlanDecision.EXECUTE,
            reason_codes=(OPERATOR_EMERGENCY_EXIT,),
            close_fraction=Decimal(1),
            steps=(Step(step="CLOSE_FULL", type="market_reduce_only", fraction=Decimal(1)),),
            mode=str(req.get("mode")),
            source=OPERATOR_SOURCE,
            proposal_id=str(req.get("request_id")),
            proposal_ts=created,
            created_at=created,
            expires_at=expires,
            operator_request=canonical_json(dict(req)),
        )
    except (ValueError, TypeError) as e:
        raise ContractError(f"operator request: malformed ({e})") from None


def operator_problem(plan: Plan, verifier: Verifier, now: float) -> str:
    """What is wrong with an operator plan's request, or ``""`` (verified, unexpired, and the
    plan is exactly the request's)."""
    if not plan.operator_request:
        return "operator plan without a signed request"
    try:
        req = json.loads(plan.operator_request)
    except json.JSONDecodeError:
        return "operator request: not JSON"
    if not isinstance(req, dict):
        return "operator request: not a JSON object"
    bad = verifier.problem(OPERATOR, req, now, OPERATOR_CONTEXT)
    if bad:
        return bad
    try:
        expected = flatten_plan(req)
    except ContractError as e:
        return str(e)
    if expected.model_dump(exclude={"operator_request"}) != plan.model_dump(
        exclude={"operator_request"}
    ):
        return "operator request: the plan is not the one the request makes"
    if now > expected.expires_at:
        return "operator request: expired"
    return ""
