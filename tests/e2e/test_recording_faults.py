"""A recording that cannot be written (unusable directory, full disk) never fails the call.

The real app is served on loopback (uvicorn, SQLite file); a Twilio-dialect caller streams real
speech and a fake realtime model answers. The recordings directory is a regular file (so the
recorder cannot open: ``mkdir`` fails, as for a read-only or missing mount; chmod would not
stop root), or every audio write of the WAV fails with ``ENOSPC`` (injected: a tiny tmpfs needs
privileges). Either way the call completes with its whole transcript, and the record says
``recording: {"status": "failed", "error": …}``.
"""

from __future__ import annotations

import asyncio
import errno
import wave

import httpx
import pytest

from gateway.config import Settings
from gateway.simulator.caller import Say, SimulatedCaller, WaitForAgent
from gateway.simulator.demo import serve_in_background
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.run import to_rate
from gateway.store import Store
from tests.conftest import SHARED_AUDIO, load_wav
from tests.e2e.gateway_process import free_port
from tests.llm.fake_servers import FakeRealtimeServer, Reply, Say as ModelSays, transcript_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_audio"), pytest.mark.timeout(60)]

KEY = "sk-faults-0123456789abcdef"
GREETING, REPLY = "speech/cards-001", "speech/cards-002"


async def call_with_recordings_in(tmp_path, recordings_dir) -> tuple[dict, int]:
    """One call through a gateway whose recordings go to ``recordings_dir``; (record, GET
    /calls/{id}/recording status)."""
    replies = [Reply([ModelSays(GREETING)]), Reply([ModelSays(REPLY)])]
    async with FakeRealtimeServer(api_key=KEY, replies=replies, user_transcripts=["Hello there."]) as model:
        port = free_port()
        settings = Settings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                            database_url=f"sqlite:///{tmp_path}/gw.db", recordings_dir=recordings_dir,
                            vad="webrtc", openai_realtime_url=model.url, openai_api_key=KEY)  # fmt: skip
        server, task, app = await serve_in_background(settings, warm_up=False)
        try:
            store: Store = app.state.services.store
            key, _ = store.create_api_key("faults")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as http:
                r = await http.post("/calls/inline", json={
                    "systemPrompt": "Test.", "voice": "alloy", "language": "en-US", "greeting": "Hi.",
                    "connectionType": "twilio", "model": "openai:gpt-realtime"})  # fmt: skip
                assert r.status_code == 201, r.text
                created = r.json()
                pcm, rate = load_wav(SHARED_AUDIO / "caller/hello.wav")
                script = [WaitForAgent(timeout_s=10, quiet_ms=300), Say(to_rate(pcm, rate, 8000), "hello"),
                          WaitForAgent(timeout_s=10, quiet_ms=300)]  # fmt: skip
                await SimulatedCaller(created["streamUrl"], TwilioCaller(), hangup_quiet_ms=0).run(script)
                for _ in range(200):
                    rec = (await http.get(f"/calls/{created['callId']}")).json()
                    if rec["status"] not in ("queued", "in_progress"):
                        break
                    await asyncio.sleep(0.05)
                download = (await http.get(f"/calls/{created['callId']}/recording")).status_code
        finally:
            server.should_exit = True
            await task
    return rec, download


def assert_call_intact(rec: dict) -> None:
    assert (rec["status"], rec["endReason"], rec["error"]) == ("completed", "carrier_stop", None), rec
    agent = [t["text"] for t in rec["transcript"] if t["role"] == "agent"]
    user = [t["text"] for t in rec["transcript"] if t["role"] == "user"]
    assert agent == [transcript_of(GREETING), transcript_of(REPLY)]
    assert user == ["Hello there."]
    assert rec["metrics"]["framesIn"] > 100 and rec["metrics"]["framesOut"] > 50


async def test_a_recordings_directory_that_is_a_file_leaves_the_call_unrecorded(tmp_path) -> None:
    blocker = tmp_path / "recordings"
    blocker.write_text("not a directory")
    rec, download = await call_with_recordings_in(tmp_path, blocker)
    assert_call_intact(rec)
    recording = rec["recording"]
    assert (recording["status"], recording["path"], recording["url"]) == ("failed", None, None), recording
    assert recording["error"].startswith(f"open: [Errno {errno.EEXIST}] File exists"), recording
    assert [e["data"]["stage"] for e in rec["events"] if e["kind"] == "recording_failed"] == ["open"]
    assert download == 404


async def test_a_full_disk_stops_the_recording_and_the_call_goes_on(tmp_path, monkeypatch) -> None:
    real = wave.Wave_write.writeframes
    failed = []

    def writeframes(self, data) -> None:
        if data:  # the header at open is written; the first audio write finds the disk full
            failed.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, data)

    monkeypatch.setattr(wave.Wave_write, "writeframes", writeframes)
    rec, download = await call_with_recordings_in(tmp_path, tmp_path / "recordings")
    assert_call_intact(rec)
    # The failed write and the one close that tries to flush the rest; no retry per frame after.
    assert len(failed) == 2
    recording = rec["recording"]
    assert (recording["status"], recording["url"]) == ("failed", None)
    assert recording["error"] == "write: [Errno 28] No space left on device"
    assert download == 404
