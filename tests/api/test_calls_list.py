"""``GET /calls`` over real HTTP on loopback: newest first, pagination, filters, tenant scope,
every documented 4xx; the document's date parameters (a string pattern every match of which is
taken); and the store's listing on its indexes (SQLite's query plan)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gateway.api import create_api
from gateway.api.calls_list import ISO_8601_PATTERN, IsoDateTime, _instant
from gateway.config import Settings
from gateway.llm.base import AgentConfig
from gateway.store import Store
from tests.api.conftest import fake_instructions
from tests.api.loopback import serve

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _seed(store: Store, clock: Clock) -> dict[str, Any]:
    """Nine default-tenant calls one hour apart (T0 … T0+8h) of mixed status and direction,
    and two of another tenant. Returns their ids by name."""
    ids: dict[str, Any] = {"default": [], "other": []}
    for i in range(9):
        clock.now = T0 + timedelta(hours=i)
        direction = "outbound" if i % 3 == 0 else "inbound"
        rec, _ = store.create_call(AgentConfig(), "twilio", direction=direction)
        if i % 2 == 1:  # answered and completed
            store.mark_call_started(rec.id)
            store.finalise_call(rec.id, status="completed", end_reason="caller_hangup", duration_ms=61_500)
        elif i == 4:
            store.finalise_call(rec.id, status="canceled", end_reason="api_hangup", duration_ms=0)
        ids["default"].append(rec.id)
    for i in range(2):
        clock.now = T0 + timedelta(hours=i, minutes=30)
        rec, _ = store.create_call(AgentConfig(), "twilio", tenant="other")
        ids["other"].append(rec.id)
    return ids


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("calls-list")
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp / 'gw.db'}", public_url="",
                        recordings_dir=tmp / "rec")  # fmt: skip
    clock = Clock()
    store = Store(settings.database_url, clock=clock)
    store.create_all()
    ids = _seed(store, clock)
    key = store.create_api_key("tests")[0]
    other_key = store.create_api_key("other", tenant="other")[0]
    app = create_api(store, settings, instruction_document=fake_instructions)
    with serve(app) as base_url, httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as http:
        yield {"http": http, "ids": ids, "store": store, "base_url": base_url, "other_key": other_key}
    store.close()


def _list(world: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = world["http"].get("/calls", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_newest_first_with_the_total_and_the_page(world) -> None:
    body = _list(world)
    assert [c["id"] for c in body["calls"]] == world["ids"]["default"][::-1]
    assert body["pagination"] == {"total": 9, "limit": 100, "offset": 0}
    done = next(c for c in body["calls"] if c["status"] == "completed")
    assert done["durationSec"] == 61.5 and done["endReason"] == "caller_hangup"
    assert done["postCallStatus"] == "pending" == world["store"].get_call(done["id"]).post_call_status
    assert set(done) >= {"id", "agentId", "direction", "connectionType", "from", "to", "createdAt", "startedAt",
                         "answeredAt", "endedAt", "objective"}  # fmt: skip


def test_pages_follow_one_another_without_overlap(world) -> None:
    seen = []
    for offset in range(0, 10, 4):
        body = _list(world, limit=4, offset=offset)
        assert body["pagination"] == {"total": 9, "limit": 4, "offset": offset}
        seen += [c["id"] for c in body["calls"]]
    assert seen == world["ids"]["default"][::-1]
    assert _list(world, offset=50)["calls"] == []


def test_filters_by_status_direction_and_creation_time(world) -> None:
    ids = world["ids"]["default"]
    assert [c["id"] for c in _list(world, status="completed")["calls"]] == [ids[7], ids[5], ids[3], ids[1]]
    assert _list(world, status="canceled")["pagination"]["total"] == 1
    outbound = _list(world, direction="outbound")
    assert [c["id"] for c in outbound["calls"]] == [ids[6], ids[3], ids[0]]
    both = _list(world, direction="outbound", status="completed")
    assert [c["id"] for c in both["calls"]] == [ids[3]]
    # start inclusive, end exclusive; no offset reads as UTC; an offset is honoured
    window = _list(world, start_date="2026-03-01T14:00:00", end_date="2026-03-01T12:00:00-05:00")
    assert [c["id"] for c in window["calls"]] == [ids[4], ids[3], ids[2]]
    # a date alone as end_date includes that whole day; as start_date it is its midnight
    assert _list(world, end_date="2026-03-01")["pagination"]["total"] == 9
    assert _list(world, start_date="2026-03-02")["pagination"]["total"] == 0
    assert _list(world, end_date="2026-02-28")["pagination"]["total"] == 0
    # bounds past what a UTC datetime holds are before / after every call, not an error
    assert _list(world, start_date="0001-01-01T00:00:00+05:00")["pagination"]["total"] == 9
    assert _list(world, end_date="9999-12-31T23:00:00-05:00")["pagination"]["total"] == 9


def test_the_document_declares_the_dates_as_the_iso_strings_taken(world) -> None:
    """Not ``format: date-time`` (RFC 3339, offset required): a string with the listing's pattern,
    so a date alone and a time without offset are in the document too."""
    doc = world["http"].get("/openapi.json").json()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/calls"]["get"]["parameters"]}
    for name in ("start_date", "end_date"):
        assert params[name]["type"] == "string" and params[name]["pattern"] == ISO_8601_PATTERN
        assert "format" not in params[name] and "anyOf" not in params[name]
    assert _list(world, start_date="2028-02-29", end_date="2028-02-29T23:59:59.5+0130")["pagination"]["total"] == 0


_PARSE = TypeAdapter(IsoDateTime)


@settings(max_examples=150, deadline=None)
@given(st.from_regex(ISO_8601_PATTERN, fullmatch=True))
def test_every_string_the_pattern_allows_is_taken(text: str) -> None:
    """A schema-valid value is never refused (what the document states is what the route takes)."""
    assert _instant(_PARSE.validate_python(text), text, whole_day=True).utcoffset() == timedelta(0)


def test_only_the_keys_tenant_is_listed(world) -> None:
    r = world["http"].get("/calls", headers={"X-API-Key": world["other_key"]})
    assert r.status_code == 200, r.text
    assert [c["id"] for c in r.json()["calls"]] == world["ids"]["other"][::-1]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"limit": 0}, "limit", "Input should be greater than or equal to 1"),
        ({"limit": 1001}, "limit", "Input should be less than or equal to 1000"),
        ({"limit": "ten"}, "limit", "Input should be a valid integer, unable to parse string as an integer"),
        ({"offset": -1}, "offset", "Input should be greater than or equal to 0"),
        ({"offset": 2**31}, "offset", "Input should be less than or equal to 2147483647"),
        ({"status": "done"}, "status", None),
        ({"direction": "sideways"}, "direction", None),
        ({"start_date": "yesterday"}, "start_date", None),
        ({"start_date": "1767225600"}, "start_date", None),  # a Unix time is not ISO 8601
        ({"end_date": "2026-13-01"}, "end_date", None),
        ({"end_date": "2026-02-29"}, "end_date", None),  # not a leap year
        ({"start_date": "2026-03-01T12:00:00+05"}, "start_date", None),  # an offset is hh:mm or hhmm
        ({"start_date": "２０２６-03-01"}, "start_date", None),  # digits are ASCII
        ({"start_date": " 2026-03-01"}, "start_date", None),
    ],
)
def test_a_bad_query_parameter_is_422_naming_it(world, params, field, message) -> None:
    r = world["http"].get("/calls", params=params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert [f["field"] for f in error["fields"]] == [field]
    if message is not None:
        assert error["fields"][0]["message"] == message


def test_no_key_or_a_wrong_key_is_401(world) -> None:
    for headers in ({}, {"X-API-Key": "gw_not-a-key"}):
        r = httpx.get(world["base_url"] + "/calls", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text


def test_each_filter_combination_reads_an_index_in_order(world) -> None:
    """SQLite's plan for the listing: an index search on the tenant's calls in creation order,
    never a scan of the table nor a sort of the matches."""
    from sqlalchemy.dialects import sqlite

    from gateway.store.calls_query import CallsQueryMixin  # noqa: F401 - the code under test
    from gateway.store.calls_query import _filters
    from gateway.store.models import Call
    from sqlalchemy import select

    store: Store = world["store"]
    cases = [{}, {"status": "completed"}, {"direction": "outbound"}, {"created_from": T0, "created_before": T0}]
    for kw in cases:
        where = _filters("default", kw.get("status"), kw.get("direction"), kw.get("created_from"),
                         kw.get("created_before"))  # fmt: skip
        query = select(Call.id).where(*where).order_by(Call.created_at.desc(), Call.id.desc()).limit(5)
        sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as conn:
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX ix_calls_tenant" in plan or "USING COVERING INDEX ix_calls_tenant" in plan, (kw, plan)
        assert "TEMP B-TREE" not in plan, (kw, plan)
