"""The store layer: Redis clients and transports, the Lua scripts, and every multi-key atomic
step of the chain. The one place redis-py exceptions become :class:`StoreError`."""

from permitchain.store.client import (
    CLUSTER_SCHEMES,
    REDIS_FAULTS,
    AsyncRedis,
    SyncRedis,
    async_client,
    atranslate,
    first_fault,
    is_cluster,
    is_wrong_type,
    parse_cluster_url,
    parse_sentinel_url,
    shown_url,
    sync_client,
    translate,
    transport_name,
    wrong_type,
    wrong_type_sync,
)
from permitchain.store.protocol import AsyncPipeline

__all__ = [
    "CLUSTER_SCHEMES",
    "REDIS_FAULTS",
    "WRONG_KEY_TYPE",
    "AsyncPipeline",
    "AsyncRedis",
    "SyncRedis",
    "async_client",
    "atranslate",
    "first_fault",
    "is_cluster",
    "is_wrong_type",
    "parse_cluster_url",
    "parse_sentinel_url",
    "shown_url",
    "sync_client",
    "translate",
    "transport_name",
    "wrong_type",
    "wrong_type_sync",
]
