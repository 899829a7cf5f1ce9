"""Outcome spool: a final record the database refuses is retried, then kept on disk and
replayed at the next start, ahead of the node_lost recovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from gateway.store import CallConfig, Store, recover_lost_calls
from gateway.store.spool import finalise_with_retry, replay_spool

FIELDS = {
    "status": "completed",
    "end_reason": "carrier_stop",
    "duration_ms": 4200,
    "transcript": [{"role": "user", "text": "hello there", "at_ms": 900, "interrupted": False}],
    "events": [{"kind": "started", "at_ms": 0, "data": {}}, {"kind": "ended", "at_ms": 4200, "data": {}}],
    "metrics": {"framesIn": 210},
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path}/gw.db")
    s.create_all()
    return s


def live_call(store: Store, node: str = "node-a") -> str:
    call, _ = store.create_call(CallConfig(), "twilio")
    store.mark_call_started(call.id, node_id=node, recording_path=None)
    return call.id


class FlakyDatabase:
    """``finalise_call`` that fails with a database error ``failures`` times, then works."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store, self.failures, self.calls = store, failures, 0

    def __call__(self, call_id: str, **fields):
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("UPDATE calls", {}, Exception("database is locked"))
        return self.store.finalise_call(call_id, **fields)


def test_a_passing_database_error_is_retried(store: Store, tmp_path: Path) -> None:
    call_id = live_call(store)
    db, waits = FlakyDatabase(store, failures=2), []
    assert finalise_with_retry(db, tmp_path / "spool", call_id, FIELDS, sleep=waits.append) == "stored"
    assert db.calls == 3 and waits == [0.25, 1.0]
    assert store.get_call(call_id).status == "completed"
    assert not (tmp_path / "spool").exists()


def test_a_database_that_stays_down_spools_the_record_and_the_next_start_stores_it(store: Store, tmp_path: Path) -> None:
    call_id = live_call(store)
    spool = tmp_path / "spool"
    down = FlakyDatabase(store, failures=10**9)
    assert finalise_with_retry(down, spool, call_id, FIELDS, sleep=lambda s: None) == "spooled"
    assert json.loads((spool / f"{call_id}.json").read_text())["fields"]["transcript"][0]["text"] == "hello there"
    assert store.get_call(call_id).status == "in_progress"
    # Next start: the spool is replayed before recovery, so the real outcome wins over node_lost.
    assert replay_spool(store.finalise_call, spool) == 1
    assert recover_lost_calls(store, "node-a") == []
    rec = store.get_call(call_id)
    assert (rec.status, rec.end_reason, rec.duration_ms) == ("completed", "carrier_stop", 4200)
    assert [t.text for t in rec.turns] == ["hello there"]
    assert list(spool.glob("*")) == []


def test_replay_keeps_what_the_database_still_refuses_and_sets_aside_what_is_not_a_record(store: Store, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "call_bad.json").write_text("{not json")
    call_id = live_call(store)
    finalise_with_retry(FlakyDatabase(store, 10**9), spool, call_id, FIELDS, sleep=lambda s: None)
    assert replay_spool(FlakyDatabase(store, 10**9), spool) == 0
    assert (spool / f"{call_id}.json").exists() and (spool / "call_bad.bad").exists()
    # A record of a call that is already final (or unknown) is dropped, not retried for ever.
    store.finalise_call(call_id, **{**FIELDS, "end_reason": "other"})
    assert replay_spool(store.finalise_call, spool) == 1  # a no-op for the store, and gone
    assert not (spool / f"{call_id}.json").exists()


def test_a_record_the_store_refuses_is_not_retried(store: Store, tmp_path: Path) -> None:
    queued, _ = store.create_call(CallConfig(), "twilio")  # queued → completed is illegal
    db = FlakyDatabase(store, failures=0)
    assert finalise_with_retry(db, tmp_path / "spool", queued.id, FIELDS, sleep=lambda s: None) == "refused"
    assert db.calls == 1 and not (tmp_path / "spool").exists()
