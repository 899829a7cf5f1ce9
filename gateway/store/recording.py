"""Two-channel call recording written as the call goes.

:class:`CallRecorder` writes a 16-bit PCM WAV with the caller on the left channel and the
agent on the right, time-aligned on the call's timeline: each chunk is placed at the sample
position it belongs to (gaps are silence; late or overlapping audio lands at its position,
a later write to the same samples of one channel replacing the earlier one, which is what
the caller hears after a barge-in clears queued agent audio).

Only a short window of the most recent timeline is kept in memory; audio older than the
window is written out, with the WAV header rewritten on every write (stdlib :mod:`wave`
patches it), so a crash leaves a valid file up to the last flush. Audio that arrives for a
position already written out is dropped and counted in :attr:`CallRecorder.dropped_samples`.

Synchronous and CPU-only: call it from the session's task (it does small file writes) or
hand it to a thread.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["CallRecorder", "CALLER", "AGENT"]

#: Channel index of the caller (left) and the agent (right).
CALLER = 0
AGENT = 1

_ZERO_CHUNK_S = 10  # seconds of silence written per write when skipping a long gap


class CallRecorder:
    """A two-channel (left = caller, right = agent) 16-bit WAV written as the call goes.

    Args:
        path: the ``.wav`` file to create (parent directories are created).
        sample_rate: Hz of the timeline and of every chunk passed in.
        window_ms: how much of the most recent timeline stays in memory, open to late or
            overlapping audio.
        flush_ms: write out once at least this much audio is older than the window.

    Raises:
        OSError: the file cannot be created.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sample_rate: int = 8000,
        window_ms: int = 2000,
        flush_ms: int = 1000,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._window = max(0, sample_rate * window_ms // 1000)
        self._flush = max(1, sample_rate * flush_ms // 1000)
        self._buf = np.zeros((max(self._window + self._flush, 1024), 2), dtype=np.int16)
        self._base = 0  # timeline position of _buf[0]; frames before it are in the file
        self._end = 0  # timeline length so far (max end of any chunk), in samples
        self.dropped_samples = 0
        self.closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        try:
            self._wav = wave.open(self._fh, "wb")
            self._wav.setnchannels(2)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate)
            self._wav.writeframes(b"")  # header now, so even an empty call is a valid WAV
            self._fh.flush()
        except BaseException:
            self._fh.close()
            raise

    # -- public ------------------------------------------------------------------------------

    def caller(self, pcm: np.ndarray | bytes, at_sample: int) -> None:
        """Place caller audio (mono int16, or little-endian bytes) at ``at_sample``."""
        self._place(CALLER, pcm, at_sample)

    def agent(self, pcm: np.ndarray | bytes, at_sample: int) -> None:
        """Place agent audio (mono int16, or little-endian bytes) at ``at_sample``."""
        self._place(AGENT, pcm, at_sample)

    @property
    def frames_written(self) -> int:
        """Stereo frames already in the file."""
        return self._base

    @property
    def duration_ms(self) -> int:
        """Length of the timeline so far, in whole ms."""
        return self._end * 1000 // self.sample_rate

    def close(self) -> None:
        """Write out everything and finalise the header. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self._advance(self._end)
            self._wav.close()
        finally:
            self._fh.close()

    def __enter__(self) -> CallRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _place(self, channel: int, pcm: np.ndarray | bytes, at_sample: int) -> None:
        if self.closed:
            raise ValueError(f"recorder for {self.path} is closed")
        at = int(at_sample)
        if at < 0:
            raise ValueError(f"at_sample must be >= 0, got {at_sample}")
        samples = _as_int16(pcm)
        end = at + len(samples)
        if at < self._base:  # partly or wholly before what is already written out
            cut = min(self._base - at, len(samples))
            self.dropped_samples += cut
            samples = samples[cut:]
            at += cut
        if not len(samples):
            return
        # Audio landing far ahead: write out up to it first, so memory stays bounded.
        ahead = min(at, end - self._window)
        if ahead - self._base >= self._flush:
            self._advance(ahead)
        self._ensure_capacity(end - self._base)
        self._buf[at - self._base : end - self._base, channel] = samples
        self._end = max(self._end, end)
        behind = self._end - self._window
        if behind - self._base >= self._flush:
            self._advance(behind)

    def _ensure_capacity(self, n: int) -> None:
        if n <= len(self._buf):
            return
        size = len(self._buf)
        while size < n:
            size *= 2
        grown = np.zeros((size, 2), dtype=np.int16)
        used = self._end - self._base
        grown[:used] = self._buf[:used]
        self._buf = grown

    def _advance(self, target: int) -> None:
        """Write the timeline out up to ``target`` (buffered audio, then silence)."""
        n = target - self._base
        if n <= 0:
            return
        used = max(0, self._end - self._base)
        k = min(n, used)
        if k:
            self._wav.writeframes(self._buf[:k].astype("<i2", copy=False).tobytes())
        silence = n - k
        chunk = self.sample_rate * _ZERO_CHUNK_S
        while silence > 0:
            m = min(silence, chunk)
            self._wav.writeframes(bytes(4 * m))
            silence -= m
        remaining = used - k
        if remaining:
            self._buf[:remaining] = self._buf[k:used]
        self._buf[remaining:used] = 0
        self._base = target
        self._end = max(self._end, target)
        self._fh.flush()


def _as_int16(pcm: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        if len(pcm) % 2:
            raise ValueError("16-bit PCM bytes must have an even length")
        return np.frombuffer(pcm, dtype="<i2")
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"expected mono (1-D) samples, got shape {arr.shape}")
    return arr
