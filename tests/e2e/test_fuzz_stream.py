"""Fuzzed carrier streams over real sockets against a real gateway process (bounded for CI).

The same code as ``gateway fuzz`` (:mod:`gateway.simulator.fuzz`), with 2,000 frames per dialect
instead of 100,000: a gateway process on loopback, the fake realtime model, calls created
through the REST API, fuzzed frames over real WebSockets. Every dialect must end with no crash,
no ``internal_error`` call, no internal parse error and no unfinalised record. A second test
pins what the fuzz relies on for odd sample rates: a ``start`` asking for one ends the call
``bad_start`` at once, with the protocol error counted. The last two check the checks: a
gateway killed mid-run is a crash, and bad records are counted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import connect

from gateway.simulator.dialects import TwilioCaller, VonageCaller
from gateway.simulator.fuzz import DIALECT_NAMES, DialectReport, FuzzTarget, _classify, fuzz_dialect, run_fuzz

pytestmark = pytest.mark.slow

FRAMES_PER_DIALECT = 2_000


async def test_fuzzed_streams_never_crash_fail_internally_or_lose_a_record(tmp_path: Path) -> None:
    t0 = time.monotonic()
    report = await run_fuzz(frames=FRAMES_PER_DIALECT, concurrency=6, seed=7, workdir=tmp_path, frames_per_call=(50, 400))
    for name in DIALECT_NAMES:
        rep = report["dialects"][name]
        assert rep["framesSent"] >= FRAMES_PER_DIALECT, (name, rep)
        assert rep["calls"] >= 5, (name, rep)
        assert (rep["crashes"], rep["internalErrorCalls"], rep["internalParseErrors"], rep["unfinalised"]) == (
            0, 0, 0, 0), (name, rep["examples"])  # fmt: skip
        # The mix reached the adapters: bad frames were counted, not fatal.
        assert sum(rep["protocolErrors"].values()) > 0, (name, rep)
    assert report["ok"] and report["gatewayStarts"] == 1
    assert time.monotonic() - t0 < 120  # the CI budget is ~60 s on an idle machine


@pytest.fixture
def target(tmp_path: Path):
    t = FuzzTarget(tmp_path)
    t.start()
    yield t
    t.stop()


async def _call(target: FuzzTarget, carrier: str) -> dict:
    async with httpx.AsyncClient(base_url=target.url, headers={"X-API-Key": target.api_key}, timeout=10) as http:
        r = await http.post("/calls/inline", json={"systemPrompt": "t", "voice": "joe", "language": "en-US",
                                                   "greeting": "Hello.", "model": "compat:fuzz",
                                                   "connectionType": carrier, "firstSpeaker": "user"})  # fmt: skip
        assert r.status_code == 201, r.text
        return r.json()


async def _record(target: FuzzTarget, call_id: str) -> dict:
    async with httpx.AsyncClient(base_url=target.url, headers={"X-API-Key": target.api_key}, timeout=10) as http:
        for _ in range(100):
            rec = (await http.get(f"/calls/{call_id}")).json()
            if rec["status"] in ("completed", "failed"):
                return rec
            await asyncio.sleep(0.1)
    raise AssertionError(f"never finalised: {rec}")


@pytest.mark.parametrize(("carrier", "rate"), [("twilio", 7999), ("twilio", 2), ("vonage", 44100), ("vonage", 5)])
async def test_a_start_with_an_undocumented_rate_ends_the_call_bad_start(target: FuzzTarget, carrier: str, rate: int):
    call = await _call(target, carrier)
    if carrier == "twilio":
        opening = TwilioCaller().opening({})
        start = orjson.loads(opening[-1])
        start["start"]["mediaFormat"]["sampleRate"] = rate
        opening[-1] = orjson.dumps(start).decode()
    else:
        opening = VonageCaller().opening({})
        opening[-1] = opening[-1].replace("rate=16000", f"rate={rate}")
    t0 = time.monotonic()
    async with connect(call["streamUrl"], open_timeout=5) as ws:
        for frame in opening:
            await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)  # the gateway closes: no waiting for another start
    assert time.monotonic() - t0 < 5
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008  # policy violation
    rec = await _record(target, call["callId"])
    assert rec["status"] == "failed" and rec["error"]["code"] == "bad_start", rec
    assert rec["metrics"]["protocolErrors"] == {"bad_field": 1}, rec["metrics"]


async def test_the_runner_sees_a_gateway_that_dies_mid_run(target: FuzzTarget) -> None:
    """The crash check itself: kill -9 the gateway process while calls stream."""
    pid = target.gateway.pid

    async def kill_soon() -> None:
        await asyncio.sleep(1.0)
        os.kill(pid, signal.SIGKILL)

    killer = asyncio.create_task(kill_soon())
    rep = await asyncio.wait_for(fuzz_dialect(target, "twilio", 10**7, concurrency=4, frames_per_call=(50, 200)), 60)
    await killer
    assert rep.crashes == 1 and rep.failures >= 1
    assert 0 < rep.frames_sent < 10**7


def test_bad_records_are_counted() -> None:
    rep = DialectReport("twilio")
    _classify(rep, {"status": "completed", "endReason": "carrier_stop", "metrics": {"protocolErrors": {"bad_field": 3}}}, "c1")
    assert rep.failures == 0 and rep.protocol_errors == {"bad_field": 3}
    _classify(rep, {"status": "failed", "error": {"code": "internal_error"}, "metrics": {}}, "c2")
    _classify(rep, {"status": "in_progress", "metrics": {"protocolErrors": {"internal": 2}}}, "c3")
    assert (rep.internal_error_calls, rep.unfinalised, rep.internal_parse_errors) == (1, 1, 2)
    assert rep.failures == 4 and [e["callId"] for e in rep.examples] == ["c2", "c3"]
