"""Voice activity detection: frame scorers, a hysteresis gate and a streaming detector.

Three layers, each usable alone:

* A :class:`FrameScorer` turns one fixed-size frame of int16 PCM into a speech probability
  in [0, 1]: :class:`WebRtcScorer` (WebRTC's GMM VAD, 0.0 or 1.0, 10/20/30 ms frames, ~5 µs a
  frame) or :class:`SileroScorer` (Silero VAD v6, a real probability, 32 ms frames; measured
  on one EPYC core: ~180 µs a chunk alone, ~60 µs per call in a batch of 100).
* A :class:`VadGate` turns a sequence of probabilities into :class:`SpeechStart` /
  :class:`SpeechEnd` events with hysteresis (``threshold`` to enter, ``neg_threshold`` to
  leave) and minimum durations, as an explicit state machine
  (QUIET → STARTING → SPEAKING → STOPPING). Time is counted in samples.
* A :class:`VoiceDetector` takes arbitrary-length PCM, cuts it into the scorer's frames and
  drives the gate. Its split API (:meth:`VoiceDetector.feed`, :meth:`~VoiceDetector.take_chunks`,
  :meth:`~VoiceDetector.apply_scores`) lets a batcher score every call's Silero chunks in one
  ONNX run per tick (:func:`gateway.audio.silero.score_blocks`).

Latency (audio time, before any transport delay). Scores exist only for whole frames, and
the gate confirms a start once ``ceil(min_speech / frame) * frame`` samples from the onset
frame's first sample have been scored: with Silero (32 ms) and the default
``min_speech_ms=250`` that is 256 ms after the onset frame began, i.e. 224–256 ms after the
speech itself began inside that frame. An end likewise follows the offset frame's start by
``min_silence_ms`` rounded up to whole frames (128 ms for Silero at the default 100 ms).
Input chunking adds nothing beyond waiting for the frame's last sample to arrive. The events
carry the onset / offset sample, not the decision time, so downstream timing (e.g. what the
caller had heard when they started talking) stays exact.

Sources: Silero VAD ``get_speech_timestamps`` / ``VADIterator`` (threshold, ``neg_threshold =
threshold - 0.15``, ``min_speech_duration_ms = 250``, ``min_silence_duration_ms = 100``),
snakers4/silero-vad ``src/silero_vad/utils_vad.py``; WebRTC VAD via ``webrtcvad``
(py-webrtcvad, wiseman), which accepts 10, 20 or 30 ms frames at 8, 16, 32 or 48 kHz.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Union, runtime_checkable

import numpy as np
import webrtcvad

from gateway.audio.silero import SileroModel, SileroStream

__all__ = [
    "FrameScorer",
    "WebRtcScorer",
    "SileroScorer",
    "VadState",
    "VadStateError",
    "TRANSITIONS",
    "check_transition",
    "SpeechStart",
    "SpeechEnd",
    "VadEvent",
    "VadGate",
    "VoiceDetector",
    "WEBRTC_RATES",
    "WEBRTC_FRAME_MS",
]

#: Sample rates (Hz) and frame lengths (ms) that WebRTC VAD accepts.
WEBRTC_RATES = (8000, 16000, 32000, 48000)
WEBRTC_FRAME_MS = (10, 20, 30)


@runtime_checkable
class FrameScorer(Protocol):
    """Scores one fixed-size frame of mono int16 PCM as a speech probability.

    Attributes:
        sample_rate: Hz.
        frame_samples: Samples per frame that :meth:`score` requires.
    """

    sample_rate: int
    frame_samples: int

    def score(self, frame: np.ndarray) -> float:
        """Speech probability in [0, 1] for int16 ``[frame_samples]``; may update state."""
        ...

    def reset(self) -> None:
        """Forget all history, as at the start of a stream."""
        ...


def _check_frame(frame: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.int16:
        raise TypeError(f"frame must be int16, got {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"frame must have shape ({n},), got {a.shape}")
    return a


class WebRtcScorer:
    """WebRTC VAD as a :class:`FrameScorer`: 1.0 for a speech frame, 0.0 otherwise.

    Args:
        sample_rate: 8,000, 16,000, 32,000 or 48,000 Hz.
        mode: Aggressiveness 0 (least, flags most frames as speech) to 3 (most, fewest).
        frame_ms: 10, 20 or 30 ms per frame.

    Raises:
        ValueError: Unsupported rate, mode or frame length.
    """

    def __init__(self, sample_rate: int, *, mode: int = 2, frame_ms: int = 20) -> None:
        if sample_rate not in WEBRTC_RATES:
            raise ValueError(f"webrtcvad supports {WEBRTC_RATES} Hz, not {sample_rate!r}")
        if mode not in (0, 1, 2, 3):
            raise ValueError(f"mode must be 0..3, not {mode!r}")
        if frame_ms not in WEBRTC_FRAME_MS:
            raise ValueError(f"frame_ms must be one of {WEBRTC_FRAME_MS}, not {frame_ms!r}")
        self.sample_rate = sample_rate
        self.mode = mode
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self._vad = webrtcvad.Vad(mode)

    def score(self, frame: np.ndarray) -> float:
        """1.0 if WebRTC VAD calls the int16 ``[frame_samples]`` frame speech, else 0.0.

        Raises:
            TypeError: ``frame`` is not int16.
            ValueError: Wrong frame length.
        """
        a = _check_frame(frame, self.frame_samples)
        speech = self._vad.is_speech(a.astype("<i2", copy=False).tobytes(), self.sample_rate)
        return 1.0 if speech else 0.0

    def reset(self) -> None:
        """Start a fresh detector (WebRTC VAD adapts its noise model over time)."""
        self._vad = webrtcvad.Vad(self.mode)


class SileroScorer:
    """Silero VAD v6 for one stream as a :class:`FrameScorer` (32 ms frames).

    Convenience over :class:`~gateway.audio.silero.SileroStream`; for many calls score
    ``scorer.stream`` with :func:`~gateway.audio.silero.score_batch` instead of :meth:`score`.

    Args:
        model: The shared model.
        sample_rate: 8,000 Hz (256-sample frames) or 16,000 Hz (512-sample frames).

    Raises:
        ValueError: Unsupported rate.
    """

    def __init__(self, model: SileroModel, sample_rate: int) -> None:
        self.stream = SileroStream(model, sample_rate)
        self.sample_rate = sample_rate
        self.frame_samples = self.stream.chunk_samples

    def score(self, frame: np.ndarray) -> float:
        """Speech probability of the next int16 ``[frame_samples]`` frame.

        Raises:
            TypeError: ``frame`` is not int16.
            ValueError: Wrong frame length.
        """
        return self.stream.score(_check_frame(frame, self.frame_samples))

    def reset(self) -> None:
        """Zero the stream's state and context."""
        self.stream.reset()


class VadState(enum.Enum):
    """States of :class:`VadGate`."""

    QUIET = "quiet"  # no speech
    STARTING = "starting"  # speech seen, shorter than min_speech so far
    SPEAKING = "speaking"  # speech confirmed (SpeechStart emitted)
    STOPPING = "stopping"  # silence seen after speech, shorter than min_silence so far


class VadStateError(RuntimeError):
    """An illegal :class:`VadState` transition: a bug in this module, never bad input."""


#: Legal transitions of :class:`VadGate` (staying in a state is not a transition).
TRANSITIONS: dict[VadState, frozenset[VadState]] = {
    VadState.QUIET: frozenset({VadState.STARTING}),
    VadState.STARTING: frozenset({VadState.QUIET, VadState.SPEAKING}),
    VadState.SPEAKING: frozenset({VadState.STOPPING}),
    VadState.STOPPING: frozenset({VadState.SPEAKING, VadState.QUIET}),
}


def check_transition(src: VadState, dst: VadState) -> None:
    """Raise :class:`VadStateError` unless ``src → dst`` is in :data:`TRANSITIONS`."""
    if dst not in TRANSITIONS[src]:
        raise VadStateError(f"illegal VAD transition {src.name} -> {dst.name}")


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began at ``sample`` (index since stream start of the first speech frame)."""

    sample: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """Speech ended at ``sample`` (index of the first sample of the closing silence)."""

    sample: int


VadEvent = Union[SpeechStart, SpeechEnd]


class VadGate:
    """Hysteresis over per-frame speech probabilities; emits onset and offset events.

    Per frame of ``n`` samples with probability ``p`` that starts at sample ``pos``:

    * QUIET, ``p >= threshold``: → STARTING, onset = ``pos``.
    * STARTING, ``p < neg_threshold``: → QUIET (a blip shorter than ``min_speech``; no event).
    * STARTING, ``pos + n - onset >= min_speech``: → SPEAKING, emit ``SpeechStart(onset)``.
    * SPEAKING, ``p < neg_threshold``: → STOPPING, offset = ``pos``.
    * STOPPING, ``p >= threshold``: → SPEAKING (a pause shorter than ``min_silence``; no event).
    * STOPPING, ``pos + n - offset >= min_silence``: → QUIET, emit ``SpeechEnd(offset)``.

    Checks cascade within one frame, so with ``min_speech_ms=0`` a single speech frame goes
    QUIET → STARTING → SPEAKING and emits at once. Between ``neg_threshold`` and
    ``threshold`` a frame keeps whatever is going on (Silero's hysteresis).

    Args:
        sample_rate: Hz, to turn the ms arguments into samples.
        threshold: Probability at or above which a frame is speech.
        neg_threshold: Probability below which a frame is silence once speech has begun;
            default ``max(threshold - 0.15, 0.01)`` as in Silero.
        min_speech_ms: Speech shorter than this from onset is dropped; it also delays
            :class:`SpeechStart` by this much (rounded up to whole frames).
        min_silence_ms: Pauses shorter than this are bridged; it delays :class:`SpeechEnd`.

    Raises:
        ValueError: Thresholds outside [0, 1], ``neg_threshold > threshold``, negative ms.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_ms: float = 250.0,
        min_silence_ms: float = 100.0,
    ) -> None:
        if neg_threshold is None:
            neg_threshold = max(threshold - 0.15, 0.01)
        if not (0.0 <= neg_threshold <= threshold <= 1.0):
            raise ValueError(
                f"need 0 <= neg_threshold <= threshold <= 1, got {neg_threshold}, {threshold}"
            )
        if sample_rate <= 0 or min_speech_ms < 0 or min_silence_ms < 0:
            raise ValueError("sample_rate must be positive and durations non-negative")
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.min_speech_samples = int(round(min_speech_ms * sample_rate / 1000))
        self.min_silence_samples = int(round(min_silence_ms * sample_rate / 1000))
        self.reset()

    def reset(self) -> None:
        """Back to QUIET at sample 0."""
        self.state = VadState.QUIET
        self.position = 0  # samples consumed so far
        self._onset = 0
        self._offset = 0

    def _go(self, dst: VadState) -> None:
        check_transition(self.state, dst)
        self.state = dst

    @property
    def is_speaking(self) -> bool:
        """True between a :class:`SpeechStart` and its :class:`SpeechEnd` (SPEAKING, STOPPING)."""
        return self.state in (VadState.SPEAKING, VadState.STOPPING)

    @property
    def speech_ms(self) -> float:
        """ms from the current utterance's onset to now while :attr:`is_speaking`, else 0."""
        if not self.is_speaking:
            return 0.0
        return (self.position - self._onset) * 1000.0 / self.sample_rate

    def push(self, prob: float, n_samples: int) -> VadEvent | None:
        """Feed one frame's probability; return the event it completes, if any.

        Args:
            prob: Speech probability of the frame, in [0, 1].
            n_samples: The frame's length in samples (> 0).

        Returns:
            :class:`SpeechStart`, :class:`SpeechEnd` or ``None``.

        Raises:
            ValueError: ``prob`` outside [0, 1] (or NaN), ``n_samples <= 0``.
        """
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {prob!r}")
        if n_samples <= 0:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        pos = self.position
        end = pos + n_samples
        self.position = end
        event: VadEvent | None = None
        if self.state is VadState.QUIET and prob >= self.threshold:
            self._go(VadState.STARTING)
            self._onset = pos
        elif self.state is VadState.STARTING and prob < self.neg_threshold:
            self._go(VadState.QUIET)
        elif self.state is VadState.SPEAKING and prob < self.neg_threshold:
            self._go(VadState.STOPPING)
            self._offset = pos
        elif self.state is VadState.STOPPING and prob >= self.threshold:
            self._go(VadState.SPEAKING)
        if self.state is VadState.STARTING and end - self._onset >= self.min_speech_samples:
            self._go(VadState.SPEAKING)
            event = SpeechStart(self._onset)
        elif self.state is VadState.STOPPING and end - self._offset >= self.min_silence_samples:
            self._go(VadState.QUIET)
            event = SpeechEnd(self._offset)
        return event

    def push_many(self, probs: Sequence[float] | np.ndarray, n_samples: int) -> list[VadEvent]:
        """Feed consecutive frames of ``n_samples`` each; return their events in order."""
        events = []
        for p in np.asarray(probs, dtype=np.float64).tolist():
            ev = self.push(p, n_samples)
            if ev is not None:
                events.append(ev)
        return events


class VoiceDetector:
    """Streaming VAD: arbitrary-length int16 PCM in, speech start / end events out.

    Buffers input to the scorer's frame size (a frame straddling two calls waits for the
    second), scores whole frames and drives the gate. Samples are counted from the first
    sample ever fed, so event ``sample`` values index the whole stream. A trailing partial
    frame stays buffered until more audio arrives.

    Latency: a :class:`SpeechStart` is emitted as soon as the frame that completes
    ``min_speech_ms`` (rounded up to whole frames) after the onset frame's start has been
    scored — 256 ms of audio after it with Silero's 32 ms frames and the default 250 ms, 260 ms
    with 20 ms WebRTC frames. :class:`SpeechEnd` trails the offset frame's start by
    ``min_silence_ms`` rounded up to whole frames. See the module docstring.

    Two ways to drive it:

    * :meth:`process` — score with ``scorer.score`` right away (one call, or WebRTC).
    * :meth:`feed` + :meth:`take_chunks` + :meth:`apply_scores` — let a batcher score the
      chunks of many calls at once (e.g. ``score_blocks([d.scorer.stream ...], chunks)``),
      then hand each detector its probabilities. Do not mix the two while chunks are out.

    Args:
        scorer: Any :class:`FrameScorer`.
        gate: A :class:`VadGate` at the scorer's sample rate (fresh or reset).

    Raises:
        ValueError: The gate's and scorer's sample rates differ.
    """

    def __init__(self, scorer: FrameScorer, gate: VadGate) -> None:
        if gate.sample_rate != scorer.sample_rate:
            raise ValueError(f"gate at {gate.sample_rate} Hz, scorer at {scorer.sample_rate} Hz")
        self.scorer = scorer
        self.gate = gate
        self.sample_rate = scorer.sample_rate
        self.frame_samples = scorer.frame_samples
        self._buf = np.zeros(0, dtype=np.int16)
        self._out = 0  # frames taken but not yet scored

    @property
    def is_speaking(self) -> bool:
        """True between a :class:`SpeechStart` and its :class:`SpeechEnd`."""
        return self.gate.is_speaking

    @property
    def speech_ms(self) -> float:
        """Length in ms of the current utterance so far (0 when not speaking)."""
        return self.gate.speech_ms

    @property
    def state(self) -> VadState:
        """The gate's state."""
        return self.gate.state

    @property
    def buffered_samples(self) -> int:
        """Samples fed but not yet taken as a frame (< ``frame_samples``)."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop buffered audio and outstanding chunks; reset scorer and gate to sample 0."""
        self._buf = np.zeros(0, dtype=np.int16)
        self._out = 0
        self.scorer.reset()
        self.gate.reset()

    def feed(self, pcm: np.ndarray) -> None:
        """Append int16 PCM ``[n]`` at ``sample_rate`` to the frame buffer.

        Raises:
            TypeError: ``pcm`` is not int16.
            ValueError: ``pcm`` is not 1-D.
        """
        a = np.asarray(pcm)
        if a.dtype != np.int16:
            raise TypeError(f"pcm must be int16, got {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"pcm must be 1-D, got shape {a.shape}")
        self._buf = np.concatenate((self._buf, a)) if len(self._buf) else a.copy()

    def take_chunks(self) -> np.ndarray:
        """Remove every whole frame from the buffer, for scoring elsewhere.

        Returns:
            int16 ``[k, frame_samples]`` (``k`` may be 0), oldest first. Pass exactly ``k``
            probabilities, in order, to :meth:`apply_scores` before taking more.

        Raises:
            RuntimeError: Chunks taken earlier have not been applied yet.
        """
        if self._out:
            raise RuntimeError(f"{self._out} chunks taken but not yet applied")
        n = self.frame_samples
        k = len(self._buf) // n
        chunks = self._buf[: k * n].reshape(k, n)
        self._buf = self._buf[k * n :].copy()
        self._out = k
        return chunks

    def apply_scores(self, probs: Sequence[float] | np.ndarray) -> list[VadEvent]:
        """Feed the probabilities of the chunks from the last :meth:`take_chunks` to the gate.

        Args:
            probs: One probability in [0, 1] per taken chunk, in order.

        Returns:
            Events completed by these chunks, in order.

        Raises:
            ValueError: ``len(probs)`` differs from the number of chunks taken.
        """
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if len(p) != self._out:
            raise ValueError(f"{len(p)} scores for {self._out} taken chunks")
        self._out = 0
        return self.gate.push_many(p, self.frame_samples)

    def apply_score(self, prob: float) -> VadEvent | None:
        """Feed the probability of the oldest chunk taken by :meth:`take_chunks` and not yet
        applied (chunk by chunk, as :meth:`apply_scores` does them all).

        Raises:
            RuntimeError: No taken chunk awaits a score.
        """
        if not self._out:
            raise RuntimeError("no taken chunk awaits a score")
        self._out -= 1
        return self.gate.push(prob, self.frame_samples)

    def process(self, pcm: np.ndarray) -> list[VadEvent]:
        """Feed int16 PCM ``[n]``, score every whole frame with the scorer, return events.

        Raises:
            TypeError: ``pcm`` is not int16.
            ValueError: ``pcm`` is not 1-D.
            RuntimeError: Chunks from :meth:`take_chunks` are still outstanding.
        """
        if self._out:
            raise RuntimeError(f"{self._out} chunks taken but not yet applied")
        self.feed(pcm)
        chunks = self.take_chunks()
        self._out = 0
        n, push, score = self.frame_samples, self.gate.push, self.scorer.score
        events = []
        for chunk in chunks:  # as apply_scores, without building arrays for one or two frames
            event = push(float(score(chunk)), n)
            if event is not None:
                events.append(event)
        return events
