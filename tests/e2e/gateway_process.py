"""A gateway in its own process (``python -m gateway.cli serve``) on loopback, for the tests
that kill it or signal it, and a simulated carrier call that stays on the line.

Start-up is kept cheap: webrtc VAD, no warm-up of the local agent's models (the calls use a
fake realtime model served by the test, :mod:`tests.llm.fake_openai`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.simulator.caller import CallerReport, Pause, Say, SimulatedCaller
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.run import to_rate
from gateway.store import Store
from tests.conftest import ROOT, SHARED_AUDIO, load_wav

__all__ = ["GatewayProcess", "LiveCall", "wait_recorded", "KEY", "GREETING"]

KEY = "sk-proc-0123456789abcdef"  # what the fake model's handshake requires
GREETING = "speech/cards-001"  # what the fake model says first
CALLER_LINE = "speech/librivox-0870"  # 7.1 s of real read speech, streamed as the caller
STEREO_FRAME = 4  # bytes per frame of the two-channel 16-bit recording


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _media_listener_env() -> dict[str, str]:
    """``GATEWAY_TEST_MEDIA_LISTENER=picows`` (``make test-e2e-picows``): the process serves its
    streams on the picows listener, on a port of its own."""
    if os.environ.get("GATEWAY_TEST_MEDIA_LISTENER", "starlette") != "picows":
        return {}
    return {"GATEWAY_MEDIA_LISTENER": "picows", "GATEWAY_MEDIA_PORT": str(free_port())}


class GatewayProcess:
    """``gateway serve`` in a subprocess with its own SQLite file and recordings directory.

    Args:
        workdir: where the database, the recordings and the process log go (its cwd too).
        env: extra ``GATEWAY_*`` settings.
    """

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.db = workdir / "gw.db"
        self.recordings = workdir / "recordings"
        self.node_id = "node-under-test"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
            "PYTHONPATH": str(ROOT),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_PUBLIC_URL": self.http,
            "GATEWAY_DATABASE_URL": f"sqlite:///{self.db}",
            "GATEWAY_RECORDINGS_DIR": str(self.recordings),
            "GATEWAY_NODE_ID": self.node_id,
            "GATEWAY_VAD": "webrtc",
            "GATEWAY_WARM_UP": "false",
            "GATEWAY_LOG_LEVEL": "INFO",
            **_media_listener_env(),
            **{f"GATEWAY_{k.upper()}": v for k, v in env.items()},
        }
        store = Store(f"sqlite:///{self.db}")
        store.create_all()
        self.key, _ = store.create_api_key("proc-test")
        store.close()
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def log(self) -> str:
        """Everything the process(es) wrote so far."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("gateway-*.log")))

    async def start(self, timeout_s: float = 30.0) -> float:
        """Start the process and wait until ``/health`` answers. Returns the seconds it took."""
        self.runs += 1
        out = open(self.workdir / f"gateway-{self.runs}.log", "wb")  # noqa: SIM115 - the child owns it
        t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], cwd=self.workdir,
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        out.close()
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() - t0 < timeout_s:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log}")
                try:
                    if (await http.get(f"{self.http}/health")).status_code == 200:
                        return time.monotonic() - t0
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        self.stop()
        raise AssertionError(f"gateway not ready in {timeout_s} s:\n{self.log}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit; its return code (``-N``: killed by signal N)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway still running {timeout_s} s later:\n{self.log}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def stop(self) -> None:
        """Kill the process if it still runs (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.http, headers={"X-API-Key": self.key}, timeout=10)

    async def create_call(self, **body: object) -> dict:
        payload = {"systemPrompt": "You are a test agent.", "greeting": "Hello.", "voice": "alloy",
                   "language": "en-US", "connectionType": "twilio",
                   "model": "openai:gpt-realtime", **body}  # fmt: skip
        async with self.client() as c:
            r = await c.post("/calls/inline", json=payload)
            assert r.status_code == 201, r.text
            return r.json()

    async def record(self, call_id: str) -> dict:
        async with self.client() as c:
            r = await c.get(f"/calls/{call_id}")
            assert r.status_code == 200, r.text
            return r.json()

    def stored(self, call_id: str):
        """The call's record read straight from the database (the process may be gone)."""
        store = Store(f"sqlite:///{self.db}")
        try:
            return store.get_call(call_id)
        finally:
            store.close()


class LiveCall:
    """A simulated Twilio caller that speaks a real recording and then stays on the line."""

    def __init__(self, stream_url: str, *, stay_s: float = 60.0) -> None:
        pcm, rate = load_wav(SHARED_AUDIO / f"{CALLER_LINE}.wav")
        self.caller = SimulatedCaller(stream_url, TwilioCaller(), hangup_quiet_ms=0)
        self.task = asyncio.create_task(self.caller.run([Say(to_rate(pcm, rate, 8000), "line"), Pause(int(stay_s * 1000))]))

    async def report(self, timeout_s: float = 15.0) -> CallerReport:
        async with asyncio.timeout(timeout_s):
            return await self.task

    def cancel(self) -> None:
        self.task.cancel()


async def wait_recorded(gw: GatewayProcess, call_id: str, seconds: float, timeout_s: float = 20.0) -> int:
    """Wait until the call is ``in_progress`` and its WAV holds ``seconds`` of audio on disk;
    returns the file's size then (bytes)."""
    path = gw.recordings / f"{call_id}.wav"
    want = 44 + int(seconds * 8000) * STEREO_FRAME
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size >= want and (await gw.record(call_id))["status"] == "in_progress":
            return size
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} never recorded {seconds} s (file {size} bytes):\n{gw.log}")
