"""Load-test driver: many simulated carrier callers against one gateway, over real WebSockets.

Used by ``gateway bench load`` (:mod:`benchmarks.load`), usable against any gateway URL.

One *step* places ``calls`` calls at once: it creates them through ``POST /calls/inline`` (the
gateway's REST API, ``X-API-Key``), then connects one :class:`~gateway.simulator.caller.SimulatedCaller`
per call, carriers mixed round-robin, arrivals spread over ``arrival_s``. Calls are created as users
create them: recording on (the API's default). Each caller speaks real recordings
(``../shared/audio/caller`` and ``speech``, resampled to its dialect's rate), with line noise
(:class:`~gateway.simulator.noise.LineNoise`, −58…−50 dBFS per call, tilted) between and under
the lines, in a script with pauses and one barge-in::

    wait for the greeting → pause → say a line → barge in over the (long) reply with
    caller/interrupt.wav → wait for the answer → pause → say goodbye → wait → hang up

What it measures, per step:

* caller side (what a phone user would notice): outbound pacing lateness (a frame that
  arrives after the audio before it has run out, by how much, every gap inside a reply counted;
  see :func:`~gateway.simulator.caller.pacing_lateness`), turn latency (end of the caller's
  speech → first agent frame), barge-in reaction (onset of the interrupting speech → ``clear``);
* frames lost: agent media messages the gateway says it sent (``metrics.messagesOut`` of the
  call record; ``framesOut`` from a gateway without it) minus messages the caller received
  (the caller reads on after hanging up until the gateway closes, so nothing still on its way
  is miscounted), and caller frames sent minus
  ``metrics.framesIn``; agent frames that arrived after the hang-up are reported apart
  (``frames_in_flight_at_hangup``): they were delivered, but nobody heard them;
* model → carrier: with a model that reports when it sent each reply's first audio (the fake
  model of :mod:`benchmarks.fake_realtime`), the time from that send to the first agent frame
  arriving at the caller (same monotonic clock, same machine): what the gateway adds, plus two
  loopback hops;
* the gateway process (when its pid is known, i.e. on this machine): CPU from
  ``/proc/<pid>/stat`` over the window where every call is up (cores used, calls per core),
  and RSS from ``/proc/<pid>/status`` (``VmRSS``) against the baseline before the step;
* the driver's own health: its event-loop lag and how late the callers' 20 ms send ticks ran
  (``send_slip_ms``); when either's p99 passes 20 ms the step is ``driver_bound``: the
  caller-side figures then include the driver's own delay and the step is not a result;
* other load on the machine: machine-wide busy cores (``/proc/stat``) minus the gateway, the
  driver and the fake model (``other_load_cores``), since the machine may be shared.

Loopback only: the driver refuses any other host. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.simulator import caller as caller_module
from gateway.simulator.caller import SimulatedCaller, Step
from gateway.simulator.dialects import CallerDialect, Inbound, make_dialect
from gateway.simulator.loadstats import (
    DRIVER_BOUND_MS,
    CallResult,
    StepResult,
    _call_model_to_carrier,
    headline,
    percentiles,
    summarise,
    verdict,
)
from gateway.simulator.noise import LineNoise
from gateway.simulator.picows_link import SendClock
from gateway.simulator.procstat import ProcStat, machine_busy_s
from gateway.simulator.load_lines import SHARED_AUDIO, Lines, build_script

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
    "summarise",
    "verdict",
    "headline",
    "DRIVER_BOUND_MS",
    "_call_model_to_carrier",
]

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def check_loopback(url: str) -> None:
    """Raise ValueError unless ``url`` points at this machine (127.0.0.0/8, localhost, ::1)."""
    host = urlsplit(url).hostname or ""
    if not (host.startswith("127.") or host in LOOPBACK):
        raise ValueError(f"load tests run against loopback addresses only, not {host!r}")


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


def _prepare(res: CallResult, lines: Lines, rng: random.Random, *, barge_in: bool, script: str,
             link: str = "websockets", clock: SendClock | None = None) -> tuple[SimulatedCaller, TimedDialect, list[Step]]:
    """One call's caller (with its line noise, −58…−50 dBFS), dialect and script; ``link`` and
    ``clock`` as :class:`SimulatedCaller`'s (the heard audio is not kept: nothing here reads it)."""
    dialect = TimedDialect(make_dialect(res.carrier))
    call_rng = random.Random(rng.random() + res.index)
    rate = dialect.audio_format.sample_rate
    noise = LineNoise(rate, level_dbfs=call_rng.uniform(-58.0, -50.0), seed=call_rng.randrange(2**32))
    caller = SimulatedCaller(res.report.pop("streamUrl"), dialect, hangup_quiet_ms=300, noise=noise,
                             drain_s=5.0,  # a loaded gateway may take a while to close: do not cut its last frames off
                             keep_heard=False, link=link, clock=clock)
    return caller, dialect, build_script(lines, rate, call_rng, barge_in=barge_in, kind=script)


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


async def _lag_monitor(out: list[float], stop: asyncio.Event, stalls: list[tuple[float, float]] | None = None,
                       period_s: float = 0.01) -> None:
    """Event-loop lag (ms) of 10 ms sleeps into ``out``; each lag over 20 ms also into ``stalls``
    as ``(lag ms, this process's CPU ms meanwhile)``: a stall with little CPU of its own was the
    process waiting for a core (other load on the machine), not the driver's own work."""
    while not stop.is_set():
        t, c = time.perf_counter(), time.process_time()
        await asyncio.sleep(period_s)
        lag = max(0.0, (time.perf_counter() - t - period_s) * 1000)
        out.append(lag)
        if stalls is not None and lag > 20.0:
            stalls.append((lag, (time.process_time() - c) * 1000))


@dataclass
class _Live:
    """Callers connected and not yet finished (shared by the callers and the sampler)."""

    n: int = 0


def _call_body(res: CallResult, model: str, barge_in: bool) -> dict[str, Any]:
    """The ``POST /calls/inline`` body of one load-test call."""
    return {
        "systemPrompt": f"[{res.tag}] You are a load-test agent. Keep answers short.",
        "voice": "joe",
        "language": "en-US",
        "greeting": "Hello, thanks for calling. How can I help you today?",
        "model": model,
        "connectionType": res.carrier,
        "interruptible": barge_in,
        "recordingEnabled": True,  # as users run it (the default)
        "maxDuration": 600,
        "inactivityTimeout": 60,
    }


async def _create_all(http: httpx.AsyncClient, results: Sequence[CallResult], sem: asyncio.Semaphore, *,
                      model: str, barge_in: bool, progress: Callable[[str, int], None]) -> None:
    """Create every call (REST + store) before the measured window; each stream URL must be loopback."""
    async def create(res: CallResult) -> None:
        async with sem:
            created = await _create_call(http, _call_body(res, model, barge_in))
            res.call_id = created["callId"]
            res.report["streamUrl"] = created["streamUrl"]
            progress("created", 1)

    await asyncio.gather(*(create(r) for r in results))
    for r in results:
        check_loopback(r.report["streamUrl"].replace("ws://", "http://").replace("wss://", "https://"))


async def _sampler(step: StepResult, proc: ProcStat | None, model_proc: ProcStat | None,
                   live: _Live, stop: asyncio.Event, period_s: float = 0.25) -> None:
    """Every ``period_s`` seconds until ``stop``: machine busy time, the gateway's CPU s, RSS bytes
    and live calls, the fake model's CPU s and the driver's own (this process, every thread),
    appended to ``step``."""
    while not stop.is_set():
        step.machine.append((time.monotonic(), machine_busy_s()))
        if proc is not None and proc.alive():
            step.samples.append((time.monotonic(), proc.cpu_s(), proc.rss_bytes(), live.n))
        if model_proc is not None and model_proc.alive():
            step.model_samples.append((time.monotonic(), model_proc.cpu_s()))
        step.driver_samples.append((time.monotonic(), time.process_time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)


def _apply_report(res: CallResult, report: Any) -> None:
    """Copy a caller's report (``caller.run``'s result) into ``res``."""
    res.report = report.as_dict()
    res.lateness_ms = list(report.lateness_ms)
    res.turn_latency_ms = list(report.turn_latency_ms)
    res.barge_in_ms = list(report.barge_in_reaction_ms)
    res.frames_sent = report.frames_sent
    res.frames_received = report.frames_received
    res.frames_after_hangup = report.frames_after_hangup
    res.send_slip_ms = report.send_slip_ms
    res.turn_pauses = len(report.turn_pauses_ms)
    if report.close_code not in (None, 1000, 1001):
        res.error = f"closed {report.close_code} {report.close_reason}"


async def _run_caller(res: CallResult, prepared: dict[int, Any], *, delay_s: float, live: _Live,
                      progress: Callable[[str, int], None]) -> None:
    """Connect one prepared caller after ``delay_s`` seconds and run its script into ``res``;
    a failure is recorded in ``res.error``, never raised."""
    await asyncio.sleep(delay_s)
    caller, dialect, steps = prepared.pop(res.index)
    res.connected_at = time.monotonic()
    live.n += 1
    progress("connected", 1)
    try:
        _apply_report(res, await caller.run(steps))
    except Exception as exc:  # noqa: BLE001 - one failed call is a result, not a crash
        res.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        res.media_arrivals = dialect.media_arrivals
        if dialect.parse_errors and not res.error:
            res.error = f"{dialect.parse_errors} frames the carrier would reject"
        res.ended_at = time.monotonic()
        live.n -= 1
        progress("finished", 1)


async def _run_callers(step: StepResult, prepared: dict[int, Any], *, arrival_s: float, live: _Live,
                       stop: asyncio.Event, sample_task: asyncio.Task[None], carrier_compression: bool,
                       step_timeout_s: float, progress: Callable[[str, int], None]) -> None:
    """Run every caller, arrivals spread over ``arrival_s`` seconds, under the event-loop lag
    monitor; calls unfinished after ``step_timeout_s`` get ``error = "step timeout"``. Sets
    ``stop`` and awaits the monitor and ``sample_task`` on the way out."""
    results = step.calls
    calls = len(results)
    lag_task = asyncio.create_task(_lag_monitor(step.lag_ms, stop, step.stalls))
    patch = contextlib.nullcontext() if carrier_compression else _no_permessage_deflate()
    try:
        with patch:
            async with asyncio.timeout(step_timeout_s):
                await asyncio.gather(*(
                    _run_caller(r, prepared, delay_s=arrival_s * r.index / max(1, calls), live=live,
                                progress=progress)
                    for r in results))
    except TimeoutError:
        for r in results:
            if r.ended_at is None:
                r.error = r.error or "step timeout"
    finally:
        stop.set()
        await asyncio.gather(lag_task, sample_task, return_exceptions=True)


def _apply_record(res: CallResult, rec: dict[str, Any]) -> None:
    """Copy the gateway's call record (frames out/in, status, recording, end reason) into ``res``."""
    metrics = rec.get("metrics") or {}
    # The caller counts media messages: a message may join several frames (messagesOut).
    res.gateway_frames_out = metrics.get("messagesOut", metrics.get("framesOut"))
    res.gateway_frames_in = metrics.get("framesIn")
    res.status = str(rec.get("status", ""))
    recording = rec.get("recording")
    if isinstance(recording, dict):
        res.recording = "linked" if recording.get("url") else str(recording.get("status", "unknown"))
    else:
        res.recording = "none"
    res.end_reason = str(rec.get("endReason", ""))
    if res.status == "failed" and not res.error:
        res.error = f"gateway: {res.end_reason} {rec.get('errorCode') or ''}".strip()


async def _collect_records(http: httpx.AsyncClient, results: Sequence[CallResult], sem: asyncio.Semaphore) -> None:
    """Fetch every created call's final record from the gateway into its result."""
    async def record(res: CallResult) -> None:
        if not res.call_id:
            return
        async with sem:
            rec = await _final_record(http, res.call_id)
        _apply_record(res, rec)

    await asyncio.gather(*(record(r) for r in results))


async def _drive(step: StepResult, results: Sequence[CallResult], lines: Lines, rng: random.Random,
                 proc: ProcStat | None, model_proc: ProcStat | None, live: _Live, stop: asyncio.Event, *,
                 barge_in: bool, script: str, link: str, arrival_s: float, carrier_compression: bool,
                 step_timeout_s: float, progress: Callable[[str, int], None]) -> None:
    """Steps 2–4 of :func:`run_step`: prepare every caller, sample the gateway, run the callers."""
    # 2. Prepare every caller (recordings resampled to its rate, script, line noise) before
    #    any call is live: a resample designed while other callers run would stall them all.
    clock = SendClock() if link == "picows" else None
    step.driver_info = {"caller_link": link, "send_slot_ms": round(clock.slot_s * 1000, 3) if clock else None}
    prepared = {r.index: _prepare(r, lines, rng, barge_in=barge_in, script=script, link=link, clock=clock)
                for r in results}
    # 3. Sample the gateway process while the step runs.
    if proc is not None:
        step.rss_baseline = proc.rss_bytes()
    sample_task = asyncio.create_task(_sampler(step, proc, model_proc, live, stop))
    # 4. Run the callers, arrivals spread over arrival_s. What was set up so far (recordings,
    #    noise loops, pre-encoded frames) is frozen out of the collector's passes meanwhile.
    gc.collect()
    gc.freeze()
    try:
        await _run_callers(step, prepared, arrival_s=arrival_s, live=live, stop=stop, sample_task=sample_task,
                           carrier_compression=carrier_compression, step_timeout_s=step_timeout_s,
                           progress=progress)
    finally:
        gc.unfreeze()


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
    model_pid: int | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    create_concurrency: int = 16,
    script: str = "full",
    caller_link: str = "picows",
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
        model_pid: the fake model's process on this machine, to tell its CPU from other load.
        on_progress: ``(event, n)`` with event ``created`` / ``connected`` / ``finished``.
        create_concurrency: concurrent ``POST /calls/inline`` requests.
        script: ``full`` (see :func:`build_script`) or ``short`` (no barge-in; smoke tests).
        caller_link: the callers' socket client: ``picows`` (default: one shared send clock,
            :mod:`gateway.simulator.picows_link`) or ``websockets`` (a ticker task per caller);
            ``carrier_compression`` needs ``websockets`` (picows offers no permessage-deflate).
    """
    check_loopback(url)
    lines = lines or Lines.load()
    rng = random.Random(seed)
    proc = ProcStat(gateway_pid) if gateway_pid else None
    model_proc = ProcStat(model_pid) if model_pid else None
    progress = on_progress or (lambda event, n: None)
    results = [CallResult(i, carriers[i % len(carriers)], tag=f"{tag_prefix}c{i}") for i in range(calls)]
    live = _Live()
    stop = asyncio.Event()
    step = StepResult(results, time.monotonic(), 0.0)
    driver_cpu0 = time.process_time()
    headers = {"X-API-Key": api_key}
    limits = httpx.Limits(max_connections=create_concurrency, max_keepalive_connections=create_concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as http:
        # 1. Create every call first (REST + store), so creation is not in the measured window.
        sem = asyncio.Semaphore(create_concurrency)
        await _create_all(http, results, sem, model=model, barge_in=barge_in, progress=progress)
        await _drive(step, results, lines, rng, proc, model_proc, live, stop, barge_in=barge_in, script=script,
                     link="websockets" if carrier_compression else caller_link, arrival_s=arrival_s,
                     carrier_compression=carrier_compression, step_timeout_s=step_timeout_s, progress=progress)
        step.ended_at = time.monotonic()
        step.driver_cpu_s = time.process_time() - driver_cpu0
        # 5. The gateway's records: frames it sent and received, status.
        await _collect_records(http, results, sem)
    if model_stats is not None:
        with contextlib.suppress(Exception):
            step.model_stats = await model_stats()
    return step
