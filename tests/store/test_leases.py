"""Call leases: set at the claim, renewed by the claiming run; calls whose node is gone for
good are finalised by any node's sweeper, a live twin's calls survive the other's start-up,
and a ``node_lost`` presumption gives way to the call's real outcome."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import inspect, text, update

from gateway.app import _renew_leases
from gateway.store import NODE_LOST, CallConfig, CallStatus, Store, recover_lost_calls, sweep_lapsed_calls
from gateway.store.models import Call
from gateway.store.recovery import quiet_s
from tests.store.test_recovery import frames_of, recorded, set_sizes
from tests.store.conftest import T0, Clock

LEASE = 90.0


def claimed(store: Store, node: str, run: str | None, wav: Path | None = None, *, lease_s: float | None = LEASE,
            config: CallConfig | None = None) -> str:  # fmt: skip
    call, _ = store.create_call(config or CallConfig(), "twilio")
    store.mark_call_started(call.id, node_id=node, node_run=run, lease_s=lease_s, recording_path=wav)
    return call.id


def test_the_claim_sets_a_lease_that_only_the_claiming_run_renews(store: Store, clock: Clock) -> None:
    mine = claimed(store, "node-a", "run-1")
    rec = store.get_call(mine)
    assert (rec.node_run, rec.lease_renewed_at, rec.lease_until) == ("run-1", T0, T0 + timedelta(seconds=LEASE))
    twin = claimed(store, "node-a", "run-2")
    ended = claimed(store, "node-a", "run-1")
    store.finalise_call(ended, status="completed", end_reason="carrier_stop", duration_ms=10)

    clock.advance(30)
    assert store.renew_leases([mine, twin, ended, "call_unknown"], run_id="run-1", lease_s=LEASE) == 1
    assert store.get_call(mine).lease_until == clock.now + timedelta(seconds=LEASE)
    assert store.get_call(mine).lease_renewed_at == clock.now
    assert store.get_call(twin).lease_until == T0 + timedelta(seconds=LEASE)  # another run's
    assert store.get_call(ended).lease_renewed_at == T0  # final: never renewed
    assert store.renew_leases([], run_id="run-1", lease_s=LEASE) == 0
    with pytest.raises(ValueError):
        store.renew_leases([mine], run_id="run-1", lease_s=0)
    with pytest.raises(ValueError):
        claimed(store, "node-a", "run-1", lease_s=-1)


def test_a_lapsed_lease_of_another_node_is_finalised_by_the_sweeper_with_its_wav_linked(
    store: Store, clock: Clock, tmp_path: Path
) -> None:
    wav = recorded(tmp_path / "b.wav", 1.5)
    set_sizes(wav, 36, 0)  # killed before the header was ever patched
    gone = claimed(store, "pod-old-name", "run-b", wav)
    elsewhere = claimed(store, "pod-old-name", "run-b", tmp_path / "on-its-own-disk.wav")
    serving = claimed(store, "node-a", "run-a")  # this node's own live call, renewals failing
    renewed = claimed(store, "node-c", "run-c")

    clock.advance(LEASE - 1)
    store.renew_leases([renewed], run_id="run-c", lease_s=LEASE)
    assert sweep_lapsed_calls(store, "node-a", lease_s=LEASE) == []  # not yet lapsed
    clock.advance(2)
    done = sweep_lapsed_calls(store, "node-a", lease_s=LEASE, live={serving})

    assert [d.call_id for d in done] == [gone, elsewhere]
    rec = store.get_call(gone)
    assert (rec.status, rec.end_reason, rec.error_code) == (CallStatus.FAILED, NODE_LOST, NODE_LOST)
    assert "lease" in rec.error_message and "lapsed" in rec.error_message and "'pod-old-name'" in rec.error_message
    assert (rec.recording_status, rec.recording_path, rec.duration_ms) == ("completed", str(wav), 1500)
    assert frames_of(wav) == 12000  # the header repaired
    (event,) = rec.events
    assert event.kind == NODE_LOST
    assert event.data == {"nodeId": "pod-old-name", "finalisedBy": "node-a", "cause": "lease_lapsed",
                               "durationFrom": "recording", "recordingRepaired": True}  # fmt: skip
    far = store.get_call(elsewhere)
    assert (far.recording_status, far.recording_path) == ("failed", None)
    assert "not found on node 'node-a'" in far.recording_error and "'pod-old-name'" in far.recording_error
    assert store.get_call(serving).status is CallStatus.IN_PROGRESS  # live here: never touched
    assert store.get_call(renewed).status is CallStatus.IN_PROGRESS
    assert sweep_lapsed_calls(store, "node-z", lease_s=LEASE, live={serving}) == []  # each call once


def test_a_live_twins_calls_survive_the_other_processes_start_up(store: Store, clock: Clock) -> None:
    """Two processes with one node id: the one starting up must not take the other's calls
    while it renews them, and finalises them once it has been silent for its quiet time."""
    twin = claimed(store, "node-a", "run-twin")
    crashed = claimed(store, "node-a", "run-dead")  # a previous run, killed
    quiet = quiet_s(store.get_call(twin))
    assert quiet == pytest.approx(LEASE / 3 * 1.5)
    clock.advance(LEASE / 3)
    store.renew_leases([twin], run_id="run-twin", lease_s=LEASE)
    clock.advance(quiet - LEASE / 3 + 1)  # the dead run's claim is now older than the quiet time

    assert [d.call_id for d in recover_lost_calls(store, "node-a", run_id="run-new")] == [crashed]
    assert store.get_call(twin).status is CallStatus.IN_PROGRESS
    for _ in range(3):  # the twin goes on renewing; the new process's sweeps leave it alone
        clock.advance(LEASE / 3)
        assert store.renew_leases([twin], run_id="run-twin", lease_s=LEASE) == 1
        assert recover_lost_calls(store, "node-a", run_id="run-new") == []
    assert store.get_call(twin).status is CallStatus.IN_PROGRESS

    clock.advance(quiet - 1)  # then the twin dies
    assert recover_lost_calls(store, "node-a", run_id="run-new") == []
    clock.advance(2)
    (done,) = recover_lost_calls(store, "node-a", run_id="run-new")
    rec = store.get_call(twin)
    assert done.call_id == twin and rec.end_reason == NODE_LOST
    assert "no lease renewal for 46 s" in rec.error_message and rec.events[0].data["cause"] == "restart"
    assert recover_lost_calls(store, "node-a", run_id="run-twin") == []  # a run never takes its own


def test_the_quiet_time_follows_the_claimers_own_lease(store: Store, clock: Clock) -> None:
    short = claimed(store, "n", "r", lease_s=5)
    long = claimed(store, "n", "r", lease_s=600)
    assert quiet_s(store.get_call(short)) == pytest.approx(5 / 3 + 2.0)  # at least a 2 s margin
    assert quiet_s(store.get_call(long)) == pytest.approx(300.0)
    clock.advance(4)
    assert [d.call_id for d in recover_lost_calls(store, "n", run_id="new")] == [short]


def test_the_real_outcome_replaces_a_node_lost_record(store: Store, clock: Clock, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    wav = recorded(tmp_path / "live.wav", 1.0)
    call_id = claimed(store, "node-a", "run-twin", wav)
    clock.advance(60)  # the twin's renewals were late (a database stall)
    assert recover_lost_calls(store, "node-a") != []  # a restart presumed it lost
    assert store.get_call(call_id).status is CallStatus.FAILED
    clock.advance(20)

    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        assert store.finalise_call(
            call_id, status="completed", end_reason="carrier_stop", duration_ms=21000,
            transcript=[{"role": "agent", "text": "Hello.", "at_ms": 0}, {"role": "user", "text": "Hi", "at_ms": 900}],
            events=[{"kind": "started", "at_ms": 0}, {"kind": "stopped", "at_ms": 21000, "data": {"by": "carrier"}}],
            recording_path=wav, metrics={"framesIn": 1050},
        )  # fmt: skip
    assert "replaces" in caplog.text
    rec = store.get_call(call_id)
    assert (rec.status, rec.end_reason, rec.error_code, rec.error_message) == (CallStatus.COMPLETED, "carrier_stop", None, None)
    assert (rec.duration_ms, rec.ended_at, rec.metrics) == (21000, clock.now, {"framesIn": 1050})
    assert (rec.recording_status, rec.recording_error) == ("completed", None)
    assert [t.text for t in rec.turns] == ["Hello.", "Hi"]
    assert [(e.seq, e.kind) for e in rec.events] == [(0, NODE_LOST), (1, "started"), (2, "stopped")]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.store"):  # now final for real: dropped, loudly
        assert not store.finalise_call(call_id, status="failed", end_reason="model_error", duration_ms=1)
        assert not store.finalise_call(call_id, status="failed", end_reason=NODE_LOST, duration_ms=0)
    assert caplog.text.count("dropped") == 2
    assert store.get_call(call_id).end_reason == "carrier_stop"


def test_a_duplicate_finalise_is_quiet_and_a_node_lost_never_replaces_node_lost(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    done = claimed(store, "n", "r")
    store.finalise_call(done, status="completed", end_reason="carrier_stop", duration_ms=5)
    lost = claimed(store, "n", None, lease_s=None)  # no lease: lost at once
    assert recover_lost_calls(store, "n") != []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        assert not store.finalise_call(done, status="completed", end_reason="carrier_stop", duration_ms=5)
        assert not store.finalise_call(lost, status="failed", end_reason=NODE_LOST, duration_ms=0)
    assert caplog.text == ""
    assert [e.kind for e in store.get_call(lost).events] == [NODE_LOST]


def _drop_lease_columns(store: Store) -> None:
    """Make the database what a gateway from before leases left."""
    with store.engine.begin() as conn:
        for index in inspect(conn).get_indexes("calls"):
            if "lease_until" in index["column_names"]:
                conn.execute(text(f'DROP INDEX "{index["name"]}"'))
        for column in ("node_run", "lease_until", "lease_renewed_at"):
            conn.execute(text(f'ALTER TABLE calls DROP COLUMN "{column}"'))


def test_rows_from_before_leases_lapse_by_their_start_plus_max_duration(tmp_path: Path, clock: Clock) -> None:
    store = Store(f"sqlite:///{tmp_path}/old.db", clock=clock)
    store.create_all()
    ten_min = _old_claim(store, CallConfig(max_duration_s=600))  # what an older gateway claimed
    no_max = _old_claim(store, CallConfig())
    _drop_lease_columns(store)
    store.close()
    old = Store(f"sqlite:///{tmp_path}/old.db", clock=clock)

    old.create_all()  # the upgrade adds the lease columns
    with old.engine.begin() as conn:  # a config snapshot without a max duration at all
        conn.execute(update(Call).where(Call.id == no_max).values(config={"system_prompt": "x"}))
    assert old.get_call(ten_min).lease_until is None
    clock.advance(600 + LEASE - 1)
    assert sweep_lapsed_calls(old, "node-new", lease_s=LEASE) == []
    clock.advance(2)
    assert [d.call_id for d in sweep_lapsed_calls(old, "node-new", lease_s=LEASE)] == [ten_min]
    rec = old.get_call(ten_min)
    assert rec.end_reason == NODE_LOST and "no lease recorded" in rec.error_message
    clock.advance(7200 - 600 - 2)
    assert sweep_lapsed_calls(old, "node-new", lease_s=LEASE) == []
    clock.advance(2)
    assert [d.call_id for d in sweep_lapsed_calls(old, "node-new", lease_s=LEASE)] == [no_max]


def _old_claim(store: Store, config: CallConfig) -> str:
    call, _ = store.create_call(config, "twilio")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE calls SET status = 'in_progress', started_at = created_at, node_id = 'gone' "
                          "WHERE id = :id"), {"id": call.id})  # fmt: skip
    return call.id


async def test_the_renewal_task_renews_live_calls_and_survives_database_errors(store: Store, clock: Clock) -> None:
    live = claimed(store, "n", "run-1")
    services = SimpleNamespace(store=store, settings=SimpleNamespace(call_lease_s=0.15), live={live: object()},
                               admitting=set(), run_id="run-1")  # fmt: skip
    calls = []
    renew = store.renew_leases

    def flaky(ids, **kw):
        calls.append(set(ids))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        clock.advance(1)
        return renew(ids, **kw)

    store.renew_leases = flaky  # type: ignore[method-assign]
    task = asyncio.create_task(_renew_leases(services))  # type: ignore[arg-type]
    for _ in range(500):  # up to 10 s: a busy machine delays the renewals' threads
        await asyncio.sleep(0.02)
        if len(calls) >= 3:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) >= 3 and calls[0] == {live}  # the failure did not end the task
    assert store.get_call(live).lease_renewed_at > T0
