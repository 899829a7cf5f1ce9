"""Serving the app with uvicorn so that a shutdown ends live calls as ``shutdown``.

On SIGTERM (or SIGINT) uvicorn's :meth:`uvicorn.Server.shutdown` stops listening, then calls
every connection's ``shutdown()``: a WebSocket gets close code 1012 and its transport is
closed at once, so each live call would see its carrier socket vanish and end as
``carrier_closed`` (and the app's lifespan shutdown runs only after that). It then waits for
the connections' tasks without a limit (``timeout_graceful_shutdown`` unset) or, with one,
cancels them.

:class:`GatewayServer` puts the gateway's own step first: stop accepting connections, ask every
live call to end (reason ``shutdown``, status ``completed``, carrier socket closed with 1001
"going away") and wait, at most ``GATEWAY_SHUTDOWN_TIMEOUT_S`` seconds, until their records
are finalised; then uvicorn's shutdown runs as usual for whatever is left (a call still live
then sees its socket closed; if uvicorn cancels its task, ``gateway serve`` sets
``timeout_graceful_shutdown`` so it does, the session's finaliser still runs).

With the picows media listener (``GATEWAY_MEDIA_LISTENER=picows``) it stops listening in the
same first step; its calls are in the same registry and end the same way, and the app's
lifespan closes what is left of it with 1001 (:meth:`PicowsMediaListener.aclose
<gateway.picows_listener.PicowsMediaListener.aclose>`).
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

__all__ = ["GatewayServer"]


class GatewayServer(uvicorn.Server):
    """A :class:`uvicorn.Server` that ends the gateway's live calls before uvicorn's shutdown.

    Args:
        config: the uvicorn configuration; its ``app`` is the gateway app (``create_app``),
            whose ``state.services`` ends the calls.
        shutdown_timeout_s: how long to wait for the calls' records (seconds).
    """

    def __init__(self, config: uvicorn.Config, *, shutdown_timeout_s: float = 10.0) -> None:
        super().__init__(config)
        self.shutdown_timeout_s = shutdown_timeout_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while the calls end (uvicorn closes again: no-op)
        services: Any = getattr(getattr(self.config.app, "state", None), "services", None)
        media = getattr(services, "media", None)
        if media is not None:
            media.stop_listening()  # the picows media listener too (it closes in the lifespan)
        if services is not None and not self.force_exit:
            await services.end_live_calls("shutdown", timeout_s=self.shutdown_timeout_s)
        await super().shutdown(sockets)
