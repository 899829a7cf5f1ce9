"""Codec layer: G.711, L16, streaming resampling and wire-format transcoding (pure numpy).

No I/O and no module-level mutable state: every function is synchronous and deterministic, and
the stateful stages (:class:`Resampler`, :class:`Transcoder`) expose ``process()`` and
``reset()``. Samples are int16 (or float32 where stated) with the rate carried alongside.

Modules: :mod:`~gateway.codecs.g711` (μ-law / A-law, ITU-T G.711), :mod:`~gateway.codecs.pcm`
(L16 and float conversion), :mod:`~gateway.codecs.resample` (polyphase Kaiser-sinc),
:mod:`~gateway.codecs.transcode` (format to format), :mod:`~gateway.codecs.batch` (many calls'
decode and resampling in one pass, for the per-tick media engine).
"""

from gateway.codecs.batch import decode_many, resample_many
from gateway.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from gateway.codecs.pcm import l16_decode, l16_encode, to_float32, to_int16
from gateway.codecs.resample import FilterDesign, Resampler, design_filter, resample
from gateway.codecs.transcode import Transcoder, decode, encode

__all__ = [
    "ulaw_decode",
    "ulaw_encode",
    "alaw_decode",
    "alaw_encode",
    "l16_decode",
    "l16_encode",
    "to_float32",
    "to_int16",
    "Resampler",
    "FilterDesign",
    "design_filter",
    "resample",
    "Transcoder",
    "decode",
    "encode",
    "decode_many",
    "resample_many",
]
