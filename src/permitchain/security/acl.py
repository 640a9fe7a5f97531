"""Redis ACL rules giving each service only the keys and commands it needs.

One user per service. Permissions are Redis 7 *selectors*: each ``(commands keys)`` pair
allows those commands on those keys only, so the governor may ``SET`` governor permits but
neither P3.3 permits nor ``DEL`` on any permit, the position brain may write P3.3 permits
only, and only the apply layer (the executor's consume script) may delete permits.

Scripts run with their caller's permissions: every command a script calls is checked too,
so the selectors below cover the scripts each service runs.

One more user, ``client`` (:data:`CLIENT`), is for a bot using ``permitchain_client``:
proposals, reading results, the audit stream, the trading state and heartbeats, and the
gate's claim and report scripts. It can write no permit, no plan and no trading state.
"""

from __future__ import annotations

from dataclasses import dataclass

from permitchain.contract.keys import Keys

#: Commands every client needs: connection set-up, script loading, keyless reads. (redis-py
#: also sends CLIENT SETINFO, which servers before 7.2 lack; it ignores a refusal.)
BASE = (
    "+ping",
    "+hello",
    "+client|setname",
    "+select",
    "+info",
    "+script|load",
    "+script|exists",
    "+time",
    "+scan",
    "+multi",
    "+exec",
    "+discard",
)
#: (+type: a key of the wrong type is reported naming the type it holds: store.wrong_type)
GROUP_CMDS = (
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xgroup|create",
    "+xinfo|stream",
    "+xinfo|groups",
    "+xpending",
    "+type",
)
SIM_READ = ("+hgetall", "+hget", "+hmget", "+smembers", "+xread", "+xinfo|stream", "+exists")
SIM_WRITE = (
    *SIM_READ,
    "+evalsha",
    "+eval",
    "+hset",
    "+hsetnx",
    "+incr",
    "+incrby",
    "+expire",
    "+xadd",
    "+sadd",
    "+exists",
    "+type",  # sim_order.lua checks the fills stream's type before it writes anything
)


#: The ACL user of a bot using permitchain_client (not a service: nothing runs as it here).
CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Grant:
    commands: tuple[str, ...]
    keys: tuple[str, ...]  # ACL key patterns: "~p" read+write, "%R~p" read, "%W~p" write

    def selector(self) -> str:
        return "(" + " ".join([*self.keys, *self.commands]) + ")"


def _each(kind: str, streams: tuple[str, ...]) -> tuple[str, ...]:
    """One key pattern per shard stream (``kind``: ``~``, ``%R~`` or ``%W~``)."""
    return tuple(f"{kind}{s}" for s in streams)


def grants(service: str, k: Keys) -> list[Grant]:
    p = k.prefix
    common = [
        Grant(("+set", "+del"), (f"~{k.heartbeat(service)}",)),
        Grant(("+xadd",), (f"%W~{k.decisions}", f"%W~{k.deadletter}")),
    ]

    def group(streams: tuple[str, ...]) -> Grant:
        return Grant(GROUP_CMDS, _each("~", streams))

    if service == "governor":
        return [
            *common,
            group(k.plan_streams),
            group(k.result_streams),
            Grant(("+get",), (f"%R~{k.trading_state}",)),
            Grant(("+hmget", "+hgetall", "+type"), (f"%R~{p}:position:snapshot:*",)),
            Grant(("+set",), (f"%W~{p}:permit:{{*",)),
            Grant(("+xadd",), _each("%W~", k.permit_event_streams)),
            Grant(
                (
                    "+evalsha",
                    "+eval",
                    "+zadd",
                    "+zrem",
                    "+zcard",
                    "+zcount",
                    "+zrange",
                    "+zrangebyscore",
                    "+zremrangebyscore",
                    "+zscore",
                    "+get",
                    "+set",
                    "+incrbyfloat",
                    "+expire",
                    "+pexpire",
                    "+del",
                    "+hset",
                    "+hget",
                    "+hgetall",
                    "+hdel",
                    "+type",
                ),
                (f"~{p}:gov:*",),
            ),
        ]
    if service == "position-brain":
        return [
            *common,
            group(k.plan_streams),
            group(k.result_streams),
            # snapshot_touch.lua: a full poll's unchanged snapshots (EXISTS, HSET)
            Grant(
                ("+hset", "+expire", "+hgetall", "+exists", "+evalsha", "+eval", "+type"),
                (f"~{p}:position:snapshot:*",),
            ),
            # +hdel: a Redis Cluster's ledger audit outbox fields (position_brain.state)
            Grant(
                (
                    "+hgetall",
                    "+hget",
                    "+hmget",
                    "+hlen",
                    "+hset",
                    "+hsetnx",
                    "+hdel",
                    "+exists",
                    "+set",
                    "+expire",
                    "+type",
                ),
                (f"~{p}:position:ledger:*", f"~{p}:position:applied:*"),
            ),
            # ledger_apply.lua: the ledger's compare-and-set with its audit entry
            Grant(
                ("+evalsha", "+eval", "+hget", "+hset", "+xadd"),
                (f"~{p}:position:ledger:*", f"~{k.decisions}"),
            ),
            # ... which also drops the plan's in-flight claim (its GET and DEL: below)
            Grant(
                ("+evalsha", "+eval"),
                (f"~{p}:position:ledger:*", f"~{k.decisions}", f"~{p}:position:inflight:*"),
            ),
            Grant(
                ("+set", "+get", "+del", "+evalsha", "+eval", "+type"),
                (f"~{p}:position:inflight:*",),
            ),
            # p33_claim_permit.lua: the claim with the allow, its event and audit entry
            # (its SET, GET, EXISTS and XADDs: the selectors of those keys)
            Grant(
                ("+evalsha", "+eval"),
                (
                    f"~{p}:position:inflight:*",
                    f"~{p}:permit:p33:{{*",
                    *_each("~", k.permit_event_streams),
                    f"~{k.decisions}",
                ),
            ),
            Grant(("+set",), (f"%W~{p}:permit:p33:{{*",)),
            Grant(("+exists",), (f"%R~{p}:permit:p33:{{*",)),
            Grant(("+exists",), (f"%R~{p}:exec:{{*",)),  # a plan already consumed
            Grant(("+xadd",), _each("%W~", k.permit_event_streams)),
            Grant(("+get",), (f"%R~{k.trading_state}",)),
            Grant(SIM_READ, (f"%R~{p}:sim:*",)),
        ]
    if service == "apply-layer":
        return [
            *common,
            group((k.proposal_stream,)),
            group(k.plan_streams),
            Grant(("+hgetall", "+type"), (f"%R~{p}:harvest:proposal:*",)),
            # publish_plan.lua: the dedupe key, the plan and its audit entry in one step;
            # +get: a Redis Cluster's pending dedupe mark (planner_service.publish_plan)
            Grant(
                ("+evalsha", "+eval", "+set", "+get", "+xadd", "+type"),
                (
                    f"~{p}:apply:stream_published:{{*",
                    *_each("~", k.plan_streams),
                    f"~{k.decisions}",
                ),
            ),
            Grant(
                (
                    "+evalsha",
                    "+eval",
                    "+get",
                    "+del",
                    "+type",
                    "+ttl",
                    "+hget",
                    "+hset",
                    "+hsetnx",
                    "+hgetall",
                    "+expire",
                ),
                (f"~{p}:permit:*", f"~{p}:exec:*"),
            ),
            Grant(("+xadd",), _each("%W~", k.result_streams)),
            # the executor's state moves (exec_transition.lua: the exec record, the open
            # index, the result and its audit entry in one step) and the resolver's index
            Grant(
                (
                    "+evalsha",
                    "+eval",
                    "+hget",
                    "+hexists",
                    "+hset",
                    "+expire",
                    "+zadd",
                    "+zrem",
                    "+xadd",
                    "+type",
                ),
                (
                    f"~{p}:exec:*",
                    f"~{p}:apply:exec_open",
                    *_each("~", k.result_streams),
                    f"~{k.decisions}",
                ),
            ),
            Grant(("+zrangebyscore", "+zrem", "+type"), (f"~{p}:apply:exec_open",)),
            # the chain's own resting stops per symbol (apply_layer.stops) and the
            # reconciliation report (apply_layer.reconcile); its halt on a mode change
            Grant(
                ("+hset", "+hgetall", "+hdel", "+hkeys", "+expire", "+scan"),
                (f"~{p}:apply:stops:*", f"~{k.reconcile}"),
            ),
            Grant(("+xread", "+xinfo|stream", "+xadd"), _each("~", k.permit_event_streams)),
            Grant(("+get",), (f"%R~{k.trading_state}",)),
            Grant(("+hgetall", "+hget"), (f"%R~{p}:position:snapshot:*",)),
            Grant(("+hgetall",), (f"%R~{k.canary_last}",)),  # exported on /metrics
            Grant(SIM_WRITE, (f"~{p}:sim:*",)),
        ]
    if service == "exit-brain":
        return [
            *common,
            Grant(("+del", "+hset", "+expire"), (f"%W~{p}:harvest:proposal:*",)),
            Grant(("+xadd",), (f"%W~{k.proposal_stream}",)),
            Grant(("+hget", "+hgetall"), (f"%R~{p}:position:ledger:*",)),
            Grant(("+hget",), (f"%R~{p}:exec:*",)),  # outcomes of its own plans
            Grant(
                ("+hgetall", "+hget", "+hset", "+hsetnx", "+get", "+set", "+expire", "+del"),
                (f"~{p}:exit:*",),
            ),
            Grant(SIM_WRITE, (f"~{p}:sim:*",)),
        ]
    if service == CLIENT:
        return client_grants(k)
    raise ValueError(f"unknown service {service!r}")


def client_grants(k: Keys) -> list[Grant]:
    """permitchain_client's user: what ``propose``, ``wait_result``, ``explain``,
    ``trading_state`` and the gate's ``claim`` and ``report`` need, nothing else."""
    p = k.prefix
    return [
        Grant(("+del", "+hset", "+expire"), (f"%W~{p}:harvest:proposal:*",)),
        Grant(("+xadd",), (f"%W~{k.proposal_stream}",)),
        Grant(("+hget",), (f"%R~{p}:position:ledger:*",)),  # the position epoch
        Grant(("+mget", "+get"), (f"%R~{p}:svc:*",)),  # heartbeats: the chain's schema
        Grant(("+get", "+type"), (f"%R~{k.trading_state}",)),
        Grant(
            ("+xread", "+xrange", "+xrevrange"),
            (*_each("%R~", k.result_streams), f"%R~{k.decisions}"),
        ),
        # gate_claim.lua (the exec record, the trading state, its audit entry) and
        # gate_report.lua (the exec record, the open index, the result and its audit entry)
        Grant(("+evalsha", "+eval"), (f"~{p}:exec:*", f"~{k.trading_state}", f"~{k.decisions}")),
        Grant(
            ("+evalsha", "+eval"),
            (
                f"~{p}:exec:*",
                f"~{p}:apply:exec_open",
                *_each("~", k.result_streams),
                f"~{k.decisions}",
            ),
        ),
        Grant(("+hget", "+hmget", "+hgetall", "+hset"), (f"~{p}:exec:*",)),
        Grant(("+zrem",), (f"%W~{p}:apply:exec_open",)),
        Grant(("+xadd",), (*_each("%W~", k.result_streams), f"%W~{k.decisions}")),
    ]


def password_env(service: str) -> str:
    return "PERMITCHAIN_ACL_PASSWORD_" + service.upper().replace("-", "_")


def username(service: str, suffix: str = "") -> str:
    return f"permitchain-{service}{suffix}"


def setuser_args(service: str, keys: Keys, password: str, suffix: str = "") -> list[str]:
    """Arguments of ``ACL SETUSER`` for one service (``reset`` first: nothing else granted)."""
    return [
        "ACL",
        "SETUSER",
        username(service, suffix),
        "reset",
        "on",
        f">{password}",
        "resetkeys",
        "resetchannels",
        *BASE,
        *[g.selector() for g in grants(service, keys)],
    ]
