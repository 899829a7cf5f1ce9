"""G.711 μ-law / A-law: bit-exact with CPython's audioop over every input (ITU-T G.711)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from gateway.codecs import g711
from tests.conftest import ROOT

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # audioop is deprecated in 3.11-3.12
    import audioop  # stdlib until 3.12; the audioop-lts package from 3.13

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))

CODECS = [
    # name, encode, decode, audioop encode, audioop decode
    ("ulaw", g711.ulaw_encode, g711.ulaw_decode, audioop.lin2ulaw, audioop.ulaw2lin),
    ("alaw", g711.alaw_encode, g711.alaw_decode, audioop.lin2alaw, audioop.alaw2lin),
]
IDS = [c[0] for c in CODECS]


@pytest.mark.parametrize(("name", "enc", "dec", "ref_enc", "ref_dec"), CODECS, ids=IDS)
def test_encode_bit_exact_for_all_65536_samples(name, enc, dec, ref_enc, ref_dec):
    assert enc(ALL_SAMPLES) == ref_enc(ALL_SAMPLES.astype("<i2").tobytes(), 2)


@pytest.mark.parametrize(("name", "enc", "dec", "ref_enc", "ref_dec"), CODECS, ids=IDS)
def test_decode_bit_exact_for_all_256_codes(name, enc, dec, ref_enc, ref_dec):
    got = dec(ALL_CODES)
    assert got.dtype == np.int16 and got.shape == (256,)
    np.testing.assert_array_equal(got, np.frombuffer(ref_dec(ALL_CODES, 2), dtype="<i2"))


@pytest.mark.parametrize(("name", "enc", "dec", "ref_enc", "ref_dec"), CODECS, ids=IDS)
def test_decoded_values_are_fixed_points(name, enc, dec, ref_enc, ref_dec):
    # Re-encoding a decoded value and decoding again gives the same sample (idempotent).
    once = dec(ALL_CODES)
    np.testing.assert_array_equal(dec(enc(once)), once)


@pytest.mark.parametrize(
    ("enc", "dec", "full_scale", "smallest"),
    [
        (g711.ulaw_encode, g711.ulaw_decode, 32124, 0),
        (g711.alaw_encode, g711.alaw_decode, 32256, 8),
    ],
    ids=IDS,
)
def test_full_scale_and_silence(enc, dec, full_scale, smallest):
    pcm = np.array([32767, -32768, 0], dtype=np.int16)
    np.testing.assert_array_equal(dec(enc(pcm)), [full_scale, -full_scale, smallest])


def test_known_codes():
    # Silence is 0xFF in μ-law and 0xD5 in A-law (G.711 tables 2a / 1a).
    assert g711.ulaw_encode(np.zeros(3, np.int16)) == b"\xff\xff\xff"
    assert g711.alaw_encode(np.zeros(3, np.int16)) == b"\xd5\xd5\xd5"


@pytest.mark.parametrize("data", [b"", bytearray(b"\x00\x7f\x80\xff"), memoryview(b"\x12\x34")])
@pytest.mark.parametrize("dec", [g711.ulaw_decode, g711.alaw_decode], ids=IDS)
def test_decode_accepts_buffers(data, dec):
    out = dec(data)
    assert out.dtype == np.int16 and out.shape == (len(bytes(data)),)


@pytest.mark.parametrize("enc", [g711.ulaw_encode, g711.alaw_encode], ids=IDS)
def test_encode_rejects_non_int16(enc):
    with pytest.raises(TypeError, match="int16"):
        enc(np.zeros(4, dtype=np.float32))
    assert enc(np.zeros(0, dtype=np.int16)) == b""


def test_tables_are_read_only():
    tables = (g711.ULAW_DECODE_TABLE, g711.ULAW_ENCODE_TABLE, g711.ALAW_DECODE_TABLE,
              g711.ALAW_ENCODE_TABLE)
    for table in tables:
        assert not table.flags.writeable


def test_codecs_do_not_import_audioop():
    code = "import sys, gateway.codecs; sys.exit('audioop' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
