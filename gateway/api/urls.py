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

Stream URLs are built by :func:`stream_url`: with ``GATEWAY_MEDIA_LISTENER=picows`` they point
at the picows media listener (:func:`media_base`, from operator settings only), else at the
app's own ``/stream/…`` route through :func:`public_url`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from gateway.config import Settings

__all__ = ["public_url", "stream_path", "stream_url", "media_base", "offer_path", "offer_url"]

_HTTP = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
_WS = {"http": "ws", "ws": "ws", "https": "wss", "wss": "wss"}


def stream_path(connection_type: str, call_id: str, token: str) -> str:
    """``/stream/<connectionType>/<callId>/<token>``, a per-call stream's path.

    The token is in the path because Twilio drops query strings from ``<Stream url>``; it is
    URL-safe base64, so nothing needs escaping.
    """
    return f"/stream/{connection_type}/{call_id}/{token}"


def offer_path(call_id: str, token: str) -> str:
    """``/webrtc/<callId>/<token>/offer``, a WebRTC call's one-use offer path (the token is
    the credential, as in a stream path; :mod:`gateway.webrtc.offer` serves it)."""
    return f"/webrtc/{call_id}/{token}/offer"


def offer_url(settings: Settings, conn: HTTPConnection | None, call_id: str, token: str) -> str:
    """The ``http(s)://`` offer URL of a WebRTC call: always the app's own HTTP routes (whatever
    ``GATEWAY_MEDIA_LISTENER``), on the base :func:`public_url` takes (``https`` when the public
    URL is ``https``/``wss``).

    Raises:
        ValueError: ``conn`` is ``None`` and ``public_url`` is not set.
    """
    if conn is None and not settings.public_url:
        raise ValueError("no GATEWAY_PUBLIC_URL and no request to take the offer URL's base from")
    return public_url(settings, conn, offer_path(call_id, token))  # type: ignore[arg-type]


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


def media_base(settings: Settings) -> str:
    """The ``ws(s)://host[:port][/prefix]`` base of the picows media listener's stream URLs.

    ``Settings.media_public_url`` when set; else ``public_url``'s host with ``media_port``
    (``https`` → ``wss``, its path prefix dropped: the listener is its own server); else
    ``ws://<host>:<media_port>``. Never a request's ``Host``.

    Raises:
        ValueError: nothing names a host carriers can reach (no ``media_public_url`` nor
            ``public_url``, and ``host`` is a wildcard such as ``0.0.0.0``).
    """
    if settings.media_public_url:
        return settings.media_public_url.rstrip("/")
    port = settings.media_port
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{_WS.get(parts.scheme, 'ws')}://{host}:{port}"
    if settings.host in ("", "0.0.0.0", "::", "[::]"):
        raise ValueError("GATEWAY_MEDIA_LISTENER=picows listening on a wildcard address needs "
                         "GATEWAY_MEDIA_PUBLIC_URL (or GATEWAY_PUBLIC_URL) for its stream URLs")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"ws://{host}:{port}"


def stream_url(settings: Settings, conn: HTTPConnection | None, connection_type: str, call_id: str,
               token: str) -> str:
    """The stream URL handed to a carrier (and the URL Twilio signs) for one call.

    Args:
        settings: ``media_listener`` picks the listener; see :func:`media_base` and
            :func:`public_url` for the base.
        conn: the request being served (only read for the Starlette route's base when
            ``public_url`` is empty); ``None`` needs the picows listener or ``public_url``.

    Raises:
        ValueError: as :func:`media_base`, or ``conn`` is ``None`` with no base configured.
    """
    path = stream_path(connection_type, call_id, token)
    if settings.media_listener == "picows":
        return media_base(settings) + path
    if conn is None and not settings.public_url:
        raise ValueError("no GATEWAY_PUBLIC_URL and no request to take the stream URL's base from")
    return public_url(settings, conn, path, websocket=True)  # type: ignore[arg-type]
