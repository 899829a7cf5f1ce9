"""Public URLs of this gateway: the one place stream and recording URLs are built.

A carrier signs (Twilio) or simply connects to exactly the URL the REST API handed out, so
the URL given in ``POST /calls/…`` and the URL a stream's signature is checked against must
come from the same function: :func:`public_url`.

The base is ``Settings.public_url`` when set (``http(s)://host[:port][/prefix]``, checked by
:func:`gateway.config.check_public_url` at start-up; ``https`` → ``wss`` and ``http`` →
``ws`` for WebSocket URLs, the prefix kept). Otherwise it is the connection's own scheme and
``Host`` header plus the ASGI ``root_path``. ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` are
**not** read: behind a proxy, set ``GATEWAY_PUBLIC_URL`` (or run uvicorn with
``--proxy-headers`` and trusted ``--forwarded-allow-ips``, which rewrites the scope's scheme
before it reaches us).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from gateway.config import Settings

__all__ = ["public_url", "stream_path"]

_HTTP = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
_WS = {"http": "ws", "ws": "ws", "https": "wss", "wss": "wss"}


def stream_path(connection_type: str, call_id: str, token: str) -> str:
    """``/stream/<connectionType>/<callId>/<token>``, a per-call stream's path.

    The token is in the path because Twilio drops query strings from ``<Stream url>``; it is
    URL-safe base64, so nothing needs escaping.
    """
    return f"/stream/{connection_type}/{call_id}/{token}"


def public_url(settings: Settings, conn: HTTPConnection, path: str, *, websocket: bool = False) -> str:
    """The absolute URL a carrier or client reaches ``path`` of this gateway at.

    Args:
        settings: uses ``public_url`` (empty: the connection's own base URL).
        conn: the request or WebSocket being served (its scheme, ``Host`` and ``root_path``
            are the base when ``public_url`` is empty).
        path: absolute path on the gateway, e.g. :func:`stream_path`'s result.
        websocket: give a ``ws://`` / ``wss://`` URL (else ``http://`` / ``https://``).

    Returns:
        e.g. ``wss://voice.example.com/gw/stream/twilio/call_…/<token>``.
    """
    base = settings.public_url.strip().rstrip("/")
    if not base:
        base = str(conn.base_url).rstrip("/")
    scheme, sep, rest = base.partition("://")
    scheme = (_WS if websocket else _HTTP).get(scheme.lower(), scheme)
    return f"{scheme}{sep}{rest}{path}"
