"""Choose and build a call's model bridge from ``AgentConfig.model``.

Selectors:

==========================  ===========================================================
``local``                   the embedded offline agent (:mod:`gateway.llm.local.agent`)
``openai:<model>``          OpenAI Realtime (``gpt-realtime`` if the model is empty)
``azure:<deployment>``      Azure OpenAI realtime (endpoint from settings or secrets)
``xai:<model>``             xAI Voice Agent API
``compat:<model>[@<url>]``  any OpenAI-Realtime-compatible server at ``<url>``
                            (``ws://host:port/v1``), else ``compat_realtime_url``
``gemini:<model>``          Gemini Live
==========================  ===========================================================

Credentials come from the call's ``config.secrets`` first, then from settings:

=============  ===================================  =====================================
backend        secret / settings field              other settings (getattr, defaults)
=============  ===================================  =====================================
openai         ``openai_api_key``                   ``openai_realtime_url``
azure          ``azure_openai_api_key``             ``azure_openai_endpoint`` (also a secret)
xai            ``xai_api_key``                      ``xai_realtime_url``
compat         ``compat_api_key`` (optional)        ``compat_realtime_url`` (also a secret:
                                                    ``compat_base_url``),
                                                    ``compat_supports_truncate``,
                                                    ``compat_supports_cancel``, ``compat_g711``
gemini         ``gemini_api_key``                   ``gemini_live_url``
=============  ===================================  =====================================

``model_session_limit_s`` (default 3600) and ``model_session_margin_s`` (30) bound OpenAI, Azure
and xAI sessions (``compat_session_limit_s``, default none, for compatible servers). Keys never
reach logs, exception messages or ``repr``.
"""

from __future__ import annotations

from typing import Any

import httpx

from gateway.llm.base import AgentConfig, BridgeFailed, ModelBridge

__all__ = ["make_bridge", "BACKENDS"]

BACKENDS = ("local", "openai", "azure", "xai", "compat", "gemini")


def _plain(value: Any) -> str:
    if value is None:
        return ""
    get = getattr(value, "get_secret_value", None)
    return str(get() if callable(get) else value).strip()


def _secret(config: AgentConfig, settings: Any, name: str, *aliases: str) -> str:
    for key in (name, *aliases):
        if config.secrets.get(key):
            return str(config.secrets[key]).strip()
    return _plain(getattr(settings, name, ""))


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None or value == "" else value


def _require(key: str, backend: str, field: str) -> str:
    if not key:
        raise BridgeFailed("model_config", f"no API key for {backend} (set {field})")
    return key


def make_bridge(
    config: AgentConfig,
    settings: Any,
    *,
    local_engines: Any = None,
    tool_client: httpx.AsyncClient | None = None,
) -> ModelBridge:
    """Build (not start) the bridge ``config.model`` selects.

    Args:
        config: the call's agent configuration.
        settings: :class:`gateway.config.Settings` (read with ``getattr`` and defaults).
        local_engines: the app's shared :class:`~gateway.llm.local.engines.LocalEngines` for
            ``local`` (created here if not given, which loads the models per call).
        tool_client: HTTP client for tool calls (tests).

    Raises:
        BridgeFailed: ``model_config`` for an unknown backend, a missing key or endpoint.
    """
    backend, _, model = config.model.strip().partition(":")
    backend = backend.strip().lower()
    model = model.strip()
    if backend == "local":
        return _make_local(settings, local_engines)
    if backend == "gemini":
        from gateway.llm.gemini_live import GEMINI_LIVE_URL, GeminiLiveBridge

        key = _secret(config, settings, "gemini_api_key")
        _require(key, "gemini", "GATEWAY_GEMINI_API_KEY")
        return GeminiLiveBridge(
            model or "gemini-2.5-flash-native-audio-preview-09-2025",
            key,
            url=_setting(settings, "gemini_live_url", GEMINI_LIVE_URL),
            tool_client=tool_client,
        )

    from gateway.llm import openai_realtime as oai

    if backend == "openai":
        key = _secret(config, settings, "openai_api_key")
        _require(key, "openai", "GATEWAY_OPENAI_API_KEY")
        url = _setting(settings, "openai_realtime_url", "wss://api.openai.com/v1/realtime")
        rt = oai.openai_backend(model or "gpt-realtime", url=url)
    elif backend == "azure":
        key = _require(
            _secret(config, settings, "azure_openai_api_key", "azure_api_key"),
            "azure", "GATEWAY_AZURE_OPENAI_API_KEY",
        )  # fmt: skip
        endpoint = config.secrets.get("azure_openai_endpoint") or _setting(
            settings, "azure_openai_endpoint", ""
        )
        if not model or not endpoint:
            raise BridgeFailed(
                "model_config", "azure needs azure:<deployment> and GATEWAY_AZURE_OPENAI_ENDPOINT"
            )
        rt = oai.azure_backend(model, endpoint=str(endpoint))
    elif backend == "xai":
        key = _require(_secret(config, settings, "xai_api_key"), "xai", "GATEWAY_XAI_API_KEY")
        url = _setting(settings, "xai_realtime_url", "wss://api.x.ai/v1/realtime")
        rt = oai.xai_backend(model, url=url)
    elif backend == "compat":
        name, _, inline_url = model.partition("@")
        base = (
            inline_url.strip()
            or config.secrets.get("compat_base_url", "")
            or _setting(settings, "compat_realtime_url", "")
        )
        if not base:
            raise BridgeFailed(
                "model_config",
                "compat needs compat:<model>@<ws url> or GATEWAY_COMPAT_REALTIME_URL",
            )
        key = _secret(config, settings, "compat_api_key")
        rt = oai.compat_backend(
            name.strip(),
            base_url=str(base),
            supports_truncate=bool(_setting(settings, "compat_supports_truncate", True)),
            supports_cancel=bool(_setting(settings, "compat_supports_cancel", True)),
            g711=bool(_setting(settings, "compat_g711", False)),
        )
    else:
        raise BridgeFailed("model_config", f"unknown model backend {backend!r} (one of {BACKENDS})")
    limit = float(_setting(settings, "model_session_limit_s", 3600.0))
    if rt.name == "compat":  # self-hosted servers have no 60-minute cap unless told so
        limit = float(_setting(settings, "compat_session_limit_s", float("inf")))
    return oai.OpenAIRealtimeBridge(
        rt,
        key,
        tool_client=tool_client,
        session_limit_s=limit,
        session_limit_margin_s=float(_setting(settings, "model_session_margin_s", 30.0)),
    )


def _make_local(settings: Any, engines: Any) -> ModelBridge:
    from gateway.llm.local.agent import LocalAgentBridge  # heavy: imported only when used

    from_settings = getattr(LocalAgentBridge, "from_settings", None)
    if callable(from_settings):
        return from_settings(settings, engines=engines)
    from gateway.llm.local.responder import ChatCompletionsResponder, EchoResponder

    if engines is None:
        from gateway.llm.local.engines import LocalEngines

        engines = LocalEngines()
    base_url = _plain(getattr(settings, "llm_base_url", ""))
    responder: Any
    if base_url:
        responder = ChatCompletionsResponder(
            base_url,
            model=_plain(getattr(settings, "llm_model", "")) or "llama3.2",
            api_key=_plain(getattr(settings, "llm_api_key", "")),
        )
    else:
        responder = EchoResponder()
    return LocalAgentBridge(engines=engines, responder=responder)
