"""A database that refuses a call's final record: the record is spooled to disk, and the next
start stores it (with its events) ahead of the node_lost recovery."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError
from websockets.asyncio.client import connect

from gateway.config import Settings
from gateway.simulator.demo import serve_in_background

from .conftest import free_port

pytestmark = pytest.mark.slow


async def test_a_final_record_the_database_refuses_is_spooled_and_stored_at_the_next_start(
    gateway, local_engines, monkeypatch, tmp_path
):
    gw = await gateway()
    store = gw.services.store
    call = await gw.create_inline_call(connectionType="raw", firstSpeaker="user")

    def database_down(*args, **kwargs):
        raise OperationalError("UPDATE calls", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(store, "finalise_call", database_down)
    monkeypatch.setattr("gateway.store.spool._BACKOFF_S", (0.01, 0.01))
    async with connect(call["streamUrl"], open_timeout=5) as ws:
        await ws.send('{"event": "start", "sampleRate": 16000}')
        await ws.send(bytes(640) * 10)
        await ws.send('{"event": "stop"}')
        await ws.wait_closed()
    spooled = gw.settings.spool_path / f"{call['callId']}.json"
    for _ in range(200):
        if spooled.exists():
            break
        await asyncio.sleep(0.02)
    assert spooled.exists()
    monkeypatch.undo()
    assert store.get_call(call["callId"]).status == "in_progress"  # the database never took it

    port = free_port()
    again = Settings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                     database_url=gw.settings.database_url, recordings_dir=gw.settings.recordings_dir,
                     node_id=gw.settings.node_id)  # fmt: skip
    server, task, app = await serve_in_background(again, engines=local_engines, warm_up=False)
    try:
        rec = app.state.services.store.get_call(call["callId"])
        assert (rec.status, rec.end_reason) == ("completed", "carrier_stop")  # not node_lost
        assert [e.kind for e in rec.events][-1] == "ended"
        assert not spooled.exists()
    finally:
        server.should_exit = True
        await task
