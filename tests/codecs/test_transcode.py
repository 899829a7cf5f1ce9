"""Wire-format dispatch and the streaming Transcoder (decode → resample → encode)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.codecs import g711
from gateway.codecs.pcm import l16_decode, l16_encode
from gateway.codecs.resample import Resampler, resample
from gateway.codecs.transcode import Transcoder, decode, encode
from gateway.formats import L16_8K, L16_16K, L16_24K, PCMA_8K, PCMU_8K, AudioFormat, Encoding
from tests.conftest import load_wav

CODES = bytes(range(256))
PCM = np.array([0, 1, -1, 1000, -1000, 32767, -32768], dtype=np.int16)


@pytest.fixture(scope="module")
def speech16(shared_audio) -> np.ndarray:
    pcm, rate = load_wav(shared_audio / "speech" / "librivox-0880.wav")
    assert rate == 16000
    return pcm


@pytest.mark.parametrize(
    ("encoding", "decoder", "encoder"),
    [
        (Encoding.PCMU, g711.ulaw_decode, g711.ulaw_encode),
        (Encoding.PCMA, g711.alaw_decode, g711.alaw_encode),
        (Encoding.L16, l16_decode, l16_encode),
        ("pcmu", g711.ulaw_decode, g711.ulaw_encode),
        ("l16", l16_decode, l16_encode),
    ],
)
def test_dispatch(encoding, decoder, encoder):
    np.testing.assert_array_equal(decode(CODES, encoding), decoder(CODES))
    assert encode(PCM, encoding) == encoder(PCM)


def test_unknown_encoding_raises():
    with pytest.raises(ValueError, match="unknown encoding"):
        decode(b"\x00", "opus")
    with pytest.raises(ValueError, match="unknown encoding"):
        encode(PCM, "g729")


@pytest.mark.parametrize("fmt", [PCMU_8K, PCMA_8K, L16_16K, L16_24K])
def test_same_format_passes_bytes_through_untouched(fmt):
    t = Transcoder(fmt, fmt)
    data = bytes(range(255))  # odd length: even for L16 nothing is parsed
    assert t.process(data) is data
    assert t.process(bytearray(b"ab")) == b"ab"
    assert t.flush() == b"" and t.delay == 0


def test_encoding_change_at_same_rate_has_no_delay():
    t = Transcoder(PCMU_8K, PCMA_8K)
    assert t.delay == 0
    assert t.process(CODES) == g711.alaw_encode(g711.ulaw_decode(CODES))


def ulaw_8k(speech16: np.ndarray) -> bytes:
    """The phone path of the manifest: resample to 8 kHz, then G.711 μ-law."""
    return g711.ulaw_encode(resample(speech16, 16000, 8000))


def test_ulaw_8k_to_l16_16k_streams_like_one_shot(speech16):
    data = ulaw_8k(speech16)
    t = Transcoder(PCMU_8K, L16_16K)
    frames = [t.process(data[i : i + 160]) for i in range(0, len(data), 160)]  # 20 ms frames
    assert {len(f) for f in frames[1:-1]} == {640}  # 20 ms of L16 at 16 kHz
    expected = l16_encode(Resampler(8000, 16000).process(g711.ulaw_decode(data)))
    assert b"".join(frames) == expected
    # Any other chunking gives the same bytes.
    t.reset()
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.integers(0, len(data), size=200))
    parts = np.split(np.frombuffer(data, np.uint8), cuts)
    assert b"".join(t.process(p.tobytes()) for p in parts) == expected


def test_ulaw_8k_to_l16_16k_preserves_telephone_band(speech16):
    data = ulaw_8k(speech16)
    t = Transcoder(PCMU_8K, L16_16K)
    out = l16_decode(t.process(data) + t.flush())[t.delay :]
    assert out.size == 2 * len(data)
    # Against the original 16 kHz speech, within 100-3,400 Hz: μ-law noise (~-38 dB) dominates.
    n = min(out.size, speech16.size)
    fx = np.fft.rfft(speech16[:n].astype(float))
    fy = np.fft.rfft(out[:n].astype(float))
    freqs = np.fft.rfftfreq(n, 1 / 16000)
    band = (freqs > 100) & (freqs < 3400)
    err = np.sum(np.abs(fx[band] - fy[band]) ** 2) / np.sum(np.abs(fx[band]) ** 2)
    assert 10 * np.log10(err) < -30


def test_l16_24k_to_ulaw_8k_model_output_path(speech16):
    pcm24 = resample(speech16, 16000, 24000)
    t = Transcoder(L16_24K, PCMU_8K)
    out = t.process(l16_encode(pcm24[:4800])) + t.process(l16_encode(pcm24[4800:]))
    assert out == g711.ulaw_encode(Resampler(24000, 8000).process(pcm24))


def test_l16_odd_bytes_are_carried_to_the_next_chunk(speech16):
    data = l16_encode(speech16[:4000])
    whole = Transcoder(L16_16K, PCMU_8K).process(data)
    t = Transcoder(L16_16K, PCMU_8K)
    split = [data[:1], data[1:2], data[2:999], data[999:3001], data[3001:]]
    assert b"".join(t.process(p) for p in split) == whole


def test_reset_matches_a_fresh_transcoder(speech16):
    data = ulaw_8k(speech16)
    t = Transcoder(PCMU_8K, L16_24K)
    t.process(data[:1234])
    t.reset()
    assert t.process(data[5000:]) == Transcoder(PCMU_8K, L16_24K).process(data[5000:])


def test_odd_l16_rejected_by_decode():
    with pytest.raises(ValueError, match="odd"):
        decode(b"\x00\x01\x02", Encoding.L16)


def test_formats_and_delay_exposed():
    t = Transcoder(L16_8K, AudioFormat(Encoding.L16, 48000))
    assert (t.src, t.dst, t.delay) == (L16_8K, AudioFormat(Encoding.L16, 48000), 161)


def test_aligned_transcoder_drops_the_group_delay_for_any_chunking(shared_audio):
    """aligned=True: output sample n is input time n / rate, whatever the chunking."""
    from tests.conftest import load_wav
    from gateway.codecs.resample import resample
    from gateway.codecs.g711 import ulaw_encode, ulaw_decode
    from gateway.codecs.transcode import Transcoder
    from gateway.formats import PCMU_8K, L16_16K

    pcm, rate = load_wav(shared_audio / "speech" / "goforward.wav")
    mu = ulaw_encode(resample(pcm, rate, 8000))
    whole = resample(ulaw_decode(mu), 8000, 16000)  # delay-compensated one-shot reference
    t = Transcoder(PCMU_8K, L16_16K, aligned=True)
    assert t.delay > 0
    out = np.frombuffer(b"".join(t.process(mu[i : i + 160]) for i in range(0, len(mu), 160)), "<i2")
    n = min(out.size, whole.size) - 200
    assert np.array_equal(out[:n], whole[:n])
    t.reset()
    again = np.frombuffer(t.process(mu), "<i2")
    assert np.array_equal(again[:n], out[:n])
