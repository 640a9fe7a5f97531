"""``permitchain keys generate|rotate`` (key custody) and ``permitchain flatten`` (the
operator's emergency exit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from permitchain.chain import Chain, ephemeral_keys_dir
from permitchain.cli.common import console, fail, operator, run_async, settings
from permitchain.cli.control import clean_reason
from permitchain.contract.errors import ConfigError
from permitchain.contract.keys import Keys
from permitchain.contract.settings import SYMBOL_RE, PermitSignature, Settings
from permitchain.contract.signing import ISSUERS, OPERATOR, Ed25519Signer
from permitchain.keyfiles import generate, load_private, private_key_location, rotate
from permitchain.ops.flatten import Flattened, flatten, open_symbols
from permitchain.store import AsyncRedis

keys_app = typer.Typer(help="Ed25519 permit keys: generate, rotate.", no_args_is_help=True)
#: Extra time `keys rotate` keeps the old public key beyond PERMIT_TTL_SECONDS, for the
#: restarts (verifiers first, then the signer).
ROTATE_GRACE_S = 300


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the key files")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing keys")] = False,
) -> None:
    """One key pair per issuer (governor, p33, operator): ISSUER.key (0600) and ISSUER.pub."""
    try:
        kids = generate(directory, force=force)
    except (ConfigError, OSError) as e:
        fail(str(e))
    t = Table(title=f"permit keys in {directory}")
    for col in ("issuer", "kid", "private (0600)", "public"):
        t.add_column(col)
    for issuer, kid in kids.items():
        t.add_row(issuer, kid, str(directory / f"{issuer}.key"), str(directory / f"{issuer}.pub"))
    console.print(t)


@keys_app.command("rotate")
def keys_rotate(
    issuer: Annotated[str, typer.Argument(help=", ".join(ISSUERS))],
    directory: Annotated[Path, typer.Option("--dir", help="The key directory")],
    grace_s: Annotated[
        int, typer.Option("--grace", help="Seconds beyond PERMIT_TTL_SECONDS to restart in")
    ] = ROTATE_GRACE_S,
) -> None:
    """A new key pair; the old public key stays accepted for PERMIT_TTL_SECONDS + --grace."""
    s = settings()
    try:
        kid, kept = rotate(directory, issuer, s.permit_ttl_s + grace_s)
    except (ConfigError, OSError) as e:
        fail(str(e))
    console.print(
        f"{issuer}: new key {kid} in {directory / (issuer + '.key')}; accepted until "
        f"retired: {', '.join(kept) or 'none'} (in {s.permit_ttl_s + grace_s} s). "
        "Install the .pub on the verifiers and restart them, then the signer."
    )


def ephemeral_keys(chain: Chain, s: Settings, directory: Path) -> str:
    """With no key configured (and no HMAC), ``up`` and ``demo`` sign with key pairs made for
    the run in ``directory``, each gatekeeper holding only its own private key, and say so.
    Returns the directory ('' when keys are configured: nothing made)."""
    configured = (
        s.permit_governor_key_file,
        s.permit_p33_key_file,
        s.permit_operator_key_file,
        s.permit_public_keys_dir,
        s.credentials_directory,
    )
    if s.permit_signature is not PermitSignature.ED25519 or any(configured):
        return ""
    kids = generate(directory, force=True)
    chain.use_keys(directory)
    console.print(
        f"permits signed with Ed25519 keys made for this run ({directory}; governor "
        f"{kids['governor']}, p33 {kids['p33']}, operator {kids['operator']} for `flatten`)"
    )
    return str(directory)


def _operator_signer(s: Settings) -> Ed25519Signer:
    held = private_key_location(s, OPERATOR)
    if held is not None:
        return Ed25519Signer.of(OPERATOR, load_private(held.path, held.source))
    local = ephemeral_keys_dir() / "operator.key"
    if not s.redis_url and local.is_file():  # the keys a running `permitchain up` made
        return Ed25519Signer.of(OPERATOR, load_private(local, str(local)))
    fail(
        "PERMIT_OPERATOR_KEY_FILE: not set (the operator's private key, from "
        "`permitchain keys generate`)"
    )


def flatten_cmd(
    symbol: Annotated[str | None, typer.Argument(help="The symbol to close")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every open allowlisted position")] = False,
    reason: Annotated[str, typer.Option(help="Why (signed, and in the audit stream)")] = "",
    wait_s: Annotated[float, typer.Option("--wait", help="Seconds to wait for results")] = 15.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Emergency exit: close the whole position, also under HALTED, with a signed request."""
    if (symbol is None) == (not all_):
        fail("give a SYMBOL or --all (not both)")
    if symbol is not None and not SYMBOL_RE.match(symbol):
        fail(f"SYMBOL: not a symbol: {symbol!r}")
    if not reason.strip():
        fail("--reason: required (it is signed and kept in the audit stream)")
    signer = _operator_signer(settings())

    async def body(r: AsyncRedis, k: Keys, s: Settings) -> list[Flattened]:
        symbols = [symbol] if symbol is not None else await open_symbols(r, k, s)
        return await flatten(
            r,
            k,
            s,
            symbols=symbols,
            reason=clean_reason(reason),
            operator=operator(),
            signer=signer,
            wait_s=wait_s,
        )

    done = run_async(body)
    rows = [
        {
            "symbol": f.symbol,
            "plan_id": f.plan_id,
            "request_id": f.request_id,
            "published": f.published,
            "status": (f.result or {}).get("status", "no result yet"),
            "reason": (f.result or {}).get("reason", ""),
            "filled_qty": (f.result or {}).get("filled_qty", ""),
        }
        for f in done
    ]
    if as_json:
        print(json.dumps(rows))
    elif not rows:
        console.print("flatten: no open position among the allowlisted symbols")
    else:
        t = Table(title=f"flatten (signed by {signer.kid})")
        for col in ("symbol", "plan", "status", "reason", "filled qty"):
            t.add_column(col)
        for row in rows:
            t.add_row(
                str(row["symbol"]),
                str(row["plan_id"]),
                str(row["status"]),
                str(row["reason"]),
                str(row["filled_qty"]),
            )
        console.print(t)
        console.print("history: permitchain explain PLAN")
    if any(row["status"] not in ("filled", "dry_run") for row in rows):
        raise typer.Exit(1)
