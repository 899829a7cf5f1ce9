"""``gateway bench bargein``: does barge-in hear the caller, and not the agent's own echo?

Method. The code path measured is the one a call takes: a real gateway (``gateway serve`` in its
own process, :class:`benchmarks.load_procs.LocalGateway`: the call sessions, the per-tick media
engine, the VAD, the echo canceller and the barge-in decision as configured by its ``GATEWAY_*``
settings) serves Twilio media streams over loopback WebSockets; its calls use a fake realtime
model (:class:`benchmarks.fake_realtime.FakeRealtimeModel`, in this process, G.711 passed
through) whose replies are agent speech synthesised here (:mod:`benchmarks.bargein_audio`:
Piper through the local agent's bundled voice, or espeak-ng). Each call's caller is a
:class:`~gateway.simulator.caller.SimulatedCaller` (this process, many at once) that plays the
agent audio at real time and returns it as echo on its own leg
(:class:`~gateway.simulator.echo.EchoPath`: a return loss drawn in the row's band, a delay of
40–200 ms, a hybrid or small-room echo path), under line noise (−60…−40 dBFS,
:class:`~gateway.simulator.noise.LineNoise`), encoded in μ-law. Per row (echo band) and
utterance, three calls:

* ``echo``: the caller stays silent for the whole agent utterance (only echo and noise on its
  leg). A **false barge-in** is a ``clear`` the caller received (or a ``barge_in`` event in the
  call's record); a **false pause** a ``barge_in_paused`` event.
* ``barge``: the caller speaks one of the ``../shared/audio/speech`` recordings (its first 2 s
  of speech, cut at the voice's onset: :func:`benchmarks.bargein_audio.from_onset`) over the
  agent, 1–3 s into it. **Recall**: the agent stopped (a ``barge_in_paused``
  event, or a ``barge_in`` one in immediate mode) within 600 ms of the caller's speech onset;
  **onset → pause** that stop's time, **onset → commit** the ``clear``'s arrival at the caller.
  A call whose echo stopped the agent before the caller spoke is an **early stop** (a false
  barge-in of its own) and is left out of recall and latencies (``recallCalls`` counts the rest).
* ``backchannel``: the caller says a 250 ms burst cut from those recordings over the agent, then
  listens. **Resumed**: a pause followed by ``barge_in_resumed`` and no ``clear`` (of the calls
  without an early stop; ``committed``: a ``clear`` came, the agent was cut).

Times: the caller's onsets and ``clear`` arrivals are on its own clock (ms from its first
frame); the record's events (``at_ms`` on the session's clock, logged when the session acted)
are moved onto it by the ``started`` event (the caller's start message, sent at its 0 ms;
loopback: within ~1 ms). The caller knows its onset from its own schedule
(:func:`~gateway.simulator.script.speech_bounds`). So onset → pause is when the gateway stopped
sending, onset → commit when the caller *processed* the ``clear``: the second also carries the
delivery and this process's own lag (``callerSlipMsP95``: how late the callers' ticks ran).

``--json`` prints one JSON object on the last line: the configuration and one row per band.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np

from benchmarks.bargein_audio import agent_speech, backchannel_clips, caller_lines, from_onset
from benchmarks.fake_realtime import FakeRealtimeModel, Voice
from gateway.simulator.caller import Backchannel, BargeIn, CallerReport, Listen, Pause, SimulatedCaller, Step
from gateway.simulator.dialects import TwilioCaller
from gateway.simulator.echo import EchoPath
from gateway.simulator.noise import LineNoise

__all__ = ["BANDS", "MODES", "CallPlan", "Outcome", "plan_calls", "run_calls", "score", "run", "main", "parse_bands"]

#: Echo return-loss bands (dB) of the rows; ``None``: line noise only (no echo).
BANDS: tuple[tuple[float, float] | None, ...] = (None, (12, 20), (20, 25), (25, 35), (35, 50))
MODES = ("immediate", "pause_then_commit")
KINDS = ("echo", "barge", "backchannel")
RECALL_MS = 600.0
RATE = 8000
_SHORT = "agent-short"
_TERMINAL = frozenset({"completed", "failed", "expired", "no_answer", "busy", "declined", "voicemail", "canceled"})


@dataclass(frozen=True)
class CallPlan:
    """One bench call: its row's band, kind, and the caller's draw (line, echo, noise, timing)."""

    band: tuple[float, float] | None
    kind: str
    index: int
    agent: int  # which agent utterance
    agent_ms: float
    return_loss_db: float | None
    delay_ms: float
    response: str
    noise_dbfs: float
    after_ms: float
    line: np.ndarray | None = None
    line_name: str = ""

    @property
    def tag(self) -> str:
        band = "none" if self.band is None else f"{self.band[0]:g}-{self.band[1]:g}"
        return f"bi-{band}-{self.kind}-{self.index}-a{self.agent}"


def parse_bands(text: str) -> list[tuple[float, float] | None]:
    """``"none,12-20,20-25"`` → bands; ``"45"`` is the band 45–45.

    Raises:
        ValueError: a band that is not ``lo-hi`` dB with 0 ≤ lo ≤ hi ≤ 90.
    """
    out: list[tuple[float, float] | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "none":
            out.append(None)
            continue
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?", part)
        lo, hi = (float(m.group(1)), float(m.group(2) or m.group(1))) if m else (-1.0, -1.0)
        if not 0 <= lo <= hi <= 90:
            raise ValueError(f"a band is lo-hi dB of return loss (0 ≤ lo ≤ hi ≤ 90) or none, not {part!r}")
        out.append((lo, hi))
    if not out:
        raise ValueError("no bands")
    return out


def plan_calls(bands: Sequence[tuple[float, float] | None], utterances: int, agent_ms: Sequence[float], *,
               seed: int = 0, max_listen_ms: float | None = None,
               after_ms: tuple[float, float] = (1000.0, 3000.0)) -> list[CallPlan]:
    """Every call of the run: per band, ``utterances`` of each kind, draws seeded per call (the
    caller speaks ``after_ms`` (a range, ms) into the agent's audio; an echo-only caller listens
    to the whole utterance, or ``max_listen_ms``)."""
    lines = caller_lines(RATE)
    clips = backchannel_clips(RATE)
    plans = []
    for b, band in enumerate(bands):
        for i in range(utterances):
            for k, kind in enumerate(KINDS):
                rng = np.random.default_rng([seed, b, i, k])
                a = i % len(agent_ms)
                rl = None if band is None else float(rng.uniform(band[0], band[1]))
                name, line = (lines[i % len(lines)] if kind == "barge" else clips[i % len(clips)]
                              if kind == "backchannel" else ("", None))  # fmt: skip
                if kind == "barge":
                    line = from_onset(line, RATE, seconds=2.0)
                listen = agent_ms[a] + 300 if max_listen_ms is None else min(agent_ms[a] + 300, max_listen_ms)
                plans.append(CallPlan(band, kind, i, a, listen if kind == "echo" else agent_ms[a], rl,
                                      float(rng.uniform(40, 200)), ("hybrid", "room")[i % 2],
                                      float(rng.uniform(-60, -40)), float(rng.uniform(*after_ms)) if kind != "echo"
                                      else 0.0, line, name))  # fmt: skip
    return plans


def _script(plan: CallPlan) -> list[Step]:
    if plan.kind == "echo":
        return [Listen(int(plan.agent_ms), timeout_s=20, label="echo only")]
    if plan.kind == "barge":
        return [BargeIn(plan.line, after_ms=int(plan.after_ms), timeout_s=20, label=plan.line_name), Pause(1200)]
    return [Backchannel(plan.line, after_ms=int(plan.after_ms), timeout_s=20, label=plan.line_name), Listen(1500)]


def _body(plan: CallPlan, mode: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "systemPrompt": f"[{plan.tag}] You are a barge-in bench agent.",
        "voice": "joe", "language": "en-US", "greeting": "Hello.", "model": "compat:bench",
        "connectionType": "twilio", "interruptible": mode != "off", "recordingEnabled": False,
        "maxDuration": 120, "inactivityTimeout": 60, "bargeInMode": mode,
    }  # fmt: skip
    return body


@dataclass
class Outcome:
    """One finished call: its plan, the caller's report, the record's events on the caller's clock."""

    plan: CallPlan
    report: CallerReport
    events: list[tuple[str, float, dict[str, Any]]]
    metrics: dict[str, Any]


async def _one(http: httpx.AsyncClient, plan: CallPlan, mode: str) -> Outcome:
    r = await http.post("/calls/inline", json=_body(plan, mode))
    if r.status_code != 201:
        raise RuntimeError(f"POST /calls/inline → {r.status_code}: {r.text[:300]}")
    created = r.json()
    echo = None if plan.return_loss_db is None else EchoPath(RATE, return_loss_db=plan.return_loss_db,
                                                             delay_ms=plan.delay_ms, response=plan.response)
    noise = LineNoise(RATE, level_dbfs=plan.noise_dbfs, seed=zlib.crc32(plan.tag.encode()))
    caller = SimulatedCaller(created["streamUrl"], TwilioCaller(), noise=noise, echo=echo, hangup_quiet_ms=200,
                             drain_s=2.0, keep_heard=False)  # fmt: skip
    async with asyncio.timeout(60):
        report = await caller.run(_script(plan))
    rec: dict[str, Any] = {}
    for _ in range(150):  # the record is final a moment after the hang-up
        got = await http.get(f"/calls/{created['callId']}")
        rec = got.json() if got.status_code == 200 else {}
        if rec.get("status") in _TERMINAL:
            break
        await asyncio.sleep(0.1)
    events = rec.get("events") or []
    started = next((e["atMs"] for e in events if e["kind"] == "started"), 0)
    moved = [(e["kind"], float(e["atMs"] - started), e.get("data") or {}) for e in events]
    return Outcome(plan, report, moved, rec.get("metrics") or {})


async def run_calls(plans: Sequence[CallPlan], *, url: str, api_key: str, mode: str, concurrency: int = 10,
                    progress=None) -> list[Outcome]:
    """Place every planned call against the gateway at ``url``, ``concurrency`` at once."""
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def guarded(http: httpx.AsyncClient, plan: CallPlan) -> Outcome:
        nonlocal done
        async with sem:
            out = await _one(http, plan, mode)
        done += 1
        if progress is not None:
            progress(done, len(plans))
        return out

    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": api_key}, timeout=30) as http:
        return list(await asyncio.gather(*(guarded(http, p) for p in plans)))


def _pct(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    v = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(v, 50)), 1), "p95": round(float(np.percentile(v, 95)), 1), "n": int(v.size)}


def _stops(o: Outcome) -> list[float]:
    """When the gateway stopped sending agent audio (caller ms): pauses, and barge-ins not
    preceded by a pause of their own (immediate mode)."""
    pauses = [t for k, t, _ in o.events if k == "barge_in_paused"]
    return sorted(pauses or [t for k, t, _ in o.events if k == "barge_in"])


def _rate(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def score(outcomes: Sequence[Outcome], bands: Sequence[tuple[float, float] | None]) -> list[dict[str, Any]]:
    """One row per band: false barge-ins and pauses on echo only, recall and latencies of real
    barge-ins, what backchannels did."""
    rows = []
    for band in bands:
        mine = [o for o in outcomes if o.plan.band == band]
        echo = [o for o in mine if o.plan.kind == "echo"]
        false_bi = sum(1 for o in echo if o.report.clears or any(k == "barge_in" for k, _, _ in o.events))
        false_pause = sum(1 for o in echo if any(k == "barge_in_paused" for k, _, _ in o.events))
        recall, early, to_pause, to_commit = 0, 0, [], []
        barge = [o for o in mine if o.plan.kind == "barge" and o.report.onsets]
        for o in barge:
            onset = o.report.onsets[0].onset_ms
            stops = _stops(o)
            if any(t < onset for t in stops):  # the echo stopped the agent first: no recall to measure
                early += 1
                continue
            after = [t - onset for t in stops if t >= onset]
            if after:
                to_pause.append(after[0])
                recall += after[0] <= RECALL_MS
            clears = [t - onset for t in o.report.clear_at_ms if t >= onset]
            if clears:
                to_commit.append(clears[0])
        bc = [o for o in mine if o.plan.kind == "backchannel" and o.report.onsets
              and not any(t < o.report.onsets[0].onset_ms for t in _stops(o))]  # fmt: skip
        bc_paused = bc_resumed = bc_committed = 0
        for o in bc:
            onset = o.report.onsets[0].onset_ms
            paused = [t for k, t, _ in o.events if k == "barge_in_paused" and t >= onset]
            committed = any(t >= onset for t in o.report.clear_at_ms)
            resumed = bool(paused) and any(k == "barge_in_resumed" and t >= paused[0] for k, t, _ in o.events)
            bc_paused += bool(paused)
            bc_committed += committed
            bc_resumed += resumed and not committed
        erl = [o.report.echo_return_loss_db for o in mine if o.report.echo_return_loss_db is not None]
        rows.append({
            "band": "none" if band is None else f"{band[0]:g}-{band[1]:g}",
            "returnLossDb": None if band is None else list(band),
            "calls": {k: sum(1 for o in mine if o.plan.kind == k) for k in KINDS},
            "falseBargeInRate": _rate(false_bi, len(echo)),
            "falsePauseRate": _rate(false_pause, len(echo)),
            "recall600": _rate(recall, len(barge) - early),
            "recallCalls": len(barge) - early,
            "earlyStops": early,
            "onsetToPauseMs": _pct(to_pause),
            "onsetToCommitMs": _pct(to_commit),
            "commitRate": _rate(len(to_commit), len(barge) - early),
            "backchannel": {"n": len(bc), "paused": _rate(bc_paused, len(bc)), "resumed": _rate(bc_resumed, len(bc)),
                            "committed": _rate(bc_committed, len(bc))},
            "echoReturnLossDbMedian": round(float(np.median(erl)), 1) if erl else None,
            "echoEstimate": _estimates(mine),
            "callerSlipMsP95": _slip(mine),
        })  # fmt: skip
    return rows


def _slip(outcomes: Sequence[Outcome]) -> float | None:
    """p95 of how late the callers' 20 ms ticks ran (ms): this process's own lag, which delays
    what the callers send and when they notice a ``clear`` (large: the figures are driver-bound)."""
    slips = [x for o in outcomes for x in o.report.send_slip_ms]
    return round(float(np.percentile(slips, 95)), 1) if slips else None


def _estimates(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """How the gateway's per-call echo estimate (the record's ``metrics.echo``, when it has one)
    compares with the echo the caller returned: calls with an estimate, median |error| of the
    delay (ms, to the path's first tap) and of the return loss (dB, against the loss achieved)."""
    delay_err, erl_err, n = [], [], 0
    for o in outcomes:
        est = o.metrics.get("echo")
        if o.plan.return_loss_db is None or not isinstance(est, dict) or est.get("delayMs") is None:
            continue
        n += 1
        delay_err.append(abs(float(est["delayMs"]) - o.plan.delay_ms))
        if est.get("erlDb") is not None and o.report.echo_return_loss_db is not None:
            erl_err.append(abs(float(est["erlDb"]) - o.report.echo_return_loss_db))
    return {"calls": n, "of": sum(1 for o in outcomes if o.plan.return_loss_db is not None),
            "delayErrorMsP50": round(float(np.median(delay_err)), 1) if delay_err else None,
            "erlErrorDbP50": round(float(np.median(erl_err)), 1) if erl_err else None}


def _gateway_env(model_url: str, echo_cancel: str | None) -> tuple[dict[str, str], str | None]:
    """Settings of the gateway started here (``GATEWAY_ECHO_CANCEL`` only when asked for), and
    the echo cancelling it runs with (``on`` / ``off``; ``None``: it has no such setting).

    Raises:
        ValueError: ``echo_cancel`` not ``on`` / ``off``.
        RuntimeError: echo cancelling asked for on a gateway that has no such setting.
    """
    import os

    from gateway.config import Settings

    env = {"GATEWAY_COMPAT_REALTIME_URL": model_url, "GATEWAY_WARM_UP": "false"}
    field = Settings.model_fields.get("echo_cancel")
    if echo_cancel is None:
        return env, None if field is None else os.environ.get("GATEWAY_ECHO_CANCEL", str(field.default))
    if echo_cancel not in ("on", "off"):
        raise ValueError(f"echo cancel must be on or off, not {echo_cancel!r}")
    if field is None:
        raise RuntimeError("this gateway has no echo canceller setting (GATEWAY_ECHO_CANCEL)")
    env["GATEWAY_ECHO_CANCEL"] = echo_cancel
    return env, echo_cancel


def _voice(clips: Sequence[tuple[np.ndarray, int, str]], short: tuple[np.ndarray, int, str]) -> tuple[Voice, Any]:
    """The fake model's voice: reply 0 of a call (its greeting) is the agent utterance its tag
    names; later replies (after a barge-in) a short one."""
    recordings = {f"agent-{i}": clip for i, clip in enumerate(clips)}
    recordings[_SHORT] = short

    def pick(tag: str, n: int) -> str:
        m = re.search(r"-a(\d+)$", tag)
        return f"agent-{m.group(1)}" if n == 0 and m else _SHORT

    return Voice(100, recordings), pick


async def run(*, bands: Sequence[tuple[float, float] | None] = BANDS, utterances: int = 20, mode: str = "immediate",
              echo_cancel: str | None = None, vad: str = "silero", voice: str = "piper", concurrency: int = 10,
              seed: int = 0, max_listen_ms: float | None = None, after_ms: tuple[float, float] = (1000.0, 3000.0),
              workdir: Path | None = None, log=None) -> dict[str, Any]:
    """Start a gateway and the fake model, place every call, return the result (JSON-ready).

    Raises:
        ValueError: an unknown mode or voice.
        RuntimeError: the gateway did not start, or a call could not be created.
    """
    from benchmarks.load_procs import LocalGateway

    if mode not in (*MODES, "off"):
        raise ValueError(f"mode must be one of {', '.join(MODES)} or off, not {mode!r}")
    say = log or (lambda text: None)
    with contextlib.ExitStack() as stack:
        work = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-bargein-")))
        cache = Path(tempfile.gettempdir()) / "gateway-bench-bargein-voice"
        count = min(utterances, 6)
        say(f"synthesising {count} agent utterances ({voice})")
        clips = await asyncio.to_thread(agent_speech, count, engine=voice, cache_dir=cache)
        short = (await asyncio.to_thread(agent_speech, 1, engine=voice, cache_dir=cache))[0]
        short = (short[0][: short[1] * 2], short[1], "Thanks.")
        agent_ms = [1000.0 * pcm.size / rate for pcm, rate, _ in clips]
        plans = plan_calls(bands, utterances, agent_ms, seed=seed, max_listen_ms=max_listen_ms, after_ms=after_ms)
        fake_voice, pick = _voice(clips, short)
        async with FakeRealtimeModel(voice=fake_voice, pick=pick) as model:
            env, echo_cancel = _gateway_env(model.base_url, echo_cancel)
            gw = LocalGateway(work, vad=vad, g711=True, env=env)
            say("starting the gateway")
            await asyncio.to_thread(gw.start)
            try:
                say(f"{len(plans)} calls, {concurrency} at once")
                outcomes = await run_calls(plans, url=gw.url, api_key=gw.api_key, mode=mode, concurrency=concurrency,
                                           progress=lambda d, n: say(f"{d}/{n} calls") if d % 20 == 0 else None)
            except (httpx.HTTPError, OSError) as exc:
                code = gw.proc.poll() if gw.proc is not None else None
                tail = gw.log_path.read_text(errors="replace")[-2000:] if gw.log_path.exists() else ""
                raise RuntimeError(f"a call failed ({exc!r}); the gateway {'exited ' + str(code) if code is not None else 'is running'}"
                                   f"; the end of its log:\n{tail}") from exc
            finally:
                await asyncio.to_thread(gw.stop)
    return {
        "config": {"mode": mode, "echoCancel": echo_cancel, "vad": vad, "voice": voice, "utterances": utterances,
                   "concurrency": concurrency, "seed": seed, "carrier": "twilio", "codec": "pcmu",
                   "delayMs": [40, 200], "noiseDbfs": [-60, -40], "recallWithinMs": RECALL_MS,
                   "method": "gateway serve (own process) + fake realtime model + simulated callers over loopback"},
        "rows": score(outcomes, bands),
    }  # fmt: skip


def _table(result: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f} %"

    def ms(d: dict[str, Any]) -> str:
        return "-" if d["p50"] is None else f"{d['p50']:.0f} / {d['p95']:.0f}"

    cfg = result["config"]
    out = [f"barge-in bench: mode {cfg['mode']}, echo cancel {cfg['echoCancel']}, VAD {cfg['vad']}, "
           f"{cfg['utterances']} utterances per row",
           "| echo band (dB) | false barge-ins | false pauses | recall ≤600 ms | onset→pause p50/p95 | "
           "onset→commit p50/p95 | backchannels resumed | measured ERL |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        out.append(f"| {r['band']} | {pct(r['falseBargeInRate'])} | {pct(r['falsePauseRate'])} | {pct(r['recall600'])} "
                   f"| {ms(r['onsetToPauseMs'])} | {ms(r['onsetToCommitMs'])} | {pct(r['backchannel']['resumed'])} "
                   f"| {r['echoReturnLossDbMedian'] if r['echoReturnLossDbMedian'] is not None else '-'} |")
    return "\n".join(out)


def main(*, bands: str = "none,12-20,20-25,25-35,35-50", utterances: int = 20, mode: str = "immediate",
         echo_cancel: str | None = None, vad: str = "silero", voice: str = "piper", concurrency: int = 10,
         seed: int = 0, json_out: bool = False, out: Path | None = None) -> dict[str, Any]:
    """The command: run, print a table (and with ``json_out`` one JSON object on the last line)."""
    result = asyncio.run(run(bands=parse_bands(bands), utterances=utterances, mode=mode, echo_cancel=echo_cancel,
                             vad=vad, voice=voice, concurrency=concurrency, seed=seed,
                             log=lambda text: print(text, file=sys.stderr, flush=True)))  # fmt: skip
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    print(_table(result), flush=True)
    if json_out:
        print(json.dumps(result), flush=True)
    return result
