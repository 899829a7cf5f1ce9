"""Typed settings, read from ``GATEWAY_*`` environment variables (and a ``.env`` file).

Example: ``GATEWAY_PUBLIC_URL=https://voice.example.com gateway serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Gateway settings. Every field maps to ``GATEWAY_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Base URL carriers reach this gateway at (``https://…``); stream URLs use its ``wss://``
    #: form. Empty: derived from the request's own Host header.
    public_url: str = ""
    database_url: str = "sqlite:///gateway.db"
    recordings_dir: Path = Path("recordings")
    #: Seconds a stream URL's token stays valid for its first connection.
    stream_token_ttl_s: int = Field(600, ge=10, le=86400)
    #: Voice activity detector for turn-taking and barge-in.
    vad: Literal["silero", "webrtc"] = "silero"
    #: Silero speech probability threshold (speech at or above it).
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    #: Silero skips chunks whose mean power is below this (dBFS) as silence; empty: never skip.
    vad_energy_floor_dbfs: float | None = Field(-60.0, le=-20.0)
    #: webrtcvad aggressiveness, 0 (least) to 3 (most).
    webrtc_mode: int = Field(2, ge=0, le=3)
    #: Caller speech shorter than this is not a turn (ms).
    vad_min_speech_ms: int = Field(160, ge=20, le=2000)
    #: Silence that ends the caller's turn (ms).
    vad_min_silence_ms: int = Field(600, ge=60, le=5000)
    #: Caller speech over agent audio that triggers barge-in (ms): shorter than a turn's
    #: ``vad_min_speech_ms`` so the agent stops quickly, long enough to ignore clicks and coughs.
    barge_in_min_speech_ms: int = Field(96, ge=20, le=2000)
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
    #: Hosted realtime sessions end after 60 min; the call ends cleanly this margin before.
    model_session_limit_s: float = Field(3600.0, gt=0)
    model_session_margin_s: float = Field(30.0, ge=0)
    max_calls: int = Field(1000, ge=1)
    #: uvicorn's WebSocket implementation: ``websockets-sansio`` (default), ``websockets``, ``wsproto``.
    ws_impl: Literal["websockets-sansio", "websockets", "wsproto"] = "websockets-sansio"
    log_level: str = "INFO"
