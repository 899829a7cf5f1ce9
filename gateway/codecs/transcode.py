"""Wire-format conversion: bytes in one :class:`~gateway.formats.AudioFormat`, bytes out in another.

:func:`decode` and :func:`encode` dispatch on :class:`~gateway.formats.Encoding` (PCMU, PCMA,
L16). A :class:`Transcoder` is the stateful per-stream stage the session puts between a carrier
and a model: decode → resample (streaming, :class:`~gateway.codecs.resample.Resampler`) →
encode. When source and destination formats are equal it hands the bytes back untouched.

Sources: ITU-T G.711 (PCMU, PCMA); RFC 3551 §4.5.11 (L16, here little-endian).
"""

from __future__ import annotations

import numpy as np

from gateway.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from gateway.codecs.pcm import l16_decode, l16_encode
from gateway.codecs.resample import Resampler
from gateway.formats import AudioFormat, Encoding

__all__ = ["decode", "encode", "Transcoder"]

_DECODERS = {Encoding.PCMU: ulaw_decode, Encoding.PCMA: alaw_decode, Encoding.L16: l16_decode}
_ENCODERS = {Encoding.PCMU: ulaw_encode, Encoding.PCMA: alaw_encode, Encoding.L16: l16_encode}


def _encoding(encoding: Encoding | str) -> Encoding:
    try:
        return Encoding(encoding)
    except ValueError:
        known = ", ".join(e.value for e in Encoding)
        raise ValueError(f"unknown encoding {encoding!r} (known: {known})") from None


def decode(data: bytes, encoding: Encoding | str) -> np.ndarray:
    """Decodes wire bytes to linear samples.

    Args:
        data: Encoded audio (``bytes``, ``bytearray`` or ``memoryview``).
        encoding: :class:`~gateway.formats.Encoding` or its value (``"pcmu"`` …).

    Returns:
        int16 ``[n]``: ``n = len(data)`` for G.711, ``len(data) // 2`` for L16.

    Raises:
        ValueError: Unknown encoding, or L16 data of odd length.
    """
    return _DECODERS[_encoding(encoding)](data)


def encode(pcm: np.ndarray, encoding: Encoding | str) -> bytes:
    """Encodes linear samples to wire bytes.

    Args:
        pcm: int16 ``[n]``.
        encoding: :class:`~gateway.formats.Encoding` or its value (``"pcmu"`` …).

    Returns:
        ``n`` bytes for G.711, ``2 * n`` for L16.

    Raises:
        ValueError: Unknown encoding.
        TypeError: ``pcm`` is not int16.
    """
    return _ENCODERS[_encoding(encoding)](pcm)


class Transcoder:
    """Converts one audio stream from ``src`` to ``dst`` format, chunk by chunk.

    Stateful (resampler history, and half an L16 sample split across chunks), so use one per
    stream direction and call :meth:`reset` on a discontinuity such as barge-in. Output for any
    chunking equals the output for the whole stream at once. With a rate change the output lags
    by :attr:`delay` output samples (about 3.3 ms); :meth:`flush` drains it.

    Args:
        src: Format of the bytes given to :meth:`process`.
        dst: Format of the bytes returned.
        aligned: drop the first :attr:`delay` output samples, so output sample ``n`` is the
            input's time ``n / dst.sample_rate`` (the stream is time-aligned with its source;
            use for the caller's audio, whose timeline VAD and recognition share).
    """

    def __init__(self, src: AudioFormat, dst: AudioFormat, *, aligned: bool = False) -> None:
        self.src = src
        self.dst = dst
        self.passthrough = src == dst
        self.aligned = aligned
        self._resampler = Resampler(src.sample_rate, dst.sample_rate)
        self._decode = _DECODERS[src.encoding]  # bound once: process() runs per 20 ms frame
        self._encode = _ENCODERS[dst.encoding]
        self._src_l16 = src.encoding is Encoding.L16
        self._carry = b""  # an odd trailing L16 byte awaiting its partner
        self._skip = self._resampler.delay * dst.encoding.bytes_per_sample if aligned else 0

    @property
    def delay(self) -> int:
        """Group delay in output samples (0 without a rate change)."""
        return self._resampler.delay

    def process(self, data: bytes) -> bytes:
        """Converts the next chunk of the stream.

        Args:
            data: Encoded audio in ``src`` format, any length. For L16, an odd trailing byte is
                kept and joined to the next chunk.

        Returns:
            Encoded audio in ``dst`` format: ``data`` itself when ``src == dst`` (given as
            ``bytes``), otherwise about ``len(data)`` scaled by the rate and byte-width ratios.
        """
        if self.passthrough:
            return data if isinstance(data, bytes) else bytes(data)
        if self._src_l16:
            if self._carry:
                data = self._carry + bytes(data)
            if len(data) % 2:
                self._carry, data = bytes(data[-1:]), data[:-1]
            else:
                self._carry = b""
        out = self._encode(self._resampler.process(self._decode(data)))
        if self._skip:
            dropped = min(self._skip, len(out))
            self._skip -= dropped
            out = out[dropped:]
        return out

    def flush(self) -> bytes:
        """Drains the resampler at end of stream (see :meth:`Resampler.flush`), then resets."""
        if self.passthrough:
            return b""
        tail = self._resampler.flush()
        self.reset()
        return encode(tail, self.dst.encoding)

    def reset(self) -> None:
        """Forgets all history, as at the start of a stream (e.g. on barge-in)."""
        self._resampler.reset()
        self._carry = b""
        self._skip = self._resampler.delay * self.dst.encoding.bytes_per_sample if self.aligned else 0
