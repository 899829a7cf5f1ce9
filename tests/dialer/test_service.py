"""OutboundService around a scripted dialer and a real store: the paths no carrier simulator
reaches easily — a call answered that never streams, a carrier that goes silent, a hang-up
asked for while the call is being placed, a placement cut by shutdown, a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

import gateway.dialer.service as service_mod
from gateway.config import Settings
from gateway.dialer.base import CallbackEvent, CarrierError, OutboundRequest, PlacedCall
from gateway.dialer.service import OutboundService
from gateway.store import CallConfig, Store

ENV = {"GATEWAY_SECRET_DEFAULT_T_SID": "AC" + "1" * 32, "GATEWAY_SECRET_DEFAULT_T_TOKEN": "token-1"}
REFS = {"account_sid": "GATEWAY_SECRET_DEFAULT_T_SID", "auth_token": "GATEWAY_SECRET_DEFAULT_T_TOKEN"}


class ScriptedDialer:
    """A :class:`~gateway.dialer.base.Dialer` whose ``place`` waits for ``release`` (or fails)."""

    kind = "twilio"

    def __init__(self, *, fail: CarrierError | None = None, hold: bool = False) -> None:
        self.fail, self.release = fail, asyncio.Event()
        if not hold:
            self.release.set()
        self.placed: list[OutboundRequest] = []
        self.hung_up: list[str] = []

    async def place(self, req: OutboundRequest, creds: Mapping[str, str]) -> PlacedCall:
        assert creds["auth_token"] == "token-1"
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        self.placed.append(req)
        return PlacedCall(f"CA{len(self.placed):032d}")

    async def hang_up(self, carrier_call_id: str, creds: Mapping[str, str]) -> None:
        self.hung_up.append(carrier_call_id)

    async def send_dtmf(self, carrier_call_id: str, digits: str, creds: Mapping[str, str]) -> None:
        raise AssertionError("not used")

    def verify_callback(self, *a) -> bool:  # pragma: no cover - not used
        return False

    def parse_callback(self, *a) -> CallbackEvent:  # pragma: no cover - not used
        raise ValueError

    def close(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path}/gw.db")
    s.create_all()
    return s


def make(store: Store, dialer: ScriptedDialer) -> OutboundService:
    settings = Settings(_env_file=None, public_url="https://gw.example.com", dialer_timeout_s=2)
    return OutboundService(store, settings, environ=ENV, dialers={"twilio": dialer})


def new_call(store: Store, ring_s: int = 1):
    account = store.create_carrier_account(kind="twilio", name="t", secret_refs=REFS, numbers=["+14155550199"])
    call, token = store.create_call(CallConfig(), "twilio", direction="outbound", to="+14155550101",
                                    from_="+14155550199", carrier_account_id=account.id,
                                    outbound={"ringTimeout": ring_s})  # fmt: skip
    return call, token


async def wait_status(store: Store, call_id: str, status: str, timeout_s: float = 10.0):
    for _ in range(int(timeout_s / 0.05)):
        rec = store.get_call(call_id)
        if rec.status.value == status:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"{call_id} is {store.get_call(call_id).status}, not {status}")


async def started(store: Store, dialer: ScriptedDialer) -> tuple[OutboundService, object]:
    """A service over ``dialer`` that has just started placing a new call."""
    svc = make(store, dialer)
    call, token = new_call(store)
    await svc.start(call, token, None)  # type: ignore[arg-type]  # the public URL is set
    return svc, call


@pytest.fixture
def fast_watch(monkeypatch):
    monkeypatch.setattr(service_mod, "WATCH_MARGIN_S", 0.2)
    monkeypatch.setattr(service_mod, "ANSWER_GRACE_S", 0.3)
    monkeypatch.setattr(service_mod, "WATCH_EVERY_S", 0.05)


async def test_the_request_carries_the_public_urls_and_the_carrier_limit(store: Store) -> None:
    dialer = ScriptedDialer()
    svc = make(store, dialer)
    call, token = new_call(store, ring_s=25)
    req = svc.request_for(call, token, None)  # type: ignore[arg-type]  # the public URL is set
    assert req.stream_url == f"wss://gw.example.com/stream/twilio/{call.id}/{token}"
    assert req.status_callback_url == f"https://gw.example.com/carriers/twilio/status/{call.id}"
    assert req.answer_url == f"https://gw.example.com/carriers/twilio/answer/{call.id}"
    assert (req.ring_timeout_s, req.max_duration_s) == (25, CallConfig().max_duration_s + 60)
    await svc.aclose()


async def test_an_answered_call_that_never_streams_is_hung_up_and_failed(store: Store, fast_watch) -> None:
    dialer = ScriptedDialer()
    svc, call = await started(store, dialer)
    await wait_status(store, call.id, "initiated")
    assert store.apply_carrier_status(call.id, "in_progress", raw_status="in-progress") == "applied"
    rec = await wait_status(store, call.id, "failed")
    assert (rec.end_reason, rec.error_code) == ("no_stream", "no_stream")
    assert dialer.hung_up == [rec.carrier_call_id]
    await svc.aclose()


async def test_a_carrier_that_goes_silent_is_hung_up_and_failed(store: Store, fast_watch) -> None:
    dialer = ScriptedDialer()
    svc, call = await started(store, dialer)
    rec = await wait_status(store, call.id, "failed", timeout_s=15)
    assert (rec.end_reason, rec.error_code) == ("carrier_silent", "no_callback")
    assert dialer.hung_up == [rec.carrier_call_id]
    await svc.aclose()


async def test_a_streaming_call_leaves_the_watch(store: Store, fast_watch) -> None:
    dialer = ScriptedDialer()
    svc, call = await started(store, dialer)
    await wait_status(store, call.id, "initiated")
    store.mark_call_started(call.id)
    await asyncio.sleep(2.0)
    assert store.get_call(call.id).status.value == "in_progress" and dialer.hung_up == []
    assert not svc._watch
    await svc.aclose()


async def test_a_hang_up_asked_for_while_placing_is_carried_out_once_placed(store: Store) -> None:
    dialer = ScriptedDialer(hold=True)
    svc, call = await started(store, dialer)
    await asyncio.sleep(0.1)
    assert svc.request_cancel(call.id) is True
    dialer.release.set()
    for _ in range(100):
        if dialer.hung_up:
            break
        await asyncio.sleep(0.05)
    assert dialer.hung_up == ["CA" + "1".zfill(32)]
    assert svc.request_cancel(call.id) is False, "nothing in flight any more"
    await svc.aclose()


async def test_a_placement_cut_by_shutdown_still_ends_its_record(store: Store) -> None:
    dialer = ScriptedDialer(hold=True)
    svc, call = await started(store, dialer)
    await asyncio.sleep(0.1)
    await svc.aclose(timeout_s=0.2)
    rec = store.get_call(call.id)
    assert (rec.status.value, rec.error_code) == ("failed", "carrier_shutdown"), rec


async def test_a_carrier_timeout_fails_the_call_with_its_code(store: Store) -> None:
    dialer = ScriptedDialer(fail=CarrierError("timeout", "twilio API gave no answer in 2 s"))
    svc, call = await started(store, dialer)
    rec = await wait_status(store, call.id, "failed")
    assert (rec.end_reason, rec.error_code) == ("carrier_error", "carrier_timeout")
    assert "no answer" in rec.error_message
    await svc.aclose()
