"""Running each call's voice detector: directly, or batched across calls.

:class:`VoiceDetector` (in :mod:`gateway.audio.vad`) is pure. This module is the thin async
layer the session awaits. With Silero, a :class:`SileroBatcher` gathers every call's pending
32 ms chunks and scores them in one ONNX run per tick: the first chunk to arrive opens a tick,
which closes after ``max_wait_ms`` (or at once when ``max_batch`` calls are waiting), so no
call's decision is delayed by more than one tick. WebRTC VAD is cheap and stateless per frame,
so it runs directly.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import webrtcvad

from gateway.audio.pregate import PREGATE_MODES, PreGate
from gateway.audio.silero import SileroModel, score_blocks
from gateway.audio.vad import (
    SileroScorer, SpeechEnd, SpeechStart, VadGate, VadState, VoiceDetector, WebRtcScorer,
)

__all__ = [
    "VadStart", "VadEnd", "VadCue", "CUE_CHUNKS", "CUE_QUIET_CHUNKS", "VadRunner", "ChunkPlan", "DirectVad", "BatchedVad", "SileroBatcher", "VadFactory", "PREGATE_HOLD",
    "VadVoicing",
]


@dataclass(frozen=True, slots=True)
class VadStart:
    """Caller speech confirmed; it began ``confirm_delay_ms`` before this event (onset)."""

    onset_sample: int
    confirm_delay_ms: float


@dataclass(frozen=True, slots=True)
class VadCue:
    """A likely onset of caller speech over agent audio, before the VAD confirmed any: a
    pause-then-commit barge-in may pause on it (never commit: that takes the VAD's voiced
    time). It began ``confirm_delay_ms`` before this event (onset), as :class:`VadStart`.

    Why: Silero scores voiced speech; an unvoiced onset ("s", "f", "sh", "h" of "seven",
    "five", "sure", "hold on") scores low until the vowel, 100–200 ms later, on a phone line's
    band. WebRTC VAD, a band-energy model, hears it at once. See :attr:`_Runner.cues`.
    """

    onset_sample: int
    confirm_delay_ms: float


@dataclass(frozen=True, slots=True)
class VadEnd:
    """Caller speech ended (after ``min_silence_ms`` of silence)."""

    offset_sample: int


@dataclass(frozen=True, slots=True)
class VadVoicing:
    """How far the caller's voice reaches, on the VAD's timeline (samples at ``sample_rate``
    since the first sample fed, as :class:`VadStart`'s ``onset_sample``): the end of the last
    chunk the gate heard as speech (STARTING or SPEAKING after it; 0: none yet), and the end of
    the last chunk scored. Pause-then-commit barge-in decides on it
    (:mod:`gateway.session.bargein`)."""

    voiced_to: int
    scored_to: int
    sample_rate: int
    #: The latest voiced runs ``(start, end)`` (samples, oldest first; at most
    #: :data:`VOICED_RUNS_KEPT`): a gap between two of them that closed before this was read
    #: is still seen, however coarsely the session reads it (a tick result may carry seconds).
    runs: tuple[tuple[int, int], ...] = ()


class VadRunner(Protocol):
    """One call's VAD as the session sees it: int16 PCM at ``sample_rate`` in, events out.

    Optional: ``voicing() -> VadVoicing`` (:class:`_Runner` has it); a runner without it gives
    pause-then-commit barge-in no voiced time (see :mod:`gateway.session.bargein`).
    """

    sample_rate: int

    async def process(self, pcm: np.ndarray) -> list[VadStart | VadEnd]: ...

    def agent_speaking(self, speaking: bool) -> None:
        """Use the shorter barge-in confirmation while agent audio plays (or stop using it)."""
        ...


def _convert(events, fed: int, rate: int) -> list[VadStart | VadEnd]:
    out: list[VadStart | VadEnd] = []
    for e in events:
        if isinstance(e, SpeechStart):
            out.append(VadStart(e.sample, (fed - e.sample) * 1000.0 / rate))
        elif isinstance(e, SpeechEnd):
            out.append(VadEnd(e.sample))
    return out


_NONE = np.zeros(0, np.float32)

#: Detector states in which the pre-gate is held open: a turn starting or under way. Not while
#: STOPPING (the silence that may end a turn): there the gate's own hangover covers the word's
#: end, and a chunk it skips scores 0 as the silence it is. Measured (``tests/test_pregate.py``,
#: 3 warm-up chunks): 99.32–99.75 % of chunks agree with ungated Silero, 23.7–32.4 % of Silero's
#: work saved; held open until QUIET instead (8 warm-up chunks): 99.50–99.84 %, 14.2–19.1 % saved.
PREGATE_HOLD = frozenset({VadState.STARTING, VadState.SPEAKING})
#: Detector states after a chunk in which that chunk counts as voiced (:class:`VadVoicing`).
_VOICED = frozenset({VadState.STARTING, VadState.SPEAKING})
#: Voiced runs a runner keeps for :attr:`VadVoicing.runs` (bounded per-call state).
VOICED_RUNS_KEPT = 16
#: Consecutive chunks (32 ms each with Silero: 64 ms) that WebRTC VAD (aggressiveness 3)
#: hears as speech, each passing the double-talk rule, that make a :class:`VadCue`: longer
#: than a click, shorter than the VAD's barge-in confirmation (96 ms) plus its lag on an
#: unvoiced onset.
CUE_CHUNKS = 2
#: Chunks with no cue (and the VAD quiet) after which another :class:`VadCue` may come.
CUE_QUIET_CHUNKS = 8
#: Detector states in which a chunk may be a cue chunk: no speech confirmed yet.
_UNCONFIRMED = frozenset({VadState.QUIET, VadState.STARTING})
#: Chunks a new cue detector hears before its verdicts count (its noise model adapts).
_CUE_WARM_UP = 3
#: WebRTC VAD's most aggressive mode (fewest non-speech frames called speech) for cues.
_CUE_MODE = 3


@dataclass(frozen=True, slots=True)
class ScoreJob:
    """What one call's scorer must score of the chunks :meth:`_Runner.begin` took.

    Attributes:
        chunks: whole chunks taken (``k``).
        keep: indices of the chunks the pre-gate lets through (``None``: all of them).
        warm: warm-up chunks at the start of ``block`` whose scores are dropped.
        block: int16 ``[warm + len(keep), n]`` to score, in order.
    """

    chunks: int
    keep: np.ndarray | None
    warm: int
    block: np.ndarray


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """What the scorer must score for one chunk (:meth:`_Runner.plan`).

    Attributes:
        block: int16 ``[w + 1, n]`` to score in order (the pre-gate's ``w`` warm-up chunks,
            scores dropped, then the chunk), or ``[0, n]`` when the pre-gate skips the chunk
            (it scores 0).
    """

    block: np.ndarray

    @property
    def scored(self) -> bool:
        return len(self.block) > 0


class _Runner:
    """Shared by both runners: sample count, the two confirmation times, the Silero pre-gate.

    Chunk by chunk (:meth:`take`, :meth:`plan`, score, :meth:`apply`), so that the decisions
    never depend on how the audio arrived (frames, ticks, batches). The pre-gate (Silero only,
    :class:`~gateway.audio.pregate.PreGate`): each chunk is planned first; chunks it skips score 0 and never reach Silero (or the batcher), and
    any warm-up chunks it returns are scored first with their scores dropped. The gate is
    held open while a turn is starting or under way (:data:`PREGATE_HOLD`), so speech, once
    begun, is scored as without the gate; chunks of silence between and after turns are skipped.

    ``echo_gate`` (set by the call's :class:`~gateway.engine.echo.EchoStage`, which also hands
    this runner the echo canceller's residual instead of the raw caller leg while agent audio
    is near): the double-talk rule, asked ``echo_gate(start, stop)`` about each chunk whose
    score would count as speech (at least the gate's ``neg_threshold``), ``start``/``stop``
    being the chunk's span in samples fed to this runner; a chunk it refuses scores 0. The
    span is counted in samples, so this too never depends on how the audio arrived.
    """

    def __init__(self, detector: VoiceDetector, *, barge_in_min_speech_ms: float | None = None,
                 pregate: PreGate | None = None) -> None:
        self.detector = detector
        self.sample_rate = detector.sample_rate
        self._fed = 0
        gate = detector.gate
        self._turn_min = gate.min_speech_samples
        self._barge_min = (
            self._turn_min if barge_in_min_speech_ms is None
            else int(round(barge_in_min_speech_ms * self.sample_rate / 1000))
        )
        self.pregate = pregate
        self.chunks_skipped = 0
        self._fallback: webrtcvad.Vad | None = None
        self.echo_gate: Callable[[int, int], bool] | None = None
        #: The stricter rule a barge-in cue's chunk must pass (set with ``echo_gate``; no cues without it).
        self.cue_gate: Callable[[int, int], bool] | None = None
        self.voiced_to = 0  # end of the last voiced chunk (samples; see voicing)
        self._runs: deque[tuple[int, int]] = deque(maxlen=VOICED_RUNS_KEPT)
        self._voicing: VadVoicing | None = None  # voicing() of the last chunk applied, once asked
        #: Make :class:`VadCue` events while agent audio plays (the session sets it for
        #: pause-then-commit barge-in); only a Silero detector makes them (WebRTC VAD is the
        #: cue detector itself, and as fast).
        self.cues = False
        self._speaking = False  # agent audio plays (agent_speaking)
        self._cue_vad: webrtcvad.Vad | None = None
        self._cue_warm = 0  # its first verdicts, not counted (see _CUE_WARM_UP)
        self._cue_run = 0  # consecutive cue chunks
        self._cue_onset = 0  # where that run began (samples)
        self._cue_quiet = CUE_QUIET_CHUNKS  # chunks since the last cue chunk (re-arms at the limit)

    def agent_speaking(self, speaking: bool) -> None:
        self.detector.gate.min_speech_samples = self._barge_min if speaking else self._turn_min
        self._speaking = speaking

    async def _score(self, chunks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score_now(self, chunks: np.ndarray) -> np.ndarray:
        """Score ``chunks`` (int16 ``[k, n]``) with this call's own scorer, synchronously."""
        score = self.detector.scorer.score
        return np.array([score(c) for c in chunks], np.float32)

    def take(self, pcm: np.ndarray) -> np.ndarray:
        """Feed int16 PCM ``[n]`` at :attr:`sample_rate`; the whole chunks it completes
        (int16 ``[k, n]``), each to :meth:`plan`, score and :meth:`apply` in order."""
        self._fed += pcm.size
        det = self.detector
        det.feed(pcm)
        return det.take_chunks()

    def plan(self, chunk: np.ndarray, power_dbfs: float | None = None) -> ChunkPlan:
        """The next taken chunk's :class:`ChunkPlan`: the pre-gate decides it with the
        detector's state after every earlier chunk, so decisions never depend on how the
        audio was split into frames or ticks. ``power_dbfs``: the chunk's power if already
        computed (one :func:`~gateway.audio.pregate.chunk_energy` for many calls, then
        :func:`~gateway.audio.pregate.power_dbfs_of`)."""
        one = chunk[None]
        if self.pregate is None:
            return ChunkPlan(one)
        scored, warm = self.pregate.plan_one(chunk, hold=self.detector.state in PREGATE_HOLD, power_dbfs=power_dbfs)
        if not scored:
            self.chunks_skipped += 1
            return ChunkPlan(one[:0])
        return ChunkPlan(one if warm is None else np.concatenate((warm, one)))

    def apply(self, plan: ChunkPlan, scores: np.ndarray) -> list[VadStart | VadEnd]:
        """Apply ``plan``'s scores (float ``[len(plan.block)]``; the last is the chunk's);
        the events, relative to the samples fed so far (:class:`VadStart`'s
        ``confirm_delay_ms`` counts to the end of the last PCM given to :meth:`take`)."""
        det = self.detector
        score = float(scores[-1]) if len(plan.block) else 0.0
        gate = self.echo_gate
        start = det.gate.position
        allowed: bool | None = None
        if gate is not None and score >= det.gate.neg_threshold:  # the double-talk rule on its span
            allowed = gate(start, start + det.frame_samples)
            if not allowed:
                score = 0.0
        cue = self._cue(plan, start, score, allowed) if self.cues and self._speaking else None
        event = det.apply_score(score)
        self._voicing = None
        if det.state in _VOICED:
            end = det.gate.position
            runs = self._runs
            if runs and runs[-1][1] >= end - det.frame_samples:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((end - det.frame_samples, end))
            self.voiced_to = end
        out = [] if event is None else _convert((event,), self._fed, self.sample_rate)
        if cue is not None:
            out.insert(0, VadCue(cue, (self._fed - cue) * 1000.0 / self.sample_rate))
        return out

    def _cue(self, plan: ChunkPlan, start: int, score: float, allowed: bool | None) -> int | None:
        """The onset (samples) of a :class:`VadCue` this chunk completes, if any. Only with the
        call's echo stage's cue rule (``cue_gate``: the double-talk rule, and above the line's
        noise floor even where no agent audio is predicted): it is what tells speech from the
        floor and the agent's echo. The chunk
        (``plan``'s last, starting at ``start``) is a cue chunk when the detector has not
        confirmed speech, the double-talk rule did not refuse it (``allowed``), either Silero
        scored it at its threshold or WebRTC VAD calls its first 30 ms speech, and the cue rule
        lets it count; :data:`CUE_CHUNKS` in a row make a cue, then none until
        :data:`CUE_QUIET_CHUNKS` chunks without one."""
        det, gate = self.detector, self.cue_gate
        heard = False
        if (gate is not None and len(plan.block) and det.state in _UNCONFIRMED
                and isinstance(det.scorer, SileroScorer) and allowed is not False):
            heard = score >= det.gate.threshold
            if not heard:
                if self._cue_vad is None:
                    self._cue_vad, self._cue_warm = webrtcvad.Vad(_CUE_MODE), _CUE_WARM_UP
                pcm = plan.block[-1][: self.sample_rate * 30 // 1000]
                heard = self._cue_vad.is_speech(pcm.astype("<i2", copy=False).tobytes(), self.sample_rate)
                if self._cue_warm:  # its noise model starts from nothing: the first verdicts are not heard
                    self._cue_warm -= 1
                    heard = False
            heard = heard and gate(start, start + det.frame_samples)
        if not heard:
            self._cue_run = 0
            self._cue_quiet += 1
            return None
        if self._cue_run == 0:
            self._cue_onset = start
        self._cue_run += 1
        armed = self._cue_quiet >= CUE_QUIET_CHUNKS
        if self._cue_run < CUE_CHUNKS or not armed:
            return None
        self._cue_quiet = 0
        return self._cue_onset

    def voicing(self) -> VadVoicing:
        """How far the caller's voice reaches now (:class:`VadVoicing`; made once per chunk
        applied, however many ticks ask)."""
        if self._voicing is None:
            self._voicing = VadVoicing(self.voiced_to, self.detector.gate.position, self.sample_rate,
                                       tuple(self._runs))  # fmt: skip
        return self._voicing

    def fallback_scores(self, block: np.ndarray) -> np.ndarray:
        """Cheap scores (1 or 0 per chunk of int16 ``[k, n]``) when the scorer failed: WebRTC
        VAD (aggressiveness 2) on each chunk's first 30 ms; the scorer's state is not touched."""
        if self._fallback is None:
            self._fallback = webrtcvad.Vad(2)
        n = self.sample_rate * 30 // 1000
        rate, vad = self.sample_rate, self._fallback
        return np.array([float(vad.is_speech(c[:n].astype("<i2", copy=False).tobytes(), rate)) for c in block],
                        np.float32)

    async def process(self, pcm: np.ndarray) -> list[VadStart | VadEnd]:
        events: list[VadStart | VadEnd] = []
        for chunk in self.take(pcm):
            plan = self.plan(chunk)
            events += self.apply(plan, await self._score(plan.block) if plan.scored else _NONE)
        return events


class DirectVad(_Runner):
    """Scores each frame as it arrives (WebRTC VAD, or Silero for a single call)."""

    async def _score(self, chunks: np.ndarray) -> np.ndarray:
        return self.score_now(chunks)


class SileroBatcher:
    """Scores many calls' Silero chunks in one ONNX run per tick (one per event loop).

    Args:
        model: the shared Silero model.
        max_wait_ms: longest a chunk waits for others before its tick runs (ms).
        max_batch: run at once when this many calls are waiting.
    """

    def __init__(self, model: SileroModel, *, max_wait_ms: float = 4.0, max_batch: int = 256) -> None:
        self.model = model
        self.max_wait_ms = max_wait_ms
        self.max_batch = max_batch
        self._detectors: list[VoiceDetector] = []
        self._chunks: list[np.ndarray] = []
        self._tick: asyncio.Future | None = None  # one future and one timer per tick, not per call
        self._timer: asyncio.TimerHandle | None = None
        self.runs = 0
        self.chunks_scored = 0

    async def score(self, detector: VoiceDetector, chunks: np.ndarray) -> np.ndarray:
        """Probabilities for ``chunks`` (int16 ``[k, n]``) of ``detector``'s Silero stream."""
        if self._tick is None:
            loop = asyncio.get_running_loop()
            self._tick = loop.create_future()
            self._timer = loop.call_later(self.max_wait_ms / 1000.0, self._run)
        tick = self._tick
        index = len(self._detectors)
        self._detectors.append(detector)
        self._chunks.append(chunks)
        if index + 1 >= self.max_batch:
            self._run()
        return (await tick)[index]

    def _run(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tick, detectors, chunks = self._tick, self._detectors, self._chunks
        self._tick, self._detectors, self._chunks = None, [], []
        if tick is None or not detectors:
            return
        try:
            probs = score_blocks([d.scorer.stream for d in detectors], chunks)
        except Exception as exc:  # noqa: BLE001 - hand the error to every waiter
            tick.set_exception(exc)
            return
        self.runs += 1
        self.chunks_scored += sum(len(c) for c in chunks)
        tick.set_result(probs)


class BatchedVad(_Runner):
    """One call's Silero detector, scored through a shared :class:`SileroBatcher`."""

    def __init__(self, detector: VoiceDetector, batcher: SileroBatcher, **kw) -> None:
        super().__init__(detector, **kw)
        self.batcher = batcher

    async def _score(self, chunks: np.ndarray) -> np.ndarray:
        return await self.batcher.score(self.detector, chunks)


class VadFactory:
    """Makes each call's VAD runner from settings; owns the shared Silero model and batcher.

    Args:
        kind: ``silero`` or ``webrtc``.
        threshold: Silero speech probability threshold.
        webrtc_mode: webrtcvad aggressiveness 0–3.
        min_speech_ms: speech shorter than this is not a turn (ms).
        min_silence_ms: silence that ends a turn (ms).
        barge_in_min_speech_ms: the shorter confirmation while agent audio plays (ms).
        energy_floor_dbfs: the lowest the pre-gate's tracked noise floor goes (dBFS);
            ``None`` turns the pre-gate off (as ``pregate="off"``).
        batched: score Silero across calls in one run per tick.
        pregate: Silero pre-gate: ``off`` (score every chunk), ``energy`` (each call's
            tracked noise floor) or ``webrtc`` (see :mod:`gateway.audio.pregate`).

    Raises:
        ValueError: unknown ``kind`` or ``pregate``.
    """

    def __init__(self, kind: str = "silero", *, threshold: float = 0.5, webrtc_mode: int = 2,
                 min_speech_ms: float = 160, min_silence_ms: float = 600,
                 barge_in_min_speech_ms: float | None = None, energy_floor_dbfs: float | None = -70.0,
                 batched: bool = True, pregate: str = "energy") -> None:
        if kind not in ("silero", "webrtc"):
            raise ValueError(f"unknown VAD {kind!r}: choose silero or webrtc")
        if pregate not in PREGATE_MODES:
            raise ValueError(f"unknown pre-gate {pregate!r}: choose one of {PREGATE_MODES}")
        self.pregate = "off" if energy_floor_dbfs is None else pregate
        self.kind = kind
        self.threshold = threshold
        self.webrtc_mode = webrtc_mode
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms
        self.barge_in_min_speech_ms = barge_in_min_speech_ms
        self.energy_floor_dbfs = energy_floor_dbfs
        self.model = SileroModel() if kind == "silero" else None
        self.batcher = SileroBatcher(self.model) if (self.model is not None and batched) else None

    @staticmethod
    def rate_for(carrier_rate: int) -> int:
        """The VAD's rate for a carrier: 8 kHz calls are scored at 8 kHz (no resample; Silero and
        webrtcvad both take 8 kHz), everything else at 16 kHz."""
        return 8000 if carrier_rate == 8000 else 16000

    def create(self, sample_rate: int = 16000) -> VadRunner:
        """A fresh VAD runner for one call, taking int16 PCM at ``sample_rate`` (8 or 16 kHz).

        Raises:
            ValueError: another rate.
        """
        if sample_rate not in (8000, 16000):
            raise ValueError(f"VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        rate = sample_rate
        kw: dict = {"barge_in_min_speech_ms": self.barge_in_min_speech_ms}
        if self.model is not None:
            scorer = SileroScorer(self.model, rate)
            if self.pregate != "off":
                kw["pregate"] = PreGate(rate, self.pregate, min_floor_dbfs=self.energy_floor_dbfs)
            gate = VadGate(rate, threshold=self.threshold, min_speech_ms=self.min_speech_ms,
                           min_silence_ms=self.min_silence_ms)
        else:
            scorer = WebRtcScorer(rate, mode=self.webrtc_mode, frame_ms=20)
            gate = VadGate(rate, threshold=0.5, min_speech_ms=self.min_speech_ms,
                           min_silence_ms=self.min_silence_ms)
        detector = VoiceDetector(scorer, gate)
        if self.batcher is not None:
            return BatchedVad(detector, self.batcher, **kw)
        return DirectVad(detector, **kw)
