"""A bot for the crash tests: claims a plan through the gate, optionally sends its order,
then waits to be killed (SIGKILL) before it reports.

    python crash_bot.py REDIS_URL KEY_PREFIX PLAN_ID SYMBOL claim|order|order-own-id

``order-own-id``: a buggy bot that sends its order with an id of its own, not the gate's.
"""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal

from permitchain.contract.keys import Keys
from permitchain.exchange.sim import SimExchange
from permitchain.store import async_client
from permitchain_client import Client


async def send(url: str, prefix: str, symbol: str, side: str, qty: str, coid: str) -> str:
    r = async_client(url)
    try:
        order = await SimExchange(r, Keys(prefix)).place_reduce_only_market(
            symbol, "SELL" if side == "SELL" else "BUY", Decimal(qty), coid
        )
        return order.order_id
    finally:
        await r.aclose()


def main() -> None:
    url, prefix, plan_id, symbol, stage = sys.argv[1:6]
    client = Client.from_url(url, key_prefix=prefix)
    claim = client.gate.claim(plan_id, symbol=symbol, timeout=20)
    print(f"claimed {claim.verdict.value} {claim.qty} {claim.client_order_id}", flush=True)
    if stage in ("order", "order-own-id") and claim.ok:
        coid = claim.client_order_id if stage == "order" else f"bot-{plan_id}"
        order_id = asyncio.run(send(url, prefix, symbol, claim.side, str(claim.qty), coid))
        print(f"ordered {order_id}", flush=True)
    time.sleep(600)  # killed here, before the report


if __name__ == "__main__":
    main()
