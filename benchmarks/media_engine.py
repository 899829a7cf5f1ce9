"""The per-tick media engine's inbound cost, per stage, beside the per-frame path, for ``gateway bench media``.

For ``calls`` simultaneous calls of one carrier, the caller's messages (the simulator's dialect,
the recording from each call's own offset, optional line noise) go through exactly what a
session on the engine runs: the carrier adapter parses each message (``parse``), the session
queues its payload on the call's :class:`~gateway.engine.Lane` (``queue``), and every
``tick_ms`` one :meth:`~gateway.engine.MediaEngine.run_tick` over every call with queued audio
does ``decode``, ``resample``, ``vad_plan`` (the pre-gate, chunking), ``vad_score`` (Silero in one
ONNX run per chunk round), ``vad_apply`` and ``deliver``; the session's side takes each result
(``take``). Frames arrive spread over each 20 ms, so with 10 ms ticks each tick holds half the
calls. The per-frame path (:func:`benchmarks.media_stages.measure`, the sessions' previous path:
per-call decode and resampling, Silero batched per 4 ms window) runs on the same calls and
recording in the same run, and the row gives the ratio.

Reported per row: CPU µs per call per 20 ms inbound frame, per stage and in all, CPU ms per
call-second (inbound only: the outbound path is unchanged and measured by the main rows), and
``ratio_vs_frame`` (per-frame µs / engine µs).
"""

from __future__ import annotations

import gc
import time
from typing import Any, Sequence

from benchmarks.media_stages import FRAME_MS, Audio, _Call, load_audio, measure
from gateway.audio.silero import SileroModel
from gateway.carriers import events as ev
from gateway.engine import MediaEngine
from gateway.engine.engine import STAGES
from gateway.vadrun import VadFactory

__all__ = ["measure_engine", "engine_table", "ENGINE_CALLS"]

ENGINE_CALLS = (1, 100, 400, 1000)


def measure_engine(calls: int, *, vad: str = "silero", carrier: str = "twilio", seconds: float = 3.0,
                   tick_ms: float = 10.0, audio: Audio | None = None, model: SileroModel | None = None,
                   pregate: str = "energy", noise_dbfs: float | None = -55.0, compare: bool = True) -> dict[str, Any]:
    """One row: ``calls`` calls for ``seconds`` of audio each through one engine (see the module).

    Args:
        calls: simultaneous calls.
        vad: ``silero`` or ``webrtc``.
        carrier: the carrier's messages and format.
        seconds: audio per call.
        tick_ms: the engine's tick (ms; 20 ms divided into ticks, frames spread over them).
        audio: the recording (loaded if not given).
        model: the shared Silero model (loaded if needed).
        pregate: the Silero pre-gate.
        noise_dbfs: line noise under the caller (dBFS RMS).
        compare: also run the per-frame path on the same calls (``ratio_vs_frame``).
    """
    audio = audio or load_audio()
    if vad == "silero" and model is None:
        model = SileroModel()
    frames = max(1, int(round(seconds * 1000 / FRAME_MS)))
    world = [_Call(carrier, vad, model, audio, i, frames, False, pregate, noise_dbfs) for i in range(calls)]
    factory = VadFactory(vad, batched=False, pregate=pregate)
    factory.model = model if vad == "silero" else None
    engine = MediaEngine(tick_ms, scheduled=False)
    lanes = [engine.attach(c.fmt, factory.create(VadFactory.rate_for(c.fmt.sample_rate)), c.fmt) for c in world]
    cpu, events = _drive(engine, lanes, world, frames, max(1, int(round(FRAME_MS / tick_ms))), carrier)
    n = calls * frames
    streams = [lane.vad.detector.scorer.stream for lane in lanes] if vad == "silero" else []
    gates = [lane.vad.pregate for lane in lanes if lane.vad.pregate is not None]
    seen = sum(g.chunks_seen for g in gates)
    stages = {**{k: cpu[k] / 1000 / n for k in ("parse", "queue")},
              **{k: engine.stage_ns[k] / 1000 / n for k in STAGES}, "take": cpu["take"] / 1000 / n}  # fmt: skip
    total = sum(stages.values())
    row = {
        "calls": calls, "carrier": carrier, "vad": f"{vad}@{world[0].vad_rate // 1000}k", "tick_ms": tick_ms,
        "us_per_in_frame": round(total, 2), "cpu_ms_per_call_second_in": round(total * 50 / 1000, 3),
        "stages_us": {k: round(v, 2) for k, v in stages.items()}, "ticks": engine.ticks,
        "lanes_per_tick": round(engine.lanes_ticked / max(engine.ticks, 1), 1), "vad_events": events,
        "seconds": frames * FRAME_MS / 1000, "noise_dbfs": noise_dbfs, "vad_pregate": pregate, "frames": n,
        "silero_chunks": sum(s.chunks_scored for s in streams),
        "vad_gate_skipped_share": round(sum(g.chunks_skipped for g in gates) / seen, 3) if seen else None,
    }  # fmt: skip
    if compare:
        old = measure(calls, vad, carrier=carrier, seconds=seconds, audio=audio, model=model, bridge=False,
                      pregate=pregate, noise_dbfs=noise_dbfs)  # fmt: skip
        row["frame_us_per_in_frame"] = old["us_per_in_frame"]
        row["ratio_vs_frame"] = round(old["us_per_in_frame"] / total, 2) if total else None
    return row


def _drive(engine: MediaEngine, lanes: list, world: list[_Call], frames: int, per_frame: int,
           carrier: str) -> tuple[dict[str, int], int]:
    """Every call's messages through the engine, ``per_frame`` ticks per 20 ms (each tick holds the
    calls whose frames fell in it); CPU ns of the session-side stages, and the VAD events."""
    calls = len(world)
    groups = [list(range(g, calls, per_frame)) for g in range(per_frame)]
    cpu = {"parse": 0, "queue": 0, "take": 0}
    events = 0
    gc.collect()
    gc.disable()
    try:
        for f in range(frames):
            for group in groups:
                t0 = time.process_time_ns()
                payloads = []
                for i in group:
                    media = world[i].adapter.receive(world[i].inbound[f])[0]
                    if type(media) is not ev.Media:
                        raise RuntimeError(f"{carrier}: expected Media, got {media}")
                    payloads.append(media.payload)
                t1 = time.process_time_ns()
                for i, p in zip(group, payloads):
                    lanes[i].submit(p, f * FRAME_MS, False)
                t2 = time.process_time_ns()
                engine.run_tick()
                t3 = time.process_time_ns()
                for i in group:
                    for r in lanes[i]._outbox:
                        events += len(r.vad)
                    lanes[i]._outbox.clear()
                cpu["parse"] += t1 - t0
                cpu["queue"] += t2 - t1
                cpu["take"] += time.process_time_ns() - t3
    finally:
        gc.enable()
    return cpu, events


def run_engine(calls: Sequence[int] = ENGINE_CALLS, *, seconds: float = 2.0, carriers: Sequence[str] = ("twilio",),
               audio: Audio | None = None, model: SileroModel | None = None) -> list[dict[str, Any]]:
    """Rows for each carrier × call count (Silero, the default pre-gate, line noise at −55 dBFS)."""
    audio = audio or load_audio()
    model = model or SileroModel()
    return [measure_engine(n, carrier=c, seconds=seconds, audio=audio, model=model) for c in carriers for n in calls]


def engine_table(rows: Sequence[dict[str, Any]]) -> str:
    """The engine rows as a Markdown table (CPU µs per call per 20 ms inbound frame)."""
    names = ("parse", "queue", *STAGES, "take")
    lines = ["| carrier | calls | VAD | " + " | ".join(names) + " | µs / in frame | per-frame path µs | ratio |",
             "|---|---:|---|" + "---:|" * (len(names) + 3)]  # fmt: skip
    for r in rows:
        cells = " | ".join(f"{r['stages_us'][k]:.2f}" for k in names)
        lines.append(f"| {r['carrier']} | {r['calls']} | {r['vad']} | {cells} | {r['us_per_in_frame']:.1f} | "
                     f"{r.get('frame_us_per_in_frame', '—')} | {r.get('ratio_vs_frame', '—')} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    counts = [int(a) for a in sys.argv[1:]] or list(ENGINE_CALLS)
    print(engine_table(run_engine(counts)))
