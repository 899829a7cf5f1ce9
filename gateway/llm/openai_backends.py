"""OpenAI-Realtime-shaped servers: OpenAI, Azure OpenAI, xAI and compatible servers.

A :class:`RealtimeBackend` says where a server is, how it authenticates and what it supports
(G.711 passthrough, ``truncate``, ``cancel``, the session's shape); :func:`choose_formats`
picks the audio format both directions use for a carrier. Pure: no sockets, no asyncio.

Sources: platform.openai.com/docs/guides/realtime (GA); Azure OpenAI "GPT Realtime API"
(``wss://<resource>.openai.azure.com/openai/v1/realtime?model=<deployment>``, ``api-key``
header); docs.x.ai Voice Agent API (``wss://api.x.ai/v1/realtime``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.formats import PCMA_8K, PCMU_8K, AudioFormat, Encoding

__all__ = [
    "RealtimeBackend",
    "openai_backend",
    "azure_backend",
    "xai_backend",
    "compat_backend",
    "choose_formats",
    "OPENAI_VOICES",
    "XAI_VOICES",
]

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
XAI_VOICES = ("Eve", "Ara", "Rex", "Sal", "Leo")


@dataclass(frozen=True, slots=True)
class RealtimeBackend:
    """One OpenAI-Realtime-shaped server and what it supports.

    Attributes:
        name: ``openai``, ``azure``, ``xai`` or ``compat`` (logs and call records).
        url: full WebSocket URL, query included (never holds a key).
        model: model or deployment name.
        auth: ``bearer`` (``Authorization: Bearer``) or ``api-key`` (Azure's header).
        session_style: ``ga`` (OpenAI GA session) or ``xai`` (voice / turn_detection on top).
        supports_truncate: send ``conversation.item.truncate`` / ``delete`` on barge-in.
        supports_cancel: send ``response.cancel`` on barge-in.
        g711: the server takes ``audio/pcmu`` / ``audio/pcma`` (G.711 passthrough).
        pcm_rate: L16 sample rate (Hz) when not passing G.711 through.
        voices: accepted voice names (``None``: pass the agent's voice through).
        default_voice: used when the agent's voice is not among ``voices``.
        transcription_model: input transcription model, or ``None`` to not ask for one.
        greeting_mode: ``instructions`` (``response.create`` with instructions) or ``item``
            (a system message item, then ``response.create``).
        require_session_updated: fail ``start`` if no ``session.updated`` comes back.
    """

    name: str
    url: str
    model: str = ""
    auth: Literal["bearer", "api-key"] = "bearer"
    session_style: Literal["ga", "xai"] = "ga"
    supports_truncate: bool = True
    supports_cancel: bool = True
    g711: bool = True
    pcm_rate: int = 24000
    voices: tuple[str, ...] | None = OPENAI_VOICES
    default_voice: str = "marin"
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    greeting_mode: Literal["instructions", "item"] = "instructions"
    require_session_updated: bool = True

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """Handshake headers carrying ``api_key`` (none if it is empty)."""
        if not api_key:
            return {}
        if self.auth == "api-key":
            return {"api-key": api_key}
        return {"Authorization": f"Bearer {api_key}"}


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = dict(parse_qsl(parts.query))
    query.update({k: v for k, v in params.items() if v})
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


def openai_backend(model: str, *, url: str = "wss://api.openai.com/v1/realtime") -> RealtimeBackend:
    """OpenAI's own Realtime API (``url`` is the ``…/v1/realtime`` endpoint)."""
    return RealtimeBackend("openai", _with_query(url, model=model), model)


def azure_backend(deployment: str, *, endpoint: str) -> RealtimeBackend:
    """Azure OpenAI GA realtime: ``<endpoint>/openai/v1/realtime?model=<deployment>``.

    Args:
        deployment: the deployment name.
        endpoint: ``https://<resource>.openai.azure.com``, the v1 API base URL Azure shows
            for OpenAI clients (``…/openai/v1/``), or a full ``…/realtime`` URL.
    """
    parts = urlsplit(endpoint.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/openai/v1"):
        path += "/realtime"
    elif not path.endswith("/realtime"):
        path += "/openai/v1/realtime"
    base = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return RealtimeBackend("azure", _with_query(base, model=deployment), deployment, auth="api-key")


def xai_backend(model: str = "", *, url: str = "wss://api.x.ai/v1/realtime") -> RealtimeBackend:
    """xAI's Voice Agent API (OpenAI-compatible; session fields differ, 8 kHz PCM here).

    xAI's documented client events are ``session.update``, ``conversation.item.create``,
    ``response.create`` and ``input_audio_buffer.append|commit|clear``: no cancel, no truncate,
    so a barge-in only silences the rest of the response locally.
    """
    return RealtimeBackend(
        "xai",
        _with_query(url, model=model),
        model,
        session_style="xai",
        supports_truncate=False,  # xAI documents neither truncate/delete nor cancel
        supports_cancel=False,
        g711=False,
        pcm_rate=8000,
        voices=XAI_VOICES,
        default_voice="Eve",
        transcription_model=None,
        greeting_mode="item",
    )


def compat_backend(
    model: str,
    *,
    base_url: str,
    supports_truncate: bool = True,
    supports_cancel: bool = True,
    g711: bool = False,
) -> RealtimeBackend:
    """Any OpenAI-Realtime-compatible server (``base_url`` like ``ws://host:8000/v1``).

    ``truncate`` / ``cancel`` are best effort: errors about them never end the call, and an
    "unknown event" error switches them off for the rest of the call.
    """
    base = base_url.rstrip("/")
    if not urlsplit(base).path.endswith("/realtime"):
        base += "/realtime"
    return RealtimeBackend(
        "compat",
        _with_query(base, model=model),
        model,
        supports_truncate=supports_truncate,
        supports_cancel=supports_cancel,
        g711=g711,
        voices=None,
        greeting_mode="item",
        require_session_updated=False,
    )


def choose_formats(
    backend: RealtimeBackend, carrier_format: AudioFormat
) -> tuple[dict[str, Any], AudioFormat]:
    """The wire format object and the matching :class:`AudioFormat` for both directions.

    G.711 passes straight through when the carrier sends it and the backend takes it;
    otherwise L16 at ``backend.pcm_rate``.
    """
    if backend.g711 and carrier_format == PCMU_8K:
        return {"type": "audio/pcmu"}, PCMU_8K
    if backend.g711 and carrier_format == PCMA_8K:
        return {"type": "audio/pcma"}, PCMA_8K
    return {"type": "audio/pcm", "rate": backend.pcm_rate}, AudioFormat(
        Encoding.L16, backend.pcm_rate
    )
