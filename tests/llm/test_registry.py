"""Bridge selection by ``AgentConfig.model`` and key handling (gateway.llm.registry)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from gateway.config import Settings
from gateway.llm.base import AgentConfig, BridgeFailed
from gateway.llm.gemini_live import GeminiLiveBridge
from gateway.llm.openai_realtime import OpenAIRealtimeBridge
from gateway.llm.registry import make_bridge
from gateway.netpolicy import OutboundPolicy

KEY = "sk-settings-key-0123456789"


def settings(**extra) -> Settings:
    base = Settings(_env_file=None, openai_api_key=SecretStr(KEY), gemini_api_key=SecretStr("AIza-settings-0123"))
    for k, v in extra.items():
        object.__setattr__(base, k, v)  # fields Settings does not declare yet (read via getattr)
    return base


def backend(bridge: OpenAIRealtimeBridge):
    return bridge._backend


def test_openai_uses_settings_key_and_url():
    b = make_bridge(AgentConfig(model="openai:gpt-realtime-mini"), settings())
    assert isinstance(b, OpenAIRealtimeBridge) and b.name == "openai"
    assert backend(b).url == "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"
    assert KEY not in repr(b)
    assert backend(make_bridge(AgentConfig(model="openai:"), settings())).model == "gpt-realtime"


def test_per_call_secret_wins_over_settings():
    cfg = AgentConfig(model="openai:gpt-realtime", secrets={"openai_api_key": "sk-call-key-0000"})
    b = make_bridge(cfg, settings())
    assert b._OpenAIRealtimeBridge__key == "sk-call-key-0000"  # type: ignore[attr-defined]
    assert "sk-call-key" not in repr(b) and "sk-call-key" not in repr(cfg)


def test_azure_xai_and_compat():
    s = settings(azure_openai_api_key=SecretStr("az"), azure_openai_endpoint="https://res.openai.azure.com", xai_api_key="xk")
    az = make_bridge(AgentConfig(model="azure:my-dep"), s)
    assert backend(az).url == "wss://res.openai.azure.com/openai/v1/realtime?model=my-dep" and backend(az).auth == "api-key"
    xai = make_bridge(AgentConfig(model="xai:grok-voice"), s)
    assert backend(xai).name == "xai" and backend(xai).url.startswith("wss://api.x.ai/v1/realtime")
    from_settings = make_bridge(
        AgentConfig(model="compat:m"),
        settings(compat_realtime_url="wss://rt.example/v1/realtime", compat_supports_truncate=False),
    )
    assert backend(from_settings).url == "wss://rt.example/v1/realtime?model=m"
    assert backend(from_settings).supports_truncate is False


def test_gemini():
    b = make_bridge(AgentConfig(model="gemini:gemini-2.5-flash-native-audio-preview-09-2025"), settings())
    assert isinstance(b, GeminiLiveBridge) and "AIza" not in repr(b)


def test_named_endpoint_from_settings_with_its_own_key_and_options(monkeypatch):
    monkeypatch.setenv("GATEWAY_GPU1_KEY", "gpu1-key-0123")
    s = Settings(_env_file=None, compat_api_key=SecretStr("compat-default-key"), model_endpoints={
        "gpu1": {"backend": "compat", "url": "ws://10.1.2.3:8000/v1", "api_key_env": "GATEWAY_GPU1_KEY",
                 "supports_cancel": False, "g711": True, "session_limit_s": 1800},
        "eu": {"backend": "openai", "url": "wss://eu.proxy.example/v1/realtime"},
    })  # fmt: skip
    named = make_bridge(AgentConfig(model="compat:qwen-omni@gpu1"), s)
    assert backend(named).url == "ws://10.1.2.3:8000/v1/realtime?model=qwen-omni"
    assert backend(named).supports_cancel is False and backend(named).supports_truncate is True
    assert named._OpenAIRealtimeBridge__key == "gpu1-key-0123"  # type: ignore[attr-defined]
    default = make_bridge(AgentConfig(model="compat:m"), s.model_copy(update={"compat_realtime_url": "ws://h/v1"}))
    assert default._OpenAIRealtimeBridge__key == "compat-default-key"  # type: ignore[attr-defined]
    eu = make_bridge(AgentConfig(model="openai:gpt-realtime@eu"), s.model_copy(update={"openai_api_key": SecretStr(KEY)}))
    assert backend(eu).url == "wss://eu.proxy.example/v1/realtime?model=gpt-realtime"


@pytest.mark.parametrize("model", [
    "compat:m@ws://attacker.example/v1",
    "compat:m@wss://169.254.169.254/latest",
    "compat:m@127.0.0.1:8000",
    "compat:m@",
    "compat:m@nosuch",  # a name the operator did not configure
    "openai:gpt-realtime@gpu1",  # an endpoint of another backend
])  # fmt: skip
def test_request_cannot_choose_a_destination(model):
    s = settings(compat_realtime_url="ws://operator.example/v1", model_endpoints={
        "gpu1": {"backend": "compat", "url": "ws://10.1.2.3:8000/v1"}})  # fmt: skip
    with pytest.raises(BridgeFailed) as info:
        make_bridge(AgentConfig(model=model), s)
    assert info.value.code == "model_config"


@pytest.mark.parametrize("url", ["10.0.0.7:8000/v1", "ftp://h/v1", "ws:///v1"])
def test_endpoint_urls_are_checked_at_start_up(url):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(_env_file=None, model_endpoints={"gpu1": {"backend": "compat", "url": url}})


def test_secrets_choose_keys_but_never_endpoints():
    s = settings(compat_realtime_url="ws://operator.example/v1", azure_openai_api_key=SecretStr("az"),
                 azure_openai_endpoint="https://res.openai.azure.com")  # fmt: skip
    sneaky = {"compat_base_url": "ws://attacker.example/v1", "azure_openai_endpoint": "https://attacker.example"}
    compat = make_bridge(AgentConfig(model="compat:m", secrets=sneaky), s)
    assert backend(compat).url.startswith("ws://operator.example/v1")
    az = make_bridge(AgentConfig(model="azure:dep", secrets=sneaky), s)
    assert backend(az).url.startswith("wss://res.openai.azure.com/")


@pytest.mark.parametrize(("model", "extra"), [
    ("xai:grok", {}),  # no xAI key anywhere
    ("azure:dep", {"azure_openai_api_key": "k"}),  # no endpoint
    ("compat:m", {}),  # no URL
    ("nonsense:x", {}),
])  # fmt: skip
def test_configuration_errors(model, extra):
    with pytest.raises(BridgeFailed) as info:
        make_bridge(AgentConfig(model=model), settings(**extra))
    assert info.value.code == "model_config"


def test_missing_openai_key_is_model_config(monkeypatch):
    monkeypatch.delenv("GATEWAY_OPENAI_API_KEY", raising=False)
    with pytest.raises(BridgeFailed) as info:
        make_bridge(AgentConfig(model="openai:gpt-realtime"), Settings(_env_file=None))
    assert info.value.code == "model_config"


def test_local_is_imported_lazily(monkeypatch):
    made = {}

    class FakeLocal:
        def __init__(self, *, engines, responder):
            made.update(engines=engines, responder=responder)

    monkeypatch.setitem(sys.modules, "gateway.llm.local.agent", SimpleNamespace(LocalAgentBridge=FakeLocal))
    engines = object()
    bridge = make_bridge(AgentConfig(model="local"), settings(), local_engines=engines)
    assert isinstance(bridge, FakeLocal) and made["engines"] is engines
    assert type(made["responder"]).__name__ == "EchoResponder"


class _TlsContexts:
    """Counts ``ssl.SSLContext`` objects created while active (loading a CA bundle: ~10 ms of
    event-loop time each)."""

    def __init__(self, monkeypatch) -> None:
        import ssl

        self.made = 0
        original = ssl.SSLContext.__new__

        def counting(cls, *args, **kwargs):
            self.made += 1
            return original(cls, *args, **kwargs)

        monkeypatch.setattr(ssl.SSLContext, "__new__", counting)


async def test_building_bridges_builds_no_tls_context(monkeypatch):
    from gateway.llm.local.responder import ChatCompletionsResponder
    from gateway.outbound import AppClients

    clients = AppClients(OutboundPolicy())  # what the app builds once, in its lifespan
    s = settings(compat_realtime_url="wss://rt.example/v1/realtime", llm_base_url="http://127.0.0.1:9/v1")
    ChatCompletionsResponder("http://127.0.0.1:9/v1", model="m")  # the shared contexts exist now
    contexts = _TlsContexts(monkeypatch)
    bridges = []
    for _ in range(10):
        for model in ("openai:gpt-realtime", "gemini:gemini-live", "compat:m"):
            bridges.append(make_bridge(AgentConfig(model=model), s))  # no client given: none built
            bridges.append(make_bridge(AgentConfig(model=model), s, tool_client=clients.tools))
        responder = ChatCompletionsResponder("http://127.0.0.1:9/v1", model="m")
        await responder.aclose()
    assert contexts.made == 0
    assert all(b._tool_client in (None, clients.tools) for b in bridges)
    shared = ChatCompletionsResponder("http://127.0.0.1:9/v1", model="m", client=clients.operator)
    await shared.aclose()
    assert not clients.operator.is_closed  # the app's client outlives a call's responder
    await clients.aclose()


async def test_the_app_builds_its_clients_once_and_closes_them_at_shutdown(tmp_path, monkeypatch):
    from gateway.app import create_app

    s = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'gw.db'}", public_url="",
                 recordings_dir=tmp_path / "rec", openai_api_key=SecretStr(KEY),
                 llm_base_url="http://127.0.0.1:9/v1")  # fmt: skip
    app = create_app(s, engines=SimpleNamespace(), warm_up=False)
    async with app.router.lifespan_context(app):
        services = app.state.services
        clients = services.clients
        contexts = _TlsContexts(monkeypatch)
        for _ in range(10):
            bridge = services.bridge_for(AgentConfig(model="openai:gpt-realtime"))
            assert bridge._tool_client is clients.tools
            responder = services.responder(AgentConfig())
            assert responder._client is clients.operator
            await responder.aclose()
        assert contexts.made == 0
        assert not clients.tools.is_closed and not clients.operator.is_closed
    assert clients.tools.is_closed and clients.operator.is_closed and services.clients is None
