"""Load-test driver: many simulated carrier callers against one gateway, over real WebSockets.

Used by ``gateway bench load`` (:mod:`benchmarks.load`), usable against any gateway URL.

One *step* places ``calls`` calls at once: it creates them through ``POST /calls/inline`` (the
gateway's REST API, ``X-API-Key``), then connects one :class:`~gateway.simulator.caller.SimulatedCaller`
per call, carriers mixed round-robin, arrivals spread over ``arrival_s``. Each caller speaks real
recordings (``../shared/audio/caller`` and ``speech``, resampled to its dialect's rate) in a script
with pauses and one barge-in::

    wait for the greeting → pause → say a line → barge in over the (long) reply with
    caller/interrupt.wav → wait for the answer → pause → say goodbye → wait → hang up

What it measures, per step:

* caller side (what a phone user would notice): outbound pacing lateness (a frame that
  arrives after the audio before it has run out), turn latency (end of the caller's speech →
  first agent frame), barge-in reaction (onset of the interrupting speech → ``clear``);
* frames lost: agent frames the gateway says it sent (``metrics.framesOut`` of the call record)
  minus frames the caller received, and caller frames sent minus ``metrics.framesIn``;
* model → carrier: with a model that reports when it sent each reply's first audio (the fake
  model of :mod:`benchmarks.fake_realtime`), the time from that send to the first agent frame
  arriving at the caller (same monotonic clock, same machine): what the gateway adds, plus two
  loopback hops;
* the gateway process (when its pid is known, i.e. on this machine): CPU from
  ``/proc/<pid>/stat`` over the window where every call is up (cores used, calls per core),
  and RSS from ``/proc/<pid>/status`` (``VmRSS``) against the baseline before the step;
* the driver's own health: its event-loop lag, so an overloaded driver is not mistaken for a
  slow gateway.

Loopback only: the driver refuses any other host. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from gateway.simulator import caller as caller_module
from gateway.simulator.caller import BargeIn, Pause, Say, SimulatedCaller, Step, WaitForAgent
from gateway.simulator.dialects import CallerDialect, Inbound, make_dialect
from gateway.simulator.run import load_wav, to_rate

__all__ = [
    "SHARED_AUDIO",
    "LOOPBACK",
    "ProcStat",
    "Lines",
    "CallResult",
    "StepResult",
    "TimedDialect",
    "run_step",
    "percentiles",
    "check_loopback",
]

SHARED_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def check_loopback(url: str) -> None:
    """Raise ValueError unless ``url`` points at this machine (127.0.0.0/8, localhost, ::1)."""
    host = urlsplit(url).hostname or ""
    if not (host.startswith("127.") or host in LOOPBACK):
        raise ValueError(f"load tests run against loopback addresses only, not {host!r}")


def percentiles(values: Sequence[float], ps: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": …, "p95": …, "p99": …, "max": …, "n": …}`` in the values' unit (None when empty)."""
    out: dict[str, float | None] = {}
    arr = np.asarray(values, dtype=np.float64)
    for p in ps:
        out[f"p{p}"] = round(float(np.percentile(arr, p)), 2) if arr.size else None
    out["max"] = round(float(arr.max()), 2) if arr.size else None
    out["n"] = int(arr.size)
    return out


# ----------------------------------------------------------------------------- /proc


class ProcStat:
    """CPU seconds and RSS of a process on this machine, read from ``/proc/<pid>``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of every thread so far."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)

    def rss_bytes(self) -> int:
        """Resident set size (``VmRSS``)."""
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self) -> bool:
        return os.path.exists(f"/proc/{self.pid}")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (``/proc/stat``), or 0."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


# ----------------------------------------------------------------------------- audio


@dataclass
class Lines:
    """The caller's recordings (int16 at 16 kHz), resampled per dialect rate on demand."""

    lines: list[np.ndarray]
    interrupt: np.ndarray
    goodbye: np.ndarray
    _cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path = SHARED_AUDIO) -> Lines:
        def wav(rel: str) -> np.ndarray:
            path = root / rel
            if not path.exists():  # a fresh clone without ../shared: tone bursts stand in
                t = np.arange(24000) / 16000
                return (np.sin(2 * np.pi * 300 * t) * 6000 * (t > 0.2)).astype(np.int16)
            pcm, rate = load_wav(path)
            return to_rate(pcm, rate, 16000) if rate != 16000 else pcm

        lines = [wav(f"caller/{n}.wav") for n in ("reschedule", "confirm")]
        lines += [wav(f"speech/{n}.wav") for n in ("cards-002", "goforward", "librivox-0880")]
        return cls(lines, wav("caller/interrupt.wav"), wav("caller/goodbye.wav"))

    def at(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        key = (id(pcm), rate)
        if key not in self._cache:
            self._cache[key] = pcm if rate == 16000 else to_rate(pcm, 16000, rate)
        return self._cache[key]


def build_script(lines: Lines, rate: int, rng: random.Random, *, barge_in: bool = True, kind: str = "full") -> list[Step]:
    """``full``: greeting → pause → a line → barge-in over the long reply → answer → goodbye → hang up.

    ``short`` (smoke tests): greeting → goodbye → answer → hang up.
    """
    if kind == "short":
        return [WaitForAgent(timeout_s=15, quiet_ms=300), Say(lines.at(lines.goodbye, rate), "goodbye"),
                WaitForAgent(timeout_s=15, quiet_ms=300)]  # fmt: skip
    line = lines.at(rng.choice(lines.lines), rate)
    script: list[Step] = [WaitForAgent(timeout_s=20, quiet_ms=500), Pause(rng.randint(200, 600)), Say(line, "line")]
    if barge_in:
        script.append(BargeIn(lines.at(lines.interrupt, rate), after_ms=rng.randint(700, 1100), timeout_s=20,
                              label="interrupt"))  # fmt: skip
    script += [
        WaitForAgent(timeout_s=20, quiet_ms=700),
        Pause(rng.randint(300, 700)),
        Say(lines.at(lines.goodbye, rate), "goodbye"),
        WaitForAgent(timeout_s=20, quiet_ms=500),
    ]
    return script


# ----------------------------------------------------------------------------- one call


class TimedDialect:
    """Wraps a dialect and notes the arrival time (``time.monotonic()``) of every agent frame."""

    def __init__(self, inner: CallerDialect) -> None:
        self.inner = inner
        self.name = inner.name
        self.audio_format = inner.audio_format
        self.media_arrivals: list[float] = []
        self.parse_errors = 0

    def opening(self, parameters: dict[str, str]):
        return self.inner.opening(parameters)

    def media(self, payload: bytes):
        return self.inner.media(payload)

    def dtmf(self, digit: str):
        return self.inner.dtmf(digit)

    def mark_played(self, name: str):
        return self.inner.mark_played(name)

    def cleared(self):
        return self.inner.cleared()

    def stop(self):
        return self.inner.stop()

    def parse(self, frame) -> list[Inbound]:
        now = time.monotonic()
        try:
            msgs = self.inner.parse(frame)
        except ValueError:
            self.parse_errors += 1
            raise
        for m in msgs:
            if m.kind == "media":
                self.media_arrivals.append(now)
        return msgs


@dataclass
class CallResult:
    """One call of a step: the caller's report, the gateway's record, timings."""

    index: int
    carrier: str
    call_id: str = ""
    tag: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    lateness_ms: list[float] = field(default_factory=list)
    turn_latency_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    media_arrivals: list[float] = field(default_factory=list)
    connected_at: float | None = None
    ended_at: float | None = None
    frames_sent: int = 0
    frames_received: int = 0
    gateway_frames_out: int | None = None
    gateway_frames_in: int | None = None
    status: str = ""
    end_reason: str = ""
    error: str = ""


@dataclass
class StepResult:
    """A step's calls and the gateway process samples taken while it ran."""

    calls: list[CallResult]
    started_at: float
    ended_at: float
    samples: list[tuple[float, float, int, int]] = field(default_factory=list)  # t, cpu_s, rss, live calls
    machine: list[tuple[float, float]] = field(default_factory=list)  # t, machine-wide busy CPU s
    rss_baseline: int | None = None
    lag_ms: list[float] = field(default_factory=list)
    driver_cpu_s: float = 0.0
    model_stats: dict[str, Any] | None = None


@contextlib.contextmanager
def _no_permessage_deflate():
    """Callers connect without offering permessage-deflate, as carriers do (a scoped patch of the
    caller module's ``connect``; see the benchmark README for why it matters)."""
    original = caller_module.connect
    caller_module.connect = functools.partial(original, compression=None)
    try:
        yield
    finally:
        caller_module.connect = original


async def _create_call(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    for attempt in range(3):
        r = await http.post("/calls/inline", json=body)
        if r.status_code == 201:
            return r.json()
        if r.status_code < 500 or attempt == 2:
            raise RuntimeError(f"POST /calls/inline → {r.status_code}: {r.text[:200]}")
        await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _final_record(http: httpx.AsyncClient, call_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    rec: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await http.get(f"/calls/{call_id}")
        if r.status_code == 200:
            rec = r.json()
            if rec.get("status") in ("completed", "failed", "expired", "no_answer"):
                return rec
        await asyncio.sleep(0.2)
    return rec


async def _lag_monitor(out: list[float], stop: asyncio.Event, period_s: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(period_s)
        out.append(max(0.0, (loop.time() - t - period_s) * 1000))


async def run_step(
    *,
    url: str,
    api_key: str,
    calls: int,
    carriers: Sequence[str],
    model: str,
    tag_prefix: str = "s0",
    arrival_s: float = 5.0,
    lines: Lines | None = None,
    gateway_pid: int | None = None,
    barge_in: bool = True,
    carrier_compression: bool = False,
    step_timeout_s: float = 180.0,
    seed: int = 0,
    model_stats: Callable[[], Any] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    create_concurrency: int = 16,
    script: str = "full",
) -> StepResult:
    """Place ``calls`` calls against the gateway at ``url`` and measure them (see module doc).

    Args:
        url: the gateway's base URL (``http://127.0.0.1:8080``); loopback only.
        api_key: a REST API key of that gateway.
        calls: calls in this step.
        carriers: carrier dialects to mix, round-robin.
        model: ``model`` of every call (``compat:bench``, ``local``, ``openai:…``).
        tag_prefix: calls are tagged ``[<prefix>c<i>]`` in their system prompt.
        arrival_s: callers connect spread evenly over this many seconds.
        lines: the caller's recordings.
        gateway_pid: the gateway process on this machine (CPU and RSS), if known.
        barge_in: include the barge-in in each script.
        carrier_compression: let callers negotiate permessage-deflate (carriers do not).
        step_timeout_s: hard limit for the whole step.
        seed: script randomness.
        model_stats: a coroutine function returning the fake model's ``/stats`` (or None).
        on_progress: ``(event, n)`` with event ``created`` / ``connected`` / ``finished``.
        create_concurrency: concurrent ``POST /calls/inline`` requests.
        script: ``full`` (see :func:`build_script`) or ``short`` (no barge-in; smoke tests).
    """
    check_loopback(url)
    lines = lines or Lines.load()
    rng = random.Random(seed)
    proc = ProcStat(gateway_pid) if gateway_pid else None
    progress = on_progress or (lambda event, n: None)
    results = [CallResult(i, carriers[i % len(carriers)], tag=f"{tag_prefix}c{i}") for i in range(calls)]
    live = 0
    stop = asyncio.Event()
    step = StepResult(results, time.monotonic(), 0.0)
    driver_cpu0 = time.process_time()
    headers = {"X-API-Key": api_key}
    limits = httpx.Limits(max_connections=create_concurrency, max_keepalive_connections=create_concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as http:
        # 1. Create every call first (REST + store), so creation is not in the measured window.
        sem = asyncio.Semaphore(create_concurrency)

        async def create(res: CallResult) -> None:
            async with sem:
                body = {
                    "systemPrompt": f"[{res.tag}] You are a load-test agent. Keep answers short.",
                    "voice": "joe",
                    "language": "en-US",
                    "greeting": "Hello, thanks for calling. How can I help you today?",
                    "model": model,
                    "connectionType": res.carrier,
                    "interruptible": barge_in,
                    "recordingEnabled": False,
                    "maxDuration": 600,
                    "inactivityTimeout": 60,
                }
                created = await _create_call(http, body)
                res.call_id = created["callId"]
                res.report["streamUrl"] = created["streamUrl"]
                progress("created", 1)

        await asyncio.gather(*(create(r) for r in results))
        for r in results:
            check_loopback(r.report["streamUrl"].replace("ws://", "http://").replace("wss://", "https://"))

        # 2. Sample the gateway process while the step runs.
        async def sampler() -> None:
            while not stop.is_set():
                step.machine.append((time.monotonic(), machine_busy_s()))
                if proc is not None and proc.alive():
                    step.samples.append((time.monotonic(), proc.cpu_s(), proc.rss_bytes(), live))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)

        if proc is not None:
            step.rss_baseline = proc.rss_bytes()
        sample_task = asyncio.create_task(sampler())

        # 3. Run the callers, arrivals spread over arrival_s.
        async def one(res: CallResult) -> None:
            nonlocal live
            await asyncio.sleep(arrival_s * res.index / max(1, calls))
            dialect = TimedDialect(make_dialect(res.carrier))
            caller = SimulatedCaller(res.report.pop("streamUrl"), dialect, hangup_quiet_ms=300)
            steps = build_script(lines, dialect.audio_format.sample_rate, random.Random(rng.random() + res.index),
                                 barge_in=barge_in, kind=script)  # fmt: skip
            res.connected_at = time.monotonic()
            live += 1
            progress("connected", 1)
            try:
                report = await caller.run(steps)
                res.report = report.as_dict()
                res.lateness_ms = list(report.lateness_ms)
                res.turn_latency_ms = list(report.turn_latency_ms)
                res.barge_in_ms = list(report.barge_in_reaction_ms)
                res.frames_sent = report.frames_sent
                res.frames_received = report.frames_received
                if report.close_code not in (None, 1000, 1001):
                    res.error = f"closed {report.close_code} {report.close_reason}"
            except Exception as exc:  # noqa: BLE001 - one failed call is a result, not a crash
                res.error = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                res.media_arrivals = dialect.media_arrivals
                if dialect.parse_errors and not res.error:
                    res.error = f"{dialect.parse_errors} frames the carrier would reject"
                res.ended_at = time.monotonic()
                live -= 1
                progress("finished", 1)

        lag_task = asyncio.create_task(_lag_monitor(step.lag_ms, stop))
        patch = contextlib.nullcontext() if carrier_compression else _no_permessage_deflate()
        try:
            with patch:
                async with asyncio.timeout(step_timeout_s):
                    await asyncio.gather(*(one(r) for r in results))
        except TimeoutError:
            for r in results:
                if r.ended_at is None:
                    r.error = r.error or "step timeout"
        finally:
            stop.set()
            await asyncio.gather(lag_task, sample_task, return_exceptions=True)
        step.ended_at = time.monotonic()
        step.driver_cpu_s = time.process_time() - driver_cpu0

        # 4. The gateway's records: frames it sent and received, status.
        async def record(res: CallResult) -> None:
            if not res.call_id:
                return
            async with sem:
                rec = await _final_record(http, res.call_id)
            metrics = rec.get("metrics") or {}
            res.gateway_frames_out = metrics.get("framesOut")
            res.gateway_frames_in = metrics.get("framesIn")
            res.status = str(rec.get("status", ""))
            res.end_reason = str(rec.get("endReason", ""))
            if res.status == "failed" and not res.error:
                res.error = f"gateway: {res.end_reason} {rec.get('errorCode') or ''}".strip()

        await asyncio.gather(*(record(r) for r in results))
    if model_stats is not None:
        with contextlib.suppress(Exception):
            step.model_stats = await model_stats()
    return step


# ----------------------------------------------------------------------------- summary


def _model_to_carrier(results: Sequence[CallResult], stats: dict[str, Any] | None) -> list[float]:
    """ms from the model sending a reply's first audio to the caller receiving its first frame."""
    return [x for r in results for x in _call_model_to_carrier(r, stats)]


def _call_model_to_carrier(res: CallResult, stats: dict[str, Any] | None) -> list[float]:
    """One call's model → carrier delays: each reply's first audio sent → the first frame of the
    next burst of agent frames the caller received (a burst follows ≥ 150 ms without frames)."""
    if not stats or not res.media_arrivals:
        return []
    out: list[float] = []
    arr = np.asarray(res.media_arrivals)
    for resp in (stats.get("responses") or {}).get(res.tag, []):
        sent = resp.get("first_delta")
        if sent is None:
            continue
        i = int(np.searchsorted(arr, sent))
        if i >= arr.size:
            continue
        gap_before = arr[i] - arr[i - 1] if i > 0 else float("inf")
        delay = arr[i] - sent
        if gap_before > 0.15 and 0 <= delay < 1.0:
            out.append(delay * 1000)
    return out


def summarise(step: StepResult, *, calls: int, carriers: Sequence[str], cores: int | None = None) -> dict[str, Any]:
    """One JSON-ready row from a step (see the module doc for each figure)."""
    results = step.calls
    lateness = [x for r in results for x in r.lateness_ms]
    turn = [x for r in results for x in r.turn_latency_ms]
    barge = [x for r in results for x in r.barge_in_ms]
    lost_out = lost_in = 0
    counted = 0
    for r in results:
        if r.gateway_frames_out is not None and not r.error:
            lost_out += max(0, r.gateway_frames_out - r.frames_received)
            lost_in += max(0, r.frames_sent - (r.gateway_frames_in or 0))
            counted += 1
    errors = [r.error for r in results if r.error]
    # Steady window: every call connected and none finished yet; else the whole step.
    connects = [r.connected_at for r in results if r.connected_at]
    ends = [r.ended_at for r in results if r.ended_at]
    w0 = max(connects) if connects else step.started_at
    w1 = min(ends) if ends else step.ended_at
    window = "all calls up"
    if w1 - w0 < 2.0:
        w0, w1 = (min(connects) if connects else step.started_at), (max(ends) if ends else step.ended_at)
        window = "whole step (calls never all up together for 2 s)"
    gw: dict[str, Any] = {}
    samples = [s for s in step.samples if w0 <= s[0] <= w1]
    if len(samples) >= 2:
        (t0, c0, _, _), (t1, c1, _, _) = samples[0], samples[-1]
        cores_used = (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
        mean_live = float(np.mean([s[3] for s in samples]))
        gw = {
            "gateway_cores_used": round(cores_used, 3),
            "mean_live_calls": round(mean_live, 1),
            "calls_per_core": round(mean_live / cores_used, 1) if cores_used > 0 else None,
            "cpu_ms_per_call_second": round(cores_used * 1000 / mean_live, 3) if mean_live else None,
            "window_s": round(t1 - t0, 1),
            "window": window,
        }
    if step.samples and step.rss_baseline:
        peak = max(s[2] for s in step.samples)
        gw["rss_baseline_mb"] = round(step.rss_baseline / 2**20, 1)
        gw["rss_peak_mb"] = round(peak / 2**20, 1)
        gw["rss_per_call_mb"] = round((peak - step.rss_baseline) / 2**20 / max(1, calls), 3)
    busy = [m for m in step.machine if w0 <= m[0] <= w1]
    if len(busy) >= 2 and busy[-1][0] > busy[0][0]:
        gw["machine_busy_cores"] = round((busy[-1][1] - busy[0][1]) / (busy[-1][0] - busy[0][0]), 2)
    m2c = _model_to_carrier(results, step.model_stats)
    duration = step.ended_at - step.started_at
    lat = percentiles(lateness)
    row: dict[str, Any] = {
        "calls": calls,
        "carriers": list(carriers),
        "completed": sum(1 for r in results if r.status == "completed" and not r.error),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "lateness_ms": lat,
        "frames_lost_out": lost_out,
        "frames_lost_in": lost_in,
        "frames_out": sum(r.gateway_frames_out or 0 for r in results),
        "frames_received": sum(r.frames_received for r in results),
        "calls_counted_for_frames": counted,
        "turn_latency_ms": percentiles(turn),
        "barge_in_ms": percentiles(barge),
        "model_to_carrier_ms": percentiles(m2c),
        "driver_lag_ms": percentiles(step.lag_ms),
        "driver_cpu_cores": round(step.driver_cpu_s / duration, 3) if duration > 0 else None,
        "step_s": round(duration, 1),
        **gw,
    }
    by_carrier: dict[str, Any] = {}
    for carrier in dict.fromkeys(r.carrier for r in results):
        mine = [r for r in results if r.carrier == carrier]
        by_carrier[carrier] = {
            "calls": len(mine),
            "errors": sum(1 for r in mine if r.error),
            "lateness_p99_ms": percentiles([x for r in mine for x in r.lateness_ms])["p99"],
            "barge_in_p95_ms": percentiles([x for r in mine for x in r.barge_in_ms])["p95"],
            "turn_latency_p95_ms": percentiles([x for r in mine for x in r.turn_latency_ms])["p95"],
            "model_to_carrier_ms": percentiles([x for r in mine for x in _call_model_to_carrier(r, step.model_stats)]),
        }
    row["by_carrier"] = by_carrier
    row["ok"] = bool(
        row["errors"] == 0 and lost_out == 0 and lost_in == 0 and (lat["p99"] is None or lat["p99"] < 20.0)
    )
    row["driver_bound"] = bool((row["driver_lag_ms"]["p99"] or 0) > 20.0)
    if cores:
        row["machine_cores"] = cores
    return row
