"""The offer body's checks, the refusal statuses, and the offer token kept out of logs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import orjson
import pytest

from gateway.logs import RedactStreamTokens, redact
from gateway.streams import CLOSE_CODES, Refusal
from gateway.webrtc.offer import REFUSAL_STATUS, WebRtcCalls, refusal_response
from gateway.webrtc.peer import MAX_CANDIDATES, MAX_OFFER_BYTES, BadOffer, check_offer

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def body(obj) -> bytes:
    return obj if isinstance(obj, bytes) else orjson.dumps(obj)


APPLICATION = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
CANDIDATE = "a=candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host\r\n"


def test_a_good_offer_gives_its_sdp():
    assert check_offer(body({"type": "offer", "sdp": SDP})) == SDP
    many = SDP + CANDIDATE * MAX_CANDIDATES  # at the bound
    assert check_offer(body({"type": "offer", "sdp": many})) == many
    with_channel = SDP + APPLICATION  # a browser's audio + events channel offer
    assert check_offer(body({"type": "offer", "sdp": with_channel})) == with_channel
    assert check_offer(body({"type": "offer", "sdp": SDP.replace("\r\n", "\n")})).startswith("v=0\n")


@pytest.mark.parametrize(("raw", "field"), [
    (b"", "body"), (b"{", "body"), (b"[]", "body"), (b'"offer"', "body"),
    (b"x" * (MAX_OFFER_BYTES + 1), "body"),
    ({"sdp": SDP}, "type"), ({"type": "answer", "sdp": SDP}, "type"), ({"type": 1, "sdp": SDP}, "type"),
    ({"type": "offer"}, "sdp"), ({"type": "offer", "sdp": ""}, "sdp"), ({"type": "offer", "sdp": 5}, "sdp"),
    ({"type": "offer", "sdp": "hello"}, "sdp"),
    ({"type": "offer", "sdp": SDP.replace("m=audio", "m=video")}, "sdp"),
    ({"type": "offer", "sdp": SDP + CANDIDATE * (MAX_CANDIDATES + 1)}, "sdp"),
    ({"type": "offer", "sdp": SDP + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}, "sdp"),  # a decoder thread each
    ({"type": "offer", "sdp": SDP + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}, "sdp"),
    ({"type": "offer", "sdp": SDP + APPLICATION * 2}, "sdp"),
])  # fmt: skip
def test_bad_offers_name_the_field(raw, field):
    with pytest.raises(BadOffer) as exc:
        check_offer(body(raw))
    assert exc.value.field == field and exc.value.message


def test_every_refusal_key_has_a_status():
    assert set(REFUSAL_STATUS) == set(CLOSE_CODES)
    expected = {"unknown_call": 404, "bad_token": 401, "token_expired": 410, "not_connectable": 409,
                "bad_carrier": 400, "at_capacity": 503}
    for key, status in expected.items():
        r = refusal_response(Refusal(key, "why"))
        assert r.status_code == status
        assert orjson.loads(r.body) == {"error": {"code": key, "message": "why"}}
        assert ("retry-after" in r.headers) == (key == "at_capacity")


def test_the_offer_token_is_redacted_from_logs():
    line = 'POST /webrtc/call_1f/Zx-9_aB/offer HTTP/1.1" 200'
    assert redact(line) == 'POST /webrtc/call_1f/***/offer HTTP/1.1" 200'
    assert redact("http://h:1/webrtc/call_1/tok?x=tok") == "http://h:1/webrtc/call_1/***?***"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s"', ("127.0.0.1", "POST",
                               "/webrtc/call_1/secret-token/offer"), None)  # fmt: skip
    RedactStreamTokens().filter(record)
    assert "secret-token" not in record.getMessage()


async def test_an_offer_answered_after_shutdown_began_gets_no_task_and_frees_its_slot():
    """aclose waits for the tasks it saw: one made after it would outlive the store."""

    class Peer:
        closed = False

        async def close(self) -> None:
            self.closed = True

    services = SimpleNamespace(admitting={"call_1"}, live={}, settings=SimpleNamespace(webrtc_connect_timeout_s=1))
    calls, peer = WebRtcCalls(services), Peer()  # type: ignore[arg-type]
    await calls.aclose()
    refusal = await calls.start(SimpleNamespace(id="call_1"), peer)  # type: ignore[arg-type]
    assert refusal is not None and refusal.key == "at_capacity"
    assert calls.tasks == {} and peer.closed and services.admitting == set()


async def test_a_claim_that_takes_too_long_is_refused_and_its_call_ends_at_once(tmp_path, monkeypatch):
    """The store took over CLAIM_S to claim the call: the offer gets 503, and the call's task
    ends then (finalised once the claim lands), not after the connect timeout."""
    import asyncio
    import threading

    import gateway.webrtc.offer as offer_route
    from gateway.app import Services
    from gateway.config import Settings
    from gateway.store import CallConfig, Store

    store = Store(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/gw.db", recordings_dir=tmp_path / "rec")
    services = Services(settings=settings, store=store, vad=None, engines=None)  # type: ignore[arg-type]
    call, _ = store.create_call(CallConfig(), "webrtc")
    release, mark = threading.Event(), store.mark_call_started

    def slow_mark(*args, **kwargs):
        release.wait(5)
        return mark(*args, **kwargs)

    class Peer:
        closed = False

        async def close(self) -> None:
            self.closed = True

        async def connected(self, timeout_s, closing):  # pragma: no cover - never reached
            await asyncio.sleep(timeout_s)

    store.mark_call_started = slow_mark  # type: ignore[method-assign]
    monkeypatch.setattr(offer_route, "CLAIM_S", 0.1)
    services.admitting.add(call.id)
    calls, peer = WebRtcCalls(services), Peer()
    try:
        refusal = await calls.start(call, peer)  # type: ignore[arg-type]
        assert refusal is not None and refusal.key == "at_capacity"
        release.set()
        async with asyncio.timeout(3):
            while calls.tasks:
                await asyncio.sleep(0.01)
        rec = store.get_call(call.id)
        assert rec.status.value == "failed" and peer.closed and services.admitting == set()
    finally:
        release.set()
        store.close()
