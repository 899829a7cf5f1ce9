"""kill -9 a gateway process mid-call, restart it: the call is finalised and its WAV linked.

A real ``gateway serve`` process (SQLite file, recordings directory, loopback port) serves a
Twilio-dialect caller streaming real read speech while a fake realtime model (loopback) greets
it. Once the recording holds a few seconds on disk the process is killed with SIGKILL: nothing
of the session's finalisation runs. The restarted process (same node id, same database) must
finalise the call as ``failed`` / ``node_lost`` before it serves anything, with the recording
linked, valid (its header repaired if the kill landed between a data write and the header
patch) and holding the caller's speech; a call created but never connected stays ``queued``.

The lease is the shortest allowed (5 s, renewed every 1.7 s), so the restarted process decides
within seconds: the killed run's last renewal must be older than its quiet time (one renewal
interval plus 2 s) before a restart may presume the call lost, else a sweep decides it. When
the node comes back under another name (a pod rescheduled), the call is finalised once its
lease lapsed, by the new node's sweeper.
"""

from __future__ import annotations

import asyncio
import signal
import time
import wave

import numpy as np
import pytest

from tests.e2e.gateway_process import GREETING, KEY, GatewayProcess, LiveCall, wait_recorded
from tests.llm.fake_servers import FakeRealtimeServer, Reply, Say

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(90)]


LEASE_S = 5.0
#: The most a restarted node may take to finalise the lost call (s): the killed run's quiet
#: time (a renewal interval + 2 s) or its lease, plus one sweep (a renewal interval), plus slack.
DECIDED_WITHIN_S = LEASE_S + LEASE_S / 3 + 3.0


async def final_record(gw: GatewayProcess, call_id: str, within_s: float) -> tuple[dict, float]:
    """The call's record once it is final, and how long after the call that took (s)."""
    t0 = time.monotonic()
    while True:
        rec = await gw.record(call_id)
        if rec["status"] != "in_progress" or time.monotonic() - t0 > within_s:
            return rec, time.monotonic() - t0
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("renamed", [False, True], ids=["same-node", "rescheduled-under-a-new-name"])
async def test_a_killed_gateway_finalises_its_lost_call_at_restart(tmp_path, renamed: bool) -> None:
    async with FakeRealtimeServer(api_key=KEY, replies=[Reply([Say(GREETING)])]) as model:
        gw = GatewayProcess(tmp_path, openai_realtime_url=model.url, openai_api_key=KEY, call_lease_s=str(LEASE_S))
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

            if renamed:
                gw.env["GATEWAY_NODE_ID"] = "node-rescheduled"
            restart_s = await gw.start()
            rec, decided_s = await final_record(gw, call_id, DECIDED_WITHIN_S)
        finally:
            gw.stop()
    print(f"\nstart-up {startup_s:.2f} s, restart {restart_s:.2f} s, finalised {decided_s:.2f} s after it; "
          f"{on_disk} bytes on disk at the kill")  # fmt: skip

    assert (rec["status"], rec["endReason"]) == ("failed", "node_lost"), rec
    assert rec["error"]["code"] == "node_lost"
    assert [e["kind"] for e in rec["events"]] == ["node_lost"]
    data = rec["events"][0]["data"]
    assert data["nodeId"] == gw.node_id
    assert data["cause"] == ("lease_lapsed" if renamed else "restart")
    assert data["finalisedBy"] == ("node-rescheduled" if renamed else gw.node_id)
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
