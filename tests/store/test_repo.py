"""Store: API keys, agents, calls, stream tokens, lifecycle and finalisation."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.llm.base import AgentConfig
from gateway.store import (
    BadToken,
    CallConfig,
    CallNotConnectable,
    CallStatus,
    IllegalTransition,
    Store,
    StreamTokenError,
    TokenExpired,
    UnknownAgent,
    UnknownCall,
    hash_secret,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "gw.db"  # parent created by the store


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Store:
    s = Store(f"sqlite:///{db_path}", clock=clock)
    s.create_all()
    yield s
    s.close()


def _agent(store: Store, **kw):
    args = dict(name="support", system_prompt="Be brief.", voice="joe", language="en-US",
                greeting="Hi there")  # fmt: skip
    args.update(kw)
    return store.create_agent(**args)


def _started_call(store: Store) -> str:
    call, _ = store.create_call(CallConfig(), "twilio")
    store.mark_call_started(call.id, carrier_call_id="CA1", stream_id="MZ1", from_="+15550001", to="+15550002")
    return call.id


def _db_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.name.startswith(db_path.name))


# -- API keys ----------------------------------------------------------------------------------------


def test_api_key_roundtrip_and_revocation(store: Store) -> None:
    key, rec = store.create_api_key("ci")
    assert key.startswith("gw_") and len(key) > 40
    assert rec.prefix == key[:8] and rec.name == "ci" and rec.revoked_at is None
    assert rec.created_at.tzinfo is not None
    assert store.verify_api_key(key)
    assert not store.verify_api_key(key + "x")
    assert not store.verify_api_key("")
    assert not store.verify_api_key(None)
    assert not store.verify_api_key("gw_" + "a" * 10_000)
    assert store.revoke_api_key(rec.id)
    assert not store.revoke_api_key(rec.id)  # already revoked
    assert not store.verify_api_key(key)
    assert [k.id for k in store.list_api_keys()] == [rec.id]
    assert store.list_api_keys()[0].revoked_at is not None


def test_keys_and_tokens_are_stored_only_hashed(store: Store, db_path: Path) -> None:
    key, _ = store.create_api_key("secret-holder")
    call, token = store.create_call(CallConfig(), "twilio")
    store.close()  # checkpoint nothing away: read the db and any WAL side files
    data = _db_bytes(db_path)
    assert key.encode() not in data
    assert key[3:].encode() not in data
    assert token.encode() not in data
    assert hash_secret(key).encode() in data
    assert hash_secret(token).encode() in data


# -- agents ------------------------------------------------------------------------------------------


def test_agent_create_get_and_config(store: Store) -> None:
    tools = [{"name": "lookup", "url": "https://t.example.com", "parameters": {"type": "object"}}]
    rec = _agent(store, temperature=0.4, first_speaker="user", interruptible=True,
                 turn_mode="server_vad", max_duration_s=120, tools=tools)  # fmt: skip
    assert rec.id.startswith("agt_")
    got = store.get_agent(rec.id)
    assert got == rec
    cfg = got.call_config()
    assert cfg.max_duration_s == 120 and cfg.temperature == 0.4 and cfg.tools == tuple(tools)
    agent_cfg = cfg.agent_config(secrets={"k": "v"})
    assert isinstance(agent_cfg, AgentConfig)
    assert agent_cfg.first_speaker == "user" and agent_cfg.turn_mode == "server_vad"
    assert agent_cfg.secrets == {"k": "v"}
    assert store.get_agent("agt_nope") is None


# -- calls and stream tokens -------------------------------------------------------------------------


def test_create_call_snapshots_config(store: Store, clock: FakeClock) -> None:
    agent = _agent(store)
    call, token = store.create_call(agent.call_config(), "telnyx", agent_id=agent.id, ttl_s=60)
    assert call.id.startswith("call_") and call.status is CallStatus.QUEUED
    assert call.agent_id == agent.id and call.connection_type == "telnyx"
    assert call.stream_token_expires_at == clock.now + timedelta(seconds=60)
    assert call.call_config() == agent.call_config()
    assert len(token) >= 40


def test_create_call_accepts_agent_config_without_secrets(store: Store) -> None:
    call, _ = store.create_call(AgentConfig(greeting="Yo", secrets={"api": "s3cret"}), "raw")
    assert call.config["greeting"] == "Yo"
    assert "secrets" not in call.config and "s3cret" not in repr(call.config)


def test_create_call_rejects_bad_input(store: Store) -> None:
    with pytest.raises(ValueError):
        store.create_call(CallConfig(), "skype")
    with pytest.raises(UnknownAgent):
        store.create_call(CallConfig(), "twilio", agent_id="agt_missing")


def test_stream_token_checks(store: Store, clock: FakeClock) -> None:
    call, token = store.create_call(CallConfig(), "twilio", ttl_s=30)
    assert store.check_stream_token(call.id, token).id == call.id

    with pytest.raises(UnknownCall):
        store.check_stream_token("call_nope", token)
    with pytest.raises(BadToken):
        store.check_stream_token(call.id, token[:-1] + ("A" if token[-1] != "A" else "B"))
    with pytest.raises(BadToken):
        store.check_stream_token(call.id, "")

    clock.advance(31)
    with pytest.raises(TokenExpired):
        store.check_stream_token(call.id, token)
    # the janitor turns it into an expired call; the error stays TokenExpired
    assert store.expire_stale_calls() == 1
    assert store.get_call(call.id).status is CallStatus.EXPIRED
    with pytest.raises(TokenExpired):
        store.check_stream_token(call.id, token)


def test_stream_token_refused_once_started(store: Store) -> None:
    call, token = store.create_call(CallConfig(), "twilio")
    store.mark_call_started(call.id, carrier_call_id="CA1", stream_id="MZ1")
    with pytest.raises(CallNotConnectable) as info:
        store.check_stream_token(call.id, token)
    assert info.value.status == "in_progress"
    assert isinstance(info.value, StreamTokenError) and info.value.code == "call_not_connectable"
    # a wrong token is still BadToken: the state is not revealed without the token
    with pytest.raises(BadToken):
        store.check_stream_token(call.id, "x" * 43)


def test_mark_call_started_records_ids_and_wins_once(store: Store, clock: FakeClock) -> None:
    call, _ = store.create_call(CallConfig(), "twilio")
    clock.advance(2)
    rec = store.mark_call_started(call.id, carrier_call_id="CA9", stream_id="MZ9", from_="+1", to="+2")
    assert rec.status is CallStatus.IN_PROGRESS and rec.started_at == clock.now
    assert (rec.carrier_call_id, rec.stream_id, rec.from_number, rec.to_number) == ("CA9", "MZ9", "+1", "+2")
    with pytest.raises(IllegalTransition):
        store.mark_call_started(call.id)
    with pytest.raises(UnknownCall):
        store.mark_call_started("call_nope")


def test_update_call_details_after_claim(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "vonage")
    store.mark_call_started(call.id)  # claimed before the carrier's start message
    assert store.update_call_details(call.id, carrier_call_id="uuid-1", stream_id="", from_="+44")
    rec = store.get_call(call.id)
    assert (rec.carrier_call_id, rec.stream_id, rec.from_number, rec.to_number) == ("uuid-1", None, "+44", None)
    assert rec.status is CallStatus.IN_PROGRESS
    assert not store.update_call_details(call.id)
    with pytest.raises(UnknownCall):
        store.update_call_details("call_nope", stream_id="s")
    with pytest.raises(UnknownCall):
        store.update_call_details("call_nope")


def test_concurrent_claims_have_one_winner(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "twilio")
    results: list[str] = []

    def claim() -> None:
        try:
            store.mark_call_started(call.id)
            results.append("won")
        except IllegalTransition:
            results.append("lost")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]


def test_set_call_status_ringing(store: Store) -> None:
    call, token = store.create_call(CallConfig(), "plivo", direction="outbound")
    rec = store.set_call_status(call.id, "ringing")
    assert rec.status is CallStatus.RINGING and rec.direction == "outbound"
    store.check_stream_token(call.id, token)  # still connectable while ringing
    with pytest.raises(ValueError):
        store.set_call_status(call.id, "completed")
    store.finalise_call(call.id, status="no_answer", end_reason="no_answer", duration_ms=0)
    with pytest.raises(IllegalTransition):
        store.set_call_status(call.id, "ringing")


# -- finalisation --------------------------------------------------------------------------------------


def test_finalise_writes_everything_and_is_idempotent(store: Store, clock: FakeClock) -> None:
    call_id = _started_call(store)
    clock.advance(65)
    transcript = [
        {"role": "agent", "text": "Hello!", "at_ms": 120},
        {"role": "user", "text": "Hi, I need help", "at_ms": 2300},
        {"role": "agent", "text": "Sure, what", "at_ms": 4100, "interrupted": True, "heard_ms": 640},
    ]
    events = [
        {"kind": "barge_in", "at_ms": 4740, "data": {"heard_ms": 640}},
        {"kind": "dtmf", "at_ms": 5000, "data": {"digit": "5"}},
    ]
    ok = store.finalise_call(
        call_id, status="completed", end_reason="caller_hangup", duration_ms=65_000,
        transcript=transcript, events=events, recording_path="/rec/x.wav",
        metrics={"frames_in": 3250},
    )  # fmt: skip
    assert ok is True
    rec = store.get_call(call_id)
    assert rec.status is CallStatus.COMPLETED and rec.ended_at == clock.now
    assert rec.end_reason == "caller_hangup" and rec.duration_ms == 65_000
    assert rec.recording_path == "/rec/x.wav" and rec.metrics == {"frames_in": 3250}
    assert [(t.seq, t.role, t.text, t.at_ms) for t in rec.turns] == [
        (0, "agent", "Hello!", 120), (1, "user", "Hi, I need help", 2300), (2, "agent", "Sure, what", 4100),
    ]  # fmt: skip
    assert rec.turns[2].interrupted and rec.turns[2].heard_ms == 640
    assert not rec.turns[0].interrupted and rec.turns[0].heard_ms is None
    assert [(e.kind, e.at_ms, e.data) for e in rec.events] == [
        ("barge_in", 4740, {"heard_ms": 640}), ("dtmf", 5000, {"digit": "5"}),
    ]  # fmt: skip

    # a second finalisation (e.g. a racing error path) changes nothing
    assert store.finalise_call(
        call_id, status="failed", end_reason="model_error", duration_ms=1,
        transcript=[{"role": "user", "text": "dup", "at_ms": 1}], error_code="x",
    ) is False  # fmt: skip
    again = store.get_call(call_id)
    assert again == rec


def test_finalise_failed_keeps_error(store: Store) -> None:
    call_id = _started_call(store)
    assert store.finalise_call(
        call_id, status=CallStatus.FAILED, end_reason="model_error", duration_ms=1234,
        error_code="model_auth", error_message="key rejected",
    )  # fmt: skip
    rec = store.get_call(call_id)
    assert (rec.status, rec.error_code, rec.error_message) == (CallStatus.FAILED, "model_auth", "key rejected")


def test_finalise_rolls_back_on_bad_rows(store: Store) -> None:
    call_id = _started_call(store)
    with pytest.raises(ValueError):
        store.finalise_call(call_id, status="completed", end_reason="x", duration_ms=1,
                            transcript=[{"role": "bot", "text": "?", "at_ms": 0}])  # fmt: skip
    assert store.get_call(call_id).status is CallStatus.IN_PROGRESS
    assert store.get_call(call_id).turns == ()


def test_finalise_illegal_transitions(store: Store) -> None:
    call, _ = store.create_call(CallConfig(), "twilio")
    with pytest.raises(IllegalTransition) as info:
        store.finalise_call(call.id, status="completed", end_reason="x", duration_ms=0)
    assert "queued -> completed" in str(info.value)
    with pytest.raises(ValueError):
        store.finalise_call(call.id, status="in_progress", end_reason="x", duration_ms=0)
    with pytest.raises(UnknownCall):
        store.finalise_call("call_nope", status="failed", end_reason="x", duration_ms=0)
    # queued -> failed is legal (e.g. the carrier never connected)
    assert store.finalise_call(call.id, status="failed", end_reason="placement_failed", duration_ms=0)


def test_get_call_unknown(store: Store) -> None:
    assert store.get_call("call_nope") is None


def test_in_memory_database_is_shared_across_sessions() -> None:
    s = Store("sqlite://")
    s.create_all()
    key, _ = s.create_api_key("mem")
    assert s.verify_api_key(key)
    s.close()
