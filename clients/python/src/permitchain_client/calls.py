"""The calls of both clients and of both gates, listed once: each a flow of
:mod:`permitchain_client.flows`, blocking on :class:`~permitchain_client.Client` and a
coroutine on :class:`~permitchain_client.AsyncClient` (see
:class:`~permitchain_client.core.FlowMethod`)."""

from __future__ import annotations

from typing import Generic, TypeVar

from permitchain_client import flows
from permitchain_client.core import Chain, FlowMethod, GateMethod, R

C = TypeVar("C")


class Calls(Chain[R]):
    """The calls of :class:`~permitchain_client.Client` and
    :class:`~permitchain_client.AsyncClient`."""

    check_schema = FlowMethod(flows.check_schema)
    propose = FlowMethod(flows.propose)
    wait_result = FlowMethod(flows.wait_result)
    explain = FlowMethod(flows.explain)
    trading_state = FlowMethod(flows.trading_state)


class GateCalls(Generic[C]):
    """The calls of both gates, run on their client's chain."""

    def __init__(self, client: C) -> None:
        self.client = client

    claim = GateMethod(flows.claim)
    report = GateMethod(flows.report)
