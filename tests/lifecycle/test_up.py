"""``permitchain up`` as an operator runs it: it honours REDIS_URL (and says which server,
without the password); one per user (a second refuses in one line, exit 2, and leaves the
first and its discovery file alone); SIGKILL of ``up`` takes its services and its embedded
server with it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from permitchain.contract.keys import SERVICES, Keys
from tests.lifecycle.helpers import Up, await_gone, children_of, cli, cli_env, error_lines

pytestmark = pytest.mark.slow


def test_up_runs_on_redis_url(
    redis_url: str, r: redis.Redis, keys: Keys, prefix: str, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "run", REDIS_URL=redis_url, KEY_PREFIX=prefix, METRICS_PORT="0")
    up = Up(env)
    try:
        header = up.wait_line("permitchain ")
        assert f"redis: REDIS_URL {redis_url}" in header
        up.wait_line("up:")
        beats = {name: r.get(keys.heartbeat(name)) for name in SERVICES}
        assert all(beats.values()), beats  # the services run on the session's server
        pids = {json.loads(str(b))["pid"] for b in beats.values()}
        assert pids <= set(children_of(up.proc.pid))
        assert not (tmp_path / "run" / f"permitchain-{os.getuid()}" / "redis_url").exists()
    finally:
        up.stop()
    assert up.proc.returncode == 0
    assert not any(r.get(keys.heartbeat(name)) for name in SERVICES)


def test_up_shows_no_password(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "run", REDIS_URL="redis://ops:s3cret@127.0.0.1:1/0")
    out = cli(env, "up", timeout_s=30)
    assert out.returncode == 2
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and "REDIS_URL" in lines[0], out.stderr
    assert "s3cret" not in out.stdout + out.stderr and "ops:***@127.0.0.1:1" in lines[0]


def test_second_up_refuses_and_sigkill_takes_the_children(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "run", METRICS_PORT="0")
    first = Up(env)
    kids: list[int] = []
    try:
        first.wait_line("up:")
        url_file = tmp_path / "run" / f"permitchain-{os.getuid()}" / "redis_url"
        url = url_file.read_text()
        kids = children_of(first.proc.pid)
        assert len(kids) == len(SERVICES) + 1  # the services and the embedded server

        second = cli(env, "up", timeout_s=30)
        assert second.returncode == 2
        lines = error_lines(second.stderr)
        assert len(lines) == 1, second.stderr
        assert "another `permitchain up` is running" in lines[0]
        assert f"pid {first.proc.pid}" in lines[0]
        assert first.proc.poll() is None and url_file.read_text() == url
        assert cli(env, "status", "--json").returncode in (0, 1)  # still found and answering

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert await_gone(kids) == []
    finally:
        first.stop()
        for pid in kids:  # never leave orphans behind, whatever the outcome
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_service_stops_when_its_supervision_pipe_closes(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """The portable half of "children die with their parent": no parent-death signal here,
    only the pipe. Closing its write end (what the kernel does when the parent dies) stops
    the service as SIGTERM would (exit 0)."""
    read_fd, write_fd = os.pipe()
    env = cli_env(
        tmp_path,
        REDIS_URL=redis_url,
        KEY_PREFIX=prefix,
        METRICS_PORT="0",
        PERMITCHAIN_SUPERVISOR_FD=str(read_fd),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "permitchain", "run", "governor"],
        env=env,
        pass_fds=(read_fd,),
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(read_fd)
    r = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 30
        while not r.exists(Keys(prefix).heartbeat("governor")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        os.close(write_fd)
        write_fd = -1
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        assert "the process that started this service is gone" in proc.stderr.read()
    finally:
        r.close()
        if write_fd >= 0:
            os.close(write_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
