"""Run the chain's services as separate processes: used by ``up``, ``demo``, ``bench``, tests.

``Chain`` starts an embedded server when no ``REDIS_URL`` is given, starts each service as
``python -m permitchain run SERVICE`` with the same settings, waits for their heartbeats,
and stops (SIGTERM) or kills (SIGKILL) them on request. Each service stops by itself when
the process that started it dies (``permitchain.lifecycle``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

import permitchain
from permitchain.contract.keys import Keys
from permitchain.embedded import EmbeddedServer
from permitchain.lifecycle import SupervisionPipe, die_with_parent
from permitchain.services import SERVICE_NAMES
from permitchain.store import sync_client

SRC_DIR = str(Path(permitchain.__file__).resolve().parent.parent)


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    d = Path(base) / f"permitchain-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def url_file() -> Path:
    """Where ``permitchain up`` leaves the embedded server's URL for other commands."""
    return runtime_dir() / "redis_url"


def ephemeral_keys_dir() -> Path:
    """Where ``permitchain up`` leaves the Ed25519 keys it made for its run (``flatten``
    finds the operator key there)."""
    return runtime_dir() / "keys"


def key_env(directory: Path) -> dict[str, dict[str, str]]:
    """Per-service key settings for a ``keys generate`` directory: each gatekeeper gets its
    own private key, every service the public keys, the apply layer no private key at all."""
    pub = {"PERMIT_PUBLIC_KEYS_DIR": str(directory)}
    return {
        "governor": {**pub, "PERMIT_GOVERNOR_KEY_FILE": str(directory / "governor.key")},
        "position-brain": {**pub, "PERMIT_P33_KEY_FILE": str(directory / "p33.key")},
        "apply-layer": dict(pub),
        "exit-brain": dict(pub),
    }


def up_lock_file() -> Path:
    """Held (``flock``) by the running ``permitchain up``: one per user (``lifecycle.UpLock``)."""
    return runtime_dir() / "up.lock"


class Chain:
    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        log_dir: Path | None = None,
        prefer_path_server: bool = False,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        die_with_parent: bool = False,
        supervise: bool = True,
    ) -> None:
        self.env = dict(env or {})
        #: Per-service overrides (e.g. each service's own REDIS_URL with its ACL user).
        self.service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self.redis_url = redis_url or self.env.get("REDIS_URL")
        self.server: EmbeddedServer | None = None
        self.log_dir = log_dir
        self.prefer_path_server = prefer_path_server
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        #: Services (and the embedded server) also get SIGTERM when the thread that started
        #: them ends (``lifecycle.die_with_parent``): for ``up``, which starts everything
        #: from its main thread. ``supervise``: each service watches the supervision pipe
        #: and stops when this process is gone (off only for ``demo --keep``).
        self.die_with_parent = die_with_parent
        self.supervise = supervise
        self.pipe: SupervisionPipe | None = None

    def use_keys(self, directory: Path) -> None:
        """Run the services with the key pairs in ``directory`` (:func:`key_env`)."""
        for service, env in key_env(directory).items():
            self.service_env.setdefault(service, {}).update(env)

    # -- server -----------------------------------------------------------------------------
    def ensure_redis(self) -> str:
        if self.redis_url is None:
            self.server = EmbeddedServer(
                prefer_path=self.prefer_path_server, die_with_parent=self.die_with_parent
            ).start()
            self.redis_url = self.server.url
        self.env["REDIS_URL"] = self.redis_url
        return self.redis_url

    @property
    def keys(self) -> Keys:
        env = {**os.environ, **self.env}
        return Keys(env.get("KEY_PREFIX", "quantum"), shards=int(env.get("STREAM_SHARDS") or 1))

    def child_env(self, service: str | None = None) -> dict[str, str]:
        env = {**os.environ, **self.env, **self.service_env.get(service or "", {})}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC_DIR, env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # -- services ---------------------------------------------------------------------------
    def start(self, names: Iterable[str] = SERVICE_NAMES) -> None:
        self.ensure_redis()
        for name in names:
            self.start_service(name)

    def start_service(self, name: str) -> subprocess.Popen[bytes]:
        if name in self.procs and self.procs[name].poll() is None:
            return self.procs[name]
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            old = self._logs.pop(name, None)
            if old is not None:
                old.close()
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open while it runs
            self._logs[name] = out
        if self.pipe is None and self.supervise:
            self.pipe = SupervisionPipe()
        pipe = self.pipe
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "permitchain", "run", name],
            env={**self.child_env(name), **(pipe.child_env() if pipe else {})},
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            pass_fds=(pipe.read_fd,) if pipe else (),
            preexec_fn=die_with_parent() if self.die_with_parent else None,  # noqa: PLW1509
        )
        self.procs[name] = proc
        return proc

    def signal_service(self, name: str, sig: int) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(sig)

    def kill_service(self, name: str) -> None:
        self.signal_service(name, signal.SIGKILL)
        p = self.procs.get(name)
        if p is not None:
            p.wait(10)

    def stop_service(self, name: str, timeout_s: float = 15.0) -> int | None:
        p = self.procs.get(name)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def wait_ready(self, names: Iterable[str] = SERVICE_NAMES, timeout_s: float = 30.0) -> None:
        """Until every named service has written its heartbeat (raises on timeout/exit)."""
        r = sync_client(self.ensure_redis())
        pending = set(names)
        deadline = time.monotonic() + timeout_s
        try:
            while pending:
                for name in list(pending):
                    p = self.procs.get(name)
                    if p is not None and p.poll() is not None:
                        raise RuntimeError(f"{name} exited with {p.returncode}{self._tail(name)}")
                    hb = r.get(self.keys.heartbeat(name))
                    if hb and json.loads(hb).get("pid") == (p.pid if p else None):
                        pending.discard(name)
                if pending and time.monotonic() > deadline:
                    raise TimeoutError(f"no heartbeat from {sorted(pending)}")
                if pending:
                    time.sleep(0.05)
        finally:
            r.close()

    def _tail(self, name: str) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        return "\n" + path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_service(name)
        for f in self._logs.values():
            f.close()
        self._logs.clear()
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
        if self.server is not None:
            self.server.cleanup()
            self.server = None

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
