"""Retention: old ended calls are deleted with every row naming them and their recordings, live
and recent calls kept, and calls whose post-call results or webhook deliveries are still to
come kept until they are done; the app's lifespan runs the purge when GATEWAY_RETENTION_DAYS is
set (served on loopback, read back over HTTP)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from gateway.app import create_app
from gateway.config import Settings
from gateway.llm.base import AgentConfig
from gateway.retention import RetentionPurger
from gateway.store import Store
from gateway.store.models import Call, CallEvent, CallTransition, TranscriptTurn
from gateway.store.outbox import OutboxMessage, new_message_id
from tests.api.loopback import serve

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _ended_call(store: Store, recordings: Path | None = None) -> str:
    """An ended call with a transcript, an event, a delivered webhook and its post-call results."""
    rec, _ = store.create_call(AgentConfig(), "twilio")
    store.mark_call_started(rec.id)
    path = None
    if recordings is not None:
        path = recordings / f"{rec.id}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF")
    store.finalise_call(rec.id, status="completed", end_reason="caller_hangup", duration_ms=1000,
                        transcript=[{"role": "user", "text": "hi", "at_ms": 10}],
                        events=[{"kind": "barge_in", "at_ms": 20}], recording_path=path)  # fmt: skip
    with store._session() as s, s.begin():  # a webhook delivery of the call, as the outbox holds it
        s.add(OutboxMessage(id=new_message_id(), tenant="default", call_id=rec.id, url="https://example.com/h",
                            event_type="call.ended", payload={}, created_at=store.now(), next_attempt_at=store.now(),
                            status="delivered"))
    _set(store, rec.id, post_call_status="completed")
    return rec.id


def _set(store: Store, call_id: str, **values: object) -> None:
    with store._session() as s, s.begin():
        s.execute(update(Call).where(Call.id == call_id).values(**values))


def _set_outbox(store: Store, call_id: str, status: str) -> None:
    with store._session() as s, s.begin():
        s.execute(update(OutboxMessage).where(OutboxMessage.call_id == call_id).values(status=status))


def _rows(store: Store, call_id: str) -> int:
    with store._session() as s:
        return sum(s.scalar(select(func.count()).select_from(m).where(m.call_id == call_id)) or 0
                   for m in (TranscriptTurn, CallEvent, CallTransition, OutboxMessage))  # fmt: skip


def test_a_purge_deletes_old_ended_calls_only_with_their_rows_and_recordings(tmp_path: Path) -> None:
    clock = Clock(NOW - timedelta(days=40))
    store = Store(f"sqlite:///{tmp_path / 'gw.db'}", clock=clock)
    store.create_all()
    old = [_ended_call(store, tmp_path / "rec") for _ in range(3)]
    live, _ = store.create_call(AgentConfig(), "twilio")
    store.mark_call_started(live.id)  # still in progress 40 days on: never deleted
    clock.now = NOW - timedelta(days=2)
    recent = _ended_call(store, tmp_path / "rec")
    clock.now = NOW
    assert _rows(store, old[0]) >= 4
    purger = RetentionPurger(store, retention_days=30)
    first = store.purge_calls(before=NOW - timedelta(days=30), limit=2)  # oldest first, in batches
    assert first.call_ids == tuple(old[:2]) and len(first.recording_paths) == 2
    rounds = purger.purge_once()
    assert (rounds.calls, rounds.recordings) == (1, 1)
    for call_id in old:
        assert store.get_call(call_id) is None and _rows(store, call_id) == 0
    assert not (tmp_path / "rec" / f"{old[2]}.wav").exists()
    assert (tmp_path / "rec" / f"{old[0]}.wav").exists(), "the batch's files are the caller's to remove"
    assert store.get_call(live.id) is not None and store.get_call(recent) is not None
    assert (tmp_path / "rec" / f"{recent}.wav").exists() and _rows(store, recent) >= 4
    assert purger.purge_once().calls == 0
    with pytest.raises(ValueError):
        store.purge_calls(before=datetime(2026, 1, 1))  # naive
    assert RetentionPurger.from_settings(store, Settings(_env_file=None)) is None, "0: kept forever (default)"
    store.close()


def test_a_call_with_after_call_work_to_come_is_kept_until_it_is_done(tmp_path: Path) -> None:
    clock = Clock(NOW)
    store = Store(f"sqlite:///{tmp_path / 'gw.db'}", clock=clock)
    store.create_all()
    store.create_webhook_endpoint("https://hooks.example.com/a")
    call, _ = store.create_call(AgentConfig(), "twilio")
    store.mark_call_started(call.id)
    store.finalise_call(call.id, status="completed", end_reason="caller_hangup", duration_ms=1000)
    clock.now = NOW + timedelta(hours=25)  # call.ended's last attempts are due 17.6 h .. 27.6 h after the first
    assert {r.status for r in store.list_outbox(call_id=call.id)} == {"pending"}
    assert store.get_call(call.id).post_call_status == "pending"
    cutoff = clock.now - timedelta(days=1)
    assert store.purge_calls(before=cutoff).call_ids == (), "post-call results and a delivery still to come"
    _set(store, call.id, post_call_status="running")
    _set_outbox(store, call.id, "delivered")
    assert store.purge_calls(before=cutoff).call_ids == (), "a worker is computing its results"
    _set(store, call.id, post_call_status="failed")
    _set_outbox(store, call.id, "pending")
    assert store.purge_calls(before=cutoff).call_ids == (), "results final, a delivery still to come"
    _set_outbox(store, call.id, "failed")  # the schedule ran out
    assert store.purge_calls(before=cutoff).call_ids == (call.id,)
    assert store.get_call(call.id) is None and _rows(store, call.id) == 0
    store.close()


def test_the_app_purges_old_calls_when_retention_is_set(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    old_store = Store(url, clock=Clock(datetime.now(timezone.utc) - timedelta(days=3)))
    old_store.create_all()
    old = _ended_call(old_store, tmp_path / "rec")
    recent = _ended_call(Store(url))
    settings = Settings(_env_file=None, database_url=url, recordings_dir=tmp_path / "rec", public_url="",
                        retention_days=2, retention_every_s=3600)  # fmt: skip
    store = Store(url)
    key = store.create_api_key("tests")[0]
    app = create_app(settings, store=store, warm_up=False)
    with serve(app, lifespan="on") as base, httpx.Client(base_url=base, headers={"X-API-Key": key}) as http:
        deadline = time.monotonic() + 10
        while http.get(f"/calls/{old}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.05)  # the first round runs at start-up
        assert http.get(f"/calls/{old}").status_code == 404
        assert http.get(f"/calls/{recent}").status_code == 200
        assert [c["id"] for c in http.get("/calls").json()["calls"]] == [recent]
    assert not (tmp_path / "rec" / f"{old}.wav").exists()
