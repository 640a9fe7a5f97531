"""The operator commands against the chain on the local cluster: the single-node tests of
tests/ops/test_commands.py, unchanged, collected here with the cluster's ``redis_url`` (the
CLI as a subprocess with ``REDIS_URL=redis+cluster://…``): ``explain``, ``plans``,
``permits``, ``status``, ``proof --canary`` (its multi-stream reads and plan publish take the
cluster paths; ``SCAN`` visits every master)."""

from __future__ import annotations

import pytest

from tests.ops.test_commands import test_explain_tells_the_reference_scenario as _explain
from tests.ops.test_commands import test_status_and_proof_see_a_stopped_position_brain as _proof

pytestmark = pytest.mark.slow

test_explain_on_cluster = _explain
test_status_and_proof_on_cluster = _proof
