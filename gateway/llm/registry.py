"""Choose and build a call's model bridge from ``AgentConfig.model``.

Selectors (``<backend>:<model>[@<endpoint name>]``, see :mod:`gateway.llm.endpoints`):

==============================  ========================================================
``local``                       the embedded offline agent (:mod:`gateway.llm.local.agent`)
``openai:<model>``              OpenAI Realtime (``gpt-realtime`` if the model is empty)
``azure:<deployment>``          Azure OpenAI realtime (``azure_openai_endpoint``)
``xai:<model>``                 xAI Voice Agent API
``compat:<model>``              the OpenAI-Realtime-compatible server at ``compat_realtime_url``
``gemini:<model>``              Gemini Live
``<backend>:<model>@<name>``    the operator's endpoint ``<name>`` of ``model_endpoints``
                                (``GATEWAY_MODEL_ENDPOINTS``), which must serve ``<backend>``
==============================  ========================================================

Network destinations come only from settings: a URL in the selector, an unknown endpoint name
or an endpoint of another backend is a ``model_config`` failure (and a 422 at the API).
Request-side secrets may carry keys, never endpoints. Keys: the call's ``config.secrets``
first (already limited to its tenant's grant), then the named endpoint's ``api_key_env``
variable, then the backend's settings field:

=============  ===================================  =====================================
backend        secret / settings field              other settings (getattr, defaults)
=============  ===================================  =====================================
openai         ``openai_api_key``                   ``openai_realtime_url``
azure          ``azure_openai_api_key``             ``azure_openai_endpoint``
xai            ``xai_api_key``                      ``xai_realtime_url``
compat         ``compat_api_key`` (optional)        ``compat_realtime_url``,
                                                    ``compat_supports_truncate``,
                                                    ``compat_supports_cancel``, ``compat_g711``
                                                    (a named endpoint's own options win)
gemini         ``gemini_api_key``                   ``gemini_live_url``
=============  ===================================  =====================================

Tool calls go through the ``tool_client`` given (the app's shared
:class:`gateway.outbound.AppClients` ``tools``), else through a client each call's tool runner
builds with the settings' ``outbound_allow`` policy and closes (the TLS context is shared
either way: no per-call certificate loading on the event loop).

``model_session_limit_s`` (default 3600) and ``model_session_margin_s`` (30) bound OpenAI, Azure
and xAI sessions (``compat_session_limit_s``, default none, for compatible servers). Keys never
reach logs, exception messages or ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from gateway.llm.base import AgentConfig, BridgeFailed, ModelBridge
from gateway.llm.endpoints import BACKENDS, SelectorError, check_selector
from gateway.netpolicy import OutboundPolicy

__all__ = ["make_bridge", "BACKENDS"]


def _plain(value: Any) -> str:
    if value is None:
        return ""
    get = getattr(value, "get_secret_value", None)
    return str(get() if callable(get) else value).strip()


#: Backend → the names its key has among the call's secrets; the first is also the settings
#: field (``openai_api_key`` ↔ ``GATEWAY_OPENAI_API_KEY``).
_KEY_NAMES = {
    "openai": ("openai_api_key",),
    "azure": ("azure_openai_api_key", "azure_api_key"),
    "xai": ("xai_api_key",),
    "compat": ("compat_api_key",),
    "gemini": ("gemini_api_key",),
}


def _endpoints(settings: Any) -> Mapping[str, Any]:
    return getattr(settings, "model_endpoints", None) or {}


def _ep(ep: Any, name: str, default: Any = "") -> Any:
    """Field ``name`` of a named endpoint (a ``ModelEndpoint`` or a dict), else ``default``."""
    if ep is None:
        return default
    value = ep.get(name, default) if isinstance(ep, Mapping) else getattr(ep, name, default)
    return default if value is None else value


def _option(ep: Any, settings: Any, name: str, default: Any) -> Any:
    """A compat capability: the named endpoint's, else ``compat_<name>`` from settings."""
    if ep is not None:
        return _ep(ep, name, default)
    return _setting(settings, f"compat_{name}", default)


def _key(config: AgentConfig, settings: Any, backend: str, ep: Any) -> str:
    """The backend's key: the call's (tenant-granted) secret, else the named endpoint's
    ``api_key_env`` variable, else the backend's settings field."""
    names = _KEY_NAMES[backend]
    for name in names:
        if config.secrets.get(name):
            return str(config.secrets[name]).strip()
    env = _ep(ep, "api_key_env", "")
    if env:
        return os.environ.get(env, "").strip()
    return _plain(getattr(settings, names[0], ""))


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
    http_client: httpx.AsyncClient | None = None,
) -> ModelBridge:
    """Build (not start) the bridge ``config.model`` selects.

    Args:
        config: the call's agent configuration.
        settings: :class:`gateway.config.Settings` (read with ``getattr`` and defaults).
        local_engines: the app's shared :class:`~gateway.llm.local.remote.LocalEngines` for
            ``local`` (created here if not given, which loads the models per call).
        tool_client: HTTP client for tool calls (the app's shared one; not closed by the
            bridge); default: the tool runner's own, with the settings' allow-list.
        http_client: HTTP client for the local agent's chat-completions endpoint (the app's
            shared ``operator`` client; not closed by the bridge); default: the responder's own.

    Raises:
        BridgeFailed: ``model_config`` for an unknown backend, a missing key or endpoint, a
            URL in the selector, or an endpoint name the settings do not define (or that
            serves another backend).
    """
    try:
        sel = check_selector(config.model, _endpoints(settings))
    except SelectorError as exc:
        raise BridgeFailed("model_config", f"model {config.model!r}: {exc}") from None
    backend, model = sel.backend, sel.model
    ep = _endpoints(settings).get(sel.endpoint) if sel.endpoint else None
    if backend == "local":
        return _make_local(settings, local_engines, http_client)
    policy = OutboundPolicy.from_settings(settings)
    if backend == "gemini":
        return _make_gemini(config, settings, model, ep, tool_client, policy)
    realtime = _REALTIME_BACKENDS.get(backend)
    if realtime is None:
        raise BridgeFailed("model_config", f"unknown model backend {backend!r} (one of {BACKENDS})")
    rt, key = realtime(config, settings, model, ep)
    return _make_realtime(rt, key, settings, ep, tool_client, policy)


def _make_gemini(
    config: AgentConfig,
    settings: Any,
    model: str,
    ep: Any,
    tool_client: httpx.AsyncClient | None,
    policy: OutboundPolicy,
) -> ModelBridge:
    """The Gemini Live bridge (key required; URL: the named endpoint's, else settings)."""
    from gateway.llm.gemini_live import GEMINI_LIVE_URL, GeminiLiveBridge

    key = _require(_key(config, settings, "gemini", ep), "gemini", "GATEWAY_GEMINI_API_KEY")
    return GeminiLiveBridge(
        model or "gemini-2.5-flash-native-audio-preview-09-2025",
        key,
        url=_ep(ep, "url") or _setting(settings, "gemini_live_url", GEMINI_LIVE_URL),
        tool_client=tool_client,
        tool_policy=policy,
    )


def _openai_rt(config: AgentConfig, settings: Any, model: str, ep: Any) -> tuple[Any, str]:
    """OpenAI Realtime: ``(RealtimeBackend, key)``; the key is required."""
    from gateway.llm import openai_realtime as oai

    key = _require(_key(config, settings, "openai", ep), "openai", "GATEWAY_OPENAI_API_KEY")
    url = _ep(ep, "url") or _setting(settings, "openai_realtime_url", "wss://api.openai.com/v1/realtime")
    return oai.openai_backend(model or "gpt-realtime", url=url), key


def _azure_rt(config: AgentConfig, settings: Any, model: str, ep: Any) -> tuple[Any, str]:
    """Azure OpenAI realtime: ``(RealtimeBackend, key)``; key, deployment and endpoint required."""
    from gateway.llm import openai_realtime as oai

    key = _require(_key(config, settings, "azure", ep), "azure", "GATEWAY_AZURE_OPENAI_API_KEY")
    endpoint = _ep(ep, "url") or _setting(settings, "azure_openai_endpoint", "")
    if not model or not endpoint:
        raise BridgeFailed(
            "model_config", "azure needs azure:<deployment> and GATEWAY_AZURE_OPENAI_ENDPOINT"
        )
    return oai.azure_backend(model, endpoint=str(endpoint)), key


def _xai_rt(config: AgentConfig, settings: Any, model: str, ep: Any) -> tuple[Any, str]:
    """xAI Voice Agent API: ``(RealtimeBackend, key)``; the key is required."""
    from gateway.llm import openai_realtime as oai

    key = _require(_key(config, settings, "xai", ep), "xai", "GATEWAY_XAI_API_KEY")
    url = _ep(ep, "url") or _setting(settings, "xai_realtime_url", "wss://api.x.ai/v1/realtime")
    return oai.xai_backend(model, url=url), key


def _compat_rt(config: AgentConfig, settings: Any, model: str, ep: Any) -> tuple[Any, str]:
    """An OpenAI-Realtime-compatible server: ``(RealtimeBackend, key)``; the base URL is
    required, the key optional; capabilities from the named endpoint, else settings."""
    from gateway.llm import openai_realtime as oai

    base = _ep(ep, "url") or _setting(settings, "compat_realtime_url", "")
    if not base:
        raise BridgeFailed(
            "model_config",
            "compat needs GATEWAY_COMPAT_REALTIME_URL or compat:<model>@<endpoint name> "
            "(GATEWAY_MODEL_ENDPOINTS)",
        )
    rt = oai.compat_backend(
        model,
        base_url=str(base),
        supports_truncate=bool(_option(ep, settings, "supports_truncate", True)),
        supports_cancel=bool(_option(ep, settings, "supports_cancel", True)),
        g711=bool(_option(ep, settings, "g711", False)),
    )
    return rt, _key(config, settings, "compat", ep)


#: Backend → builder of its ``(RealtimeBackend, key)`` for :class:`OpenAIRealtimeBridge`.
_REALTIME_BACKENDS = {
    "openai": _openai_rt,
    "azure": _azure_rt,
    "xai": _xai_rt,
    "compat": _compat_rt,
}


def _make_realtime(
    rt: Any,
    key: str,
    settings: Any,
    ep: Any,
    tool_client: httpx.AsyncClient | None,
    policy: OutboundPolicy,
) -> ModelBridge:
    """The OpenAI-Realtime-protocol bridge for ``rt``, with its session limit in seconds
    (``model_session_limit_s``; compat: ``compat_session_limit_s``, default none; a named
    endpoint's ``session_limit_s`` wins)."""
    from gateway.llm import openai_realtime as oai

    limit = float(_setting(settings, "model_session_limit_s", 3600.0))
    if rt.name == "compat":  # self-hosted servers have no 60-minute cap unless told so
        limit = float(_setting(settings, "compat_session_limit_s", float("inf")))
    if _ep(ep, "session_limit_s", None):
        limit = float(_ep(ep, "session_limit_s"))
    return oai.OpenAIRealtimeBridge(
        rt,
        key,
        tool_client=tool_client,
        tool_policy=policy,
        session_limit_s=limit,
        session_limit_margin_s=float(_setting(settings, "model_session_margin_s", 30.0)),
    )


def _make_local(settings: Any, engines: Any, http_client: httpx.AsyncClient | None) -> ModelBridge:
    from gateway.llm.local.agent import LocalAgentBridge  # heavy: imported only when used

    from_settings = getattr(LocalAgentBridge, "from_settings", None)
    if callable(from_settings):
        return from_settings(settings, engines=engines)
    from gateway.llm.local.responder import ChatCompletionsResponder, EchoResponder

    if engines is None:
        from gateway.llm.local.remote import LocalEngines

        engines = LocalEngines()
    base_url = _plain(getattr(settings, "llm_base_url", ""))
    responder: Any
    if base_url:
        responder = ChatCompletionsResponder(
            base_url,
            model=_plain(getattr(settings, "llm_model", "")) or "llama3.2",
            api_key=_plain(getattr(settings, "llm_api_key", "")),
            client=http_client,
        )
    else:
        responder = EchoResponder()
    return LocalAgentBridge(engines=engines, responder=responder)
