"""``permitchain acl``: print (or apply) one least-privilege Redis user per service."""

from __future__ import annotations

import os
import shlex
from typing import Annotated, Any

import typer

from permitchain.cli.common import console, fail, run_async
from permitchain.contract.keys import Keys
from permitchain.contract.settings import Settings
from permitchain.security.acl import CLIENT, password_env, setuser_args, username
from permitchain.services import SERVICE_NAMES
from permitchain.store import AsyncRedis

#: One user per service, and one for bots using permitchain_client.
USERS = (*SERVICE_NAMES, CLIENT)


def acl(
    apply: Annotated[bool, typer.Option("--apply", help="Run the commands on REDIS_URL")] = False,
) -> None:
    """Redis ACL users giving each service (and permitchain_client) only what it needs.

    Passwords come from PERMITCHAIN_ACL_PASSWORD_<SERVICE> (e.g. ..._GOVERNOR); printed
    commands reference those variables and never contain a secret."""
    if not apply:

        async def show(_r: AsyncRedis, k: Keys, _s: Settings) -> None:
            for svc in USERS:
                args = setuser_args(svc, k, "PASSWORD")
                args[args.index(">PASSWORD")] = f'">${{{password_env(svc)}}}"'
                console.print(f"# {svc}: REDIS_URL=redis://{username(svc)}:<password>@host:port")
                console.print(
                    "redis-cli "
                    + " ".join(a if a.startswith('">$') else shlex.quote(a) for a in args),
                    soft_wrap=True,
                )

        run_async(show)
        return
    missing = [password_env(s) for s in USERS if not os.environ.get(password_env(s))]
    if missing:
        fail(f"--apply needs passwords in {', '.join(missing)}")

    async def do(r: AsyncRedis, k: Keys, _s: Settings) -> Any:
        for svc in USERS:
            await r.execute_command(*setuser_args(svc, k, os.environ[password_env(svc)]))
            console.print(f"ACL user {username(svc)} set")

    run_async(do)
