"""kill -9 a gateway process mid-call, restart it: the call is finalised and its WAV linked.

A real ``gateway serve`` process (SQLite file, recordings directory, loopback port) serves a
Twilio-dialect caller streaming real read speech while a fake realtime model (loopback) greets
it. Once the recording holds a few seconds on disk the process is killed with SIGKILL: nothing
of the session's finalisation runs. The restarted process (same node id, same database) must
finalise the call as ``failed`` / ``node_lost`` before it serves anything, with the recording
linked, valid (its header repaired if the kill landed between a data write and the header
patch) and holding the caller's speech; a call created but never connected stays ``queued``.
"""

from __future__ import annotations

import signal
import wave

import numpy as np
import pytest

from tests.e2e.gateway_process import GREETING, KEY, GatewayProcess, LiveCall, wait_recorded
from tests.llm.fake_servers import FakeRealtimeServer, Reply, Say

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(90)]


async def test_a_killed_gateway_finalises_its_lost_call_at_restart(tmp_path) -> None:
    async with FakeRealtimeServer(api_key=KEY, replies=[Reply([Say(GREETING)])]) as model:
        gw = GatewayProcess(tmp_path, openai_realtime_url=model.url, openai_api_key=KEY)
        try:
            startup_s = await gw.start()
            created = await gw.create_call()
            call_id = created["callId"]
            never_connected = (await gw.create_call())["callId"]
            call = LiveCall(created["streamUrl"])
            on_disk = await wait_recorded(gw, call_id, seconds=2.0)
            live = (await gw.record(call_id))["recording"]
            assert (live["status"], live["url"]) == ("recording", None), live  # not downloadable yet
            gw.signal(signal.SIGKILL)
            assert await gw.wait(10) == -signal.SIGKILL
            report = await call.report()
            assert report.close_code not in (1000, 1001)  # nobody closed it: the peer vanished
            lost = gw.stored(call_id)
            assert lost is not None and lost.status == "in_progress"  # what kill -9 leaves

            restart_s = await gw.start()
            rec = await gw.record(call_id)
        finally:
            gw.stop()
    print(f"\nstart-up {startup_s:.2f} s, restart {restart_s:.2f} s; {on_disk} bytes on disk at the kill")

    assert (rec["status"], rec["endReason"]) == ("failed", "node_lost"), rec
    assert rec["error"]["code"] == "node_lost"
    assert [e["kind"] for e in rec["events"]] == ["node_lost"]
    assert rec["events"][0]["data"]["nodeId"] == gw.node_id
    recording = rec["recording"]
    assert recording["status"] == "completed" and recording["error"] is None, recording
    assert recording["url"].endswith(f"/calls/{call_id}/recording")
    with wave.open(recording["path"], "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = w.getnframes()
        stereo = np.frombuffer(w.readframes(frames), "<i2").reshape(-1, 2)
    assert frames * 4 + 44 >= on_disk  # at least what was on disk when the process died
    assert rec["durationMs"] == frames * 1000 // 8000 > 0
    # The caller's channel holds the streamed speech (not silence): 2+ s of it reached disk.
    caller_rms = np.sqrt(np.mean(stereo[:, 0].astype(np.float64) ** 2))
    assert caller_rms > 100, caller_rms
    assert gw.stored(never_connected).status == "queued"  # never connected: the sweeper's
