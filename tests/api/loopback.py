"""An ASGI app served by uvicorn on a free loopback port, in a thread of its own.

For test modules that share one served app across their tests (module-scoped fixtures, no
event loop needed): ``with serve(app) as base_url: httpx.get(base_url + "/health")``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["serve"]


@contextmanager
def serve(app: Any, *, start_timeout_s: float = 10.0, lifespan: str = "off") -> Iterator[str]:
    """Serve ``app`` on ``127.0.0.1:<free port>`` while the block runs; yields the base URL.

    Raises:
        TimeoutError: the server did not start within ``start_timeout_s``.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None, lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start on port {port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
