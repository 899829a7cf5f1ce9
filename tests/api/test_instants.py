"""Every instant the API and the webhook payloads write has one form, ISO 8601 UTC with
microseconds and ``Z``, so a record's instants sort as text in time order even when a carrier
gave whole seconds (``…:20Z`` would sort after ``…:20.322Z``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api import create_api
from gateway.api.schemas import CallOut, TransitionOut
from gateway.clock import iso_utc
from gateway.config import Settings
from gateway.llm.base import AgentConfig
from gateway.store import Store
from tests.api.conftest import fake_instructions
from tests.api.loopback import serve

INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
WHOLE = datetime(2026, 12, 2, 8, 24, 20, tzinfo=timezone.utc)


def test_iso_utc_is_one_width_and_reads_naive_as_utc() -> None:
    assert iso_utc(WHOLE) == "2026-12-02T08:24:20.000000Z"
    assert iso_utc(WHOLE.replace(microsecond=322_000)) == "2026-12-02T08:24:20.322000Z"
    assert iso_utc(WHOLE.replace(tzinfo=None)) == iso_utc(WHOLE)
    plus_two = WHOLE.astimezone(timezone(timedelta(hours=2)))
    assert iso_utc(plus_two) == iso_utc(WHOLE)
    stamps = [iso_utc(WHOLE + timedelta(milliseconds=ms)) for ms in (0, 1, 322, 1000)]
    assert stamps == sorted(stamps)


def test_response_json_writes_instants_in_the_one_form_and_keeps_the_schema() -> None:
    t = TransitionOut.model_validate({"from": None, "to": "queued", "at": WHOLE, "source": "gateway", "detail": {}})
    assert t.model_dump(mode="json", by_alias=True)["at"] == "2026-12-02T08:24:20.000000Z"
    assert t.model_dump(by_alias=True)["at"] == WHOLE  # Python mode keeps the datetime
    at = TransitionOut.model_json_schema(mode="serialization")["properties"]["at"]
    assert at["type"] == "string" and at["format"] == "date-time"
    ended = CallOut.model_json_schema(mode="serialization")["properties"]["endedAt"]
    assert {"type": "string", "format": "date-time"} in ended["anyOf"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'gw.db'}", public_url="")
    store = Store(settings.database_url)
    store.create_all()
    rec, _ = store.create_call(AgentConfig(), "twilio", direction="outbound", to="+14155550100",
                               from_="+14155550199")  # fmt: skip
    hook, _ = store.create_webhook_endpoint("https://hooks.example.com/a")
    key = store.create_api_key("tests")[0]
    app = create_api(store, settings, instruction_document=fake_instructions)
    with serve(app) as base_url, httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as http:
        yield {"http": http, "id": rec.id, "store": store}
    store.close()


def test_a_carrier_s_whole_second_instant_sorts_among_the_gateway_s(world) -> None:
    store, call = world["store"], world["id"]
    now = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    store.mark_call_placed(call, "CA1")
    store.apply_carrier_status(call, "ringing", raw_status="ringing", at=now)  # whole seconds
    store.apply_carrier_status(call, "in_progress", raw_status="in-progress", at=now + timedelta(milliseconds=322))
    body = world["http"].get(f"/calls/{call}").json()
    stamps = [t["at"] for t in body["transitions"]]
    assert all(INSTANT.fullmatch(s) for s in stamps), stamps
    assert stamps == sorted(stamps) and len(stamps) == 4, stamps
    assert INSTANT.fullmatch(body["createdAt"]) and INSTANT.fullmatch(body["answeredAt"]), body
    for row in store.list_outbox(call_id=call):
        assert INSTANT.fullmatch(row.payload["timestamp"]) and INSTANT.fullmatch(row.payload["data"]["at"])


def test_a_carrier_instant_before_the_last_move_is_recorded_in_order_with_its_own(world) -> None:
    """Twilio's ``Timestamp`` is whole seconds (RFC 2822): its "ringing" can read before the
    gateway's "queued" of a few hundred ms earlier. The record stays in time order; the
    carrier's own instant is kept in the row's ``carrierAt``."""
    store, call = world["store"], world["id"]
    store.mark_call_placed(call, "CA1")
    early = datetime.now(timezone.utc) - timedelta(seconds=2)
    store.apply_carrier_status(call, "ringing", raw_status="ringing", at=early)
    store.apply_carrier_status(call, "in_progress", raw_status="in-progress", at=early)
    body = world["http"].get(f"/calls/{call}").json()
    moves = body["transitions"]
    assert [m["to"] for m in moves] == ["queued", "initiated", "ringing", "in_progress"]
    stamps = [m["at"] for m in moves]
    assert stamps == sorted(stamps) and stamps[2] == stamps[3] == stamps[1], stamps
    assert moves[2]["detail"]["carrierAt"] == moves[3]["detail"]["carrierAt"] == iso_utc(early)
    assert "carrierAt" not in moves[1]["detail"]
    assert body["answeredAt"] == stamps[3]
