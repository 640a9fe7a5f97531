"""``permitchain demo`` never reads REDIS_URL: pointed at a server holding a ledger (a
private one, so that no other test's keys come and go on it), it runs on its own embedded
server and prefix and leaves every key there as it was; it leaves no temporary folder
behind, and ``--logs DIR`` keeps logs with content."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from permitchain.contract.keys import Keys
from permitchain.embedded import EmbeddedServer
from tests.lifecycle.helpers import cli, cli_env

pytestmark = pytest.mark.slow


def snapshot(r: redis.Redis) -> dict[bytes, bytes]:
    """Every key on the server and its serialized value (DUMP): any change shows."""
    return {key: r.dump(key) for key in r.scan_iter(count=1000)}


@pytest.fixture
def live_url() -> Iterator[str]:
    """A server of its own, standing for the live one REDIS_URL names."""
    server = EmbeddedServer(prefer_path=True).start()
    try:
        yield server.url
    finally:
        server.cleanup()


def test_demo_leaves_the_redis_url_server_alone(
    live_url: str, keys: Keys, prefix: str, tmp_path: Path
) -> None:
    redis_url = live_url
    r = redis.Redis.from_url(redis_url, decode_responses=False)
    live = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        live.hset(keys.ledger("BTCUSDT"), mapping={"last_known_amt": "0.016", "epoch": "1"})
        before = snapshot(r)
        temp = tmp_path / "tmp"
        temp.mkdir()
        env = cli_env(tmp_path / "run", REDIS_URL=redis_url, KEY_PREFIX=prefix, TMPDIR=str(temp))
        out = cli(env, "demo", timeout_s=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert snapshot(r) == before  # not one key added, changed or removed
        assert "its own embedded" in out.stdout and "REDIS_URL is never used" in out.stdout
        assert redis_url not in out.stdout
        assert list(temp.iterdir()) == []  # no temporary folder left behind
    finally:
        r.close()
        live.close()


def test_demo_keeps_logs_with_content_when_asked(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    out = cli(cli_env(tmp_path / "run"), "demo", "--logs", str(logs), timeout_s=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"service logs in {logs}" in out.stdout.replace("\n", "")
    files = sorted(p.name for p in logs.glob("*.log"))
    assert files == ["apply-layer.log", "exit-brain.log", "governor.log", "position-brain.log"]
    applied = (logs / "apply-layer.log").read_text()
    assert "[DECISION] layer=planner" in applied and "[ORDER] OUTCOME" in applied
    # the permit tables show ISO UTC times, never raw epoch seconds
    assert re.search(r"created_at\s+│ \d{4}-\d\d-\d\dT[\d:.]+Z", out.stdout), out.stdout
    assert not re.search(r"\b1\d{9}\.\d+", out.stdout)
