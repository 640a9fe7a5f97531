"""Child processes that die with their parent, and one ``permitchain up`` per user.

Every process ``Chain`` starts (the services and the embedded server) is tied to the process
that started it in two ways, so a ``kill -9`` of ``permitchain up`` never leaves a chain
trading on its own:

* **parent-death signal** (Linux): the child asks the kernel, between fork and exec, for
  SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and exits at once if the
  parent is already gone by then;
* **supervision pipe** (any POSIX system): a service inherits the read end of a pipe whose
  write end only the parent holds (``PERMITCHAIN_SUPERVISOR_FD`` names it). When the parent
  dies the kernel closes the write end, the read end reports end-of-file, and the service
  stops as on SIGTERM.

:class:`UpLock` is an advisory lock (``flock``) on a file in the user's runtime directory,
held by ``permitchain up`` for its whole life and released by the kernel when it dies,
however it dies: a second ``up`` refuses while it is held, and leaves the first one's
discovery file alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

#: Names the supervision pipe's read end in a service's environment.
SUPERVISOR_FD_ENV = "PERMITCHAIN_SUPERVISOR_FD"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux only;
    elsewhere None: the supervision pipe alone ties a service to its parent)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody to signal us
            os._exit(1)

    return preexec


class SupervisionPipe:
    """The parent keeps ``write_fd`` open (never written); each child gets ``read_fd``."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self.write_fd, False)

    def child_env(self) -> dict[str, str]:
        return {SUPERVISOR_FD_ENV: str(self.read_fd)}

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def supervisor_fd(environ: dict[str, str] | None = None) -> int | None:
    """The supervision pipe's read end this process inherited, if any."""
    raw = (os.environ if environ is None else environ).get(SUPERVISOR_FD_ENV, "")
    if not raw.isdigit():
        return None
    fd = int(raw)
    try:
        os.fstat(fd)
    except OSError:
        return None
    return fd


class UpLockHeld(Exception):
    """Another ``permitchain up`` holds the lock: ``pid`` is what it wrote there."""

    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.pid = pid


class UpLock:
    """One ``permitchain up`` per user: an ``flock`` held while it runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> UpLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UpLockHeld(pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        """True while some ``permitchain up`` holds the lock (for other commands)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
