"""The batched codec kernels against their per-call forms, for ``gateway bench media``.

CPU µs per call per 20 ms frame, at each call count, of

* G.711 μ-law decode: :func:`gateway.codecs.transcode.decode` per call vs one
  :func:`gateway.codecs.batch.decode_many` per tick;
* resampling (8 → 16 kHz, 8 → 24 kHz, 24 → 8 kHz): :meth:`Resampler.process` per call vs one
  :func:`gateway.codecs.batch.resample_many` per tick (each call keeps its own resampler).

Each call sends the recording from its own offset in 20 ms frames; every call has a frame in
every tick (the engine's steady state). The two forms run on twin streams in alternating
rounds and the best round of each is reported (the machine is shared); the batched outputs are
checked equal to the per-call ones first. ``time.process_time`` counts every thread, so a BLAS
library running the GEMM on several threads shows here as more CPU: the gateway should run with
``OPENBLAS_NUM_THREADS=1`` (the row's ``blas_threads`` says what the run had).

``python -m benchmarks.media_kernels [calls]`` prints the table alone.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.media_stages import FRAME_MS, Audio, load_audio
from gateway.codecs.batch import decode_many, resample_many
from gateway.codecs.resample import Resampler
from gateway.codecs.transcode import decode, encode
from gateway.formats import Encoding

__all__ = ["measure_kernels", "kernel_table", "KERNEL_CALLS", "KERNEL_PAIRS"]

KERNEL_CALLS = (1, 100, 400, 1000)
KERNEL_PAIRS = ((8000, 16000), (8000, 24000), (24000, 8000))


def _frames(audio: Audio, rate: int, calls: int, ticks: int) -> list[list[np.ndarray]]:
    """Per tick, every call's 20 ms frame of the recording (int16), each call from its offset."""
    src, n = audio.at(rate), rate * FRAME_MS // 1000
    span = ticks * n
    starts = [(i * 7919 * n) % max(1, src.size - span) for i in range(calls)]
    padded = np.resize(src, max(src.size, span))
    return [[padded[s + t * n : s + (t + 1) * n] for s in starts] for t in range(ticks)]


def _cpu_us(run: Callable[[], None], frames: int) -> float:
    """CPU time of one ``run``, in µs per frame."""
    c0 = time.process_time_ns()
    run()
    return (time.process_time_ns() - c0) / 1000 / frames


def _compare(per_call: Callable[[], None], batched: Callable[[], None], frames: int, rounds: int):
    """Best of ``rounds`` alternating runs of each form (both see the same machine), gc off."""
    us_single = us_batched = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            us_single = min(us_single, _cpu_us(per_call, frames))
            us_batched = min(us_batched, _cpu_us(batched, frames))
    finally:
        gc.enable()
    return us_single, us_batched


def _row(kernel: str, calls: int, per_call: float, batched: float) -> dict[str, Any]:
    return {"kernel": kernel, "calls": calls, "us_per_call": round(per_call, 2),
            "us_batched": round(batched, 2), "speedup": round(per_call / batched, 1) if batched else None,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}  # fmt: skip


def _decode_rows(audio: Audio, calls: int, ticks: int, rounds: int) -> dict[str, Any]:
    wire = [[encode(f, Encoding.PCMU) for f in tick] for tick in _frames(audio, 8000, calls, ticks)]
    for got, p in zip(decode_many(wire[0], Encoding.PCMU), wire[0]):
        assert np.array_equal(got, decode(p, Encoding.PCMU))

    def per_call() -> None:
        for tick in wire:
            for p in tick:
                decode(p, Encoding.PCMU)

    def batched() -> None:
        for tick in wire:
            decode_many(tick, Encoding.PCMU)

    return _row("decode pcmu", calls, *_compare(per_call, batched, calls * ticks, rounds))


def _resample_rows(audio: Audio, pair: tuple[int, int], calls: int, ticks: int, rounds: int) -> dict[str, Any]:
    a, b = pair
    frames = _frames(audio, a, calls, ticks)
    single = [Resampler(a, b) for _ in range(calls)]
    together = [Resampler(a, b) for _ in range(calls)]
    for got, r, x in zip(resample_many(together, frames[0]), single, frames[0]):  # warm, and check
        assert np.array_equal(got, r.process(x))

    def per_call() -> None:
        for tick in frames:
            for r, x in zip(single, tick):
                r.process(x)

    def batched() -> None:
        for tick in frames:
            resample_many(together, tick)

    return _row(f"resample {a // 1000}->{b // 1000}k", calls, *_compare(per_call, batched, calls * ticks, rounds))


def measure_kernels(
    calls: Sequence[int] = KERNEL_CALLS,
    *,
    pairs: Sequence[tuple[int, int]] = KERNEL_PAIRS,
    seconds: float = 0.4,
    rounds: int = 3,
    audio: Audio | None = None,
) -> list[dict[str, Any]]:
    """One row per kernel and call count: CPU µs per call per 20 ms frame, per call and batched.

    Args:
        calls: Simultaneous calls (frames per tick).
        pairs: Resampling rate pairs (Hz).
        seconds: Audio per call and round (20 ms ticks).
        rounds: Rounds per form; the best is kept.
        audio: The recording (loaded if not given).

    Returns:
        Rows ``{"kernel", "calls", "us_per_call", "us_batched", "speedup", "blas_threads"}``.
    """
    audio = audio or load_audio()
    ticks = max(1, int(round(seconds * 1000 / FRAME_MS)))
    rows = [_decode_rows(audio, n, ticks, rounds) for n in calls]
    rows += [_resample_rows(audio, pair, n, ticks, rounds) for pair in pairs for n in calls]
    return rows


def kernel_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (CPU µs per call per 20 ms frame)."""
    lines = ["Batched kernels, CPU µs per call per 20 ms frame (per call → batched per tick):", "",
             "| kernel | calls | per call | batched | × |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['calls']} | {r['us_per_call']:.2f} | {r['us_batched']:.2f} | "
                     f"{r['speedup']} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":  # python -m benchmarks.media_kernels [calls]
    args = sys.argv[1:]
    print(kernel_table(measure_kernels([int(x) for x in args[0].split(",")] if args else KERNEL_CALLS)))
