"""Typed, frozen settings (docs/design.md §6), read from the environment at the entry point only.

Every variable keeps its contract name (``APPLY_MODE``, ``DEDUPE_TTL`` …); the Python field
names carry units (``dedupe_ttl_s``, ``permit_wait_ms``). ``load_settings`` turns every
validation failure into a :class:`ConfigError` that names the variable, and refuses
variables that look like misspelt settings, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from permitchain.contract.errors import ConfigError
from permitchain.contract.keys import MAX_SHARDS, Keys
from permitchain.contract.setting_names import Target, suggestions, targets

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,32}$")
#: The shortest exec record retention accepted (EXEC_RECORD_TTL_S).
EXEC_RECORD_TTL_MIN_S = 300
#: How long an order can stay open (submitted or unknown) before the resolver settles it
#: (it gives up 120 s after the submit; with its sweep interval, well within this).
OPEN_ORDER_MAX_S = 180


class ApplyMode(StrEnum):
    DRY_RUN = "dry_run"
    TESTNET = "testnet"
    PRODUCTION = "production"


class ExchangeKind(StrEnum):
    SIM = "sim"
    BINANCE_DEMO = "binance-demo"
    BINANCE = "binance"


class PermitSignature(StrEnum):
    ED25519 = "ed25519"
    HMAC = "hmac"


class RedisTransport(StrEnum):
    """How services talk to Redis (docs/operations.md): the lean transport or redis-py's pool."""

    LEAN = "lean"
    POOL = "pool"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _f(default: Any, env: str, **kw: Any) -> Any:
    return Field(default, validation_alias=AliasChoices(env), **kw)


class Settings(BaseSettings):
    """All settings of every service. Immutable; construct once at the entry point."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        case_sensitive=True,
        env_ignore_empty=True,
        populate_by_name=True,
    )

    # --- connectivity -------------------------------------------------------------------
    redis_url: str | None = _f(None, "REDIS_URL")
    redis_transport: RedisTransport = _f(RedisTransport.LEAN, "REDIS_TRANSPORT")
    key_prefix: str = _f("quantum", "KEY_PREFIX", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    apply_mode: ApplyMode = _f(ApplyMode.TESTNET, "APPLY_MODE")
    exchange: ExchangeKind = _f(ExchangeKind.SIM, "EXCHANGE")
    binance_api_key: SecretStr | None = _f(None, "BINANCE_API_KEY")
    binance_api_secret: SecretStr | None = _f(None, "BINANCE_API_SECRET")
    binance_base_url: str | None = _f(None, "BINANCE_BASE_URL")
    binance_live_confirmed: bool = _f(False, "BINANCE_LIVE_CONFIRMED")

    # --- planner ------------------------------------------------------------------------
    allow_list_symbols: str = _f("BTCUSDT,ETHUSDT,SOLUSDT", "ALLOW_LIST_SYMBOLS")
    kill_score_threshold: Decimal = _f(Decimal("0.5"), "KILL_SCORE_THRESHOLD", ge=0, le=1)
    dedupe_ttl_s: int = _f(300, "DEDUPE_TTL", gt=0)
    proposal_ttl_s: int = _f(60, "PROPOSAL_TTL_S", gt=0)
    plan_max_age_s: int = _f(30, "PLAN_MAX_AGE_S", gt=0)
    plan_stream_maxlen: int = _f(100_000, "PLAN_STREAM_MAXLEN", ge=1000)
    planner_sweep_s: float = _f(5.0, "PLANNER_SWEEP_S", gt=0)

    # --- permits ------------------------------------------------------------------------
    permit_ttl_s: int = _f(60, "PERMIT_TTL_SECONDS", gt=0)
    permit_wait_ms: int = _f(1200, "APPLY_PERMIT_WAIT_MS", gt=0)
    permit_key_governor: SecretStr | None = _f(None, "PERMIT_KEY_GOVERNOR")
    permit_key_p33: SecretStr | None = _f(None, "PERMIT_KEY_P33")
    # Public-key permits (docs/design.md §13): Ed25519 key files, or
    # systemd credentials in CREDENTIALS_DIRECTORY; HMAC (PERMIT_KEY_*) only outside production.
    permit_signature: PermitSignature = _f(PermitSignature.ED25519, "PERMIT_SIGNATURE")
    permit_governor_key_file: Path | None = _f(None, "PERMIT_GOVERNOR_KEY_FILE")
    permit_p33_key_file: Path | None = _f(None, "PERMIT_P33_KEY_FILE")
    permit_operator_key_file: Path | None = _f(None, "PERMIT_OPERATOR_KEY_FILE")
    permit_public_keys_dir: Path | None = _f(None, "PERMIT_PUBLIC_KEYS_DIR")
    credentials_directory: Path | None = _f(None, "CREDENTIALS_DIRECTORY")
    # An exec record is the plan's proof of execution (the permits it consumed, its order,
    # its result) and its guard against a second consume; kept 7 days by default. At a
    # high sustained rate that is most of Redis's memory (docs/performance.md): shorten it
    # here, never below EXEC_RECORD_TTL_MIN_S, nor below what its guards need (a plan can no
    # longer execute once it and its permits are expired and the resolver has given up;
    # see exec_retention_floor_s). The simulated exchange keeps its orders as long.
    exec_record_ttl_s: int = _f(7 * 86400, "EXEC_RECORD_TTL_S", ge=EXEC_RECORD_TTL_MIN_S)

    # --- governor -----------------------------------------------------------------------
    testnet_auto_approve: bool = _f(True, "TESTNET_AUTO_APPROVE")
    max_exec_per_hour: int = _f(3, "MAX_EXEC_PER_HOUR", ge=0)
    max_exec_per_5min: int = _f(2, "MAX_EXEC_PER_5MIN", ge=0)
    max_notional_per_trade: Decimal = _f(Decimal("1000"), "MAX_NOTIONAL_PER_TRADE", ge=0)
    daily_notional_cap: Decimal = _f(Decimal("10000"), "DAILY_NOTIONAL_CAP", ge=0)

    # --- position brain -----------------------------------------------------------------
    position_tolerance: Decimal = _f(Decimal("0.001"), "POSITION_TOLERANCE", ge=0)
    qty_tolerance_pct: Decimal = _f(Decimal("1"), "QTY_TOLERANCE_PCT", ge=0, le=100)
    stale_threshold_s: float = _f(10.0, "STALE_THRESHOLD_S", gt=0)
    poll_interval_s: float = _f(5.0, "POLL_INTERVAL_S", gt=0)
    cooldown_s: float = _f(15.0, "COOLDOWN_S", ge=0)
    # pushed account updates (exchange.stream): snapshots fresh while the stream is alive
    pushed_updates: bool = _f(True, "PUSHED_UPDATES")
    push_touch_s: float = _f(0.5, "PUSH_TOUCH_S", gt=0)
    # exchange reconciliation (apply_layer.reconcile): position mode, unknown own orders
    reconcile_s: float = _f(60.0, "RECONCILE_S", gt=0)

    # --- exit brain ---------------------------------------------------------------------
    full_close_score: Decimal = _f(Decimal("0.78"), "FULL_CLOSE_SCORE", ge=0, le=1)
    exit_interval_s: float = _f(2.0, "EXIT_INTERVAL_S", gt=0)
    # Initial risk per unit as a fraction of entry (the stop distance a trade opens with):
    # 1 R = entry × EXIT_RISK_FRACTION.
    exit_risk_fraction: Decimal = _f(Decimal("0.01"), "EXIT_RISK_FRACTION", gt=0, lt=1)
    # Fee per side as a fraction of notional; round trip per unit = rate × (entry + mark).
    exit_fee_rate: Decimal = _f(Decimal("0.0004"), "EXIT_FEE_RATE", ge=0, lt=Decimal("0.1"))
    # trailing stop: distance in R once in profit (0: off), least move in R
    exit_trail_r: Decimal = _f(Decimal(0), "EXIT_TRAIL_R", ge=0, le=100)
    exit_trail_step_r: Decimal = _f(Decimal("0.5"), "EXIT_TRAIL_STEP_R", gt=0, le=100)
    exit_full_close_retry_s: float = _f(60.0, "EXIT_FULL_CLOSE_RETRY_S", gt=0)
    # Replay-calibrated (docs/exit-brain.md): marks bucketed into bars of EXIT_BAR_S seconds;
    # estimator windows in bars; harvest levels in R; the break-even stop move; the pause
    # after a proposal the chain did not execute.
    exit_bar_s: float = _f(300.0, "EXIT_BAR_S", gt=0)
    exit_short_window: int = _f(20, "EXIT_SHORT_WINDOW", ge=4)
    exit_ref_window: int = _f(120, "EXIT_REF_WINDOW", ge=6)
    exit_tranche_r: str = _f("2,4,6", "EXIT_TRANCHE_R")
    exit_break_even_r: Decimal = _f(Decimal("1.5"), "EXIT_BREAK_EVEN_R", gt=0)
    exit_break_even_offset: Decimal = _f(
        Decimal("0.002"), "EXIT_BREAK_EVEN_OFFSET", ge=0, lt=Decimal("0.5")
    )
    exit_retry_s: float = _f(30.0, "EXIT_RETRY_S", gt=0)

    # --- simulated exchange -------------------------------------------------------------
    # With EXCHANGE=sim the exit brain drives sim prices (seeded random walk) and triggers
    # the sim's reduce-only stops; ignored for any other exchange.
    sim_drive_prices: bool = _f(True, "SIM_DRIVE_PRICES")
    sim_price_seed: int = _f(7, "SIM_PRICE_SEED")
    sim_price_interval_s: float = _f(1.0, "SIM_PRICE_INTERVAL_S", gt=0)
    # Recorded candles instead of the random walk (a file `permitchain replay` reads): each
    # candle's close becomes the mark at its time, SIM_PRICE_SPEED file seconds per second.
    sim_price_file: Path | None = _f(None, "SIM_PRICE_FILE")
    sim_price_speed: float = _f(1.0, "SIM_PRICE_SPEED", gt=0)

    # --- gate for external executors (docs/design.md §15) --------------------------------
    # A grant not claimed this long after the executor wrote it is blocked; a claim not
    # reported this long is looked up on the exchange by its client order id (the resolver).
    gate_claim_s: float = _f(10.0, "GATE_CLAIM_S", gt=0, le=60)
    gate_report_s: float = _f(30.0, "GATE_REPORT_S", gt=0, le=600)

    # --- operations ---------------------------------------------------------------------
    metrics_port: int | None = _f(None, "METRICS_PORT", ge=0, le=65535)
    log_format: LogFormat = _f(LogFormat.TEXT, "LOG_FORMAT")
    log_level: str = _f("INFO", "LOG_LEVEL", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    # --- operator console (docs/console.md) ---------------------------------------------
    console_bind: str = _f("127.0.0.1:8046", "CONSOLE_BIND", pattern=r"^[^\s:]+:\d{1,5}$")
    console_token: SecretStr | None = _f(None, "CONSOLE_TOKEN")
    console_token_file: Path | None = _f(None, "CONSOLE_TOKEN_FILE")
    console_public_read: bool = _f(False, "CONSOLE_PUBLIC_READ")
    notify_urls: SecretStr | None = _f(None, "NOTIFY_URLS")
    notify_plan_executed: bool = _f(False, "NOTIFY_PLAN_EXECUTED")
    notify_dedupe_s: float = _f(300.0, "NOTIFY_DEDUPE_S", ge=0)
    notify_max_per_min: int = _f(20, "NOTIFY_MAX_PER_MIN", gt=0)
    notify_denial_burst: int = _f(20, "NOTIFY_DENIAL_BURST", gt=0)
    notify_denial_window_s: float = _f(60.0, "NOTIFY_DENIAL_WINDOW_S", gt=0)
    notify_health_every_s: float = _f(10.0, "NOTIFY_HEALTH_EVERY_S", gt=0)

    # --- sharded streams (docs/design.md §2, docs/scaling.md) -----------------------------
    # The plan, permit-event and result streams split by symbol into STREAM_SHARDS streams
    # (1: the unsharded names). STREAM_SHARDS_OWNED: the shards this instance's consumers
    # read (e.g. "0,2"; unset: all).
    stream_shards: int = _f(1, "STREAM_SHARDS", ge=1, le=MAX_SHARDS)
    stream_shards_owned: str | None = _f(None, "STREAM_SHARDS_OWNED")

    @field_validator("stream_shards", mode="before")
    @classmethod
    def _shards_int(cls, v: Any) -> Any:
        # only an integer or its decimal digits: no bool, float, "1.0", "+2" or " 3"
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError("an integer")
        if isinstance(v, str) and not (v.isascii() and v.isdigit()):
            raise ValueError("an integer (decimal digits)")
        return int(v)

    @field_validator("stream_shards_owned")
    @classmethod
    def _owned(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        items = [x.strip() for x in v.split(",")]
        if not all(x.isascii() and x.isdigit() for x in items):
            raise ValueError("shard numbers separated by commas, e.g. 0,2")
        owned = [int(x) for x in items]
        if len(set(owned)) != len(owned):
            raise ValueError("a shard is named twice")
        shards = info.data.get("stream_shards")
        if shards is None:  # STREAM_SHARDS itself is invalid (reported on its own)
            return v
        outside = [x for x in owned if x >= shards]
        if outside:
            raise ValueError(
                f"shard {outside[0]} does not exist (STREAM_SHARDS={shards}: "
                f"shards 0 to {shards - 1})"
            )
        return ",".join(str(x) for x in sorted(owned))

    @property
    def owned_shards(self) -> tuple[int, ...]:
        """The shards this instance's consumers read, in order (all when unset)."""
        if self.stream_shards_owned is None:
            return tuple(range(self.stream_shards))
        return tuple(int(x) for x in self.stream_shards_owned.split(","))

    @property
    def keys(self) -> Keys:
        """The key names these settings address (KEY_PREFIX, STREAM_SHARDS)."""
        return Keys(self.key_prefix, shards=self.stream_shards)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() is the one reader of the environment and the env file, so that it
        # can refuse misspelt names; the model itself only validates what it is given.
        return (init_settings,)

    @field_validator("allow_list_symbols")
    @classmethod
    def _symbols(cls, v: str) -> str:
        items = [s.strip() for s in v.split(",") if s.strip()]
        bad = [s for s in items if not SYMBOL_RE.match(s)]
        if bad:
            raise ValueError(f"not a symbol: {', '.join(bad)} (expected e.g. BTCUSDT)")
        return ",".join(items)

    @field_validator("exit_tranche_r")
    @classmethod
    def _tranche_r(cls, v: str) -> str:
        try:
            levels = [Decimal(x.strip()) for x in v.split(",")]
        except ArithmeticError:
            levels = []
        ok = len(levels) == 3 and all(x.is_finite() and x > 0 for x in levels)
        if not ok or not levels[0] < levels[1] < levels[2]:
            raise ValueError("three increasing positive R levels, e.g. 2,4,6")
        return ",".join(str(x) for x in levels)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(
            (
                "redis://",
                "rediss://",
                "unix://",
                "redis+sentinel://",
                "redis+cluster://",
                "rediss+cluster://",
            )
        ):
            raise ValueError(
                "must start with redis://, rediss://, unix://, redis+sentinel://, "
                "redis+cluster:// or rediss+cluster://"
            )
        return v

    @model_validator(mode="after")
    def _retention(self) -> Settings:
        floor = self.exec_retention_floor_s
        if self.exec_record_ttl_s < floor:
            raise ValueError(
                f"EXEC_RECORD_TTL_S: {self.exec_record_ttl_s} is shorter than its guards need "
                f"({floor} s: PLAN_MAX_AGE_S + PERMIT_TTL_SECONDS + APPLY_PERMIT_WAIT_MS + "
                f"{OPEN_ORDER_MAX_S} s for an open order to settle)"
            )
        return self

    @property
    def exec_retention_floor_s(self) -> int:
        """The shortest exec record retention that keeps every guard: past it, the plan, its
        permits and its order (if any) are all settled or expired, so a second consume or
        order is impossible whatever the record says."""
        wait_s = -(-self.permit_wait_ms // 1000)
        return self.plan_max_age_s + self.permit_ttl_s + wait_s + OPEN_ORDER_MAX_S

    @property
    def allow_list(self) -> frozenset[str]:
        return frozenset(s for s in self.allow_list_symbols.split(",") if s)


def env_names() -> dict[str, str]:
    """Map of contract variable name → field name."""
    out: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices)
        out[str(alias.choices[0])] = name
    return out


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        if "=" not in line:
            raise ConfigError(f"{path}:{lineno}: expected NAME=value, got {raw!r}")
        k, v = line.split("=", 1)
        name = k.strip()
        if name in values:
            raise ConfigError(f"{path}:{lineno}: {name} is set twice in this file")
        values[name] = v.strip().strip('"').strip("'")
    return values


#: Variables permitchain itself reads besides the settings (never taken for misspelt settings).
ENV_FILE_VARIABLE = "PERMITCHAIN_ENV_FILE"
IGNORE_VARIABLE = "PERMITCHAIN_IGNORE_ENV"


def _targets() -> list[Target]:
    choices = {
        "APPLY_MODE": [m.value for m in ApplyMode],
        "EXCHANGE": [e.value for e in ExchangeKind],
        "LOG_FORMAT": [f.value for f in LogFormat],
        "REDIS_TRANSPORT": [t.value for t in RedisTransport],
    }
    return targets(env_names(), choices)


def misspelt(env: Mapping[str, str]) -> list[str]:
    """One message per variable in ``env`` that is not a setting but close to one."""
    known = set(env_names())
    ignored = {n.strip() for n in env.get(IGNORE_VARIABLE, "").split(",")}
    among = _targets()
    problems = []
    for name in sorted(env):
        if name in known or name in ignored or name in (ENV_FILE_VARIABLE, IGNORE_VARIABLE):
            continue
        if name.startswith("PERMITCHAIN_ACL_PASSWORD_"):
            continue
        close = suggestions(name, among)
        if close:
            problems.append(f"{name}: not a setting; did you mean {' or '.join(close[:3])}?")
    return problems


def _files(
    env_file: str | Path | Sequence[str | Path] | None, env: Mapping[str, str]
) -> list[Path]:
    if env_file is None:
        env_file = env.get(ENV_FILE_VARIABLE) or ()
    if isinstance(env_file, str):
        env_file = env_file.split(os.pathsep)  # PERMITCHAIN_ENV_FILE=common.env:governor.env
    if isinstance(env_file, Path):
        env_file = [env_file]
    return [Path(f) for f in env_file if str(f)]


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | Sequence[str | Path] | None = None,
) -> Settings:
    """Read settings from env files (if any) overlaid by the environment.

    ``env_file`` (one or several, later ones win; a string may list several separated by
    ``os.pathsep``) defaults to ``$PERMITCHAIN_ENV_FILE``. Every
    name in an env file must be a setting; a variable in the environment that is not a setting
    but close to one (:mod:`permitchain.contract.setting_names`) is refused too.
    """
    env = dict(os.environ if environ is None else environ)
    known = set(env_names())
    values: dict[str, Any] = {}
    for path in _files(env_file, env):
        if not path.is_file():
            raise ConfigError(f"env file: no such file {path}")
        from_file = _read_env_file(path)
        unknown = sorted(set(from_file) - known)
        if unknown:
            hints = {n: suggestions(n, _targets()) for n in unknown}
            named = [
                f"{n} (did you mean {' or '.join(h[:3])}?)" if h else n for n, h in hints.items()
            ]
            raise ConfigError(f"{path}: not a setting: {', '.join(named)}")
        values.update(from_file)
    problems = misspelt(env)
    if problems:
        raise ConfigError("; ".join(problems))
    values.update({k: v for k, v in env.items() if k in known})
    values = {k: v for k, v in values.items() if v != ""}
    try:
        return Settings(**values)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        var = str(err["loc"][0]) if err["loc"] else "settings"
        got = err.get("input")
        secret = any(w in var for w in ("KEY", "SECRET", "TOKEN", "NOTIFY_URLS"))
        shown = "***" if secret else repr(got)
        parts.append(f"{var}: {err['msg']} (got {shown})")
    return "invalid settings: " + "; ".join(parts)
