"""STREAM_SHARDS key names: unchanged with one shard, a stable shard per symbol, shard hash
tags whose slots fall in the shard's slot range; the setting's validation; ACL patterns
covering every shard. (The slot function against a real server's CLUSTER KEYSLOT:
tests/cluster/test_sharded_streams.py.)"""

from __future__ import annotations

import zlib

import pytest

from permitchain.contract.errors import ConfigError
from permitchain.contract.keys import MAX_SHARDS, SLOTS, Keys, crc16, key_slot, shard_tag
from permitchain.contract.settings import load_settings
from permitchain.security.acl import grants

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "BNBUSDT"]


def test_one_shard_keeps_the_unsharded_names() -> None:
    k = Keys("quantum")
    assert (k.plan_stream, k.permit_event_stream, k.result_stream) == (
        "quantum:stream:apply.plan",
        "quantum:stream:permit.events",
        "quantum:stream:apply.result",
    )
    for sym in SYMBOLS:
        assert k.shard_of(sym) == 0
        assert k.plan_stream_for(sym) == "quantum:stream:apply.plan"
        assert k.permit_event_stream_for(sym) == "quantum:stream:permit.events"
        assert k.result_stream_for(sym) == "quantum:stream:apply.result"
    assert k.plan_streams == ("quantum:stream:apply.plan",)
    assert k.result_streams == ("quantum:stream:apply.result",)
    assert k.permit_event_streams == ("quantum:stream:permit.events",)
    assert load_settings({}, env_file=()).keys == Keys("quantum", shards=1)


def test_a_symbols_shard_is_crc32_modulo_n() -> None:
    for n in (2, 3, 5, 16):
        k = Keys("p", shards=n)
        for sym in SYMBOLS:
            assert k.shard_of(sym) == zlib.crc32(sym.encode()) % n
            i = k.shard_of(sym)
            assert k.plan_stream_for(sym) == k.plan_streams[i]
            assert k.result_stream_for(sym) == k.result_streams[i]
            assert k.permit_event_stream_for(sym) == k.permit_event_streams[i]
    # pinned: a change of the function would move every deployment's symbols
    k3 = Keys("quantum", shards=3)
    assert [k3.shard_of(s) for s in SYMBOLS] == [0, 0, 2, 1, 2, 2, 2]
    assert k3.plan_streams == (
        "quantum:stream:apply.plan:{s0.0}",
        "quantum:stream:apply.plan:{s1.1}",
        "quantum:stream:apply.plan:{s2.1}",
    )


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 16, 100, MAX_SHARDS])
def test_each_shards_slot_is_in_its_range(n: int) -> None:
    k = Keys("quantum", shards=n)
    for i in range(n):
        lo, hi = i * SLOTS // n, (i + 1) * SLOTS // n
        slots = {key_slot(s[i]) for s in (k.plan_streams, k.result_streams, k.permit_event_streams)}
        assert len(slots) == 1  # a shard's three streams share one slot
        assert lo <= slots.pop() < hi
        assert shard_tag(i, n).startswith(f"s{i}.")


def test_crc16_and_key_slot() -> None:
    assert crc16(b"123456789") == 0x31C3  # the XMODEM check value
    assert key_slot("foo") == 12182  # Redis Cluster specification examples
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == crc16(b"foo{}{bar}") % SLOTS  # empty tag: whole key
    assert key_slot("foo{{bar}}zap") == crc16(b"{bar") % SLOTS


def test_unsharded_names_are_refused_with_several_shards() -> None:
    k = Keys("quantum", shards=2)
    for attr in ("plan_stream", "permit_event_stream", "result_stream"):
        with pytest.raises(ValueError, match=f"{attr}_for"):
            getattr(k, attr)
    for bad in (0, -1, MAX_SHARDS + 1):
        with pytest.raises(ValueError):
            Keys("quantum", shards=bad)
    with pytest.raises(TypeError):
        Keys("quantum", shards=True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAM_SHARDS": "0"}, "STREAM_SHARDS"),
        ({"STREAM_SHARDS": "1.0"}, "STREAM_SHARDS: .*integer"),
        ({"STREAM_SHARDS": "+2"}, "STREAM_SHARDS: .*integer"),
        ({"STREAM_SHARDS": "true"}, "STREAM_SHARDS: .*integer"),
        ({"STREAM_SHARDS": str(MAX_SHARDS + 1)}, "STREAM_SHARDS"),
        ({"STREAM_SHARDS": "3", "STREAM_SHARDS_OWNED": "0,3"}, "STREAM_SHARDS_OWNED: .*shard 3"),
        ({"STREAM_SHARDS": "3", "STREAM_SHARDS_OWNED": "1,1"}, "STREAM_SHARDS_OWNED: .*twice"),
        ({"STREAM_SHARDS": "3", "STREAM_SHARDS_OWNED": "a"}, "STREAM_SHARDS_OWNED"),
        ({"STREAM_SHARDS_OWNED": "1"}, "STREAM_SHARDS_OWNED: .*shard 1"),
    ],
)
def test_shard_settings_are_validated(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, env_file=())


def test_owned_shards() -> None:
    s = load_settings({"STREAM_SHARDS": "4", "STREAM_SHARDS_OWNED": "3, 1"}, env_file=())
    assert s.owned_shards == (1, 3) and s.keys == Keys("quantum", shards=4)
    assert load_settings({"STREAM_SHARDS": "4"}, env_file=()).owned_shards == (0, 1, 2, 3)


def test_acl_patterns_cover_every_shard() -> None:
    k = Keys("quantum", shards=3)
    patterns = {
        svc: {p for g in grants(svc, k) for p in g.keys}
        for svc in ("governor", "position-brain", "apply-layer", "client")
    }
    for s in k.plan_streams:
        for svc in ("governor", "position-brain", "apply-layer"):
            assert f"~{s}" in patterns[svc]
    for s in k.result_streams:
        assert f"~{s}" in patterns["governor"] and f"%W~{s}" in patterns["apply-layer"]
        assert f"%R~{s}" in patterns["client"]
    for s in k.permit_event_streams:
        assert f"%W~{s}" in patterns["governor"] and f"%W~{s}" in patterns["position-brain"]
    assert not any("apply.plan" in p for p in patterns["client"])
