"""Least privilege on a real server: each service's ACL user can do its job and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from permitchain.chain import Chain
from permitchain.contract.keys import Keys
from permitchain.contract.models import make_plan_id
from permitchain.scenario import run_reference
from permitchain.security.acl import setuser_args, username
from permitchain.services import SERVICE_NAMES
from permitchain.store.scripts import Scripts

PLAN = make_plan_id("BTCUSDT", "PARTIAL_75", 0, 3)


@pytest.fixture
def users(r: redis.Redis, keys: Keys, redis_url: str) -> Iterator[dict[str, str]]:
    """One ACL user per service for this test's key prefix; yields service → URL."""
    if int(r.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("ACL selectors need a Redis-compatible server >= 7")
    suffix = f"-{uuid.uuid4().hex[:8]}"
    pw = uuid.uuid4().hex
    host = urlsplit(redis_url)
    urls = {}
    for svc in SERVICE_NAMES:
        r.execute_command(*setuser_args(svc, keys, pw, suffix))
        urls[svc] = f"redis://{username(svc, suffix)}:{pw}@{host.hostname}:{host.port}/0"
    yield urls
    r.execute_command("ACL", "DELUSER", *[username(s, suffix) for s in SERVICE_NAMES])


def as_user(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def refused(fn: Callable[[], Any]) -> bool:
    try:
        fn()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_each_forbidden_write_is_refused(users: dict[str, str], keys: Keys, r: redis.Redis) -> None:
    gov, p33 = as_user(users["governor"]), as_user(users["position-brain"])
    exit_brain, apply_layer = as_user(users["exit-brain"]), as_user(users["apply-layer"])
    gkey, pkey = keys.permit_governor(PLAN), keys.permit_p33(PLAN)
    # each gatekeeper may write its own permit ...
    assert gov.set(gkey, "{}", ex=60, nx=True)
    assert p33.set(pkey, "{}", ex=60, nx=True)
    # ... and never the other's, and neither may delete a permit
    assert refused(lambda: gov.set(pkey, "{}"))
    assert refused(lambda: p33.set(gkey, "{}"))
    assert refused(lambda: gov.delete(gkey))
    assert refused(lambda: gov.delete(pkey))
    assert refused(lambda: p33.delete(pkey))
    assert refused(lambda: p33.delete(gkey))
    # the exit brain writes proposals only: no permits, no plans, no exec records
    assert refused(lambda: exit_brain.set(gkey, "{}"))
    assert refused(lambda: exit_brain.delete(pkey))
    assert refused(lambda: exit_brain.xadd(keys.plan_stream, {"plan_id": PLAN}))
    assert refused(lambda: exit_brain.hset(keys.exec_record(PLAN), "state", "filled"))
    # nobody but the operator changes the trading state (the kill switch)
    for c in (gov, p33, exit_brain, apply_layer):
        assert refused(lambda c=c: c.set(keys.trading_state, "ACTIVE"))
    # gatekeepers cannot run the consume script (it deletes permits) ...
    for c in (gov, p33):
        assert refused(
            lambda c=c: Scripts(c).consume_permits(
                keys=[gkey, pkey, keys.exec_record(PLAN)], args=[PLAN, "BTCUSDT", 1, "try", 60]
            )
        )
    # ... only the apply layer (executor) can, and there it works
    out = Scripts(apply_layer).consume_permits(
        keys=[gkey, pkey, keys.exec_record(PLAN)], args=[PLAN, "BTCUSDT", 1, "try", 60]
    )
    assert "permit_invalid" in out  # "{}" is no permit: blocked, by value
    assert r.exists(gkey, pkey) == 2
    for c in (gov, p33, exit_brain, apply_layer):
        c.close()


@pytest.mark.slow
def test_reference_scenario_with_least_privilege(
    users: dict[str, str], redis_url: str, chain_factory: Callable[..., Chain]
) -> None:
    chain = chain_factory()
    chain.service_env = {svc: {"REDIS_URL": url} for svc, url in users.items()}

    assert run_reference(chain, redis_url, emit=lambda n, d: None).ok()
    logs = "".join(p.read_text() for p in (chain.log_dir or []).glob("*.log"))  # type: ignore[union-attr]
    assert "NOPERM" not in logs and "NoPermission" not in logs


def test_the_exit_brain_reads_its_plans_outcomes_and_writes_none(
    users: dict[str, str], r: redis.Redis, keys: Keys
) -> None:
    r.hset(keys.exec_record(PLAN), "state", "filled")
    brain = as_user(users["exit-brain"])
    try:
        assert brain.hget(keys.exec_record(PLAN), "state") == "filled"
        assert refused(lambda: brain.hset(keys.exec_record(PLAN), "state", "blocked"))
        assert refused(lambda: brain.hgetall(keys.exec_record(PLAN)))
    finally:
        brain.close()
