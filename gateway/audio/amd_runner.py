"""The answering-machine detector fed PCM directly: its own VAD, the phone path, whole files.

:class:`AmdRunner` wraps an :class:`~gateway.audio.amd.AmdDetector` with a VAD of its own
(WebRTC by default), for the call loop's voicemail policy and for ``gateway amd``;
:func:`phone_path` is what a carrier delivers of a recording (8 kHz μ-law round trip), and
:func:`analyse` runs a whole recording through both in simulated time. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from gateway.audio.amd import AmdConfig, AmdDetector, AmdEvent, AmdState
from gateway.audio.vad import FrameScorer, WebRtcScorer
from gateway.codecs.g711 import ulaw_decode, ulaw_encode
from gateway.codecs.resample import resample

__all__ = ["AmdRunner", "phone_path", "analyse", "resample"]


class AmdRunner:
    """An :class:`AmdDetector` with its own VAD, fed PCM in chunks of any length.

    The detector sees 20 ms frames; the VAD (a :class:`~gateway.audio.vad.FrameScorer`:
    WebRTC 20 ms frames by default, or Silero's 32 ms) scores its own frames, and each
    detector frame takes the latest score available when the frame ends. Output does not
    depend on how the input is chunked.

    Args:
        sample_rate: Hz.
        scorer: The VAD (default: WebRTC mode ``webrtc_mode``, 20 ms, at ``sample_rate``).
        threshold: Speech when the score is ≥ this.
        config: Detector thresholds.
        webrtc_mode: Aggressiveness of the default scorer.

    Raises:
        ValueError: The scorer's rate differs from ``sample_rate``.
    """

    def __init__(self, sample_rate: int = 8000, *, scorer: FrameScorer | None = None,
                 threshold: float = 0.5, config: AmdConfig | None = None, webrtc_mode: int = 2) -> None:
        self.scorer = scorer if scorer is not None else WebRtcScorer(sample_rate, mode=webrtc_mode, frame_ms=20)
        if self.scorer.sample_rate != sample_rate:
            raise ValueError(f"scorer runs at {self.scorer.sample_rate} Hz, not {sample_rate}")
        self.detector = AmdDetector(sample_rate, config=config)
        self.threshold = threshold
        self._buf = np.zeros(0, dtype=np.int16)
        self._base = 0       # absolute index of _buf[0]
        self._amd = 0        # absolute samples consumed by the detector
        self._vad = 0        # absolute samples scored by the VAD
        self._speech = False

    @property
    def events(self) -> list[AmdEvent]:
        """Every verdict so far."""
        return self.detector.events

    @property
    def result(self) -> AmdEvent | None:
        """The latest verdict."""
        return self.detector.result

    def hear(self, text: str, at_ms: float | None = None) -> AmdEvent | None:
        """As :meth:`AmdDetector.hear`."""
        return self.detector.hear(text, at_ms)

    def process(self, pcm: np.ndarray) -> list[AmdEvent]:
        """Feed int16 ``[n]`` PCM; returns the verdicts reached in it.

        Raises:
            TypeError: Not int16.
            ValueError: Not one-dimensional.
        """
        a = np.asarray(pcm)
        if a.dtype != np.int16:
            raise TypeError(f"pcm must be int16, got {a.dtype}")
        if a.ndim != 1:
            raise ValueError(f"pcm must be 1-D, got shape {a.shape}")
        self._buf = np.concatenate((self._buf, a))
        n, m = self.detector.frame_samples, self.scorer.frame_samples
        end_all = self._base + self._buf.size
        out: list[AmdEvent] = []
        while self._amd + n <= end_all:
            while self._vad + m <= self._amd + n:
                o = self._vad - self._base
                self._speech = self.scorer.score(self._buf[o:o + m]) >= self.threshold
                self._vad += m
            o = self._amd - self._base
            ev = self.detector.push(self._buf[o:o + n], self._speech)
            self._amd += n
            if ev is not None:
                out.append(ev)
        keep = min(self._amd, self._vad)
        self._buf = self._buf[keep - self._base:]
        self._base = keep
        return out


def phone_path(pcm: np.ndarray, rate: int) -> np.ndarray:
    """What a carrier delivers of ``pcm``: resampled to 8 kHz and μ-law round-tripped (int16).

    Raises:
        TypeError: ``pcm`` is not int16.
    """
    if np.asarray(pcm).dtype != np.int16:
        raise TypeError("pcm must be int16")
    x = pcm if rate == 8000 else resample(pcm, rate, 8000)
    return ulaw_decode(ulaw_encode(x))


def analyse(pcm: np.ndarray, rate: int, *, runner: AmdRunner | None = None,
            chunk_ms: int = 20) -> list[AmdEvent]:
    """Every verdict for a whole recording fed through the phone path in ``chunk_ms`` chunks.

    Simulated time: ``pcm`` (int16 at ``rate`` Hz, the callee from the answer on) is
    converted by :func:`phone_path` and fed to ``runner`` (default: :class:`AmdRunner` at
    8 kHz with WebRTC VAD), then silence until a final verdict or ``total_analysis_ms``.
    """
    r = runner or AmdRunner(8000)
    x = phone_path(pcm, rate)
    step = 8 * chunk_ms
    for i in range(0, x.size, step):
        r.process(x[i:i + step])
    cfg = r.detector.config
    pad = np.zeros(step, dtype=np.int16)
    limit = max(cfg.total_analysis_ms, cfg.revise_ms) + x.size / 8.0
    while not (r.result and r.result.final) and r.detector.now_ms < limit and r.detector.state is not AmdState.DONE:
        r.process(pad)
    return r.events
