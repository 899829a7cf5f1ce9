"""The fake realtime model on its picows socket: the protocol a gateway bridge sees, a cancel that
stops the reply, ``/stats`` on its own HTTP port, and refused paths."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import connect

from benchmarks.fake_realtime import FakeRealtimeModel


async def _until(ws, kind: str, seen: list[dict]) -> dict:
    async with asyncio.timeout(10):
        while True:
            msg = orjson.loads(await ws.recv())
            seen.append(msg)
            if msg["type"] == kind:
                return msg


async def test_reply_cancel_and_stats() -> None:
    async with FakeRealtimeModel(speed=2.0, chunk_ms=100) as model:
        async with connect(f"{model.base_url}/realtime?model=bench", compression=None) as ws:
            seen: list[dict] = []
            assert (await _until(ws, "session.created", seen))["session"]["type"] == "realtime"
            fmt = {"type": "audio/pcmu"}
            await ws.send(orjson.dumps({"type": "session.update", "session": {
                "instructions": "[t7] be brief", "audio": {"output": {"format": fmt}}}}).decode())  # fmt: skip
            await _until(ws, "session.updated", seen)
            await ws.send('{"type":"input_audio_buffer.append","audio":"AAAA"}')
            await ws.send('{"type":"response.create"}')
            done = await _until(ws, "response.done", seen)  # the greeting, streamed in full
            assert done["response"]["status"] == "completed"
            deltas = [m for m in seen if m["type"] == "response.output_audio.delta"]
            assert len(deltas) >= 5 and all(m["event_id"].startswith("event_") for m in seen)
            seen.clear()
            await ws.send('{"type":"response.create"}')  # the long reply: cancelled after two chunks
            await _until(ws, "response.output_audio.delta", seen)
            await _until(ws, "response.output_audio.delta", seen)
            await ws.send('{"type":"response.cancel"}')
            done = await _until(ws, "response.done", seen)
            assert done["response"]["status"] == "cancelled"
            assert sum(m["type"] == "response.output_audio.delta" for m in seen) <= 3
            await ws.send('{"type":"response.cancel"}')  # nothing active now
            err = await _until(ws, "error", seen)
            assert err["error"]["code"] == "response_cancel_not_active"
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.get(f"http://127.0.0.1:{model.stats_port}/stats")
            missing = await http.get(f"http://127.0.0.1:{model.stats_port}/nope")
    assert r.status_code == 200 and missing.status_code == 404
    stats = r.json()
    assert stats["appends"] == 1 and stats["connections"] == 1
    first, second = stats["responses"]["t7"]
    assert first["first_delta"] is not None and not first["cancelled"] and second["cancelled"]


async def test_other_paths_are_refused_at_the_handshake() -> None:
    async with FakeRealtimeModel() as model:
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with connect(f"{model.base_url}/other", open_timeout=5):
                pass
    assert exc.value.response.status_code == 404
