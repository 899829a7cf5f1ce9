"""``POST /calls/{callId}/control`` say / mute / unmute / transfer over real HTTP on loopback:
what reaches the call's ControlPolicy, and every documented 4xx and the 502 (the carrier's
refusal); the transfer URL route's 403 / 404 / 422. Live calls are stood in for by their
ControlPolicy (the end-to-end runs are tests/e2e/test_call_control.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from gateway.api import create_api
from gateway.config import Settings
from gateway.dialer.service import OutboundService
from gateway.llm.base import AgentConfig
from gateway.session.control import MAX_PENDING, ControlPolicy
from gateway.session.policies import AudioGate, Note, Say, StopAgentAudio
from gateway.store import Store
from tests.api.conftest import fake_instructions
from tests.api.loopback import serve

TO = "+14155550142"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("control")
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp / 'gw.db'}", public_url="",
                        recordings_dir=tmp / "rec")  # fmt: skip
    store = Store(settings.database_url)
    store.create_all()
    inbound, _ = store.create_call(AgentConfig(), "twilio")
    ended, _ = store.create_call(AgentConfig(), "twilio")
    # an outbound call whose account's credentials do not resolve: the carrier cannot be asked
    account = store.create_carrier_account(kind="twilio", name="t", numbers=["+14155550199"], secret_refs={
        "account_sid": "GATEWAY_SECRET_DEFAULT_UNSET_SID", "auth_token": "GATEWAY_SECRET_DEFAULT_UNSET_TOKEN"})
    outbound, _ = store.create_call(AgentConfig(), "twilio", direction="outbound", to=TO.replace("42", "43"),
                                    from_="+14155550199", carrier_account_id=account.id)  # fmt: skip
    store.mark_call_started(outbound.id, carrier_call_id="CA" + "0" * 32)
    sessions = {c.id: SimpleNamespace(control=ControlPolicy()) for c in (inbound, outbound)}
    app = create_api(store, settings, instruction_document=fake_instructions)
    app.state.api.live_session = sessions.get
    app.state.api.outbound = OutboundService(store, settings, environ={})
    key = store.create_api_key("tests")[0]
    other = store.create_api_key("other", tenant="other")[0]
    with serve(app) as base_url, httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as http:
        yield {"http": http, "base_url": base_url, "store": store, "sessions": sessions, "other": other,
               "inbound": inbound.id, "ended": ended.id, "outbound": outbound.id}  # fmt: skip
    store.close()


def _control(world, call_id: str, body: dict, **kw: Any) -> httpx.Response:
    return world["http"].post(f"/calls/{call_id}/control", json=body, **kw)


def test_say_mute_and_unmute_reach_the_calls_control(world) -> None:
    call_id = world["inbound"]
    control: ControlPolicy = world["sessions"][call_id].control
    for body in ({"action": "mute"}, {"action": "say", "text": "One moment, please."}):
        r = _control(world, call_id, body)
        assert r.status_code == 202 and r.json() == {"callId": call_id, "action": body["action"], "via": "session"}
    assert control.agent_muted and control.on_agent_audio("item_1", 0.0) is AudioGate.DROP
    assert control.take() == (StopAgentAudio("agent_muted"), Note("agent_muted"), Say("One moment, please."))
    r = _control(world, call_id, {"action": "unmute"})
    assert r.status_code == 202, r.text
    assert not control.agent_muted and control.on_agent_audio("item_2", 0.0) is AudioGate.ALLOW
    # audio was dropped while muted: the unmute cuts it (its turns: 0 ms heard)
    assert control.take() == (Note("agent_unmuted"), StopAgentAudio("agent_unmuted"))


def test_a_full_control_queue_is_429(world) -> None:
    call_id = world["inbound"]
    control: ControlPolicy = world["sessions"][call_id].control
    for i in range(MAX_PENDING):
        assert _control(world, call_id, {"action": "say", "text": f"line {i}"}).status_code == 202
    for body in ({"action": "say", "text": "one more"}, {"action": "mute"}):
        r = _control(world, call_id, body)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests", r.text
    assert len(control.take()) == MAX_PENDING


@pytest.mark.parametrize("body", [{"action": "say", "text": "hi"}, {"action": "mute"}, {"action": "unmute"},
                                  {"action": "transfer", "to": TO}])  # fmt: skip
def test_a_call_not_live_here_is_409_not_live(world, body) -> None:
    r = _control(world, world["ended"], body)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_live", r.text


def test_transferring_a_call_without_a_carrier_account_is_409_not_transferable(world) -> None:
    r = _control(world, world["inbound"], {"action": "transfer", "to": TO})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_transferable", r.text
    assert world["store"].get_call(world["inbound"]).transferred_to is None


def test_a_transfer_the_carrier_cannot_take_is_502_and_leaves_no_transfer(world) -> None:
    call_id = world["outbound"]
    r = _control(world, call_id, {"action": "transfer", "to": TO})
    assert r.status_code == 502 and r.json()["error"]["code"] == "carrier_error", r.text
    assert "credentials" in r.json()["error"]["message"]
    rec = world["store"].get_call(call_id)
    assert rec.transferred_to is None and rec.transferred_at is None
    assert not world["sessions"][call_id].control.pending, "the call goes on"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "say"}, "text"),
        ({"action": "say", "text": ""}, "text"),
        ({"action": "say", "text": "   "}, "text"),
        ({"action": "say", "text": "x" * 2001}, "text"),
        ({"action": "mute", "text": "x"}, "text"),
        ({"action": "transfer", "to": "14155550142"}, "to"),
        ({"action": "transfer", "to": "+0123456789"}, "to"),
        ({"action": "transfer", "to": 14155550142}, "to"),
    ],
)
def test_a_bad_action_body_is_422_naming_the_field(world, body, field) -> None:
    r = _control(world, world["inbound"], body)
    assert r.status_code == 422, r.text
    assert [f["field"] for f in r.json()["error"]["fields"]] == [field]


def test_another_tenants_call_is_404_and_no_key_401(world) -> None:
    r = _control(world, world["inbound"], {"action": "mute"}, headers={"X-API-Key": world["other"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(f"{world['base_url']}/calls/{world['inbound']}/control", json={"action": "mute"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert not world["sessions"][world["inbound"]].control.agent_muted


def test_the_transfer_url_is_plivos_only_signed_and_takes_an_e164_number(world) -> None:
    base, call_id = world["base_url"], world["outbound"]
    r = httpx.post(f"{base}/carriers/twilio/transfer/{call_id}", params={"to": TO})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(f"{base}/carriers/plivo/transfer/{call_id}", params={"to": TO})  # no signature
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = httpx.post(f"{base}/carriers/plivo/transfer/{call_id}", params={"to": "4155550142"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "to"
    r = httpx.post(f"{base}/carriers/plivo/transfer/{call_id}", params={"to": TO}, content=b"x" * (65 * 1024))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
