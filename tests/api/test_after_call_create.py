"""``fields`` and ``webhookUrl`` on the three call-creating bodies: stored on the call row
before its creation transition, the webhook URL checked by the outbound policy (422 naming
``webhookUrl``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from gateway.store import Store

FIELDS = [
    {"name": "callback_time", "type": "string", "description": "When to call back"},
    {"name": "interested", "type": "boolean"},
    {"name": "tier", "type": "enum", "values": ["gold", "silver"]},
]
STORED = [
    {"name": "callback_time", "type": "string", "description": "When to call back"},
    {"name": "interested", "type": "boolean", "description": ""},
    {"name": "tier", "type": "enum", "description": "", "values": ["gold", "silver"]},
]
INLINE = {"systemPrompt": "You answer the phone.", "voice": "joe", "language": "en-US", "greeting": "Hello"}
TWILIO_REFS = {"account_sid": "GATEWAY_SECRET_DEFAULT_TW_SID", "auth_token": "GATEWAY_SECRET_DEFAULT_TW_TOKEN"}


async def _hook(call: Any, token: str, request: Any) -> None:
    return None


@pytest.fixture
async def api(make_client: Callable[..., httpx.AsyncClient], api_key: str, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    store.create_carrier_account(kind="twilio", name="main", secret_refs=TWILIO_REFS, numbers=["+14155552671"],
                                 default=True)  # fmt: skip
    async with make_client(on_outbound_call=_hook) as c:
        c.headers["X-API-Key"] = api_key
        yield c


async def _create(api: httpx.AsyncClient, store: Store, kind: str, **extra: Any) -> httpx.Response:
    if kind == "create":
        agent = await api.post("/agents", json={"name": "a", **INLINE})
        assert agent.status_code == 201, agent.text
        return await api.post("/calls/create", json={"agentId": agent.json()["id"], **extra})
    if kind == "inline":
        return await api.post("/calls/inline", json={**INLINE, **extra})
    return await api.post("/calls/outbound", json={"to": "+14155552672", "systemPrompt": "hi", "model": "local",
                                                   **extra})  # fmt: skip


@pytest.mark.parametrize("kind", ["create", "inline", "outbound"])
async def test_fields_and_webhook_url_are_stored(api: httpx.AsyncClient, store: Store, kind: str) -> None:
    r = await _create(api, store, kind, fields=FIELDS, webhookUrl="https://hooks.example.com/calls")
    assert r.status_code == 201, r.text
    rec = store.get_call(r.json()["callId"])
    assert rec.post_call_fields == STORED
    assert rec.webhook_url == "https://hooks.example.com/calls"
    assert rec.post_call_status is None  # not ended yet


async def test_defaults_are_no_fields_and_no_webhook(api: httpx.AsyncClient, store: Store) -> None:
    r = await _create(api, store, "inline")
    rec = store.get_call(r.json()["callId"])
    assert rec.post_call_fields == [] and rec.webhook_url is None


def _field_errors(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {f["field"]: f["message"] for f in r.json()["error"]["fields"]}


@pytest.mark.parametrize("kind", ["create", "inline", "outbound"])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://169.254.169.254/latest", "private, loopback"),
        ("https://127.0.0.1:9000/h", "private, loopback"),
        ("https://localhost/h", "private, loopback"),
        ("http://hooks.example.com/h", "https://"),
        ("ftp://hooks.example.com/h", "http(s)://"),
    ],
)
async def test_webhook_url_refused_by_the_outbound_policy(
    api: httpx.AsyncClient, store: Store, kind: str, url: str, says: str
) -> None:
    errors = _field_errors(await _create(api, store, kind, webhookUrl=url))
    assert list(errors) == ["webhookUrl"] and says in errors["webhookUrl"]


async def test_allow_listed_webhook_target_is_accepted(
    make_client: Callable[..., httpx.AsyncClient], api_key: str, store: Store, settings: Settings
) -> None:
    allowing = settings.model_copy(update={"outbound_allow": ["127.0.0.1:9000"]})
    async with make_client(settings_=allowing) as c:
        c.headers["X-API-Key"] = api_key
        r = await c.post("/calls/inline", json={**INLINE,
                                                "webhookUrl": "http://127.0.0.1:9000/h"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert store.get_call(r.json()["callId"]).webhook_url == "http://127.0.0.1:9000/h"


async def test_bad_fields_are_422_naming_them(api: httpx.AsyncClient, store: Store) -> None:
    dup = [{"name": "a", "type": "string"}, {"name": "a", "type": "number"}]
    assert "fields" in _field_errors(await _create(api, store, "inline", fields=dup))
    no_values = [{"name": "a", "type": "enum"}]
    assert any(k.startswith("fields.0") for k in _field_errors(await _create(api, store, "outbound", fields=no_values)))
