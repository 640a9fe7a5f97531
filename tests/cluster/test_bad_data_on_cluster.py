"""Bad bytes and wrong-type keys on the local cluster: the runner's raw reads and per-entry
decoding through the Redis Cluster client, and the single-node tests of the ops commands
and of the wrong-type rule, unchanged, collected here with the cluster's ``redis_url``."""

from __future__ import annotations

import asyncio

import pytest

from permitchain.contract.keys import Keys
from permitchain.store import async_client, is_cluster
from tests.ops.test_bad_keys_and_bytes import (
    test_entries_that_are_not_utf8_are_shown_escaped as _shown_escaped,
)
from tests.ops.test_bad_keys_and_bytes import (
    test_status_reports_a_ledger_of_the_wrong_type as _status_wrong_type,
)
from tests.reliability.poison import MODES, check, feed_poison
from tests.reliability.test_wrong_type_keys import (
    test_exec_record_of_the_wrong_type_ends_blocked_with_one_result as _exec_wrong_type,
)
from tests.reliability.test_wrong_type_keys import (
    test_p33_denies_naming_a_key_of_the_wrong_type as _p33_wrong_type,
)
from tests.reliability.test_wrong_type_keys import (
    test_sweep_skips_only_the_proposal_of_the_wrong_type as _sweep_wrong_type,
)


@pytest.mark.parametrize("reclaim", [False, True], ids=["read", "reclaimed"])
@pytest.mark.parametrize("mode", MODES)
def test_poison_entry_on_cluster(redis_url: str, keys: Keys, mode: str, reclaim: bool) -> None:
    client = async_client(redis_url)
    assert is_cluster(client)
    check(asyncio.run(feed_poison(client, keys, mode, reclaim=reclaim)), f"poison.{mode}")


test_status_wrong_type_on_cluster = _status_wrong_type
test_shown_escaped_on_cluster = _shown_escaped
test_exec_wrong_type_on_cluster = _exec_wrong_type
test_p33_wrong_type_on_cluster = _p33_wrong_type
test_sweep_wrong_type_on_cluster = _sweep_wrong_type
