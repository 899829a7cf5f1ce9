"""``gateway fuzz``: fuzzed carrier streams over real sockets against a real gateway process.

For each carrier dialect in turn, the runner creates calls through the REST API
(``POST /calls/inline``) and streams at least ``frames`` fuzzed frames over real WebSockets
across many calls (:class:`gateway.simulator.fuzz_frames.CallFuzzer`: valid media in that
dialect mixed with mutated and malformed frames, DTMF floods, unknown events, odd sample rates
in ``start``), ``concurrency`` calls at a time. After each socket ends it reads the call's
record (``GET /calls/{id}``) until it is final.

What it measures, per dialect:

* ``crashes``: the gateway process exited, or ``/health`` did not answer within 5 s twice in a
  row (it is then restarted for the next dialect);
* ``internalErrorCalls``: records with ``error.code == "internal_error"`` (a bug of ours ended
  the call); ``internalParseErrors``: frames an adapter could only report as
  ``ProtocolError("internal")`` (its last resort);
* ``unfinalised``: records still ``queued`` / ``ringing`` / ``in_progress`` 30 s after the socket
  ended; ``stalled``: calls whose socket did not finish within ``call_timeout_s``.

The gateway runs in its own process (``python -m gateway.simulator.fuzz serve``: the app of
:func:`gateway.app.create_app` under uvicorn, local models not loaded) so that a crash is seen,
not shared. Its model is :mod:`benchmarks.fake_realtime` in a third process (``compat:fuzz``
through ``GATEWAY_COMPAT_REALTIME_URL``): it costs nothing, so the run measures the carrier
path, not speech recognition. Loopback only; state lives in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import websockets
from websockets.asyncio.client import connect

from gateway.simulator.fuzz_frames import CallFuzzer

__all__ = ["DialectReport", "FuzzTarget", "run_fuzz", "fuzz_dialect", "DIALECT_NAMES"]

DIALECT_NAMES = ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw")
_TERMINAL = ("completed", "failed", "expired", "no_answer")
_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DialectReport:
    """What fuzzing one dialect found (see the module doc for each count)."""

    dialect: str
    frames_sent: int = 0
    calls: int = 0
    crashes: int = 0
    internal_error_calls: int = 0
    internal_parse_errors: int = 0
    unfinalised: int = 0
    stalled: int = 0
    end_reasons: Counter = field(default_factory=Counter)
    protocol_errors: Counter = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first bad calls, for a report
    seconds: float = 0.0

    @property
    def failures(self) -> int:
        return self.crashes + self.internal_error_calls + self.internal_parse_errors + self.unfinalised

    def as_dict(self) -> dict[str, Any]:
        return {
            "framesSent": self.frames_sent, "calls": self.calls, "crashes": self.crashes,
            "internalErrorCalls": self.internal_error_calls, "internalParseErrors": self.internal_parse_errors,
            "unfinalised": self.unfinalised, "stalled": self.stalled, "seconds": round(self.seconds, 1),
            "framesPerSecond": round(self.frames_sent / self.seconds) if self.seconds else 0,
            "endReasons": dict(self.end_reasons.most_common()), "protocolErrors": dict(self.protocol_errors),
            "examples": self.examples,
        }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class FuzzTarget:
    """A gateway process and its fake model process on loopback, state in ``workdir``.

    Args:
        workdir: database, recordings and logs go here.
        vad: the gateway's ``GATEWAY_VAD`` (``webrtc`` is the cheaper of the two).
    """

    def __init__(self, workdir: Path, *, vad: str = "webrtc") -> None:
        self.workdir, self.vad = workdir, vad
        self.gateway: subprocess.Popen | None = None
        self.model: subprocess.Popen | None = None
        self.url = ""
        self.api_key = ""
        self.log_path = workdir / "gateway.log"
        self.starts = 0

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the fake model (once) and the gateway; return once ``/health`` answers.

        Raises:
            RuntimeError: a process exited or did not come up within ``timeout_s``.
        """
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
        if self.model is None or self.model.poll() is not None:
            self.model = subprocess.Popen([sys.executable, "-m", "benchmarks.fake_realtime", "--port", "0"],
                                          stdout=subprocess.PIPE, text=True, cwd=str(_ROOT), env=env)  # fmt: skip
            self.model_port = self._model_port(timeout_s)
        from gateway.store import Store

        db = f"sqlite:///{self.workdir / 'gateway.db'}"
        if not self.api_key:
            store = Store(db)
            store.create_all()
            self.api_key, _ = store.create_api_key("fuzz")
            with contextlib.suppress(Exception):
                store.close()
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env |= {
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "GATEWAY_PUBLIC_URL": self.url,
            "GATEWAY_DATABASE_URL": db, "GATEWAY_RECORDINGS_DIR": str(self.workdir / "recordings"),
            "GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_VAD": self.vad,
            "GATEWAY_COMPAT_REALTIME_URL": f"ws://127.0.0.1:{self.model_port}/v1",
        }  # fmt: skip
        log = open(self.log_path, "ab")
        self.gateway = subprocess.Popen([sys.executable, "-m", "gateway.simulator.fuzz", "serve"], cwd=str(self.workdir),
                                        env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the gateway exited ({self.gateway.returncode}); see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the gateway did not answer /health in {timeout_s:.0f} s; see {self.log_path}")

    def _model_port(self, timeout_s: float) -> int:
        assert self.model is not None and self.model.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.model.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if msg.get("ready"):
                    return int(msg["port"])
        raise RuntimeError("the fake realtime model did not start")

    def alive(self) -> bool:
        return self.gateway is not None and self.gateway.poll() is None

    def restart(self) -> None:
        _stop(self.gateway)
        self.start()

    def stop(self) -> None:
        _stop(self.gateway)
        _stop(self.model)


async def _watchdog(target: FuzzTarget, http: httpx.AsyncClient, crashed: asyncio.Event, period_s: float = 1.0) -> None:
    """Set ``crashed`` when the gateway process exits or misses ``/health`` twice (5 s each)."""
    misses = 0
    while not crashed.is_set():
        if not target.alive():
            crashed.set()
            return
        try:
            r = await http.get("/health", timeout=5)
            misses = 0 if r.status_code == 200 else misses + 1
        except httpx.HTTPError:
            misses += 1
        if misses >= 2:
            crashed.set()
            return
        await asyncio.sleep(period_s)


async def _gone(target: FuzzTarget, crashed: asyncio.Event, wait_s: float = 3.0) -> bool:
    """Whether the gateway is gone, waiting up to ``wait_s`` for a dying process to be seen exited
    (a killed gateway's sockets close a moment before its exit can be observed)."""
    deadline = time.monotonic() + wait_s
    while True:
        if crashed.is_set() or not target.alive():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


async def _create_call(http: httpx.AsyncClient, dialect: str, rng: random.Random) -> dict[str, Any]:
    body = {
        "systemPrompt": "[fuzz] You are a test agent.", "voice": "joe", "language": "en-US",
        "greeting": "Hello.", "model": "compat:fuzz", "connectionType": dialect,
        "firstSpeaker": rng.choice(["agent", "user"]), "interruptible": True,
        "recordingEnabled": rng.random() < 0.3, "maxDuration": 600, "inactivityTimeout": 60,
    }  # fmt: skip
    for attempt in range(5):
        r = await http.post("/calls/inline", json=body)
        if r.status_code == 201:
            return r.json()
        if r.status_code < 500 and r.status_code != 429 or attempt == 4:
            raise RuntimeError(f"POST /calls/inline → {r.status_code}: {r.text[:200]}")
        await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _final_record(http: httpx.AsyncClient, call_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    rec: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = await http.get(f"/calls/{call_id}")
            if r.status_code == 200:
                rec = r.json()
                if rec.get("status") in _TERMINAL:
                    return rec
        await asyncio.sleep(0.25)
    return rec


async def _stream(url: str, fuzzer: CallFuzzer, budget: int) -> int:
    """Send the call's frames (and echo some of the gateway's marks); returns frames sent."""
    sent = 0
    acks: deque[str] = deque()
    async with connect(url, max_size=2**22, open_timeout=10, ping_interval=None, compression=None,
                       close_timeout=5) as ws:  # fmt: skip

        async def reader() -> None:
            async for message in ws:
                with contextlib.suppress(Exception):  # the gateway's output is not under test here
                    for inbound in fuzzer.dialect.parse(message):
                        if inbound.kind == "mark" and fuzzer.rng.random() < 0.7:
                            frame = fuzzer.ack(inbound.name)
                            if frame is not None:
                                acks.append(frame)

        read_task = asyncio.create_task(reader())
        try:
            with contextlib.suppress(websockets.ConnectionClosed):
                for frame in fuzzer.opening():
                    await ws.send(frame)
                    sent += 1
                while sent < budget:
                    batch = fuzzer.next_frames()
                    while acks:
                        batch.append(acks.popleft())
                    for frame in batch:
                        await ws.send(frame)
                        sent += 1
                    # Let the connection read: once the gateway has closed (stop, bad start),
                    # send raises, so frames it never read are not counted.
                    await asyncio.sleep(0)
                for frame in fuzzer.closing():
                    await ws.send(frame)
                    sent += 1
        finally:
            read_task.cancel()
            with contextlib.suppress(BaseException):
                await read_task
    return sent


def _classify(report: DialectReport, rec: dict[str, Any], call_id: str) -> None:
    status = rec.get("status", "missing")
    error = rec.get("error") or {}
    errors = (rec.get("metrics") or {}).get("protocolErrors") or {}
    report.protocol_errors.update(errors)
    report.end_reasons[f"{status}:{rec.get('endReason') or rec.get('end_reason') or ''}"] += 1
    bad = None
    if status not in _TERMINAL:
        report.unfinalised += 1
        bad = "unfinalised"
    if error.get("code") == "internal_error":
        report.internal_error_calls += 1
        bad = "internal_error"
    if errors.get("internal"):
        report.internal_parse_errors += errors["internal"]
        bad = "internal_parse_error"
    if bad and len(report.examples) < 5:
        internal = [e for e in rec.get("events", []) if e.get("kind") == "protocol_error"][:3]
        report.examples.append({"callId": call_id, "problem": bad, "status": status, "error": error, "events": internal})


async def _one_call(http: httpx.AsyncClient, report: DialectReport, dialect: str, rng: random.Random, budget: int,
                    call_timeout_s: float) -> int:  # fmt: skip
    """Create one call, stream up to ``budget`` fuzzed frames, classify its final record.

    Returns:
        Frames sent (``budget`` for a stalled call).

    Raises:
        httpx.HTTPError, RuntimeError: the REST API failed (the caller checks for a crash).
    """
    created = await _create_call(http, dialect, rng)
    sent = 0
    try:
        sent = await asyncio.wait_for(_stream(created["streamUrl"], CallFuzzer(dialect, rng), budget), call_timeout_s)
    except TimeoutError:
        report.stalled += 1
        sent = budget
    except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed):
        pass  # refused or dropped: the record says why
    rec = await _final_record(http, created["callId"])
    report.frames_sent += sent
    report.calls += 1
    _classify(report, rec, created["callId"])
    return sent


async def fuzz_dialect(target: FuzzTarget, dialect: str, frames: int, *, concurrency: int = 8, seed: int = 0,
                       frames_per_call: tuple[int, int] = (100, 2500), call_timeout_s: float = 120.0,
                       on_progress: Callable[[DialectReport], None] | None = None) -> DialectReport:  # fmt: skip
    """Stream at least ``frames`` fuzzed frames of ``dialect`` to ``target`` across many calls.

    Args:
        target: a started :class:`FuzzTarget`.
        dialect: one of :data:`DIALECT_NAMES`.
        frames: frames to send in all (a call the gateway ends early gives its budget back).
        concurrency: calls streaming at once.
        seed: makes the frames reproducible (call ``i`` uses ``Random(f"{seed}:{dialect}:{i}")``).
        frames_per_call: the range each call's frame budget is drawn from.
        call_timeout_s: a call's socket is abandoned (``stalled``) after this long.
        on_progress: called with the report after each call.

    Returns:
        The :class:`DialectReport`; ``crashes`` is 1 if the gateway died (the run then stops).
    """
    report = DialectReport(dialect)
    remaining = frames
    counter = 0
    crashed = asyncio.Event()
    t0 = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=target.url, headers={"X-API-Key": target.api_key}, timeout=30,
                                 limits=limits) as http:  # fmt: skip
        watchdog = asyncio.create_task(_watchdog(target, http, crashed))

        async def worker() -> None:
            nonlocal remaining, counter
            while remaining > 0 and not crashed.is_set():
                counter += 1
                rng = random.Random(f"{seed}:{dialect}:{counter}")
                budget = min(remaining, rng.randint(*frames_per_call))
                remaining -= budget
                try:
                    sent = await _one_call(http, report, dialect, rng, budget, call_timeout_s)
                except (httpx.HTTPError, RuntimeError):
                    if await _gone(target, crashed):
                        return
                    raise
                remaining += max(0, budget - sent)
                if on_progress is not None:
                    on_progress(report)

        workers = asyncio.gather(*(worker() for _ in range(concurrency)))
        crash = asyncio.create_task(crashed.wait())
        await asyncio.wait([workers, crash], return_when=asyncio.FIRST_COMPLETED)
        for task in (crash, watchdog):
            task.cancel()
        if not workers.done():  # the gateway crashed: abandon the calls in flight
            workers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await workers  # re-raises a bug of the runner itself
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    if crashed.is_set():
        report.crashes = 1
    report.seconds = time.monotonic() - t0
    return report


async def run_fuzz(*, frames: int = 100_000, dialects: Sequence[str] = DIALECT_NAMES, concurrency: int = 8,
                   seed: int = 0, vad: str = "webrtc", workdir: Path | None = None,
                   frames_per_call: tuple[int, int] = (100, 2500),
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Fuzz every dialect in turn against a fresh gateway process (restarted after a crash).

    Arguments are those of :func:`fuzz_dialect`, plus ``vad`` (the gateway's), ``workdir``
    (kept; default a temporary directory) and ``log`` (progress lines).

    Returns:
        ``{"ok": bool, "framesPerDialect", "seconds", "gatewayStarts", "dialects": {name: report}}``
        where ``ok`` means no crash, no ``internal_error`` call, no internal parse error and no
        unfinalised record in any dialect.
    """
    say = log or (lambda line: None)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-fuzz-")))
        target = FuzzTarget(workdir, vad=vad)
        stack.callback(target.stop)
        await asyncio.to_thread(target.start)
        t0 = time.monotonic()
        reports: dict[str, DialectReport] = {}
        for name in dialects:
            if not target.alive():
                await asyncio.to_thread(target.restart)
            last = [0.0]

            def progress(rep: DialectReport) -> None:
                if time.monotonic() - last[0] > 10:
                    last[0] = time.monotonic()
                    say(f"{rep.dialect}: {rep.frames_sent} frames, {rep.calls} calls, {rep.failures} failures")

            reports[name] = rep = await fuzz_dialect(target, name, frames, concurrency=concurrency, seed=seed,
                                                     frames_per_call=frames_per_call, on_progress=progress)  # fmt: skip
            say(f"{name}: done, {json.dumps({k: v for k, v in rep.as_dict().items() if k != 'examples'})}")
        ok = all(r.failures == 0 and r.frames_sent >= frames for r in reports.values())
        return {
            "ok": ok, "framesPerDialect": frames, "seconds": round(time.monotonic() - t0, 1),
            "gatewayStarts": target.starts, "dialects": {n: r.as_dict() for n, r in reports.items()},
        }  # fmt: skip


def _serve() -> None:
    """The gateway process of a fuzz run: settings from ``GATEWAY_*``, local models not loaded."""
    import uvicorn

    from gateway.app import create_app
    from gateway.config import Settings

    settings = Settings()
    app = create_app(settings, warm_up=False)
    uvicorn.run(app, host=settings.host, port=settings.port, ws_max_size=1 << 20, ws=settings.ws_impl,
                log_level="warning", ws_ping_interval=None)  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit("usage: python -m gateway.simulator.fuzz serve (see `gateway fuzz`)")
    _serve()
