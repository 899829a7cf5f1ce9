"""A database made before columns were added is upgraded in place at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, text

from gateway.store import CallConfig, CallStatus, Store, recover_lost_calls
from gateway.store.schema import _add_column_sql, add_missing_columns

#: Columns added after the first release of the store, dropped here to make an "old" database.
ADDED = {
    "calls": ["node_id", "recording_status", "recording_error", "tenant", "carrier_account_id", "answered_at",
              "carrier_status", "voicemail", "outbound"],
    "api_keys": ["tenant"],
    "agents": ["tenant", "barge_in_mode", "barge_in_commit_ms"],
}


def old_database(tmp_path: Path) -> tuple[Store, str, str]:
    """A SQLite database as an older gateway left it: a key and a finished call, none of the
    :data:`ADDED` columns or their indexes, and no ``call_transitions`` table."""
    store = Store(f"sqlite:///{tmp_path}/old.db")
    store.create_all()
    key, _ = store.create_api_key("old")
    call, _ = store.create_call(CallConfig(), "twilio")
    store.mark_call_started(call.id)
    store.finalise_call(call.id, status="completed", end_reason="carrier_stop", duration_ms=10,
                        recording_path="/r/old.wav")  # fmt: skip
    with store.engine.begin() as conn:
        for table, columns in ADDED.items():
            for index in inspect(conn).get_indexes(table):
                if set(index["column_names"]) & set(columns):
                    conn.execute(text(f'DROP INDEX "{index["name"]}"'))
            for column in columns:
                conn.execute(text(f'ALTER TABLE "{table}" DROP COLUMN "{column}"'))
        conn.execute(text('DROP TABLE "call_transitions"'))
    store.close()
    return Store(f"sqlite:///{tmp_path}/old.db"), key, call.id


def test_an_old_database_gets_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    store, key, call_id = old_database(tmp_path)
    with pytest.raises(Exception, match="no such column"):
        store.get_call(call_id)  # what a gateway upgraded without this step hit
    store.create_all()
    cols = {t: {c["name"] for c in inspect(store.engine).get_columns(t)} for t in ADDED}
    assert all(set(names) <= cols[t] for t, names in ADDED.items())
    assert "ix_calls_node_status" in {i["name"] for i in inspect(store.engine).get_indexes("calls")}
    old = store.get_call(call_id)
    assert old is not None and old.status is CallStatus.COMPLETED
    assert (old.tenant, old.node_id, old.recording_status) == ("default", None, None)
    assert old.recording_state == "completed"  # a path and no status: an older record
    assert store.authenticate_api_key(key).tenant == "default"
    assert recover_lost_calls(store, "any-node") == []  # the recovery query runs
    assert add_missing_columns(store.engine) == []  # idempotent
    assert "call_transitions" in inspect(store.engine).get_table_names()
    assert (old.transitions, old.carrier_account_id, old.answered_at, old.carrier_status, old.voicemail,
            old.outbound) == ([], None, None, None, None, None)  # fmt: skip


def test_an_old_databases_calls_still_move_through_the_lifecycle(tmp_path: Path) -> None:
    """A call created by the older gateway (no creation row) can be placed and driven by callbacks."""
    store = Store(f"sqlite:///{tmp_path}/old.db")
    store.create_all()
    queued, _ = store.create_call(CallConfig(), "twilio", direction="outbound")
    with store.engine.begin() as conn:
        for column in ADDED["calls"]:
            for index in inspect(conn).get_indexes("calls"):
                if column in index["column_names"]:
                    conn.execute(text(f'DROP INDEX "{index["name"]}"'))
            conn.execute(text(f'ALTER TABLE "calls" DROP COLUMN "{column}"'))
        conn.execute(text('DROP TABLE "call_transitions"'))
    store.close()
    store = Store(f"sqlite:///{tmp_path}/old.db")
    store.create_all()
    assert store.mark_call_placed(queued.id, "CA1").status is CallStatus.INITIATED
    assert store.apply_carrier_status(queued.id, "initiated") == "duplicate"
    assert store.apply_carrier_status(queued.id, "busy", raw_status="busy") == "applied"
    rec = store.get_call(queued.id)
    assert (rec.status, rec.end_reason, rec.tenant) == (CallStatus.BUSY, "carrier_busy", "default")
    assert [(t["from"], t["to"], t["source"]) for t in rec.transitions] == [
        ("queued", "initiated", "gateway"), ("initiated", "busy", "carrier"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "column, sql",
    [
        (Column("n", String(16)), 'ALTER TABLE t ADD COLUMN n VARCHAR(16)'),
        (Column("n", String(8), nullable=False, default="it's"), "ALTER TABLE t ADD COLUMN n VARCHAR(8) DEFAULT 'it''s' NOT NULL"),
        (Column("n", Integer, default=3), 'ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 3'),
    ],
)
def test_the_added_column_sql(tmp_path: Path, column: Column, sql: str) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    Table("t", MetaData(), column)
    assert _add_column_sql(store.engine, "t", column) == sql


def test_a_not_null_column_without_a_default_needs_a_real_migration(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/x.db")
    column = Column("n", String(8), nullable=False)
    Table("t", MetaData(), column)
    with pytest.raises(ValueError, match="NOT NULL"):
        _add_column_sql(store.engine, "t", column)


def test_an_agent_stored_before_barge_in_modes_reads_as_the_operator_s_default(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/agents.db")
    store.create_all()
    agent = store.create_agent(name="old", system_prompt="p", voice="joe", language="en-US", greeting="hi",
                               interruptible=True)  # fmt: skip
    with store.engine.begin() as conn:
        for column in ("barge_in_mode", "barge_in_commit_ms"):
            conn.execute(text(f'ALTER TABLE "agents" DROP COLUMN "{column}"'))
    store.close()
    store = Store(f"sqlite:///{tmp_path}/agents.db")
    store.create_all()
    old = store.get_agent(agent.id)
    assert old is not None and (old.barge_in_mode, old.barge_in_commit_ms) == (None, 400)
    assert old.call_config().barge_in_mode is None and old.call_config().interruptible
