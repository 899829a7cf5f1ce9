"""L16 little-endian and int16 ↔ float32 conversion."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.codecs.pcm import l16_decode, l16_encode, to_float32, to_int16
from tests.conftest import load_wav


def test_l16_round_trip_on_real_speech(shared_audio):
    pcm, _ = load_wav(shared_audio / "speech" / "goforward.wav")
    data = l16_encode(pcm)
    assert len(data) == 2 * pcm.size
    out = l16_decode(data)
    assert out.dtype == np.int16 and out.flags.writeable
    np.testing.assert_array_equal(out, pcm)


@pytest.mark.parametrize(
    ("data", "samples"),
    [
        (b"", []),
        (b"\x01\x00", [1]),
        (b"\x00\x01", [256]),
        (b"\xff\xff", [-1]),
        (b"\x00\x80\xff\x7f", [-32768, 32767]),
    ],
)
def test_l16_is_little_endian(data, samples):
    np.testing.assert_array_equal(l16_decode(data), np.array(samples, dtype=np.int16))
    assert l16_encode(np.array(samples, dtype=np.int16)) == data


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x01\x02", bytearray(5), memoryview(b"abc")])
def test_l16_odd_length_raises(data):
    with pytest.raises(ValueError, match=r"odd"):
        l16_decode(data)


def test_l16_encode_rejects_floats():
    with pytest.raises(TypeError, match="int16"):
        l16_encode(np.zeros(3, dtype=np.float32))


def test_float_conversion_round_trip_is_exact():
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    f = to_float32(pcm)
    assert f.dtype == np.float32 and f.min() == -1.0 and f.max() < 1.0
    np.testing.assert_array_equal(to_int16(f), pcm)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, 0),
        (0.5, 16384),
        (-1.0, -32768),
        (1.0, 32767),  # clipped
        (3.0, 32767),
        (-3.0, -32768),
        (0.5 / 32768, 0),  # half to even
        (1.5 / 32768, 2),
        (float("nan"), 0),
        (float("inf"), 32767),
    ],
)
def test_to_int16_rounds_and_clips(value, expected):
    assert to_int16(np.array([value], dtype=np.float64))[0] == expected
    assert to_int16(np.array([value], dtype=np.float32)).dtype == np.int16


def test_conversion_type_errors():
    with pytest.raises(TypeError):
        to_float32(np.zeros(2, dtype=np.float32))
    with pytest.raises(TypeError):
        to_int16(np.zeros(2, dtype=np.int32))
