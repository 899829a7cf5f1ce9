"""Post-call results on the store: every terminal path queues them (``pending``) with the move,
claims are leased and exclusive, lapsed ones are taken over, only the claim's holder finishes."""

from __future__ import annotations

import pytest

from gateway.store import Store
from gateway.store.recovery import recover_lost_calls

from .conftest import Clock

CONFIG = {"system_prompt": "Be brief."}


def _call(store: Store, **kw: object) -> str:
    return store.create_call(CONFIG, "twilio", **kw)[0].id  # type: ignore[arg-type]


def _started(store: Store, node: str = "n1", run: str = "r1") -> str:
    call_id = _call(store)
    store.mark_call_started(call_id, node_id=node, node_run=run, lease_s=30)
    return call_id


def test_a_live_call_has_no_post_call_status_and_each_terminal_path_queues_it(store: Store, clock: Clock) -> None:
    live = _started(store)
    assert store.get_call(live).post_call_status is None
    store.finalise_call(live, status="completed", end_reason="caller_hangup", duration_ms=900,
                        transcript=[{"role": "user", "text": "hi", "at_ms": 10}])  # fmt: skip
    carrier = _call(store, direction="outbound")
    store.mark_call_placed(carrier, "CA1")
    assert store.apply_carrier_status(carrier, "no_answer", raw_status="no-answer") == "applied"
    stale = _call(store, ttl_s=5)
    clock.advance(10)
    assert store.expire_stale_calls() == 1
    lost = _started(store, node="n2", run="old")
    clock.advance(120)
    assert [r.call_id for r in recover_lost_calls(store, "n2", run_id="new")] == [lost]
    for call_id in (live, carrier, stale, lost):
        rec = store.get_call(call_id)
        assert rec.post_call_status == "pending", (call_id, rec.status)
        assert rec.summary is None and rec.extracted is None and rec.post_call_error is None


def test_a_non_terminal_move_leaves_it_alone(store: Store) -> None:
    call_id = _call(store, direction="outbound")
    store.mark_call_placed(call_id, "CA1")
    store.apply_carrier_status(call_id, "ringing")
    assert store.get_call(call_id).post_call_status is None
    assert store.claim_post_calls(lease_s=60, limit=10) == []


def test_claims_are_exclusive_and_carry_the_transcript(store: Store) -> None:
    call_id = _started(store)
    store.finalise_call(call_id, status="completed", end_reason="caller_hangup", duration_ms=900,
                        transcript=[{"role": "user", "text": "hello", "at_ms": 10},
                                    {"role": "agent", "text": "hi there", "at_ms": 20}])  # fmt: skip
    (job,) = store.claim_post_calls(lease_s=60, limit=5, prefix="node-a")
    assert job.call.id == call_id and job.attempts == 1 and job.claim.startswith("node-a-")
    assert [t.text for t in job.call.turns] == ["hello", "hi there"]
    assert store.get_call(call_id).post_call_status == "running"
    assert store.claim_post_calls(lease_s=60, limit=5) == []  # a second worker gets nothing
    assert not store.finish_post_call(call_id, status="completed", summary="x", claim="someone-else")
    assert store.finish_post_call(call_id, status="completed", summary="They said hello.",
                                  extracted={"greeting": "hello"}, claim=job.claim)  # fmt: skip
    rec = store.get_call(call_id)
    assert (rec.post_call_status, rec.summary, rec.extracted) == ("completed", "They said hello.", {"greeting": "hello"})
    assert not store.finish_post_call(call_id, status="failed", error="late", claim=job.claim)  # final: kept
    assert store.claim_post_calls(lease_s=60, limit=5) == []


def test_a_lapsed_claim_is_taken_over_and_the_old_holder_cannot_finish(store: Store, clock: Clock) -> None:
    call_id = _call(store)
    store.finalise_call(call_id, status="canceled", end_reason="api", duration_ms=0)
    (first,) = store.claim_post_calls(lease_s=30)
    clock.advance(29)
    assert store.claim_post_calls(lease_s=30) == []
    clock.advance(2)
    (second,) = store.claim_post_calls(lease_s=30)
    assert second.claim != first.claim and second.attempts == 2
    assert not store.finish_post_call(call_id, status="completed", summary="old", claim=first.claim)
    assert store.finish_post_call(call_id, status="skipped", error="why", claim=second.claim)
    assert store.get_call(call_id).post_call_error == "why"


def test_release_hands_rows_back_uncounted(store: Store) -> None:
    ids = [_call(store) for _ in range(3)]
    for call_id in ids:
        store.finalise_call(call_id, status="canceled", end_reason="api", duration_ms=0)
    jobs = store.claim_post_calls(lease_s=60, limit=2)
    assert len(jobs) == 2
    assert store.release_post_calls([(j.call.id, j.claim) for j in jobs] + [(ids[0], "stale")]) == 2
    again = store.claim_post_calls(lease_s=60, limit=5)
    assert sorted(j.call.id for j in again) == sorted(ids) and all(j.attempts == 1 for j in again)


def test_the_real_outcome_replacing_node_lost_queues_fresh_results(store: Store, clock: Clock) -> None:
    call_id = _started(store, node="n1", run="old")
    clock.advance(120)
    recover_lost_calls(store, "n1", run_id="new")
    (job,) = store.claim_post_calls(lease_s=60)
    assert store.finish_post_call(call_id, status="completed", summary="nothing said", claim=job.claim)
    store.finalise_call(call_id, status="completed", end_reason="caller_hangup", duration_ms=5000,
                        transcript=[{"role": "user", "text": "book me in", "at_ms": 100}])  # fmt: skip
    rec = store.get_call(call_id)
    assert (rec.status.value, rec.post_call_status, rec.summary) == ("completed", "pending", None)
    (fresh,) = store.claim_post_calls(lease_s=60)
    assert [t.text for t in fresh.call.turns] == ["book me in"] and fresh.attempts == 1


def test_finish_checks_its_status_and_arguments(store: Store) -> None:
    call_id = _call(store)
    assert not store.finish_post_call(call_id, status="completed", summary="not ended")  # NULL: not ended
    with pytest.raises(ValueError, match="post-call status"):
        store.finish_post_call(call_id, status="running")
    with pytest.raises(ValueError):
        store.claim_post_calls(lease_s=0)
    store.finalise_call(call_id, status="canceled", end_reason="api", duration_ms=0)
    assert store.finish_post_call(call_id, status="failed", error="boom")  # no claim: any waiting row
    assert store.get_call(call_id).post_call_status == "failed"
