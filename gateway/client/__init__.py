"""The Python client of the gateway's REST API (sync and asyncio, on httpx).

``GatewayClient`` and ``AsyncGatewayClient`` have the same methods (``create_call``,
``create_inline_call``, ``place_call``, ``get_call``, ``list_calls``, ``control``,
``hangup``, ``wait_for_call``), return the API's own pydantic models
(:mod:`gateway.api.schemas` and its siblings), and raise :class:`GatewayError` with the
API's ``code``, ``message`` and field errors. Both send what :mod:`gateway.client.core`
builds, so they cannot drift apart::

    from gateway.client import GatewayClient

    with GatewayClient("https://gw.example.com", api_key=key) as gw:
        placed = gw.place_call(to="+14155550101", system_prompt="You confirm appointments.",
                               objective="Confirm tomorrow's visit.")
        record = gw.wait_for_call(placed.call_id, timeout=600)
        print(record.status, record.transcript)
"""

from gateway.client.aio import AsyncGatewayClient
from gateway.client.core import CallWaitTimeout, GatewayConnectionError, GatewayError
from gateway.client.sync import GatewayClient

__all__ = ["GatewayClient", "AsyncGatewayClient", "GatewayError", "GatewayConnectionError", "CallWaitTimeout"]
