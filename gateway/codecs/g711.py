"""G.711 μ-law (PCMU) and A-law (PCMA) codecs by table lookup.

Both laws compress one 16-bit linear sample into one 8-bit code. Encoding and decoding are pure
table lookups over numpy arrays:

* decode: a 256-entry int16 table indexed by the code bytes;
* encode: a 65,536-entry uint8 table indexed by the int16 sample viewed as uint16.

The four tables are built once at import from the G.711 segment algorithm (no dependency on
the deprecated ``audioop`` module) and are read-only. They are bit-exact with CPython's
``audioop.lin2ulaw`` / ``ulaw2lin`` / ``lin2alaw`` / ``alaw2lin`` at width 2, which follow the
Sun Microsystems reference ``g711.c``: μ-law encodes the top 14 bits of the sample (clipped to
a magnitude of 8,159, bias 33, codes inverted), A-law the top 13 bits (even bits inverted with
``0x55``); decoding returns the segment midpoint scaled to 16 bits (μ-law ±32,124 full scale,
A-law ±32,256).

Sources: ITU-T Recommendation G.711 (11/1988), "Pulse code modulation (PCM) of voice
frequencies", tables 1a/1b and 2a/2b; Sun Microsystems ``g711.c`` (public domain), as used in
CPython ``Modules/audioop.c``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ALAW_DECODE_TABLE",
    "ALAW_ENCODE_TABLE",
    "ulaw_decode",
    "ulaw_encode",
    "alaw_decode",
    "alaw_encode",
]

_ULAW_BIAS = 0x84  # 132: bias added before the segment search (16-bit scale)
_ULAW_CLIP = 8159  # largest 14-bit magnitude μ-law represents
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_ulaw_decode() -> np.ndarray:
    """μ-law code → int16 sample, for all 256 codes (G.711 table 2a, 16-bit scale)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF  # codes are transmitted inverted
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_ulaw_encode() -> np.ndarray:
    """int16 sample (indexed as uint16) → μ-law code, for all 65,536 samples."""
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)
    val = pcm >> 2  # 14-bit two's complement, arithmetic shift as in audioop
    mask = np.where(val < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(val), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")  # first segment end >= mag
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)  # unreachable after clipping; kept as in g711.c
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> np.ndarray:
    """A-law code → int16 sample, for all 256 codes (G.711 table 1a, 16-bit scale)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55  # even bits are transmitted inverted
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _build_alaw_encode() -> np.ndarray:
    """int16 sample (indexed as uint16) → A-law code, for all 65,536 samples."""
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)
    val = pcm >> 3  # 13-bit two's complement, arithmetic shift as in audioop
    mask = np.where(val >= 0, 0xD5, 0x55)
    mag = np.where(val >= 0, val, -val - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    quant = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | quant)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _frozen(table: np.ndarray) -> np.ndarray:
    table.setflags(write=False)
    return table


#: int16[256]: μ-law code → linear sample.
ULAW_DECODE_TABLE: np.ndarray = _frozen(_build_ulaw_decode())
#: uint8[65536]: linear sample (as uint16) → μ-law code.
ULAW_ENCODE_TABLE: np.ndarray = _frozen(_build_ulaw_encode())
#: int16[256]: A-law code → linear sample.
ALAW_DECODE_TABLE: np.ndarray = _frozen(_build_alaw_decode())
#: uint8[65536]: linear sample (as uint16) → A-law code.
ALAW_ENCODE_TABLE: np.ndarray = _frozen(_build_alaw_encode())


def _as_int16(pcm: np.ndarray) -> np.ndarray:
    """Checks ``pcm`` is int16 (any shape is flattened in C order) and returns it 1-D."""
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"G.711 encode expects int16 samples, got {arr.dtype}")
    return arr.reshape(-1)


def ulaw_decode(data: bytes) -> np.ndarray:
    """Decodes G.711 μ-law bytes to linear PCM.

    Args:
        data: μ-law codes, one byte per sample (``bytes``, ``bytearray`` or ``memoryview``).

    Returns:
        int16 ``[len(data)]``, a new array.
    """
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """Encodes linear PCM to G.711 μ-law.

    Args:
        pcm: int16 samples ``[n]``.

    Returns:
        ``n`` bytes of μ-law codes.

    Raises:
        TypeError: ``pcm`` is not int16 (convert floats with :func:`gateway.codecs.pcm.to_int16`).
    """
    return ULAW_ENCODE_TABLE[_as_int16(pcm).view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    """Decodes G.711 A-law bytes to linear PCM.

    Args:
        data: A-law codes, one byte per sample (``bytes``, ``bytearray`` or ``memoryview``).

    Returns:
        int16 ``[len(data)]``, a new array.
    """
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    """Encodes linear PCM to G.711 A-law.

    Args:
        pcm: int16 samples ``[n]``.

    Returns:
        ``n`` bytes of A-law codes.

    Raises:
        TypeError: ``pcm`` is not int16 (convert floats with :func:`gateway.codecs.pcm.to_int16`).
    """
    return ALAW_ENCODE_TABLE[_as_int16(pcm).view(np.uint16)].tobytes()
