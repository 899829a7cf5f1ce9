"""SIGTERM a gateway process mid-call: the call ends as ``shutdown``, its record is written,
the caller's socket is closed with 1001, and the process exits promptly.

Before this, uvicorn's shutdown closed every WebSocket with 1012 and the session saw only a
vanished socket (``carrier_closed``); :class:`gateway.serving.GatewayServer` ends the calls
itself first.
"""

from __future__ import annotations

import signal
import time
import wave

import pytest

from tests.e2e.gateway_process import GREETING, KEY, GatewayProcess, LiveCall, wait_recorded
from tests.llm.fake_servers import FakeRealtimeServer, Reply, Say, transcript_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(90)]

EXIT_BOUND_S = 5.0  # the shutdown timeout is 10 s: a live call must not need it


async def test_sigterm_ends_live_calls_as_shutdown(tmp_path) -> None:
    async with FakeRealtimeServer(api_key=KEY, replies=[Reply([Say(GREETING)])]) as model:
        gw = GatewayProcess(tmp_path, openai_realtime_url=model.url, openai_api_key=KEY)
        try:
            await gw.start()
            created = [await gw.create_call()]  # one: the fake model serves one session at a time
            calls = [LiveCall(c["streamUrl"]) for c in created]
            for c in created:
                await wait_recorded(gw, c["callId"], seconds=1.0)
            t0 = time.monotonic()
            gw.signal(signal.SIGTERM)
            code = await gw.wait(EXIT_BOUND_S + 5)
            exit_s = time.monotonic() - t0
            reports = [await call.report() for call in calls]
        finally:
            gw.stop()
    print(f"\nexited {exit_s:.2f} s after SIGTERM with {code}")
    assert exit_s < EXIT_BOUND_S, gw.log
    assert code in (0, -signal.SIGTERM), gw.log  # uvicorn re-raises the signal it handled
    assert "still live after" not in gw.log
    for c, report in zip(created, reports):
        assert (report.close_code, report.close_reason) == (1001, "shutdown")
        rec = gw.stored(c["callId"])
        assert rec is not None, c
        assert (rec.status, rec.end_reason, rec.error_code) == ("completed", "shutdown", None)
        assert rec.events[-1].kind == "ended" and rec.events[-1].data == {"reason": "shutdown"}
        assert [t.text for t in rec.turns if t.role == "agent"] == [transcript_of(GREETING)]
        assert rec.recording_status == "completed" and rec.recording_path
        with wave.open(rec.recording_path, "rb") as w:
            assert w.getnchannels() == 2 and w.getnframes() * 1000 // w.getframerate() >= 1000
        assert rec.metrics is not None and rec.metrics["framesIn"] > 50
