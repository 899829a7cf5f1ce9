"""The call lifecycle on the record: one timestamped ``call_transitions`` row per status change.

Creation, the gateway's own moves, the stream's claim (including the claim of a call the
carrier already answered), finalisation (with the voicemail outcome), expiry in bulk,
``node_lost`` recovery and its replacement by the real outcome, and token reissue.
"""

from __future__ import annotations

import threading
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.clock import iso_utc
from gateway.store import (
    NODE_LOST,
    CallConfig,
    CallNotConnectable,
    CallStatus,
    IllegalTransition,
    Store,
    TokenExpired,
    UnknownCall,
    recover_lost_calls,
    sweep_lapsed_calls,
)
from gateway.store.models import CallTransition
from gateway.store.spool import replay_spool, spool_outcome
from tests.store.conftest import T0, Clock



def moves(store: Store, call_id: str) -> list[tuple[str | None, str, str]]:
    """The call's transitions as ``(from, to, source)``."""
    return [(t["from"], t["to"], t["source"]) for t in store.get_call(call_id).transitions]


def test_creation_writes_the_first_row_and_keeps_the_outbound_details(store: Store) -> None:
    outbound = {"objective": "book", "context": "", "ringTimeout": 30, "voicemail": {"detect": True},
                "variables": ["name"]}  # fmt: skip
    call, _ = store.create_call(CallConfig(voicemail={"detect": True, "action": "hangup"}), "twilio",
                                direction="outbound", to="+14155550100", from_="+14155550199",
                                carrier_account_id="cac_1", outbound=outbound)  # fmt: skip
    assert (call.to_number, call.from_number, call.carrier_account_id) == ("+14155550100", "+14155550199", "cac_1")
    rec = store.get_call(call.id)
    assert rec.outbound == outbound and rec.call_config().voicemail == {"detect": True, "action": "hangup"}
    assert rec.transitions == [{"from": None, "to": "queued", "at": T0, "source": "gateway", "detail": {}}]
    assert rec.transitions[0]["at"].tzinfo is timezone.utc
    assert call.transitions == []  # only get_call loads them


def test_the_voicemail_policy_round_trips_through_the_config_snapshot() -> None:
    policy = {"detect": True, "action": "leave_message", "message": "Call us back", "hold_greeting_ms": 1500}
    config = CallConfig(voicemail=policy)
    assert CallConfig.from_json(config.to_json()) == config and config.to_json()["voicemail"] == policy
    assert CallConfig().to_json()["voicemail"] is None and CallConfig.from_json({}).voicemail is None


@pytest.mark.parametrize("before", [[], ["initiated"], ["initiated", "ringing"], ["ringing"]])
def test_a_stream_claim_after_each_pre_answer_status_is_a_media_row(store: Store, clock: Clock,
                                                                    before: list[str]) -> None:  # fmt: skip
    call, token = store.create_call(CallConfig(), "plivo", direction="outbound")
    for status in before:
        clock.advance(1)
        store.set_call_status(call.id, status)
        store.check_stream_token(call.id, token)  # still connectable
    clock.advance(1)
    rec = store.mark_call_started(call.id)
    assert rec.started_at == rec.answered_at == clock.now
    path = ["queued", *before]
    assert moves(store, call.id) == [(None, "queued", "gateway")] + [
        (a, b, "gateway") for a, b in zip(path, path[1:])
    ] + [(path[-1], "in_progress", "media")]  # fmt: skip
    assert [t["at"] for t in store.get_call(call.id).transitions] == [T0 + timedelta(seconds=i)
                                                                       for i in range(len(path) + 1)]  # fmt: skip


def test_set_call_status_refuses_a_status_already_passed(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "twilio", direction="outbound")
    store.set_call_status(call.id, "ringing", detail={"why": "dialer"})
    with pytest.raises(IllegalTransition):
        store.set_call_status(call.id, "initiated")  # forward only
    with pytest.raises(ValueError):
        store.set_call_status(call.id, "ringing", source="nobody")
    assert store.get_call(call.id).transitions[1]["detail"] == {"why": "dialer"}


def test_finalise_writes_its_row_with_the_outcome_and_the_voicemail_dict(store: Store, clock: Clock) -> None:
    call, _ = store.create_call(CallConfig(), "twilio", direction="outbound")
    store.mark_call_started(call.id)
    clock.advance(9)
    amd = {"verdict": "machine_end_beep", "decidedMs": 4200, "cues": ["beep"], "beepEndMs": 4100,
           "action": "message_left", "events": []}  # fmt: skip
    assert store.finalise_call(call.id, status="voicemail", end_reason="voicemail_message_left",
                               duration_ms=9000, voicemail=amd)  # fmt: skip
    rec = store.get_call(call.id)
    assert rec.status is CallStatus.VOICEMAIL and rec.voicemail == amd
    assert rec.transitions[-1] == {"from": "in_progress", "to": "voicemail", "at": clock.now, "source": "gateway",
                                   "detail": {"endReason": "voicemail_message_left"}}  # fmt: skip
    # a second finalise writes nothing, not even a row
    assert not store.finalise_call(call.id, status="completed", end_reason="caller_hangup", duration_ms=1)
    assert len(store.get_call(call.id).transitions) == 3


def test_finalise_before_answer_and_the_statuses_it_may_not_reach(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "twilio", direction="outbound")
    with pytest.raises(IllegalTransition):
        store.finalise_call(call.id, status="voicemail", end_reason="x", duration_ms=0)  # never answered
    assert store.finalise_call(call.id, status="canceled", end_reason="api_hangup", duration_ms=0, source="gateway",
                               error_code="none", detail={"by": "api"})  # fmt: skip
    assert store.get_call(call.id).transitions[-1]["detail"] == {"endReason": "api_hangup", "errorCode": "none",
                                                                 "by": "api"}  # fmt: skip
    assert store.get_call(call.id).status is CallStatus.CANCELED


def test_concurrent_claims_of_a_carrier_answered_call_have_one_winner(store: Store) -> None:
    call, token = store.create_call(CallConfig(), "twilio", direction="outbound")
    store.mark_call_placed(call.id, "CA1")
    assert store.apply_carrier_status(call.id, "in_progress") == "applied"
    store.check_stream_token(call.id, token)  # answered but unclaimed: still connectable
    results: list[str] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        try:
            store.mark_call_started(call.id, node_id="n1")
            results.append("won")
        except IllegalTransition:
            results.append("lost")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["lost"] * 7 + ["won"]
    rec = store.get_call(call.id)
    assert rec.started_at is not None and rec.node_id == "n1"
    # the claim of an answered call adds no row: the carrier's in_progress is the transition
    assert moves(store, call.id) == [(None, "queued", "gateway"), ("queued", "initiated", "gateway"),
                                     ("initiated", "in_progress", "carrier")]  # fmt: skip
    with pytest.raises(CallNotConnectable):
        store.check_stream_token(call.id, token)


def test_concurrent_claims_from_ringing_write_one_row(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "telnyx", direction="outbound")
    store.set_call_status(call.id, "ringing")
    results: list[str] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        try:
            store.mark_call_started(call.id)
            results.append("won")
        except IllegalTransition:
            results.append("lost")

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["lost"] * 5 + ["won"]
    assert moves(store, call.id)[-1] == ("ringing", "in_progress", "media")
    assert len(moves(store, call.id)) == 3


def test_expiry_ends_every_unclaimed_call_in_bulk_with_a_row_each(store: Store, clock: Clock) -> None:
    queued, _ = store.create_call(CallConfig(), "twilio", ttl_s=60)
    initiated, _ = store.create_call(CallConfig(), "twilio", direction="outbound", ttl_s=60)
    store.mark_call_placed(initiated.id, "CA2")
    ringing, _ = store.create_call(CallConfig(), "twilio", direction="outbound", ttl_s=60)
    store.apply_carrier_status(ringing.id, "ringing")
    answered, token = store.create_call(CallConfig(), "twilio", direction="outbound", ttl_s=60)
    store.apply_carrier_status(answered.id, "in_progress")
    claimed, _ = store.create_call(CallConfig(), "twilio", ttl_s=60)
    store.mark_call_started(claimed.id)
    fresh, _ = store.create_call(CallConfig(), "twilio", ttl_s=600)
    clock.advance(61)
    with pytest.raises(TokenExpired):
        store.check_stream_token(answered.id, token)
    assert store.expire_stale_calls() == 4
    for call, old in ((queued, "queued"), (initiated, "initiated"), (ringing, "ringing")):
        rec = store.get_call(call.id)
        assert (rec.status, rec.end_reason, rec.ended_at) == (CallStatus.EXPIRED, "stream_token_expired", clock.now)
        assert rec.transitions[-1] == {"from": old, "to": "expired", "at": clock.now, "source": "gateway",
                                       "detail": {"endReason": "stream_token_expired"}}  # fmt: skip
    rec = store.get_call(answered.id)
    assert (rec.status, rec.end_reason, rec.error_code) == (CallStatus.FAILED, "no_stream", "no_stream")
    assert moves(store, answered.id)[-1] == ("in_progress", "failed", "gateway")
    assert store.get_call(claimed.id).status is CallStatus.IN_PROGRESS
    assert store.get_call(fresh.id).status is CallStatus.QUEUED
    assert store.expire_stale_calls() == 0  # nothing twice


def test_expiry_of_many_calls_spans_chunks(store: Store, clock: Clock) -> None:
    ids = [store.create_call(CallConfig(), "raw", ttl_s=1)[0].id for _ in range(1203)]
    clock.advance(2)
    assert store.expire_stale_calls() == 1203
    with store._session() as s:
        rows = s.execute(select(CallTransition.call_id, CallTransition.seq, CallTransition.to_status)
                         .where(CallTransition.to_status == "expired")).all()  # fmt: skip
    assert sorted(r.call_id for r in rows) == sorted(ids) and {r.seq for r in rows} == {1}


def test_node_lost_then_the_real_outcome_keeps_one_row_per_status(store: Store, clock: Clock) -> None:
    call, _ = store.create_call(CallConfig(), "twilio")
    store.mark_call_started(call.id, node_id="n1", node_run="r1", lease_s=30)
    clock.advance(60)
    assert [r.call_id for r in sweep_lapsed_calls(store, "n2", lease_s=30)] == [call.id]
    lost_at = clock.now
    assert store.get_call(call.id).transitions[-1] == {
        "from": "in_progress", "to": "failed", "at": lost_at, "source": "gateway",
        "detail": {"endReason": NODE_LOST, "errorCode": NODE_LOST, "cause": "lease_lapsed"},
    }  # fmt: skip
    clock.advance(5)
    assert store.finalise_call(call.id, status="completed", end_reason="caller_hangup", duration_ms=64_000)
    rec = store.get_call(call.id)
    assert rec.status is CallStatus.COMPLETED
    assert moves(store, call.id) == [(None, "queued", "gateway"), ("queued", "in_progress", "media"),
                                     ("in_progress", "failed", "gateway"), ("failed", "completed", "gateway")]  # fmt: skip
    assert rec.transitions[-1]["detail"] == {"endReason": "caller_hangup", "supersedes": NODE_LOST}
    assert rec.transitions[-1]["at"] == clock.now


def test_a_failed_real_outcome_rewrites_the_node_lost_row(store: Store, clock: Clock) -> None:
    call, _ = store.create_call(CallConfig(), "twilio")
    store.mark_call_started(call.id, node_id="n1", node_run="r1", lease_s=30)
    clock.advance(31)
    assert len(recover_lost_calls(store, "n1", run_id="r2")) == 1
    lost_at = clock.now
    clock.advance(2)
    assert store.finalise_call(call.id, status="failed", end_reason="model_error", duration_ms=3000,
                               error_code="model_auth")  # fmt: skip
    rec = store.get_call(call.id)
    assert (rec.status, rec.end_reason) == (CallStatus.FAILED, "model_error")
    assert rec.transitions[-1] == {
        "from": "in_progress", "to": "failed", "at": clock.now, "source": "gateway",
        "detail": {"endReason": "model_error", "errorCode": "model_auth", "supersedes": NODE_LOST,
                   "presumedAt": iso_utc(lost_at)},
    }  # fmt: skip
    assert len(rec.transitions) == 3


def test_a_spooled_voicemail_outcome_replays_through_finalise(store: Store, tmp_path: Path) -> None:
    call, _ = store.create_call(CallConfig(), "vonage", direction="outbound")
    store.mark_call_started(call.id)
    amd = {"verdict": "machine", "decidedMs": 2600, "cues": [], "action": "hung_up", "events": []}
    spool_outcome(tmp_path / "spool", call.id, {"status": "voicemail", "end_reason": "voicemail_hangup",
                                                "duration_ms": 2700, "voicemail": amd})  # fmt: skip
    assert replay_spool(store.finalise_call, tmp_path / "spool") == 1
    rec = store.get_call(call.id)
    assert (rec.status, rec.voicemail) == (CallStatus.VOICEMAIL, amd)
    assert moves(store, call.id)[-1] == ("in_progress", "voicemail", "gateway")


def test_reissue_stream_token_replaces_the_token_until_a_stream_claims(store: Store, clock: Clock) -> None:
    call, old = store.create_call(CallConfig(), "plivo", direction="outbound", ttl_s=60)
    store.mark_call_placed(call.id, "uuid-1")
    store.apply_carrier_status(call.id, "in_progress")
    clock.advance(120)  # the first token expired meanwhile
    new = store.reissue_stream_token(call.id, 30)
    assert new != old and len(new) == 43
    assert store.check_stream_token(call.id, new).stream_token_expires_at == clock.now + timedelta(seconds=30)
    with pytest.raises(Exception, match="does not match"):
        store.check_stream_token(call.id, old)
    store.mark_call_started(call.id)
    with pytest.raises(CallNotConnectable):
        store.reissue_stream_token(call.id, 30)
    with pytest.raises(UnknownCall):
        store.reissue_stream_token("call_nope", 30)
    with pytest.raises(ValueError):
        store.reissue_stream_token(call.id, 0)
    assert len(store.get_call(call.id).transitions) == 3  # a reissue is no status change


def test_mark_call_placed(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "twilio", direction="outbound")
    rec = store.mark_call_placed(call.id, "CA77")
    assert (rec.status, rec.carrier_call_id) == (CallStatus.INITIATED, "CA77")
    assert store.get_call(call.id).transitions[-1]["detail"] == {"carrierCallId": "CA77"}
    # callbacks got there first: only the carrier call id is filled in
    early, _ = store.create_call(CallConfig(), "twilio", direction="outbound")
    store.apply_carrier_status(early.id, "ringing")
    rec = store.mark_call_placed(early.id, "CA78")
    assert (rec.status, rec.carrier_call_id) == (CallStatus.RINGING, "CA78")
    assert moves(store, early.id) == [(None, "queued", "gateway"), ("queued", "ringing", "carrier")]
    assert store.mark_call_placed(early.id, "CA-other").carrier_call_id == "CA78"  # not overwritten
    with pytest.raises(UnknownCall):
        store.mark_call_placed("call_nope", "CA1")
    with pytest.raises(ValueError):
        store.mark_call_placed(call.id, "")
