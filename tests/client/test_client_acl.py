"""The client's ACL user (``permitchain acl``): a bot can propose, follow, claim and report
through the gate with it, and can write no permit, no plan, no trading state."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.security.acl import CLIENT, setuser_args, username
from permitchain.services import SERVICE_NAMES
from permitchain.store.scripts import Scripts
from permitchain_client import ClaimVerdict, Client

from .conftest import SYMBOL, Running
from .test_gate import place

pytestmark = pytest.mark.slow


@pytest.fixture
def acl_urls(r: redis.Redis, keys: Keys, redis_url: str) -> Iterator[dict[str, str]]:
    if int(r.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("ACL selectors need a Redis-compatible server >= 7")
    suffix, pw = f"-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    host = urlsplit(redis_url)
    users = (*SERVICE_NAMES, CLIENT)
    for user in users:
        r.execute_command(*setuser_args(user, keys, pw, suffix))
    yield {u: f"redis://{username(u, suffix)}:{pw}@{host.hostname}:{host.port}/0" for u in users}
    r.execute_command("ACL", "DELUSER", *[username(u, suffix) for u in users])


def refused(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_gate_flow_as_the_client_user(
    start_chain: Callable[..., Running], r: redis.Redis, acl_urls: dict[str, str], keys: Keys
) -> None:
    services = {s: u for s, u in acl_urls.items() if s != CLIENT}
    run = start_chain(service_urls=services)
    assert run.keys == keys
    with Client.from_url(acl_urls[CLIENT], key_prefix=keys.prefix) as bot:
        plan_id = bot.propose(
            SYMBOL, "PARTIAL_50", kill_score="0.7", tranche=1, executor="external"
        )
        claim = bot.gate.claim(plan_id, timeout=20)
        assert claim.verdict is ClaimVerdict.OK and claim.qty == Decimal("0.031")
        order_id = place(run, claim.qty, claim.client_order_id)
        assert bot.gate.report(plan_id, "filled", claim.qty, "107", order_id).accepted
        assert bot.wait_result(plan_id, timeout=5).status == "filled"
        assert bot.explain(plan_id).state == "filled"
        assert bot.trading_state().value == "ACTIVE"
    logs = "".join(p.read_text() for p in run.chain.log_dir.glob("*.log"))  # type: ignore[union-attr]
    assert "NOPERM" not in logs and "NoPermission" not in logs


def test_the_client_user_cannot_write_what_the_chain_decides(
    r: redis.Redis, acl_urls: dict[str, str], keys: Keys
) -> None:
    bot = redis.Redis.from_url(acl_urls[CLIENT], decode_responses=True)
    plan = "0123456789abcdef"
    gkey, pkey = keys.permit_governor(plan), keys.permit_p33(plan)
    r.set(gkey, "{}")
    assert refused(lambda: bot.set(gkey, "{}"))
    assert refused(lambda: bot.set(pkey, "{}"))
    assert refused(lambda: bot.delete(gkey))
    assert refused(lambda: bot.xadd(keys.plan_stream, {"plan_id": plan}))
    assert refused(lambda: bot.set(keys.trading_state, "ACTIVE"))
    assert refused(lambda: bot.hset(keys.ledger(SYMBOL), "last_known_amt", "0"))
    assert refused(
        lambda: Scripts(bot).consume_permits(
            keys=[gkey, pkey, keys.exec_record(plan)], args=[plan, SYMBOL, 1, "try", 60]
        )
    )
    assert r.exists(gkey)
    bot.close()


def test_permitchain_acl_prints_the_client_user(redis_url: str, keys: Keys) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "KEY_PREFIX": keys.prefix, "COLUMNS": "400"}
    out = subprocess.run(
        [sys.executable, "-m", "permitchain", "acl"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "# client: REDIS_URL=redis://permitchain-client:<password>@host:port" in out
    assert '">${PERMITCHAIN_ACL_PASSWORD_CLIENT}"' in out
    assert f"%W~{keys.prefix}:harvest:proposal:*" in out
