"""The console's JSON API in-process (httpx over ASGI) on a real server: reads equal the CLI's
``--json``, writes go through the CLI's own functions and audit, every bad input is a 4xx
naming the problem, Redis unreachable is a 503, never a 500."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from permitchain.contract.keys import Keys
from permitchain.contract.reasons import QTY_MISMATCH
from permitchain.contract.settings import Settings
from permitchain.exchange.sim import SimExchange
from permitchain.ops import health, history
from tests.console.helpers import AUTH, free_port, in_process

READS = [
    "/api/status",
    "/api/plans",
    "/api/permits",
    "/api/positions",
    "/api/trading-state",
    "/api/plans/nope",
    "/api/openapi.json",
]


def test_reads_need_the_token_unless_public(redis_url: str, prefix: str) -> None:
    async def body(http: httpx.AsyncClient, _r: Any) -> list[tuple[int, int, int]]:
        out = []
        for path in READS[:-2]:
            none = await http.get(path)
            wrong = await http.get(path, headers={"Authorization": "Bearer wrong-token-123456"})
            ok = await http.get(path, headers=AUTH)
            out.append((none.status_code, wrong.status_code, ok.status_code))
            assert none.headers["www-authenticate"] == "Bearer"
        return out

    assert set(in_process(redis_url, prefix, body)) == {(401, 401, 200)}

    async def public(http: httpx.AsyncClient, _r: Any) -> int:
        return (await http.get("/api/status")).status_code

    assert in_process(redis_url, prefix, public, console_public_read=True) == 200


def test_status_plans_permits_explain_are_the_cli_json(
    redis_url: str, prefix: str, settings: Settings
) -> None:
    async def body(http: httpx.AsyncClient, r: Any) -> None:
        k = Keys(prefix)
        st = (await http.get("/api/status", headers=AUTH)).json()
        expect = (await health.gather(r, k, settings)).to_dict()
        assert st.keys() == expect.keys()
        assert st["services"].keys() == expect["services"].keys()
        assert st["healthy"] is expect["healthy"] is False  # no service runs here
        assert (await http.get("/api/plans?last=5", headers=AUTH)).json() == []
        assert (await http.get("/api/permits", headers=AUTH)).json() == []
        nf = await http.get("/api/plans/nope", headers=AUTH)
        assert nf.status_code == 404 and "plan nope" in nf.json()["error"]
        assert await history.explain(r, k, "nope") is None

    in_process(redis_url, prefix, body)


def test_halt_reduce_resume_audited_with_the_operator(redis_url: str, prefix: str) -> None:
    k = Keys(prefix)

    async def body(http: httpx.AsyncClient, r: Any) -> list[dict[str, Any]]:
        res = await http.post(
            "/api/trading-state/halt",
            json={"reason": "exchange incident"},
            headers={**AUTH, "X-Operator": "bob"},
        )
        assert res.status_code == 200, res.text
        assert res.json() == {"before": "ACTIVE", "after": "HALTED", "operator": "bob@alice"}
        assert await r.get(k.trading_state) == "HALTED"
        state = (await http.get("/api/trading-state", headers=AUTH)).json()
        assert state["state"] == "HALTED"
        assert state["last_change"]["context"]["operator"] == "bob@alice"
        res = await http.post("/api/trading-state/resume", json={}, headers=AUTH)
        assert res.json()["after"] == "ACTIVE"
        assert await r.get(k.trading_state) == "ACTIVE"
        return [
            json.loads(f["context"]) | {"reason": f["reason"]}
            for _i, f in await r.xrange(k.decisions)
        ]

    audit = in_process(redis_url, prefix, body)
    assert [(a["after"], a["operator"], a["reason"]) for a in audit] == [
        ("HALTED", "bob@alice", "exchange incident"),
        ("ACTIVE", "alice", "(no reason given)"),
    ]


def test_writes_refused_without_a_valid_token(redis_url: str, prefix: str) -> None:
    async def body(http: httpx.AsyncClient, r: Any) -> tuple[int, int]:
        none = await http.post("/api/trading-state/halt", json={"reason": "x"})
        wrong = await http.post(
            "/api/trading-state/halt",
            json={"reason": "x"},
            headers={"Authorization": "Bearer not-the-token-1234"},
        )
        assert await r.get(Keys(prefix).trading_state) is None
        return none.status_code, wrong.status_code

    assert in_process(redis_url, prefix, body) == (401, 401)

    async def no_token_configured(http: httpx.AsyncClient, r: Any) -> tuple[int, str, int]:
        res = await http.post("/api/trading-state/halt", json={}, headers=AUTH)
        reads = await http.get("/api/trading-state")  # loopback, no token: reads are open
        return res.status_code, res.json()["error"], reads.status_code

    code, error, reads = in_process(redis_url, prefix, no_token_configured, console_token=None)
    assert (code, reads) == (403, 200) and "no CONSOLE_TOKEN" in error


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/api/trading-state/halt", {"reason": "x", "bogus": 1}, "bogus"),
        ("/api/trading-state/halt", {"reason": 5}, "reason"),
        ("/api/trading-state/explode", {"reason": "x"}, "action"),
        ("/api/proposals", {"action": "PARTIAL_50"}, "symbol"),
        ("/api/proposals", {"symbol": "BTCUSDT", "action": "PARTIAL_50", "tranche": -1}, "tranche"),
        ("/api/proposals", {"symbol": "BTCUSDT", "action": "SELL_ALL"}, "action"),
        (
            "/api/proposals",
            {"symbol": "BTCUSDT", "action": "PARTIAL_50", "kill_score": "x"},
            "kill_score",
        ),
        ("/api/proposals?wait=-1", {"symbol": "BTCUSDT", "action": "PARTIAL_50"}, "wait"),
        ("/api/reconcile/btc usdt", {}, "symbol"),
        ("/api/reconcile/BTCUSDT", {"confirm": "maybe"}, "confirm"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    redis_url: str, prefix: str, path: str, payload: dict[str, Any], field: str
) -> None:
    async def body(http: httpx.AsyncClient, _r: Any) -> httpx.Response:
        return await http.post(path, json=payload, headers=AUTH)

    res = in_process(redis_url, prefix, body)
    assert res.status_code == 422, res.text
    assert field in res.json()["error"]


def test_malformed_json_and_wrong_types_never_500(redis_url: str, prefix: str) -> None:
    async def body(http: httpx.AsyncClient, _r: Any) -> list[int]:
        codes = []
        for raw in (b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b'{"reason": {"a": 1}}'):
            res = await http.post(
                "/api/trading-state/halt",
                content=raw,
                headers={**AUTH, "Content-Type": "application/json"},
            )
            codes.append(res.status_code)
        for q in ("last=0", "last=abc", "last=100000"):
            codes.append((await http.get(f"/api/plans?{q}", headers=AUTH)).status_code)
        codes.append(
            (await http.get("/api/events", headers={**AUTH, "Last-Event-ID": "x"})).status_code
        )
        codes.append((await http.get("/api/plans/" + "x" * 500, headers=AUTH)).status_code)
        return codes

    assert set(in_process(redis_url, prefix, body)) == {422}

    async def elsewhere(http: httpx.AsyncClient, _r: Any) -> list[httpx.Response]:
        return [
            await http.get("/api/nope", headers=AUTH),
            await http.delete("/api/trading-state", headers=AUTH),
        ]

    missing, wrong_method = in_process(redis_url, prefix, elsewhere)
    assert (missing.status_code, wrong_method.status_code) == (404, 405)
    assert "error" in missing.json() and "error" in wrong_method.json()


def test_redis_unreachable_is_a_503_with_the_reason(prefix: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def body(http: httpx.AsyncClient, _r: Any) -> list[httpx.Response]:
        return [await http.get(p, headers=AUTH) for p in READS[:-1]] + [
            await http.post("/api/trading-state/halt", json={"reason": "x"}, headers=AUTH),
            await http.get("/api/events", headers=AUTH),
        ]

    for res in in_process(dead, prefix, body):
        assert res.status_code == 503, res.text
        assert "redis unreachable" in res.json()["error"]


def test_openapi_document_lists_the_api(redis_url: str, prefix: str) -> None:
    async def body(http: httpx.AsyncClient, _r: Any) -> dict[str, Any]:
        res = await http.get("/api/openapi.json")
        assert res.status_code == 200
        return dict(res.json())

    paths = in_process(redis_url, prefix, body)["paths"]
    assert {
        "/api/status",
        "/api/plans",
        "/api/plans/{plan_id}",
        "/api/permits",
        "/api/positions",
        "/api/trading-state",
        "/api/trading-state/{action}",
        "/api/proposals",
        "/api/reconcile/{symbol}",
        "/api/events",
    } <= set(paths)


def test_positions_show_mismatch_and_in_flight_claim_and_reconcile(
    redis_url: str, prefix: str
) -> None:
    k = Keys(prefix)

    async def body(http: httpx.AsyncClient, r: Any) -> None:
        sim = SimExchange(r, k)
        await sim.list_symbol("BTCUSDT")
        await sim.set_position("BTCUSDT", Decimal("0.5"))
        await r.hset(
            k.snapshot("BTCUSDT"),
            mapping={
                "position_amt": "0.5",
                "side": "LONG",
                "ts_epoch": f"{time.time():.3f}",
                "mark_price": "100",
                "step_size": "0.001",
                "min_qty": "0.001",
            },
        )
        await r.hset(
            k.ledger("BTCUSDT"),
            mapping={"last_known_amt": "0.2", "last_known_side": "LONG", "epoch": "3"},
        )
        await r.set(k.inflight("BTCUSDT"), "plan-x", ex=30)
        rows = (await http.get("/api/positions", headers=AUTH)).json()["positions"]
        [row] = [p for p in rows if p["symbol"] == "BTCUSDT"]
        assert row["verdict"] == QTY_MISMATCH, row
        assert row["in_flight_plan"] == "plan-x" and 0 < row["in_flight_ttl_s"] <= 30
        preview = await http.post("/api/reconcile/BTCUSDT", json={}, headers=AUTH)
        assert preview.status_code == 200, preview.text
        assert preview.json()["dry_run"] is True and preview.json()["ledger_after"] == "0.5"
        assert await r.hget(k.ledger("BTCUSDT"), "last_known_amt") == "0.2"
        refused = await http.post("/api/reconcile/BTCUSDT", json={"confirm": True}, headers=AUTH)
        assert refused.status_code == 409 and "in flight" in refused.json()["error"]
        await r.delete(k.inflight("BTCUSDT"))
        done = await http.post(
            "/api/reconcile/BTCUSDT",
            json={"confirm": True, "reason": "fix"},
            headers={**AUTH, "X-Operator": "carol"},
        )
        assert done.status_code == 200 and done.json()["operator"] == "carol@alice"
        assert await r.hget(k.ledger("BTCUSDT"), "last_known_amt") == "0.5"
        assert await r.hget(k.ledger("BTCUSDT"), "epoch") == "4"
        unknown = await http.post("/api/reconcile/NOSUCH", json={}, headers=AUTH)
        assert unknown.status_code == 404

    in_process(redis_url, prefix, body)


def test_a_proposal_is_submitted_with_the_operator_as_its_source(
    redis_url: str, prefix: str
) -> None:
    k = Keys(prefix)

    async def body(http: httpx.AsyncClient, r: Any) -> tuple[dict[str, Any], dict[str, str]]:
        res = await http.post(
            "/api/proposals",
            json={"symbol": "BTCUSDT", "action": "PARTIAL_25", "tranche": 3},
            headers={**AUTH, "X-Operator": "bob"},
        )
        assert res.status_code == 200, res.text
        return res.json(), await r.hgetall(k.proposal("BTCUSDT"))

    out, stored = in_process(redis_url, prefix, body)
    assert stored["proposal_id"] == out["proposal_id"] and stored["tranche"] == "3"
    assert stored["source"] == "console:bob@alice" and out["operator"] == "bob@alice"
    assert len(out["plan_id"]) == 16 and "outcome" not in out
