"""The dialer contract: request validation, errors, the SDK thread pool and its deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.dialer import (
    CALL_STATUSES,
    DIALER_KINDS,
    TERMINAL_STATUSES,
    CarrierError,
    Dialer,
    NotSupported,
    OutboundRequest,
    make_dialer,
)
from gateway.dialer.base import SdkDialer, check_digits, require_credentials

STREAM = "wss://gw.example/stream/twilio/c1/token"


def req(**kw) -> OutboundRequest:
    fields = dict(call_id="c1", to="+14155550123", from_="+14155550100", stream_url=STREAM,
                  status_callback_url="https://gw.example/cb")
    fields.update(kw)
    return OutboundRequest(**fields)


def test_outbound_request_checks_numbers_urls_and_limits():
    assert req().ring_timeout_s == 30
    for bad in ({"to": "4155550123"}, {"to": "+1415555012x"}, {"from_": "+1"}, {"stream_url": "https://gw/s"},
                {"ring_timeout_s": 0}, {"ring_timeout_s": 601}, {"max_duration_s": 0}):
        with pytest.raises(ValueError):
            req(**bad)
    with pytest.raises(AttributeError):
        req().to = "+14155550199"  # frozen


def test_lifecycle_vocabulary():
    assert CALL_STATUSES == ("initiated", "ringing", "in_progress", "completed", "no_answer", "busy", "declined",
                             "failed", "canceled")
    assert TERMINAL_STATUSES == {"completed", "no_answer", "busy", "declined", "failed", "canceled"}


def test_errors_carry_code_message_status():
    err = CarrierError("21211", "Invalid 'To'", 400)
    assert err.as_dict() == {"code": "21211", "message": "Invalid 'To'", "status": 400}
    assert str(err) == "21211: Invalid 'To'"
    ns = NotSupported("no DTMF")
    assert isinstance(ns, CarrierError) and ns.code == "not_supported" and ns.status is None


def test_missing_credentials_are_named_never_shown():
    with pytest.raises(CarrierError) as exc:
        require_credentials("twilio", {"account_sid": "AC123", "auth_token": ""})
    assert exc.value.code == "credentials" and "auth_token" in exc.value.message and "AC123" not in exc.value.message


def test_digits():
    assert check_digits("0123456789*#ABCD") == "0123456789*#ABCD"
    for bad in ("", "12e", "1" * 33):
        with pytest.raises(ValueError):
            check_digits(bad)


def test_make_dialer_knows_the_four_carriers_and_refuses_others():
    assert DIALER_KINDS == ("twilio", "plivo", "telnyx", "vonage")
    for kind in ("twilio", "plivo"):
        dialer = make_dialer(kind, api_base_url="http://127.0.0.1:9/", timeout_s=3)
        assert isinstance(dialer, Dialer) and dialer.kind == kind
        assert dialer.api_base_url == "http://127.0.0.1:9" and dialer.timeout_s == 3
        dialer.close()
    with pytest.raises(ValueError, match="no dialer for 'exotel'"):
        make_dialer("exotel")


class _Probe(SdkDialer):
    kind = "twilio"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.threads: list[str] = []

    def _place_sync(self, r, creds):
        self.threads.append(threading.current_thread().name)
        if r.call_id == "slow":
            time.sleep(3)
        if r.call_id == "boom":
            raise RuntimeError("sdk exploded")
        if r.call_id == "refused":
            raise CarrierError("21211", "bad To", 400)
        from gateway.dialer import PlacedCall

        return PlacedCall("CA1")

    def _map_error(self, exc):
        return CarrierError("mapped", str(exc))


CREDS = {"account_sid": "AC1", "auth_token": "t"}


async def test_sdk_calls_run_on_the_dialers_own_threads_even_when_the_default_executor_is_starved():
    loop = asyncio.get_running_loop()
    starved = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(starved)
    blocker = threading.Event()
    hog = loop.run_in_executor(None, blocker.wait, 10)
    dialer = _Probe(timeout_s=2)
    try:
        placed = await asyncio.wait_for(dialer.place(req(), CREDS), 3)
    finally:
        blocker.set()
        await hog
        dialer.close()
    assert placed.carrier_call_id == "CA1"
    assert dialer.threads[0].startswith("dialer-twilio")


async def test_every_failure_leaves_as_a_carrier_error_and_a_stuck_sdk_call_times_out():
    dialer = _Probe(timeout_s=0.2)
    with pytest.raises(CarrierError) as mapped:
        await dialer.place(req(call_id="boom"), CREDS)
    assert (mapped.value.code, mapped.value.message) == ("mapped", "sdk exploded")
    with pytest.raises(CarrierError) as passed:
        await dialer.place(req(call_id="refused"), CREDS)
    assert passed.value.code == "21211"
    t0 = time.monotonic()
    with pytest.raises(CarrierError) as slow:
        await dialer.place(req(call_id="slow"), CREDS)
    assert slow.value.code == "timeout" and time.monotonic() - t0 < 2.0
    with pytest.raises(CarrierError) as creds:
        await dialer.place(req(), {})
    assert creds.value.code == "credentials"
    with pytest.raises(NotSupported):
        await dialer.send_dtmf("CA1", "1", CREDS)
    dialer.close()


def test_timeout_must_be_positive():
    with pytest.raises(ValueError):
        _Probe(timeout_s=0)
