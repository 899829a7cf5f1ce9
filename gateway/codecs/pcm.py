"""Linear PCM: L16 little-endian bytes ↔ int16 samples, and int16 ↔ float32 conversion.

L16 here is signed 16-bit little-endian, mono, 2 bytes per sample, as every carrier and model
in this project sends it (RFC 3551 §4.5.11 defines L16 in network byte order; the WebSocket
media streams of Twilio, Telnyx, Vonage and the realtime model APIs all use little-endian).

Float audio is float32 in [-1.0, 1.0): ``float = int16 / 32768``. The reverse conversion
rounds half to even and clips to the int16 range.

Sources: RFC 3551 §4.5.11 (L16); the ``/ 32768`` convention of soundfile, librosa and the
OpenAI / Gemini realtime APIs' PCM16 audio.
"""

from __future__ import annotations

import numpy as np

__all__ = ["l16_decode", "l16_encode", "to_float32", "to_int16", "INT16_SCALE"]

#: Full-scale divisor between int16 samples and float audio.
INT16_SCALE = 32768.0

_LE_INT16 = np.dtype("<i2")


def l16_decode(data: bytes) -> np.ndarray:
    """Decodes L16 little-endian bytes to samples.

    Args:
        data: ``2 * n`` bytes (``bytes``, ``bytearray`` or ``memoryview``).

    Returns:
        int16 ``[n]`` in native byte order, a new writable array.

    Raises:
        ValueError: ``len(data)`` is odd (a sample was split across frames or the stream is
            not L16).
    """
    n_bytes = len(memoryview(data).cast("B"))
    if n_bytes % 2:
        raise ValueError(
            f"L16 data must hold a whole number of 2-byte samples, got {n_bytes} bytes (odd)"
        )
    return np.frombuffer(data, dtype=_LE_INT16).astype(np.int16)


def l16_encode(pcm: np.ndarray) -> bytes:
    """Encodes samples to L16 little-endian bytes.

    Args:
        pcm: int16 samples ``[n]`` (any shape is flattened in C order).

    Returns:
        ``2 * n`` bytes.

    Raises:
        TypeError: ``pcm`` is not int16 (convert floats with :func:`to_int16` first).
    """
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"L16 encode expects int16 samples, got {arr.dtype}")
    return arr.astype(_LE_INT16, copy=False).tobytes()


def to_float32(pcm: np.ndarray) -> np.ndarray:
    """Converts int16 samples to float32 in [-1.0, 1.0).

    Args:
        pcm: int16 ``[...]``.

    Returns:
        float32 of the same shape, ``pcm / 32768`` (exact).

    Raises:
        TypeError: ``pcm`` is not int16.
    """
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"to_float32 expects int16 samples, got {arr.dtype}")
    return arr.astype(np.float32) * np.float32(1.0 / INT16_SCALE)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Converts float audio to int16, rounding half to even and clipping.

    Args:
        samples: float ``[...]`` nominally in [-1.0, 1.0); values outside are clipped to
            -32,768 … 32,767 after scaling by 32,768. NaN becomes 0.

    Returns:
        int16 of the same shape. An int16 input is returned as a copy.

    Raises:
        TypeError: ``samples`` is neither floating point nor int16.
    """
    arr = np.asarray(samples)
    if arr.dtype == np.int16:
        return arr.copy()
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"to_int16 expects float samples, got {arr.dtype}")
    scaled = np.rint(arr.astype(np.float64) * INT16_SCALE)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=32767.0, neginf=-32768.0)
    return np.clip(scaled, -32768.0, 32767.0).astype(np.int16)
