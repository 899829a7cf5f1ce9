"""The echo stage's cost per call per 20 ms frame, batched across calls, for ``gateway bench media``.

For ``calls`` simultaneous 8 kHz calls, each with its own :class:`~gateway.engine.echo.EchoStage`
(the estimator, the canceller and the double-talk gate), exactly what the sessions run per
frame: the agent frame that plays goes in as the reference (``reference``: what
:meth:`gateway.session.playout.Playout.pump` does per message), and the caller frame goes
through :func:`gateway.engine.echo.process_many` once per tick for every call of the tick (the
clock, the estimator, one :func:`~gateway.audio.aec.cancel_many` per round of pieces, the gate),
as the media engine's ``echo`` stage does. Frames arrive spread over each 20 ms, so with
10 ms ticks each tick holds half the calls.

Three rows per call count: ``talking`` (the agent speaks the whole time: every frame is near
agent audio, the canceller works on each one: the worst case), measured in the steady state
after :data:`STEADY_WARM_S` of warm-up (the echo path estimator has published its estimate, the
canceller has narrowed to its 60 ms filter and the estimator runs at its duty cycle), over
:data:`STEADY_S` (two of the estimator's duty periods, so its analysed blocks and return-loss
fits count in proportion, whatever the measured window's phase);
``first 2 s`` (the same from the call's first agent audio: the 260 ms filter and the estimator
on every block until the first estimate, ~1.9 s in: what each call's first agent turn costs
once); and ``silent`` (no agent audio: what every other frame of a call costs). The agent is a stretch of the shared recording from
each call's own offset; the caller leg is its echo (120 ms, 25 dB down) under line noise at
−55 dBFS through μ-law, so the canceller adapts as on a real line. Reported: CPU µs per call
per 20 ms frame (``time.process_time``), against :data:`ECHO_TARGET_US`.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Sequence

import numpy as np

from benchmarks.media_stages import FRAME_MS, Audio, load_audio
from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.engine.echo import EchoStage, process_many
from gateway.simulator.noise import LineNoise

__all__ = ["measure_echo", "run_echo", "echo_table", "ECHO_CALLS", "ECHO_TARGET_US", "STEADY_S", "STEADY_WARM_S"]

#: The issue's call counts for the echo row.
ECHO_CALLS = (1, 100, 400)
#: Target: CPU µs per call per 20 ms frame for the echo stage (issue 10).
ECHO_TARGET_US = 30.0
#: Warm-up before the steady-state ``talking`` rows, s of agent audio: past the echo path
#: estimator's first estimate (~1.9 s) on most calls.
STEADY_WARM_S = 3.0
#: The steady rows' measured span, s of agent audio: two of the echo path estimator's duty
#: periods (:data:`gateway.engine.echo.ESTIMATOR_DUTY` blocks of 624 ms at 8 kHz, 5 s), so the
#: blocks it analyses (and their return-loss fits) count in proportion, not by the window's phase.
STEADY_S = 10.0
_RATE = 8000
_FRAME = _RATE * FRAME_MS // 1000


def _legs(audio: Audio, calls: int, frames: int, talking: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each call's agent audio (int16, as it plays) and caller leg (its echo, noise, μ-law)."""
    base = audio.at(_RATE)
    n = frames * _FRAME
    agents, legs = [], []
    for i in range(calls):
        start = (i * 7919 * _RATE // 1000) % max(1, base.size - n)
        agent = base[start : start + n].astype(np.int16) if talking else np.zeros(n, np.int16)
        leg = LineNoise(_RATE, level_dbfs=-55.0, seed=i).next(n).astype(np.float64)
        d = min(int(0.120 * _RATE), n)
        leg[d:] += agent[: n - d] * 10 ** (-25 / 20)
        legs.append(ulaw_decode(ulaw_encode(np.clip(np.rint(leg), -32768, 32767).astype(np.int16))))
        agents.append(agent)
    return agents, legs


def measure_echo(calls: int, *, talking: bool = True, seconds: float = 2.0, tick_ms: float = 10.0,
                 audio: Audio | None = None, warm_s: float = 1.0) -> dict[str, Any]:
    """One row: ``calls`` calls' echo stages for ``seconds`` of audio, after ``warm_s`` of warm-up
    (the first estimator blocks and the canceller's adaptation are not the steady state).

    Args:
        calls: simultaneous calls.
        talking: the agent speaks the whole time (else: no agent audio at all).
        seconds: audio measured per call.
        tick_ms: the engine's tick (20 ms divided into ticks, frames spread over them).
        audio: the recording (loaded if not given).
        warm_s: audio run before the measurement (not counted).
    """
    audio = audio or load_audio()
    warm = int(round(warm_s * 1000 / FRAME_MS))
    frames = max(1, int(round(seconds * 1000 / FRAME_MS)))
    agents, legs = _legs(audio, calls, warm + frames, talking)
    stages = [EchoStage(_RATE) for _ in range(calls)]
    per_frame = max(1, int(round(FRAME_MS / tick_ms)))
    groups = [list(range(g, calls, per_frame)) for g in range(per_frame)]
    cpu = 0
    gc.collect()
    gc.disable()
    try:
        for f in range(warm + frames):
            s = slice(f * _FRAME, (f + 1) * _FRAME)
            for group in groups:
                arrival = (f + 1) * FRAME_MS
                t0 = time.process_time_ns()
                if talking:
                    for i in group:
                        stages[i].reference(agents[i][s], f * _FRAME)
                process_many([stages[i] for i in group], [legs[i][s] for i in group], [arrival] * len(group))
                if f >= warm:
                    cpu += time.process_time_ns() - t0
    finally:
        gc.enable()
    us = cpu / 1000 / (calls * frames)
    return {
        "calls": calls, "agent": ("first 2 s" if warm_s == 0 else "talking") if talking else "silent",
        "us_per_frame": round(us, 2),
        "target_us": ECHO_TARGET_US, "within_target": us <= ECHO_TARGET_US, "tick_ms": tick_ms,
        "seconds": frames * FRAME_MS / 1000, "cancelled_share": round(
            sum(st.cancelled_samples for st in stages) / (calls * (warm + frames) * _FRAME), 3),
        "estimates": sum(st.estimator.estimate is not None for st in stages),
    }  # fmt: skip


def run_echo(calls: Sequence[int] = ECHO_CALLS, *, seconds: float = 2.0, audio: Audio | None = None,
             steady_s: float = STEADY_S) -> list[dict]:
    """The rows: each call count with the agent talking (steady state, over ``steady_s``), in its
    first 2 s, then silent (over ``seconds``)."""
    audio = audio or load_audio()
    rows = [measure_echo(n, seconds=steady_s, audio=audio, warm_s=STEADY_WARM_S) for n in calls]
    rows += [measure_echo(n, seconds=min(2.0, seconds), audio=audio, warm_s=0.0) for n in calls]
    return rows + [measure_echo(n, talking=False, seconds=seconds, audio=audio, warm_s=min(1.0, seconds)) for n in calls]


def echo_table(rows: Sequence[dict[str, Any]]) -> str:
    """The echo rows as a Markdown table."""
    lines = ["| echo stage | calls | µs / call / 20 ms frame | target | cancelled share | estimates |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| agent {r['agent']} | {r['calls']} | {r['us_per_frame']:.1f} | ≤ {r['target_us']:.0f} | "
                     f"{r['cancelled_share']:.2f} | {r['estimates']}/{r['calls']} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    counts = [int(a) for a in sys.argv[1:]] or list(ECHO_CALLS)
    print(echo_table(run_echo(counts)))
