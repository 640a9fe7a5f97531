"""The CLI as an operator runs it: ``python -m permitchain …`` as a real process, with an
environment of the test's choosing (its own runtime folder, so no other ``up`` is seen)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Settings a test passes explicitly; the rest of the environment is kept.
CLEARED = (
    "REDIS_URL",
    "KEY_PREFIX",
    "METRICS_PORT",
    "EXCHANGE",
    "APPLY_MODE",
    "PERMITCHAIN_ENV_FILE",
    "LOG_LEVEL",
)


def cli_env(runtime: Path, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in CLEARED}
    runtime.mkdir(parents=True, exist_ok=True)
    return {**base, "XDG_RUNTIME_DIR": str(runtime), "PYTHONUNBUFFERED": "1", **env}


def cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "permitchain", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


class Up:
    """``permitchain up`` as a process; its stdout lines read by a thread into a queue, so
    a test waits for a line (bounded) instead of sleeping."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "permitchain", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        out = self.proc.stdout
        self.stderr: list[str] = []
        self.readers = [
            threading.Thread(target=lambda: [self.lines.put(x) for x in out], daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for t in self.readers:
            t.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_line(self, start: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            noisy = [x for x in self.stderr if " INFO " not in x][-8:]
            assert left > 0, f"no line starting {start!r}; saw {self.seen}; {noisy}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(start):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.readers:  # each ends at end-of-file (every writer is gone)
            t.join(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def await_gone(pids: list[int], timeout_s: float = 20.0) -> list[int]:
    """Poll until every pid is gone (bounded); returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
