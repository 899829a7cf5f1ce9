"""Typed settings, read from ``GATEWAY_*`` environment variables (and a ``.env`` file).

Example: ``GATEWAY_PUBLIC_URL=https://voice.example.com gateway serve``.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "ModelEndpoint", "check_public_url", "check_media_url"]


class ModelEndpoint(BaseModel):
    """One operator-configured model endpoint (an entry of ``GATEWAY_MODEL_ENDPOINTS``).

    Attributes:
        backend: which protocol the server speaks (``openai``, ``azure``, ``xai``, ``compat``,
            ``gemini``); a selector ``<backend>:<model>@<name>`` must name the same backend.
        url: the WebSocket URL (``ws(s)://…``); for ``azure`` the resource endpoint
            (``https://<resource>.openai.azure.com``).
        api_key_env: name of the environment variable holding the endpoint's key (``""``: the
            backend's key setting, e.g. ``GATEWAY_COMPAT_API_KEY``).
        supports_truncate, supports_cancel, g711: ``compat`` server capabilities.
        session_limit_s: model session length limit (s); ``None``: the backend's default.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "azure", "xai", "compat", "gemini"]
    url: str = Field(min_length=1)
    api_key_env: str = ""
    supports_truncate: bool = True
    supports_cancel: bool = True
    g711: bool = False
    session_limit_s: float | None = Field(None, gt=0)

    @field_validator("url")
    @classmethod
    def _url_form(cls, value: str) -> str:
        """``ws(s)://`` or (``azure``'s resource endpoint) ``http(s)://`` with a host."""
        parts = urlsplit(value.strip())
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"model endpoint url {value!r} must be ws(s)://host/… (azure: https://host)")
        return value.strip()


def _comma_list(value: Any) -> Any:
    """``"a, b"`` → ``["a", "b"]``; a JSON list string is parsed; lists pass through."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value

_AUTHORITY = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
)
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*")


def check_public_url(value: str) -> str:
    """Validate and normalise ``GATEWAY_PUBLIC_URL``: ``http(s)://host[:port][/prefix]``.

    Args:
        value: the setting as given; ``""`` (unset) is kept.

    Returns:
        The URL with a lower-case scheme and host and no trailing ``/`` (``""`` stays ``""``).

    Raises:
        ValueError: no ``http://`` / ``https://`` scheme, no host, a user name or password,
            a bad port, a query string or fragment, or characters a URL path cannot hold.
            The message names the setting and shows the expected form.
    """
    raw = value.strip()
    if not raw:
        return ""
    form = "expected http(s)://host[:port][/prefix], e.g. https://voice.example.com"
    if "://" not in raw:
        raise ValueError(f"GATEWAY_PUBLIC_URL {raw!r} has no scheme; {form}")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"GATEWAY_PUBLIC_URL {raw!r}: scheme must be http or https; {form}")
    if "?" in raw or "#" in raw:
        raise ValueError(f"GATEWAY_PUBLIC_URL {raw!r} must not have a query string or fragment; {form}")
    if "@" in parts.netloc:
        raise ValueError(f"GATEWAY_PUBLIC_URL {raw!r} must not carry a user name or password; {form}")
    authority = _AUTHORITY.fullmatch(parts.netloc)
    if authority is None or (authority["port"] and not 0 < int(authority["port"]) < 65536):
        raise ValueError(f"GATEWAY_PUBLIC_URL {raw!r}: bad host or port; {form}")
    if not _PREFIX.fullmatch(parts.path):
        raise ValueError(f"GATEWAY_PUBLIC_URL {raw!r}: the path prefix has characters a URL cannot hold; {form}")
    return f"{scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


class Settings(BaseSettings):
    """Gateway settings. Every field maps to ``GATEWAY_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Base URL carriers reach this gateway at: ``http(s)://host[:port][/prefix]`` (checked by
    #: :func:`check_public_url` at start-up); stream URLs use its ``wss://`` (``ws://``) form.
    #: Empty: derived from the request's own scheme and Host header.
    public_url: str = ""
    database_url: str = "sqlite:///gateway.db"
    recordings_dir: Path = Path("recordings")
    #: Where a call's final record waits when the database cannot take it (replayed at the next
    #: start). Empty: ``spool`` beside the recordings directory.
    spool_dir: Path | None = None
    #: Seconds a stream URL's token stays valid for its first connection.
    stream_token_ttl_s: int = Field(600, ge=10, le=86400)
    #: Voice activity detector for turn-taking and barge-in.
    vad: Literal["silero", "webrtc"] = "silero"
    #: Silero speech probability threshold (speech at or above it).
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    #: Silero pre-gate: Silero scores only chunks a cheap detector finds may be speech (plus a
    #: hangover around them); the rest count as silence. ``energy``: louder than the call's
    #: tracked noise floor; ``webrtc``: webrtcvad says speech; ``off``: score every chunk.
    vad_pregate: Literal["off", "energy", "webrtc"] = "energy"
    #: The lowest the pre-gate's tracked noise floor goes (dBFS); empty: pre-gate off.
    vad_energy_floor_dbfs: float | None = Field(-70.0, le=-20.0)
    #: webrtcvad aggressiveness, 0 (least) to 3 (most).
    webrtc_mode: int = Field(2, ge=0, le=3)
    #: Caller speech shorter than this is not a turn (ms).
    vad_min_speech_ms: int = Field(160, ge=20, le=2000)
    #: Silence that ends the caller's turn (ms).
    vad_min_silence_ms: int = Field(600, ge=60, le=5000)
    #: How caller audio is processed: ``tick``, every call's queued frames decoded, resampled and
    #: VAD-scored together once per ``engine_tick_ms`` (Silero in one ONNX run for all calls);
    #: ``frame``, each frame in its call's own task as it arrives (Silero batched per 4 ms window).
    media_engine: Literal["tick", "frame"] = "tick"
    #: The media engine's tick (ms): a frame waits at most this long for its VAD decision.
    engine_tick_ms: float = Field(10.0, ge=5.0, le=40.0)
    #: Echo cancelling in front of the VAD while agent audio plays (8 and 16 kHz carriers):
    #: ``on``, the caller leg's echo of the agent is cancelled and a double-talk rule confirms a
    #: barge-in; ``off``, the echo path is only estimated (``metrics.echo``) and the VAD hears
    #: the caller leg as it came. The recording and the model always get the caller leg as is.
    echo_cancel: Literal["on", "off"] = "on"
    #: Caller audio per message to the model (ms); what is buffered is sent at once before every
    #: turn event (speech start, end of turn, barge-in). Larger: fewer messages per call-second.
    model_chunk_ms: int = Field(100, ge=20, le=500)
    #: Agent audio per media message to the carrier at most (ms, whole 20 ms frames), where the
    #: carrier accepts larger messages (Twilio, Telnyx, Plivo, raw); Vonage keeps exact 20 ms
    #: frames and Exotel its own chunk size. 20: one message per 20 ms frame.
    carrier_message_ms: int = Field(100, ge=20, le=500)
    #: Caller speech over agent audio that triggers barge-in (ms): shorter than a turn's
    #: ``vad_min_speech_ms`` so the agent stops quickly, long enough to ignore clicks and coughs.
    barge_in_min_speech_ms: int = Field(96, ge=20, le=2000)
    #: What caller speech over agent audio does on an interruptible call whose agent (or inline
    #: call) sets no ``bargeInMode``: ``immediate`` (clear and cut the reply at once),
    #: ``pause_then_commit`` (pause; cut only if the caller goes on for the call's
    #: ``bargeInCommitMs``, else resume where it paused) or ``off`` (see
    #: :mod:`gateway.session.bargein`).
    barge_in_mode: Literal["off", "immediate", "pause_then_commit"] = "immediate"
    #: Pause-then-commit: unvoiced caller audio (ms) after shorter speech that resumes the agent.
    barge_in_resume_gap_ms: int = Field(400, ge=20, le=2000)
    #: Pause-then-commit: ``on``, a likely onset over agent audio (two 32 ms chunks Silero scores
    #: as speech or WebRTC VAD calls speech, each passing the echo stage's double-talk rule and
    #: 6 dB over the line's floor) pauses the agent before Silero confirms speech (an unvoiced
    #: "s", "f", "sh" scores low until its vowel, 100–200 ms later); ``off``, only the VAD's
    #: confirmation pauses. Commit always takes the VAD's voiced time (:class:`gateway.vadrun.VadCue`).
    barge_in_cues: Literal["on", "off"] = "on"
    #: OpenAI-compatible chat-completions endpoint for the local agent's responder (e.g.
    #: ``http://127.0.0.1:11434/v1`` for Ollama). Empty: the echo responder (a diagnostic).
    llm_base_url: str = ""
    llm_api_key: SecretStr = SecretStr("")
    llm_model: str = "llama3.2"
    #: Twilio account auth token. When set, Twilio media streams must carry a valid
    #: ``X-Twilio-Signature`` (HMAC-SHA1 of the ``wss://`` stream URL) or are refused (4403).
    twilio_auth_token: SecretStr = SecretStr("")
    openai_api_key: SecretStr = SecretStr("")
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    gemini_api_key: SecretStr = SecretStr("")
    #: Gemini Live WebSocket endpoint (BidiGenerateContent).
    gemini_live_url: str = (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    azure_openai_api_key: SecretStr = SecretStr("")
    #: e.g. ``https://my-resource.openai.azure.com``; the deployment comes from ``azure:<name>``.
    azure_openai_endpoint: str = ""
    xai_api_key: SecretStr = SecretStr("")
    xai_realtime_url: str = "wss://api.x.ai/v1/realtime"
    #: Any OpenAI-Realtime-compatible server for ``compat:<model>`` (e.g. ``ws://127.0.0.1:8000/v1/realtime``).
    compat_realtime_url: str = ""
    compat_api_key: SecretStr = SecretStr("")
    compat_supports_truncate: bool = True
    compat_supports_cancel: bool = True
    #: The compatible server accepts G.711 (``audio/pcmu`` / ``audio/pcma``) directly.
    compat_g711: bool = False
    #: Named model endpoints (JSON object, name → :class:`ModelEndpoint`). A call picks one by
    #: name (``compat:<model>@<name>``); requests never give a URL.
    model_endpoints: dict[str, ModelEndpoint] = Field(default_factory=dict)
    #: Non-public targets tool URLs may reach (comma-separated hosts, ``host:port``, addresses
    #: or CIDRs; see :mod:`gateway.netpolicy`). Empty: public HTTPS hosts only.
    outbound_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Webhook deliveries (:mod:`gateway.webhooks`): the Standard Webhooks retry schedule
    #: (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) is multiplied by this (tests
    #: compress it, e.g. 0.001); each request's time limit (s); how often (s) the outbox is
    #: polled for due deliveries.
    webhook_retry_scale: float = Field(1.0, gt=0, le=1)
    webhook_timeout_s: float = Field(10.0, gt=0, le=60)
    webhook_poll_s: float = Field(1.0, gt=0, le=60)
    #: Post-call results (:mod:`gateway.postcall`): the OpenAI-compatible chat-completions
    #: endpoint that writes each ended call's summary and extracts its ``fields`` (base URL,
    #: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:11434/v1``; an operator
    #: setting, never from a request). Empty: results are ``skipped`` (the record says why).
    postcall_base_url: str = ""
    postcall_model: str = Field("gpt-4o-mini", min_length=1, max_length=200)
    postcall_api_key: SecretStr = SecretStr("")
    #: Each chat request's time limit (s) and the SDK's retries of a failed request
    #: (connection errors, 408/409/429/5xx; exponential backoff).
    postcall_timeout_s: float = Field(30.0, gt=0, le=300)
    postcall_max_retries: int = Field(2, ge=0, le=5)
    #: How often (s) the worker looks for ended calls; calls worked on at once per node.
    postcall_poll_s: float = Field(1.0, gt=0, le=60)
    postcall_concurrency: int = Field(2, ge=1, le=32)
    #: How long (s) a worker's claim on a call holds (its work is cut off at half of it);
    #: claims per call before it is given up as ``failed`` (a call that stopped its worker
    #: each time, e.g. by a crash).
    postcall_lease_s: float = Field(600.0, ge=10, le=86400)
    postcall_max_attempts: int = Field(3, ge=1, le=20)
    #: The transcript sent to the model is cut to this many characters (its middle dropped).
    postcall_max_transcript_chars: int = Field(60_000, ge=1_000, le=1_000_000)
    #: Call data kept (days): ended calls created longer ago are deleted with their transcript,
    #: events, transitions, webhook outbox rows and recording file (:mod:`gateway.retention`);
    #: 0 keeps everything forever. The purge runs at start-up and every ``retention_every_s``.
    #: A call whose post-call results are still ``pending``/``running``, or with a webhook
    #: delivery still in its retry schedule (~27.6 h), is kept until they are done.
    retention_days: int = Field(0, ge=0, le=36_500)
    retention_every_s: float = Field(3600.0, gt=0, le=86_400)
    #: Secrets each tenant's API keys may reference (JSON: tenant → list of ``GATEWAY_SECRET_*``
    #: names, ``PREFIX*`` patterns or ``"*"``), on top of the built-in grant of
    #: ``GATEWAY_SECRET_<TENANT>_*`` to each tenant (see :mod:`gateway.tenants`).
    tenant_secrets: dict[str, list[str]] = Field(default_factory=dict)
    #: Where each carrier's REST API is reached for outbound calls (JSON: kind → base URL, e.g.
    #: ``{"twilio": "http://127.0.0.1:9300"}`` for the carrier simulator). Empty: each carrier's
    #: own API. An operator setting only: no request chooses where the dialer connects.
    carrier_api_urls: dict[str, str] = Field(default_factory=dict)
    #: Time limit (s) on each carrier REST request (place, hang up, DTMF).
    dialer_timeout_s: float = Field(10.0, gt=0, le=60)
    #: Hosted realtime sessions end after 60 min; the call ends cleanly this margin before.
    model_session_limit_s: float = Field(3600.0, gt=0)
    model_session_margin_s: float = Field(30.0, ge=0)
    #: Live calls (media streams being served) this process takes at once. At the limit new
    #: streams are refused with close code 1013 (try again later) and ``POST /calls/create`` /
    #: ``POST /calls/inline`` answer 503 with ``Retry-After``.
    max_calls: int = Field(1000, ge=1)
    #: uvicorn's WebSocket implementation: ``websockets-sansio`` (default), ``websockets``, ``wsproto``.
    ws_impl: Literal["websockets-sansio", "websockets", "wsproto"] = "websockets-sansio"
    #: Where carrier media streams are served: ``starlette`` (the app's own ``/stream/…``
    #: WebSocket route) or ``picows`` (a picows listener on :attr:`media_port` in the same
    #: process and event loop, cheaper per frame; :mod:`gateway.picows_listener`). The API's
    #: stream URLs point at the listener chosen; the Starlette route keeps serving either way.
    media_listener: Literal["starlette", "picows"] = "starlette"
    #: TCP port of the picows media listener (on :attr:`host`).
    media_port: int = Field(8081, ge=1, le=65535)
    #: Base URL carriers reach the picows listener at: ``ws(s)://host[:port][/prefix]``. Empty:
    #: :attr:`public_url`'s host with :attr:`media_port` (``https`` → ``wss``), else
    #: ``ws://<host>:<media_port>``. Never taken from a request's Host header.
    media_public_url: str = ""
    log_level: str = "INFO"
    #: This gateway node's id, recorded on each call whose stream it serves. At start-up the
    #: node finalises the calls its previous run left ``in_progress`` (``failed``,
    #: ``node_lost``). Unique among processes sharing a database, stable across restarts
    #: (default: ``<host name>:<port>``, so two processes on one host differ; set it where
    #: host names change, e.g. a Kubernetes Deployment: a StatefulSet pod name is stable).
    node_id: str = Field(
        default_factory=lambda data: f"{socket.gethostname()}:{data.get('port', 8080)}", min_length=1, max_length=200
    )
    #: How long (s) a node vouches for a call it serves: each call's lease is renewed every
    #: third of this while it is live; a call whose lease lapsed (its node gone for good: a
    #: pod rescheduled under a new name, a host lost) is finalised as ``node_lost`` by any
    #: node's sweeper (:mod:`gateway.store.recovery`).
    call_lease_s: float = Field(90.0, ge=5, le=86400)
    #: On SIGTERM, live calls are ended (reason ``shutdown``, close code 1001) and the gateway
    #: waits this long (s) for their records before closing what is left (then as long again
    #: before cancelling it).
    shutdown_timeout_s: float = Field(10.0, gt=0, le=300)
    #: WebRTC calls (:mod:`gateway.webrtc`): STUN server URLs (``stun:host:port``, a comma
    #: list) for the gateway's ICE agent and the browser's (the call's ``iceServers``); empty:
    #: host candidates only (loopback and LAN).
    webrtc_stun_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: TURN server URLs (``turn:host:port?transport=udp``, ``turns:…``, a comma list) and their
    #: username and credential, for peers behind NATs that block direct paths.
    webrtc_turn_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webrtc_turn_username: str = ""
    webrtc_turn_credential: SecretStr = SecretStr("")
    #: A WebRTC call's ICE and DTLS must complete within this long (s) after its offer is
    #: answered, else the call ends (``failed``, ``webrtc_connect_timeout``).
    webrtc_connect_timeout_s: float = Field(15.0, ge=1, le=120)
    #: The gateway's jitter buffer for the caller's audio, in 20 ms frames (aiortc's own default
    #: is 4): each one delays the VAD, so barge-in, by 20 ms. At 1, a packet that arrives in
    #: order is decoded at once (:func:`gateway.webrtc.tracks.set_jitter_frames`).
    webrtc_jitter_frames: int = Field(1, ge=1, le=8)
    #: Load the local agent's speech models at start-up (in the background) rather than at
    #: the first ``local`` call. Off: cheaper start-up for gateways that use hosted models.
    warm_up: bool = True
    #: Worker processes running the local agent's recognition and synthesis (about 150 MB
    #: each; each decodes one utterance at a time fastest, up to 4 concurrently).
    local_workers: int = Field(2, ge=1, le=64)

    @property
    def spool_path(self) -> Path:
        """:attr:`spool_dir`, or ``spool`` beside :attr:`recordings_dir` when it is empty."""
        return self.spool_dir if self.spool_dir is not None else self.recordings_dir.parent / "spool"

    @field_validator("outbound_allow", mode="before")
    @classmethod
    def _allow_list(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("webrtc_stun_urls", "webrtc_turn_urls", mode="before")
    @classmethod
    def _ice_lists(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("webrtc_stun_urls", "webrtc_turn_urls")
    @classmethod
    def _ice_urls(cls, value: list[str], info: Any) -> list[str]:
        """``stun:``/``stuns:`` URLs for STUN, ``turn:``/``turns:`` for TURN (RFC 7064, 7065)."""
        schemes = ("stun:", "stuns:") if info.field_name == "webrtc_stun_urls" else ("turn:", "turns:")
        for url in value:
            if not url.lower().startswith(schemes) or len(url) <= len(url.split(":", 1)[0]) + 1:
                raise ValueError(f"{info.field_name}: {url!r} is not a {' or '.join(schemes)} URL")
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _allow_entries(cls, value: list[str]) -> list[str]:
        from gateway.netpolicy import OutboundPolicy

        OutboundPolicy(tuple(value))  # raises ValueError naming a malformed entry
        return value

    @field_validator("carrier_api_urls")
    @classmethod
    def _carrier_urls(cls, value: dict[str, str]) -> dict[str, str]:
        from gateway.dialer.base import DIALER_KINDS

        for kind, url in value.items():
            if kind not in DIALER_KINDS:
                raise ValueError(f"carrier_api_urls: {kind!r} is not one of {', '.join(DIALER_KINDS)}")
            if not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", url):
                raise ValueError(f"carrier_api_urls.{kind}: {url!r} is not an http(s):// base URL")
        return {kind: url.rstrip("/") for kind, url in value.items()}

    @field_validator("tenant_secrets")
    @classmethod
    def _grants(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from gateway.tenants import SecretGrants

        SecretGrants({t: tuple(p) for t, p in value.items()})  # raises ValueError naming the bad grant
        return value

    @field_validator("postcall_base_url")
    @classmethod
    def _postcall_url_form(cls, value: str) -> str:
        """``http(s)://host[:port][/path]`` (no query), trailing ``/`` dropped; ``""`` kept."""
        url = value.strip()
        if url and not re.fullmatch(r"https?://[^/?#\s@]+(/[^?#\s]*)?", url):
            raise ValueError(f"postcall_base_url: {url!r} is not an http(s):// base URL (e.g. https://api.openai.com/v1)")
        return url.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _public_url_form(cls, value: str) -> str:
        return check_public_url(value)

    @field_validator("media_public_url")
    @classmethod
    def _media_url_form(cls, value: str) -> str:
        return check_media_url(value)


def check_media_url(value: str) -> str:
    """Validate and normalise ``GATEWAY_MEDIA_PUBLIC_URL``: ``ws(s)://host[:port][/prefix]``.

    The same rules as :func:`check_public_url` with WebSocket schemes; ``""`` is kept.

    Raises:
        ValueError: as :func:`check_public_url`, naming ``GATEWAY_MEDIA_PUBLIC_URL``.
    """
    raw = value.strip()
    if not raw:
        return ""
    scheme, sep, rest = raw.partition("://")
    http = {"ws": "http", "wss": "https"}.get(scheme.lower())
    if not sep or http is None:
        raise ValueError(f"GATEWAY_MEDIA_PUBLIC_URL {raw!r}: expected ws(s)://host[:port][/prefix], "
                         "e.g. wss://media.example.com")
    try:
        checked = check_public_url(f"{http}://{rest}")
    except ValueError as exc:
        raise ValueError(str(exc).replace("GATEWAY_PUBLIC_URL", "GATEWAY_MEDIA_PUBLIC_URL")) from None
    return ("wss" if http == "https" else "ws") + checked[len(http):]
