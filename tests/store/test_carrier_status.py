"""Carrier status callbacks on the lifecycle: applied, duplicate, late or noted, never an error.

Carriers retry callbacks and deliver them out of order; a terminal status can arrive while
the gateway's own session still serves the call, or after it finalised it.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from gateway.clock import iso_utc
from gateway.store import CallConfig, CallStatus, Store, UnknownCall
from gateway.store.transitions import CARRIER_STATUSES
from tests.store.conftest import T0, Clock



def placed(store: Store) -> str:
    call, _ = store.create_call(CallConfig(), "twilio", direction="outbound", to="+14155550100")
    store.mark_call_placed(call.id, "CA1")
    return call.id


def test_the_vocabulary_is_the_dialers() -> None:
    assert {s.value for s in CARRIER_STATUSES} == {"initiated", "ringing", "in_progress", "completed",
                                                   "no_answer", "busy", "declined", "failed", "canceled"}  # fmt: skip


def test_a_forward_move_is_applied_at_the_carriers_time_in_order_and_a_repeat_is_a_duplicate(
    store: Store, clock: Clock
) -> None:
    call_id = placed(store)
    rang = T0 - timedelta(seconds=3)  # the carrier's clock, behind ours: kept in order, its own time in carrierAt
    assert store.apply_carrier_status(call_id, "ringing", raw_status="ringing", at=rang, detail={"seq": 2}) == "applied"
    before = store.get_call(call_id)
    assert before.transitions[-1] == {"from": "initiated", "to": "ringing", "at": T0, "source": "carrier",
                                      "detail": {"rawStatus": "ringing", "seq": "2", "carrierAt": iso_utc(rang)}}  # fmt: skip
    answered = T0 + timedelta(seconds=2)  # ahead of the last move: the carrier's time itself
    assert store.apply_carrier_status(call_id, "in_progress", raw_status="in-progress", at=answered) == "applied"
    assert store.get_call(call_id).transitions[-1]["at"] == answered == store.get_call(call_id).answered_at
    assert "carrierAt" not in store.get_call(call_id).transitions[-1]["detail"]
    before = store.get_call(call_id)
    clock.advance(4)
    assert store.apply_carrier_status(call_id, "ringing", raw_status="ringing", at=rang, detail={"seq": 2}) == "duplicate"
    assert store.get_call(call_id) == before  # nothing changed
    assert store.apply_carrier_status(call_id, "initiated", raw_status="queued") == "duplicate"


def test_answer_sets_answered_at_not_started_at_and_late_callbacks_change_nothing(store: Store, clock: Clock) -> None:
    call_id = placed(store)
    clock.advance(5)
    assert store.apply_carrier_status(call_id, "in_progress", raw_status="in-progress") == "applied"
    rec = store.get_call(call_id)
    assert (rec.status, rec.answered_at, rec.started_at) == (CallStatus.IN_PROGRESS, clock.now, None)
    assert store.apply_carrier_status(call_id, "ringing", raw_status="ringing") == "late"
    assert store.apply_carrier_status(call_id, "in_progress") == "duplicate"
    assert store.get_call(call_id) == rec


@pytest.mark.parametrize("status", ["no_answer", "busy", "declined", "canceled", "completed"])
def test_a_final_status_before_any_stream_finalises_the_call(store: Store, clock: Clock, status: str) -> None:
    call_id = placed(store)
    if status == "completed":  # answered, but the callee hung up before the stream came
        store.apply_carrier_status(call_id, "in_progress")
    clock.advance(30)
    assert store.apply_carrier_status(call_id, status, raw_status=status.replace("_", "-")) == "applied"
    rec = store.get_call(call_id)
    assert (rec.status, rec.end_reason, rec.duration_ms, rec.ended_at) == (
        CallStatus(status), f"carrier_{status}", 0, clock.now,
    )  # fmt: skip
    assert rec.transitions[-1]["source"] == "carrier" and rec.carrier_status is None
    assert store.apply_carrier_status(call_id, status) == "duplicate"  # the carrier's retry
    assert store.apply_carrier_status(call_id, "ringing") == "late"
    assert store.apply_carrier_status(call_id, "failed") == "late"  # a second, different final word
    assert store.get_call(call_id) == rec


def test_a_carrier_failure_carries_its_code_and_cause(store: Store) -> None:
    call_id = placed(store)
    assert store.apply_carrier_status(call_id, "failed", raw_status="failed",
                                      detail={"sipCode": 503, "cause": "Service Unavailable"}) == "applied"  # fmt: skip
    rec = store.get_call(call_id)
    assert (rec.status, rec.error_code, rec.error_message) == (CallStatus.FAILED, "503", "Service Unavailable")
    assert rec.transitions[-1]["detail"] == {"rawStatus": "failed", "sipCode": "503", "cause": "Service Unavailable"}
    other = placed(store)
    store.apply_carrier_status(other, "failed", raw_status="call.hangup")
    rec = store.get_call(other)
    assert rec.error_code == "carrier_failed" and "call.hangup" in rec.error_message


def test_a_final_status_while_the_stream_serves_is_noted_and_the_session_decides(store: Store) -> None:
    call_id = placed(store)
    store.apply_carrier_status(call_id, "in_progress")
    store.mark_call_started(call_id, node_id="n1")
    assert store.apply_carrier_status(call_id, "completed", raw_status="completed") == "noted"
    rec = store.get_call(call_id)
    assert (rec.status, rec.carrier_status, rec.ended_at) == (CallStatus.IN_PROGRESS, "completed", None)
    assert store.apply_carrier_status(call_id, "completed") == "duplicate"
    assert store.apply_carrier_status(call_id, "failed") == "late"  # its final word is in
    assert store.finalise_call(call_id, status="voicemail", end_reason="voicemail_hangup", duration_ms=4000)
    rec = store.get_call(call_id)
    assert (rec.status, rec.carrier_status) == (CallStatus.VOICEMAIL, "completed")
    assert [t["to"] for t in rec.transitions] == ["queued", "initiated", "in_progress", "voicemail"]


def test_the_carriers_word_after_the_gateway_finalised_is_noted(store: Store) -> None:
    call_id = placed(store)
    store.mark_call_started(call_id)  # the stream beat the answer callback
    assert store.apply_carrier_status(call_id, "in_progress") == "duplicate"
    store.finalise_call(call_id, status="completed", end_reason="agent_hangup", duration_ms=12_000)
    # the same status the gateway gave is still the carrier's final word
    assert store.apply_carrier_status(call_id, "completed", raw_status="completed") == "noted"
    rec = store.get_call(call_id)
    assert (rec.status, rec.end_reason, rec.carrier_status) == (CallStatus.COMPLETED, "agent_hangup", "completed")
    assert store.apply_carrier_status(call_id, "completed") == "duplicate"
    assert store.get_call(call_id) == rec
    expired, _ = store.create_call(CallConfig(), "twilio", direction="outbound", ttl_s=1)
    store.finalise_call(expired.id, status="canceled", end_reason="api_hangup", duration_ms=0)
    assert store.apply_carrier_status(expired.id, "no_answer") == "noted"


def test_callbacks_before_the_placement_returns_and_bad_input(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "vonage", direction="outbound")
    assert store.apply_carrier_status(call.id, "initiated", raw_status="started") == "applied"
    assert store.mark_call_placed(call.id, "uuid-9").status is CallStatus.INITIATED
    assert [t["source"] for t in store.get_call(call.id).transitions] == ["gateway", "carrier"]
    with pytest.raises(UnknownCall):
        store.apply_carrier_status("call_nope", "ringing")
    with pytest.raises(ValueError):
        store.apply_carrier_status(call.id, "voicemail")  # the gateway's verdict, not a carrier's
    with pytest.raises(ValueError):
        store.apply_carrier_status(call.id, "ringing", at=datetime(2026, 3, 1, 9, 0))  # naive


def test_concurrent_retries_of_one_callback_apply_once(store: Store) -> None:
    call_id = placed(store)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def deliver(status: str) -> None:
        barrier.wait()
        results.append(store.apply_carrier_status(call_id, status, raw_status=status))

    threads = [threading.Thread(target=deliver, args=("busy" if i % 2 else "ringing",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8 and results.count("applied") in (1, 2)
    rec = store.get_call(call_id)
    assert rec.status is CallStatus.BUSY
    tos = [t["to"] for t in rec.transitions]
    assert len(tos) == len(set(tos)) and tos[-1] == "busy"
    # busy applied once; ringing either applied before it or came late / as a duplicate
    assert results.count("applied") == len(tos) - 2
