"""The stream admission every media listener shares (:mod:`gateway.streams`) and the stream URLs
the API hands out for each listener (:func:`gateway.api.urls.stream_url`).

A real SQLite store in ``tmp_path``; no sockets (the listeners' own tests use real ones:
``tests/e2e/test_stream_errors.py``, ``tests/e2e/test_picows_listener.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from gateway.api.urls import media_base, stream_url
from gateway.app import CLOSE_CODES as APP_CLOSE_CODES
from gateway.app import Services
from gateway.config import Settings
from gateway.store import CallConfig, Store
from gateway.streams import CLOSE_CODES, Refusal, StreamRequest, admit, run_stream, twilio_signature_ok

BASE = "ws://gw.test:9000"


@pytest.fixture
def services(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/gw.db", recordings_dir=tmp_path / "rec",
                        max_calls=2)  # fmt: skip
    yield Services(settings=settings, store=store, vad=None, engines=None)  # type: ignore[arg-type]
    store.close()


def _request(carrier: str, call_id: str, token: str, headers: dict[str, str] | None = None) -> StreamRequest:
    return StreamRequest(carrier, call_id, token, headers or {}, f"{BASE}/stream/{carrier}/{call_id}/{token}")


def _call(services: Services, carrier: str = "telnyx", **kw) -> tuple[str, str]:
    rec, token = services.store.create_call(CallConfig(), carrier, **kw)
    return rec.id, token


def test_the_close_codes_are_the_apps() -> None:
    assert CLOSE_CODES is APP_CLOSE_CODES
    assert Refusal("bad_token", "x").code == 4401 and Refusal("at_capacity", "x").code == 1013


async def test_a_good_request_is_admitted_and_holds_its_slot(services: Services) -> None:
    call_id, token = _call(services)
    call = await admit(services, _request("telnyx", call_id, token))
    assert not isinstance(call, Refusal) and call.id == call_id
    assert services.admitting == {call_id} and services.live_calls() == 1


@pytest.mark.parametrize(("mangle", "expected"), [
    (lambda c, t: ("nosuch", c, t), Refusal("bad_carrier", "unknown carrier 'nosuch'")),
    (lambda c, t: ("telnyx", "call_doesnotexist", t), Refusal("unknown_call", "unknown call")),
    (lambda c, t: ("telnyx", c, t[::-1]), Refusal("bad_token", "invalid stream token")),
    (lambda c, t: ("plivo", c, t), Refusal("bad_carrier", "this call streams over telnyx")),
])
async def test_bad_requests_are_refused_and_do_not_burn_the_call(services: Services, mangle, expected) -> None:
    call_id, token = _call(services)
    assert await admit(services, _request(*mangle(call_id, token))) == expected
    assert services.admitting == set()
    assert services.store.get_call(call_id).status.value == "queued"


async def test_an_expired_token_is_refused_4410(services: Services) -> None:
    call_id, token = _call(services, ttl_s=0.05)
    time.sleep(0.1)
    refusal = await admit(services, _request("telnyx", call_id, token))
    assert refusal == Refusal("token_expired", "stream token expired") and refusal.code == 4410


async def test_a_started_or_admitted_call_is_refused_4409(services: Services) -> None:
    call_id, token = _call(services)
    assert not isinstance(await admit(services, _request("telnyx", call_id, token)), Refusal)
    assert await admit(services, _request("telnyx", call_id, token)) == Refusal("not_connectable", "call already streaming")
    services.store.mark_call_started(call_id, node_id="n", node_run="r", lease_s=60)
    services.admitting.clear()
    assert await admit(services, _request("telnyx", call_id, token)) == Refusal(
        "not_connectable", "call already streaming or ended")  # fmt: skip


async def test_at_the_live_call_limit_streams_are_refused_1013(services: Services) -> None:
    for _ in range(2):
        call_id, token = _call(services)
        assert not isinstance(await admit(services, _request("telnyx", call_id, token)), Refusal)
    call_id, token = _call(services)
    refusal = await admit(services, _request("telnyx", call_id, token))
    assert refusal == Refusal("at_capacity", "gateway at its live call limit; try again later")
    assert call_id not in services.admitting


async def test_twilio_streams_need_a_signature_of_the_url_the_carrier_was_given(services: Services) -> None:
    services.settings = services.settings.model_copy(update={"twilio_auth_token": SecretStr("tok-123")})
    call_id, token = _call(services, "twilio")
    req = _request("twilio", call_id, token)
    bad = Refusal("bad_signature", "missing or invalid X-Twilio-Signature")
    assert await admit(services, req) == bad  # unsigned
    other_url = RequestValidator("tok-123").compute_signature(req.url.replace(BASE, "ws://elsewhere:1"), {})
    assert await admit(services, _request("twilio", call_id, token, {"x-twilio-signature": other_url})) == bad
    forged = RequestValidator("not-the-token").compute_signature(req.url, {})
    assert await admit(services, _request("twilio", call_id, token, {"x-twilio-signature": forged})) == bad
    good = RequestValidator("tok-123").compute_signature(req.url, {})
    assert not isinstance(await admit(services, _request("twilio", call_id, token, {"x-twilio-signature": good})), Refusal)
    assert twilio_signature_ok({}, req.url, "")  # no auth token configured: nothing to check


class _Channel:
    """A :class:`gateway.streams.StreamChannel` that records what was asked of it."""

    def __init__(self, accept_error: Exception | None = None) -> None:
        self.refused: list[Refusal] = []
        self.accept_error = accept_error

    async def refuse(self, refusal: Refusal) -> None:
        self.refused.append(refusal)

    async def accept(self):
        raise self.accept_error or AssertionError("not expected")


async def test_run_stream_refuses_on_the_channel_and_orders_admissions(services: Services) -> None:
    call_id, token = _call(services)
    channel, decided = _Channel(), []
    await run_stream(services, _request("telnyx", call_id, "wrong"), channel, lambda: decided.append(True))
    assert channel.refused == [Refusal("bad_token", "invalid stream token")] and decided == [True]


async def test_a_peer_gone_before_accept_leaves_a_final_record_and_frees_the_slot(services: Services) -> None:
    call_id, token = _call(services)
    channel = _Channel(accept_error=ConnectionError("gone"))
    with pytest.raises(ConnectionError):
        await run_stream(services, _request("telnyx", call_id, token), channel)
    rec = services.store.get_call(call_id)
    assert (rec.status.value, rec.end_reason, rec.error_code) == ("failed", "carrier_closed_before_start", "no_start")
    assert services.admitting == set() and services.live == {}


def test_stream_urls_point_at_the_listener_in_use() -> None:
    s = Settings(_env_file=None, public_url="https://voice.example.com/gw", media_port=9443)
    assert stream_url(s, None, "twilio", "c1", "t1") == "wss://voice.example.com/gw/stream/twilio/c1/t1"
    picows = s.model_copy(update={"media_listener": "picows"})
    assert stream_url(picows, None, "twilio", "c1", "t1") == "wss://voice.example.com:9443/stream/twilio/c1/t1"
    own = Settings(_env_file=None, media_listener="picows", media_public_url="WSS://Media.Example.com/m/")
    assert media_base(own) == "wss://media.example.com/m"
    plain = Settings(_env_file=None, media_listener="picows", host="127.0.0.1", media_port=8181)
    assert stream_url(plain, None, "raw", "c", "t") == "ws://127.0.0.1:8181/stream/raw/c/t"


def test_a_picows_listener_needs_a_base_carriers_can_reach() -> None:
    wildcard = Settings(_env_file=None, media_listener="picows", host="0.0.0.0")
    with pytest.raises(ValueError, match="GATEWAY_MEDIA_PUBLIC_URL"):
        media_base(wildcard)
    with pytest.raises(ValueError, match="GATEWAY_MEDIA_PUBLIC_URL"):
        Settings(_env_file=None, media_public_url="https://media.example.com")
    with pytest.raises(ValueError, match="no GATEWAY_PUBLIC_URL"):
        stream_url(Settings(_env_file=None), None, "raw", "c", "t")


async def test_a_stream_cancelled_while_its_claim_is_written_leaves_a_final_record(services: Services) -> None:
    """Shutdown (or the peer's request going away) cancels serve while the store's thread claims
    the call: the claim lands after the cancellation, and the record must not stay streaming."""
    import asyncio
    import threading

    from gateway.streams import serve

    call_id, _ = _call(services)
    started, release = threading.Event(), threading.Event()
    mark = services.store.mark_call_started

    def slow_mark(*args, **kwargs):
        started.set()
        release.wait(5)
        return mark(*args, **kwargs)

    services.store.mark_call_started = slow_mark  # type: ignore[method-assign]
    task = asyncio.ensure_future(serve(services, services.store.get_call(call_id), "telnyx", _Channel()))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    rec = services.store.get_call(call_id)
    assert (rec.status.value, rec.end_reason) == ("failed", "carrier_closed_before_start"), rec
