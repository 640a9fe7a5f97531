"""``redis+cluster://`` / ``rediss+cluster://`` URLs: startup nodes, credentials, TLS."""

from __future__ import annotations

import pytest

from permitchain.contract.errors import ConfigError
from permitchain.contract.settings import Settings
from permitchain.store import is_cluster, parse_cluster_url, sync_client


def test_nodes_and_credentials() -> None:
    nodes, kw = parse_cluster_url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001/0")
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert kw == {"username": "app", "password": "s3cret"}
    assert parse_cluster_url("redis+cluster://h:1") == ([("h", 1)], {})


def test_tls_and_ca() -> None:
    nodes, kw = parse_cluster_url("rediss+cluster://pw@h:6379?ssl_ca_certs=/etc/ca.pem")
    assert nodes == [("h", 6379)]
    assert kw == {"username": None, "password": "pw", "ssl": True, "ssl_ca_certs": "/etc/ca.pem"}


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://h:1/3",
        "redis+cluster://h",
        "redis+cluster://:1",
        "redis+cluster://h:1?socket_timeout=1",
    ],
)
def test_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_cluster_url(url)


def test_settings_accept_cluster_urls_and_client_is_cluster() -> None:
    assert Settings(redis_url="redis+cluster://h:1").redis_url == "redis+cluster://h:1"
    assert Settings(redis_url="rediss+cluster://h:1").redis_url == "rediss+cluster://h:1"
    plain = sync_client("redis://127.0.0.1:1/0")
    assert not is_cluster(plain)
    plain.close()
