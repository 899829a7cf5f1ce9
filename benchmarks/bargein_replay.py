"""Offline replay of ``gateway bench bargein``'s calls through one call's echo stage and VAD.

A tuning and diagnosis aid, faster than real time (about 0.3 s a call); not a result: the
bench's real calls over loopback are. Per call, the bench's own plan
(:func:`benchmarks.bargein.plan_calls`: the band's return loss, a 40–200 ms hybrid or
small-room echo path, line noise −60…−40 dBFS, the caller's line and when it starts): one
agent utterance (Piper, as the bench) in μ-law at 8 kHz plays from 200 ms into the call; the
caller leg is its echo (:class:`~gateway.simulator.echo.EchoPath`) under the line noise (and,
on a ``barge`` call, the caller's line), in μ-law; 20 ms frames reach a
:class:`~gateway.engine.echo.EchoStage` and a Silero VAD runner (barge-in confirmation 96 ms,
cues on) as a session feeds them (arrival jitter 0–8 ms). A **pause** is a cue or a
confirmed start while the agent plays; :class:`~gateway.session.bargein.PauseGate` decides
commit or resume on the VAD's voiced runs. Echo-only calls count false pauses and false
commits; barge calls onset → pause (recall within 600 ms, p50/p95) and early stops.

Carrier playout faults, on every call (the bench's real calls see them only now and then):

* ``--dry-ms X``: once, at a random point of the utterance, the carrier ran dry for 40–X ms;
  the ledger (the reference) knows the gap, the caller's playback resumes 0–20 ms later than
  it says (its own frame clock);
* ``--shift-ms X``: once, the caller's playback moves 1–X ms later with no gap the ledger sees.

``--assured-db``, ``--hangover-ms``, ``--one-tap``, ``--no-unsettle`` and ``--unsettle-blocks`` change the
double-talk rule's settings for side-by-side runs. Prints one JSON row per band.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np

from benchmarks.bargein import CallPlan, parse_bands, plan_calls
from benchmarks.bargein_audio import agent_speech
from gateway.codecs import g711
from gateway.codecs.resample import resample
from gateway.engine.echo import EchoStage
from gateway.session.bargein import PauseGate, PauseInput
from gateway.simulator.echo import EchoPath
from gateway.simulator.noise import LineNoise
from gateway.vadrun import VadCue, VadFactory, VadStart

__all__ = ["replay", "main"]

RATE = 8000
FRAME = 160
LEAD_MS = 200
_NONE = np.zeros(0, np.float32)


def _ulaw(pcm: np.ndarray) -> np.ndarray:
    return g711.ulaw_decode(g711.ulaw_encode(np.clip(np.round(pcm), -32768, 32767).astype(np.int16)))


def _legs(plan: CallPlan, agent: np.ndarray, rng: np.random.Generator, dry_ms: float, shift_ms: float):
    """(what the ledger says played, what the caller's ear played, the caller's mouth, whether the
    reference has agent audio at each sample, the caller's onset in ms or ``None``)."""
    lead = LEAD_MS * RATE // 1000
    total = lead + agent.size + RATE  # a second of echo tail and silence after the agent
    played = np.zeros(total, np.int16)
    played[lead:lead + agent.size] = agent
    on = np.zeros(total, bool)
    on[lead:lead + agent.size] = True
    heard = played
    if dry_ms:
        at, g = lead + int(rng.uniform(0.1, 0.9) * agent.size), int(rng.uniform(40, dry_ms) * RATE / 1000)
        u = int(rng.uniform(0, 20) * RATE / 1000)
        played = np.concatenate((played[:at], np.zeros(g, np.int16), played[at:]))[:total]
        on = np.concatenate((on[:at], np.zeros(g, bool), on[at:]))[:total]
        heard = np.concatenate((played[:at], np.zeros(u, np.int16), played[at:]))[:total]
    if shift_ms:
        at, u = lead + int(rng.uniform(0.1, 0.9) * agent.size), int(rng.uniform(1, shift_ms) * RATE / 1000)
        heard = np.concatenate((heard[:at], np.zeros(u, np.int16), heard[at:]))[:total]
    mouth, onset = np.zeros(total), None
    if plan.kind != "echo" and plan.line is not None:
        a = lead + int(plan.after_ms * RATE / 1000)
        k = min(plan.line.size, total - a)
        mouth[a:a + k] = plan.line[:k]
        onset = (a + RATE // 10) * 1000 / RATE  # (from_onset's 100 ms lead)
    return played, heard, mouth, on, onset


def replay(plan: CallPlan, agent: np.ndarray, factory: VadFactory, *, seed: int = 0, dry_ms: float = 0.0,
           shift_ms: float = 0.0) -> dict:
    """One call; returns ``stops`` (ms the agent was paused at), ``commits``, ``onset`` (ms or
    ``None``) and the stage's echo estimate."""
    stage, vad = EchoStage(RATE), factory.create(RATE)
    stage.bind(vad)
    vad.cues = True
    echo = EchoPath(RATE, return_loss_db=plan.return_loss_db, delay_ms=plan.delay_ms, response=plan.response)
    noise = LineNoise(RATE, level_dbfs=plan.noise_dbfs, seed=zlib.crc32(plan.tag.encode()))
    rng = np.random.default_rng(seed)
    played, heard, mouth, on, onset = _legs(plan, agent, rng, dry_ms, shift_ms)
    speaking_to = LEAD_MS * RATE // 1000 + agent.size
    gate, ms = PauseGate(), 1000.0 / RATE
    out: dict = {"stops": [], "commits": [], "onset": onset}
    for k in range(played.size // FRAME):
        s = k * FRAME
        if on[s]:
            stage.reference(played[s:s + FRAME], s)
        echo.push(heard[s:s + FRAME])
        leg = _ulaw(echo.pull(FRAME) + noise.next(FRAME) + mouth[s:s + FRAME])
        speaking = LEAD_MS * RATE // 1000 <= s < speaking_to
        vad.agent_speaking(speaking)
        events = []
        for chunk in vad.take(stage.caller(leg, (k + 1) * 20.0 + float(rng.uniform(0, 8)))):
            p = vad.plan(chunk)
            events += vad.apply(p, vad.score_now(p.block) if p.scored else _NONE)
        v = vad.voicing()
        for ev in events:
            if isinstance(ev, (VadCue, VadStart)) and speaking and gate.pause(ev.onset_sample * ms, v.voiced_to * ms):
                out["stops"].append((k + 1) * 20.0)
        verdict = gate.hear(v.voiced_to * ms, v.scored_to * ms, tuple((a * ms, b * ms) for a, b in v.runs))
        if verdict is not None:
            gate.end(verdict)
            if verdict is PauseInput.COMMIT:
                out["commits"].append((k + 1) * 20.0)
    est = stage.estimator.estimate
    out["estimate"] = None if est is None else {"delayMs": round(est.delay_ms, 1), "erlDb": round(est.erl_db, 1)}
    return out


def _configure(args: argparse.Namespace) -> None:
    """The side-by-side switches: the double-talk rule's defaults, the estimator's fit, unsettling."""
    import gateway.audio.aec as aec
    import gateway.audio.doubletalk as dt
    import gateway.audio.echo as ec

    defaults = dt.DoubleTalkGate.__init__.__kwdefaults__
    if args.assured_db is not None:
        defaults["assured_erle_db"] = None if args.assured_db < 0 else args.assured_db
    if args.hangover_ms is not None:
        defaults["hangover_ms"] = args.hangover_ms
    if args.one_tap:
        ec.EchoPathEstimator._fit_powers = lambda self, peak, at: None
    if args.no_unsettle:
        aec.EchoCanceller.unsettle = lambda self: None
    if args.unsettle_blocks is not None:
        aec.UNSETTLE_BLOCKS = args.unsettle_blocks


def _tally(rows: dict, plan: CallPlan, r: dict) -> None:
    band = f"{plan.band[0]:g}-{plan.band[1]:g}"
    row = rows.setdefault(band, {"band": band, "echoCalls": 0, "falsePauses": 0, "falseCommits": 0,
                                 "bargeCalls": 0, "earlyStops": 0, "lat": []})
    if plan.kind == "echo":
        row["echoCalls"] += 1
        row["falsePauses"] += bool(r["stops"])
        row["falseCommits"] += bool(r["commits"])
        return
    row["bargeCalls"] += 1
    if any(t < r["onset"] for t in r["stops"]):
        row["earlyStops"] += 1
        return
    row["lat"].append(r["stops"][0] - r["onset"] if r["stops"] else float("inf"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bands", default="12-20,20-25,25-35,35-50")
    ap.add_argument("--utterances", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vad", default="silero", choices=("silero", "webrtc"))
    ap.add_argument("--kinds", default="echo,barge")
    ap.add_argument("--dry-ms", type=float, default=0.0)
    ap.add_argument("--shift-ms", type=float, default=0.0)
    ap.add_argument("--assured-db", type=float, default=None, help="negative: none")
    ap.add_argument("--hangover-ms", type=float, default=None)
    ap.add_argument("--one-tap", action="store_true", help="the return loss from the one-tap gain")
    ap.add_argument("--no-unsettle", action="store_true")
    ap.add_argument("--unsettle-blocks", type=int, default=None)
    args = ap.parse_args(argv)
    _configure(args)
    clips = agent_speech(6, cache_dir=Path("/tmp/gateway-bench-bargein-voice"))
    agents = [_ulaw(resample(pcm, rate, RATE)) for pcm, rate, _ in clips]
    kinds = args.kinds.split(",")
    plans = [p for p in plan_calls(parse_bands(args.bands), args.utterances, [1000.0 * a.size / RATE for a in agents],
                                   seed=args.seed) if p.kind in kinds and p.band is not None]
    factory = VadFactory(args.vad, barge_in_min_speech_ms=96, batched=False)
    rows: dict = {}
    for i, plan in enumerate(plans):
        _tally(rows, plan, replay(plan, agents[plan.agent], factory, seed=i, dry_ms=args.dry_ms,
                                  shift_ms=args.shift_ms))
    for row in rows.values():
        lat = np.array(row.pop("lat") or [np.inf])
        fin = lat[np.isfinite(lat)]
        row.update(recall600=round(float(np.mean(lat <= 600)), 3),
                   onsetToPauseMs={"p50": round(float(np.percentile(fin, 50))) if fin.size else None,
                                   "p95": round(float(np.percentile(fin, 95))) if fin.size else None})
        print(json.dumps(row))


if __name__ == "__main__":
    main()
