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

:func:`repair_wav` makes such a file whole after the process died between a data write and
the header patch (the RIFF and ``data`` sizes are rewritten from the file's length).
"""

from __future__ import annotations

import os
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["CallRecorder", "CALLER", "AGENT", "WavCheck", "repair_wav"]

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
        """Write out everything and finalise the header. Idempotent.

        Raises:
            OSError: the last writes or the header patch failed (disk full …); the file is
                closed anyway, and holds what was written before (see :func:`repair_wav`).
        """
        if self.closed:
            return
        self.closed = True
        try:
            try:
                self._advance(self._end)
            finally:
                self._wav.close()  # also after a failed write: patches the header it can
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


@dataclass(frozen=True, slots=True)
class WavCheck:
    """What :func:`repair_wav` found.

    Attributes:
        valid: the file is now a PCM WAV that :mod:`wave` reads.
        repaired: its RIFF / ``data`` sizes were rewritten (or a torn last frame cut off).
        frames: sample frames in the file; ``sample_rate`` in Hz; ``duration_ms`` whole ms.
        error: why it is not valid (``None`` when valid).
    """

    valid: bool
    repaired: bool = False
    frames: int = 0
    sample_rate: int = 0
    duration_ms: int = 0
    error: str | None = None


_HEADER = struct.Struct("<4sI4s")  # "RIFF", size, "WAVE"
_CHUNK = struct.Struct("<4sI")  # chunk id, size
_MAX_HEADER_BYTES = 4096  # chunks before "data" (fmt, fact, LIST …) must fit in this


def repair_wav(path: str | Path) -> WavCheck:
    """Check a PCM WAV and, if a crash left its sizes stale, rewrite them from its length.

    A :class:`CallRecorder` killed between writing audio and patching the header leaves a
    file whose RIFF and ``data`` chunk sizes are smaller (or, torn mid-write, larger) than
    what is on disk. The ``data`` chunk is taken to be the file's last chunk, as the
    recorder (and :mod:`wave`) writes it: its size becomes the bytes after its header,
    rounded down to whole frames (a torn last frame is cut off), and the RIFF size follows.

    Source: the RIFF WAVE layout (Microsoft/IBM *Multimedia Programming Interface and Data
    Specifications 1.0*, 1991): ``RIFF <size> WAVE``, then chunks ``<id> <size> <bytes>``.

    Returns:
        A :class:`WavCheck`; ``valid=False`` with ``error`` for a file too short or not a
        PCM WAV (nothing is written then).

    Raises:
        OSError: the file cannot be read or written (missing, permissions …).
    """
    path = Path(path)
    with open(path, "r+b") as fh:
        head = fh.read(_MAX_HEADER_BYTES)
        found = _find_data(head)
        if isinstance(found, str):
            return WavCheck(False, error=found)
        data_at, declared, block_align = found
        size = os.fstat(fh.fileno()).st_size
        actual = (size - data_at) // block_align * block_align
        repaired = False
        if actual != declared or data_at + actual != size:
            fh.truncate(data_at + actual)
            fh.seek(4)
            fh.write(struct.pack("<I", data_at + actual - 8))
            fh.seek(data_at - 4)
            fh.write(struct.pack("<I", actual))
            repaired = True
    try:
        with wave.open(str(path), "rb") as w:
            frames, rate = w.getnframes(), w.getframerate()
    except (wave.Error, EOFError) as exc:
        return WavCheck(False, repaired, error=f"unreadable after repair: {exc}")
    return WavCheck(True, repaired, frames, rate, frames * 1000 // rate if rate else 0)


def _find_data(head: bytes) -> tuple[int, int, int] | str:
    """``(offset of the data bytes, declared data size, bytes per frame)``, or why not."""
    if len(head) < _HEADER.size:
        return f"too short for a WAV header ({len(head)} bytes)"
    riff, _, wave_id = _HEADER.unpack_from(head)
    if riff != b"RIFF" or wave_id != b"WAVE":
        return "not a RIFF WAVE file"
    pos, block_align = _HEADER.size, 0
    while pos + _CHUNK.size <= len(head):
        cid, csize = _CHUNK.unpack_from(head, pos)
        body = pos + _CHUNK.size
        if cid == b"fmt ":
            if csize < 16 or body + 16 > len(head):
                return "truncated fmt chunk"
            tag, channels, _, _, block_align, bits = struct.unpack_from("<HHIIHH", head, body)
            if tag not in (1, 0xFFFE) or not channels or block_align != channels * ((bits + 7) // 8):
                return f"not integer PCM (format {tag:#x}, {channels} channels, {bits} bits)"
        elif cid == b"data":
            if not block_align:
                return "data chunk before fmt chunk"
            return body, csize, block_align
        pos = body + csize + (csize & 1)
    return "no data chunk"
