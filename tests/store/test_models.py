"""Call status lifecycle table and the UTC timestamp type."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from gateway.store import TERMINAL_STATUSES, TRANSITIONS, CallStatus, IllegalTransition, check_transition
from gateway.store.models import Base, UTCDateTime

S = CallStatus

#: The lifecycle as issue 8 states it, written out by hand (not derived from the table).
UNANSWERED = [S.FAILED, S.NO_ANSWER, S.BUSY, S.DECLINED, S.CANCELED, S.EXPIRED]
LEGAL = (
    [(S.QUEUED, s) for s in [S.INITIATED, S.RINGING, S.IN_PROGRESS, *UNANSWERED]]
    + [(S.INITIATED, s) for s in [S.RINGING, S.IN_PROGRESS, *UNANSWERED]]
    + [(S.RINGING, s) for s in [S.IN_PROGRESS, *UNANSWERED]]
    + [(S.IN_PROGRESS, S.COMPLETED), (S.IN_PROGRESS, S.FAILED), (S.IN_PROGRESS, S.VOICEMAIL)]
)


def test_transition_table_is_exactly_the_legal_moves() -> None:
    table = {(a, b) for a, nxt in TRANSITIONS.items() for b in nxt}
    assert table == set(LEGAL)
    assert set(TRANSITIONS) == set(CallStatus)


@pytest.mark.parametrize(("old", "new"), LEGAL)
def test_legal(old: CallStatus, new: CallStatus) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [(a, b) for a in CallStatus for b in CallStatus if (a, b) not in LEGAL],
)
def test_illegal_raises(old: CallStatus, new: CallStatus) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(old, new, call_id="call_x")
    assert info.value.old is old and info.value.new is new
    assert f"{old} -> {new}" in str(info.value) and "call_x" in str(info.value)


def test_terminal_statuses() -> None:
    assert TERMINAL_STATUSES == {S.COMPLETED, S.FAILED, S.NO_ANSWER, S.BUSY, S.DECLINED, S.VOICEMAIL, S.CANCELED,
                                 S.EXPIRED}  # fmt: skip
    assert {s.value for s in S} == {"queued", "initiated", "ringing", "in_progress", "completed", "failed",
                                    "no_answer", "busy", "declined", "voicemail", "canceled", "expired"}  # fmt: skip
    assert all(s.is_terminal for s in TERMINAL_STATUSES)
    assert not S.QUEUED.is_terminal and not S.IN_PROGRESS.is_terminal


def test_unknown_status_name() -> None:
    with pytest.raises(ValueError):
        check_transition("queued", "ringing_twice")


def test_utc_datetime_type() -> None:
    t = UTCDateTime()
    lite, pg = sqlite.dialect(), postgresql.dialect()
    plus2 = datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert t.process_bind_param(plus2, lite) == datetime(2025, 1, 1, 12, 0)
    assert t.process_bind_param(plus2, pg) == datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        t.process_bind_param(datetime(2025, 1, 1), lite)
    assert t.process_result_value(datetime(2025, 1, 1), lite).tzinfo is timezone.utc


def test_schema_compiles_for_postgresql() -> None:
    dialect = postgresql.dialect()
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in Base.metadata.sorted_tables)
    assert "TIMESTAMP WITH TIME ZONE" in ddl and "JSON" in ddl
    assert set(Base.metadata.tables) == {"api_keys", "agents", "carrier_accounts", "calls", "call_transitions",
                                         "transcript_turns", "call_events", "webhook_endpoints", "webhook_outbox"}  # fmt: skip
    assert "CREATE UNIQUE INDEX uq_call_transitions_to_status ON call_transitions (call_id, to_status)" in "\n".join(
        str(CreateIndex(i).compile(dialect=dialect)) for i in Base.metadata.tables["call_transitions"].indexes
    )
