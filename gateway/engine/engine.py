"""The per-tick media engine: one synchronous pass over every call with pending caller audio.

Sessions queue each inbound frame on their :class:`~gateway.engine.lane.Lane` without awaiting
anything. Every ``tick_ms`` (a setting, 10 ms by default) the engine takes every lane's queued
bytes and, in one synchronous pass on the event loop's thread:

1. decodes G.711 μ-law / A-law and L16 for all lanes of one encoding in one table lookup
   (:func:`gateway.codecs.batch.decode_many`);
2. converts to the VAD's rate and to the model's rate where they differ (one matrix product per
   group of lanes with the same rate pair, chunk length and filter phase:
   :func:`gateway.codecs.batch.resample_many`; state stays per lane);
2b. puts each call's decoded audio on its echo stage's sample clock
   (:func:`gateway.engine.echo.echo_many`: the echo path estimate; see :mod:`gateway.engine.echo`);
3. runs the VAD: each lane's pre-gate plans its chunks, then every waiting Silero chunk of every
   lane is scored in one ONNX run per chunk round (:func:`gateway.audio.silero.score_blocks`);
   WebRTC VAD lanes are scored per lane (it is cheap and stateless);
4. hands each lane's decoded PCM to its session's listener (answering-machine detection);
5. delivers each lane one :class:`~gateway.engine.lane.TickResult`.

A failure while scoring a tick never fails its calls: the lanes of a failed batched Silero run
are scored one by one, and a lane whose own run fails is scored by the cheap VAD (WebRTC VAD)
for that chunk; both are counted (:attr:`MediaEngine.fallback_ticks`, each lane's
``fallback_ticks``). An error in one lane's own work (a bug) is delivered to that
lane's session alone. The engine holds no call state beyond the lanes' buffers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from gateway.audio.pregate import chunk_energy, power_dbfs_of
from gateway.audio.silero import score_blocks
from gateway.audio.vad import SileroScorer
from gateway.codecs.batch import decode_many, resample_many
from gateway.engine.echo import EchoStage, echo_many
from gateway.engine.lane import Hear, Lane, TickResult
from gateway.formats import AudioFormat
from gateway.vadrun import ChunkPlan, _Runner

__all__ = ["MediaEngine", "STAGES"]

#: The pass's stages, as timed in :attr:`MediaEngine.stage_ns` (CPU ns, summed over ticks).
STAGES = ("decode", "resample", "echo", "vad_plan", "vad_score", "vad_apply", "hear", "deliver")

log = logging.getLogger("gateway.engine")

_EMPTY = np.zeros(0, np.float32)
_NO_PCM = np.zeros(0, np.int16)


class MediaEngine:
    """Ticks every attached call's caller audio through decode, resampling, VAD and listeners.

    Args:
        tick_ms: how often the pass runs while any lane has queued audio (ms, 5–40). A frame
            waits at most this long before its VAD decision.
        scheduled: run the pass on the event loop every ``tick_ms``; ``False``: only when
            :meth:`run_tick` is called (tests, benchmarks).

    Raises:
        ValueError: ``tick_ms`` out of range.

    Attributes:
        ticks: passes run. ``lanes_ticked``: lane results made. ``fallback_ticks``: batched
        Silero runs that failed (each of their lanes was then scored alone, and by the cheap VAD
        if that failed too). ``busy_s``: time spent in passes
        (s, wall clock on the loop's thread). ``stage_ns``: CPU ns per stage (:data:`STAGES`).
    """

    def __init__(self, tick_ms: float = 10.0, *, scheduled: bool = True) -> None:
        if not 5.0 <= tick_ms <= 40.0:
            raise ValueError(f"tick_ms must be within 5–40 ms, not {tick_ms!r}")
        self.tick_ms = tick_ms
        self.scheduled = scheduled
        self._lanes: set[Lane] = set()
        self._pending: dict[Lane, None] = {}  # lanes with queued audio, in order of arrival
        self._handle: asyncio.TimerHandle | None = None
        self.ticks = 0
        self.lanes_ticked = 0
        self.fallback_ticks = 0
        self.busy_s = 0.0
        self.stage_ns = dict.fromkeys(STAGES, 0)

    @property
    def lanes(self) -> int:
        """Calls attached now."""
        return len(self._lanes)

    def attach(self, fmt: AudioFormat, vad: _Runner, model_format: AudioFormat, hear: Hear | None = None,
               echo: EchoStage | None = None) -> Lane:
        """A new lane for one call (see :class:`~gateway.engine.lane.Lane` for the arguments)."""
        lane = Lane(self, fmt, vad, model_format, hear, echo)
        self._lanes.add(lane)
        return lane

    def _detach(self, lane: Lane) -> None:
        self._lanes.discard(lane)
        self._pending.pop(lane, None)

    def _wake(self, lane: Lane) -> None:
        """``lane`` has its first queued frame: make sure a tick is scheduled."""
        self._pending[lane] = None
        if self._handle is None and self.scheduled:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time() + self.tick_ms / 1000.0, self._on_tick)

    def _on_tick(self) -> None:
        self._handle = None
        lanes = [lane for lane in self._pending if lane in self._lanes]
        self._pending.clear()
        try:
            self.run_tick(lanes)
        except Exception:  # noqa: BLE001 - the tick must never stop: log, the lanes got errors
            log.exception("media engine tick failed")

    # ------------------------------------------------------------------ the pass
    def run_tick(self, lanes: Sequence[Lane] | None = None) -> None:
        """Run one pass now over ``lanes`` (default: every lane with queued audio). Synchronous.

        Each stage's CPU time is added to :attr:`stage_ns` (``decode``, ``resample``, ``echo``,
        ``vad_plan``, ``vad_score``, ``vad_apply``, ``hear``, ``deliver``).
        """
        if lanes is None:
            lanes = list(self._pending)
            self._pending.clear()
        else:
            for lane in lanes:
                self._pending.pop(lane, None)
        lanes = [lane for lane in lanes if lane.queued_bytes]
        if not lanes:
            return
        start, ns = time.perf_counter(), self.stage_ns
        self.ticks += 1
        t0 = _cpu()
        datas = [lane.take() for lane in lanes]
        results, work = _placed(lanes, _decode(lanes, datas))
        pcms = [r.pcm for r in results]
        t1 = _cpu()
        vad_pcms = _resampled(lanes, pcms, work, results, "to_vad", Lane.align_vad, pcms)
        model_pcms = _resampled(lanes, pcms, work, results, "to_model", Lane.align_model, [None] * len(lanes))

        def model_audio(i: int) -> None:
            results[i].model_audio = lanes[i].model_bytes(datas[i], vad_pcms[i], model_pcms[i])

        _each(work, results, model_audio)
        t2 = _cpu()
        echo_many(lanes, pcms, vad_pcms, work, results)
        t2e = _cpu()
        ns["decode"] += t1 - t0
        ns["resample"] += t2 - t1
        ns["echo"] += t2e - t2
        self._vad(lanes, vad_pcms, work, results)
        t3 = _cpu()

        def hear(i: int) -> None:
            results[i].actions = lanes[i].hear(pcms[i], results[i].at_ms)

        _each([i for i in work if lanes[i].hear is not None], results, hear)
        t4 = _cpu()
        for lane, result in zip(lanes, results):
            lane.deliver(result)
        ns["hear"] += t4 - t3
        ns["deliver"] += _cpu() - t4
        self.lanes_ticked += len(lanes)
        self.busy_s += time.perf_counter() - start

    def _vad(self, lanes: Sequence[Lane], pcms: list, work: list[int], results: list) -> None:
        """Every lane's VAD, chunk round by chunk round: round ``k`` plans chunk ``k`` of every
        lane that has one, scores all of that round's Silero blocks together, then applies."""
        chunks: dict[int, np.ndarray] = {}
        plans: dict[int, ChunkPlan] = {}
        scores: dict[int, np.ndarray] = {}
        k = 0

        def take(i: int) -> None:
            lanes[i].apply_barge_mode()
            chunks[i] = lanes[i].vad.take(pcms[i])

        def plan(i: int) -> None:
            plans[i] = lanes[i].vad.plan(chunks[i][k], powers.get(i))

        def apply(i: int) -> None:
            results[i].vad += lanes[i].vad.apply(plans[i], scores.get(i, _EMPTY))

        ns = self.stage_ns
        powers: dict[int, float] = {}
        t0 = _cpu()
        _each(work, results, take)
        ns["vad_plan"] += _cpu() - t0
        for k in range(max((len(c) for c in chunks.values()), default=0)):  # noqa: B007 - plan() reads k
            t0 = _cpu()
            plans.clear()
            now = [i for i, c in chunks.items() if len(c) > k]
            powers = _powers(lanes, chunks, now, k)
            _each(now, results, plan)
            t1 = _cpu()
            scores = self._score_round(lanes, plans, results)
            t2 = _cpu()
            _each(list(plans), results, apply)
            ns["vad_plan"] += t1 - t0
            ns["vad_score"] += t2 - t1
            ns["vad_apply"] += _cpu() - t2
        work[:] = [i for i in work if results[i].error is None]

    def _score_round(self, lanes: Sequence[Lane], plans: dict, results: list) -> dict[int, np.ndarray]:
        """One round's scores: Silero blocks in one batched run (the cheap VAD if it fails),
        the other scorers per lane."""
        scores: dict[int, np.ndarray] = {}
        silero = []
        for i, plan in plans.items():
            if plan.scored and isinstance(lanes[i].vad.detector.scorer, SileroScorer):
                silero.append(i)
        batched = set(silero)
        _each([i for i, p in plans.items() if p.scored and i not in batched], results,
              lambda i: scores.__setitem__(i, lanes[i].vad.score_now(plans[i].block)))
        if not silero:
            return scores
        try:
            blocks = score_blocks([lanes[i].vad.detector.scorer.stream for i in silero],
                                  [plans[i].block for i in silero])  # fmt: skip
            scores.update(zip(silero, blocks))
        except Exception:  # noqa: BLE001 - nothing was updated: find the calls it fails for
            log.warning("Silero run failed for %d calls; retried call by call", len(silero), exc_info=True)
            self.fallback_ticks += 1
            _each(silero, results, lambda i: scores.__setitem__(i, self._score_alone(lanes[i], plans[i], results[i])))
        return scores

    @staticmethod
    def _score_alone(lane: Lane, plan: ChunkPlan, result: TickResult) -> np.ndarray:
        """One lane's Silero block on its own; if that fails too, the cheap VAD (counted)."""
        try:
            return score_blocks([lane.vad.detector.scorer.stream], [plan.block])[0]
        except Exception:  # noqa: BLE001 - the call goes on, scored by WebRTC VAD this time
            lane.fallback_ticks += 1
            result.fallback = True
            return lane.vad.fallback_scores(plan.block)

    def close(self) -> None:
        """Stop ticking (lanes still attached get no more results)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._pending.clear()


def _decode(lanes: Sequence[Lane], datas: Sequence[bytes]) -> list[np.ndarray | BaseException]:
    """Every lane's bytes as int16 PCM: one lookup per encoding present (lane by lane if that
    raises; a lane whose own bytes cannot be decoded gets the exception instead)."""
    out: list = [None] * len(lanes)
    by_encoding: dict = {}
    for i, lane in enumerate(lanes):
        by_encoding.setdefault(lane.fmt.encoding, []).append(i)
    for encoding, idx in by_encoding.items():
        try:
            for i, pcm in zip(idx, decode_many([datas[i] for i in idx], encoding)):
                out[i] = pcm
        except Exception:  # noqa: BLE001 - find the lane at fault, the others go on
            for i in idx:
                try:
                    out[i] = decode_many([datas[i]], encoding)[0]
                except Exception as exc:  # noqa: BLE001
                    out[i] = exc
    return out


def _powers(lanes: Sequence[Lane], chunks: dict[int, np.ndarray], now: list[int], k: int) -> dict[int, float]:
    """Chunk ``k``'s power (dBFS) of every lane whose pre-gate is the energy detector: one
    :func:`~gateway.audio.pregate.chunk_energy` per chunk size for all of them, then the same
    scalar formula as a lone call's pre-gate (so the decisions are the same). Empty if that
    fails (each pre-gate then computes its own)."""
    by_size: dict[int, list[int]] = {}
    for i in now:
        gate = lanes[i].vad.pregate
        if gate is not None and gate.mode == "energy":
            by_size.setdefault(chunks[i].shape[1], []).append(i)
    out: dict[int, float] = {}
    try:
        for n, idx in by_size.items():
            energy = chunk_energy(np.stack([chunks[i][k] for i in idx])).tolist()
            out.update((i, power_dbfs_of(e, n)) for i, e in zip(idx, energy))
    except Exception:  # noqa: BLE001 - an optimisation only
        log.exception("batched chunk powers failed")
        return {}
    return out


def _cpu() -> int:
    return time.process_time_ns()


def _each(indices: Iterable[int], results: list, work: Callable[[int], object]) -> None:
    """``work(i)`` for each index whose lane has no error yet; an exception it raises (a bug in
    that lane's own work) becomes that lane's error, and the others go on."""
    for i in list(indices):
        if results[i].error is None:
            try:
                work(i)
            except Exception as exc:  # noqa: BLE001 - one lane's bug is that lane's error
                results[i].error = exc


def _placed(lanes: Sequence[Lane], pcms: list) -> tuple[list[TickResult], list[int]]:
    """A result per lane, its audio placed on the call's timeline; the lanes to work on (not
    those whose bytes could not be decoded: their result carries the error)."""
    results, work = [], []
    for i, (lane, pcm) in enumerate(zip(lanes, pcms)):
        if isinstance(pcm, BaseException):
            results.append(TickResult(lane._last_ms, _NO_PCM, 0, b"", error=pcm))
            continue
        start_sample, at_ms = lane.place(pcm.size)
        results.append(TickResult(at_ms, pcm, start_sample, b""))
        work.append(i)
    return results, work


def _resampled(lanes: Sequence[Lane], pcms: list[np.ndarray], work: list[int], results: list, stage: str, align,
               default: list) -> list:
    """Every working lane's PCM through its ``stage`` resampler (``to_vad`` or ``to_model``), time-
    aligned; lanes without that stage keep ``default[i]``. One batched product per matching group
    (:func:`~gateway.codecs.batch.resample_many`); if that raises (a bug), those lanes get the error."""
    out = list(default)
    need = [i for i in work if getattr(lanes[i], stage) is not None and results[i].error is None]
    if not need:
        return out
    try:
        converted = resample_many([getattr(lanes[i], stage) for i in need], [pcms[i] for i in need])
    except Exception as exc:  # noqa: BLE001 - a bug: some streams may have advanced, so those
        log.exception("batched resampling failed")  # calls' audio is no longer right: they end
        for i in need:
            results[i].error = exc
        return out
    for j, i in enumerate(need):
        out[i] = align(lanes[i], converted[j])
    return out
