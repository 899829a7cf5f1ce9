"""Batched kernels: decode_many and resample_many against the per-call stages, bit for bit.

Every batched result is compared with what the per-call function returns for the same input
and the same stream history (a twin :class:`Resampler` fed the same chunks one by one), on real
speech from ``../shared/audio`` cut into each call's own 20 ms frames.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import batch
from gateway.codecs.batch import decode_many, resample_many
from gateway.codecs.resample import Resampler, resample
from gateway.codecs.transcode import decode, encode
from gateway.formats import Encoding
from tests.conftest import load_wav

PAIRS = [(8000, 16000), (8000, 24000), (16000, 8000), (24000, 8000), (24000, 16000),
         (16000, 24000), (48000, 16000), (8000, 48000)]  # fmt: skip
PAIR_IDS = [f"{a // 1000}-{b // 1000}k" for a, b in PAIRS]


@pytest.fixture(scope="module")
def speech(shared_audio) -> dict[int, np.ndarray]:
    """About 6 s of real speech at every rate the pairs use (8 kHz: a real 8 kHz recording)."""
    wide, sr = load_wav(shared_audio / "speech" / "librivox-0870.wav")
    narrow, sr8 = load_wav(shared_audio / "voicemail" / "vm-intro.wav")
    assert (sr, sr8) == (16000, 8000)
    out = {8000: narrow[: 8000 * 6], 16000: wide[: 16000 * 6]}
    for rate in (22050, 24000, 48000):
        out[rate] = resample(out[16000], 16000, rate)
    return out


def twins(a: int, b: int, count: int) -> tuple[list[Resampler], list[Resampler]]:
    return [Resampler(a, b) for _ in range(count)], [Resampler(a, b) for _ in range(count)]


def assert_same_state(got: Resampler, want: Resampler) -> None:
    assert (got._phase, got._n_in, got._n_out, got._dtype) == (
        want._phase, want._n_in, want._n_out, want._dtype)  # fmt: skip
    np.testing.assert_array_equal(got._history, want._history)


def step(batched: list[Resampler], single: list[Resampler], chunks: list[np.ndarray]) -> None:
    """One tick: the batch against the per-stream path, outputs and states."""
    got = resample_many(batched, chunks)
    for g, r, s, x in zip(got, batched, single, chunks):
        want = s.process(x)
        assert g.dtype == want.dtype
        np.testing.assert_array_equal(g, want)
        assert_same_state(r, s)


# --- decode_many ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", list(Encoding))
def test_decode_many_equals_decode_per_payload(encoding, speech):
    pcm = speech[8000]
    sizes = [160] * 20 + [0, 1, 80, 320, 7, 160, 2]
    if encoding is Encoding.L16:
        sizes = [2 * (s // 2) for s in sizes]
    wire = encode(pcm, encoding)
    bps = encoding.bytes_per_sample
    payloads, at = [], 0
    for s in sizes:
        payloads.append(wire[at : at + s * bps])
        at += s * bps
    payloads[3] = bytearray(payloads[3])  # any bytes-like payload
    payloads[4] = memoryview(payloads[4])
    got = decode_many(payloads, encoding.value)
    assert len(got) == len(payloads)
    for g, p in zip(got, payloads):
        want = decode(p, encoding)
        assert g.dtype == np.int16 and g.shape == want.shape
        np.testing.assert_array_equal(g, want)


def test_decode_many_of_every_code_and_one_payload():
    codes = bytes(range(256))
    for encoding in (Encoding.PCMU, Encoding.PCMA):
        (one,) = decode_many([codes], encoding)
        np.testing.assert_array_equal(one, decode(codes, encoding))
    assert decode_many([], Encoding.PCMU) == []


def test_decode_many_outputs_are_disjoint_writable_arrays():
    a, b = decode_many([b"\x00\x01", b"\x02\x03"], Encoding.PCMU)
    a[:] = 0
    np.testing.assert_array_equal(b, decode(b"\x02\x03", Encoding.PCMU))


def test_decode_many_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown encoding"):
        decode_many([b"\x00"], "opus")
    with pytest.raises(ValueError, match="payload 1 .* 3 bytes"):
        decode_many([b"\x00\x00", b"\x00\x00\x00"], Encoding.L16)


# --- resample_many: bit-exact against Resampler.process ------------------------------------


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
def test_uneven_chunks_and_late_joiners_equal_per_stream_int16(a, b, speech):
    """Twelve calls at different offsets of the recording; per tick some send 20 ms, some 10 or
    40 ms (two frames queued), some nothing; calls 8-11 join after 3 ticks (their first chunk
    has the initial phase), then every stream goes on through per-stream ``process``."""
    src, frame = speech[a], a // 50
    batched, single = twins(a, b, 12)
    offsets = [(i * 4409) % (src.size - 60 * frame) for i in range(12)]
    lengths = itertools.cycle([frame, frame, frame // 2, 2 * frame, 0, frame, frame + 1])
    pos = list(offsets)
    for tick in range(12):
        live = [i for i in range(12) if i < 8 or tick >= 3]
        sizes = [frame if tick % 3 == 0 else next(lengths) for _ in live]
        chunks = [src[pos[i] : pos[i] + k] for i, k in zip(live, sizes)]
        for i, k in zip(live, sizes):
            pos[i] += k
        step([batched[i] for i in live], [single[i] for i in live], chunks)
    for r, s, i in zip(batched, single, range(12)):  # later per-stream calls continue identically
        x = src[pos[i] : pos[i] + 3 * frame]
        np.testing.assert_array_equal(r.process(x), s.process(x))
        np.testing.assert_array_equal(r.flush(), s.flush())


@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (24000, 8000)], ids=["8-16k", "24-8k"])
@pytest.mark.parametrize("calls", [1, 2, 400])
def test_many_calls_of_20_ms_frames(a, b, calls, speech):
    """1 call (per-stream path), 2 (the smallest batch) and 400 (several slabs)."""
    src, frame = speech[a], a // 50
    batched, single = twins(a, b, calls)
    starts = [(i * 977) % (src.size - 5 * frame) for i in range(calls)]
    for tick in range(4):
        chunks = [src[s + tick * frame : s + (tick + 1) * frame] for s in starts]
        step(batched, single, chunks)


def test_full_scale_input_is_clipped_as_per_stream():
    square = np.where(np.arange(1600) % 40 < 20, 32767, -32768).astype(np.int16)
    batched, single = twins(8000, 24000, 3)
    for t in range(5):
        step(batched, single, [np.roll(square, 7 * i)[t * 160 : (t + 1) * 160] for i in range(3)])
    assert any(np.abs(s.process(square[:160])).max() == 32767 for s in single)


def test_dtype_mix_and_rate_mix_in_one_call(speech):
    """int16, float32 and float64 streams of two rate pairs, equal rates, an empty chunk and a
    22.05 kHz stream (never batched) together: each as its own per-stream twin."""
    specs = [(8000, 16000, np.int16)] * 3 + [(8000, 16000, np.float32)] * 3
    specs += [(8000, 16000, np.float64)] * 2 + [(24000, 8000, np.int16)] * 2
    specs += [(8000, 8000, np.int16), (22050, 8000, np.int16), (22050, 8000, np.int16)]
    batched = [Resampler(a, b) for a, b, _ in specs]
    single = [Resampler(a, b) for a, b, _ in specs]
    for tick in range(5):
        chunks = []
        for i, (a, _, dtype) in enumerate(specs):
            n = 0 if (tick == 2 and i == 4) else a // 50
            x = speech[a][(i * 800 + tick * n) : (i * 800 + (tick + 1) * n)]
            chunks.append(x if dtype is np.int16 else (x / 32768.0).astype(dtype))
        got = resample_many(batched, chunks)
        for g, r, s, x, (_, _, dtype) in zip(got, batched, single, chunks, specs):
            want = s.process(x)
            assert g.dtype == want.dtype == dtype
            if dtype is np.int16:
                np.testing.assert_array_equal(g, want)
            else:  # same arithmetic; only a last float64 bit before rounding could differ
                np.testing.assert_array_max_ulp(g, want, maxulp=1)
            assert_same_state(r, s)


@pytest.mark.parametrize(("a", "b"), [(24000, 8000), (16000, 24000)], ids=["24-8k", "16-24k"])
def test_float_input_agrees_within_rounding(a, b):
    """Random full-scale float input (inexact products): float32 identical, float64 within
    float64 rounding of the sums; the state (history = the input itself) identical."""
    rng = np.random.default_rng(a + b)
    for dtype, atol in ((np.float32, 0.0), (np.float64, 4e-15)):
        batched, single = twins(a, b, 6)
        for _ in range(6):
            chunks = [rng.uniform(-1, 1, a // 50).astype(dtype) for _ in range(6)]
            for g, r, s, x in zip(resample_many(batched, chunks), batched, single, chunks):
                np.testing.assert_allclose(g, s.process(x), rtol=0, atol=atol)
                assert g.dtype == dtype
                assert_same_state(r, s)


def test_batched_groups_never_run_the_per_stream_kernel(monkeypatch, speech):
    """A group of two or more streams is one product: Resampler._compute is never called."""
    batched, single = twins(8000, 16000, 5)
    chunks = [speech[8000][i * 160 : (i + 1) * 160] for i in range(5)]
    for s, x in zip(single, chunks):
        s.process(x)

    def per_stream(*args):
        raise AssertionError("a batched group ran the per-stream kernel")

    monkeypatch.setattr(Resampler, "_compute", per_stream)
    got = resample_many(batched, chunks)
    monkeypatch.undo()
    for g, r, s in zip(got, batched, single):
        assert_same_state(r, s)
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate([Resampler(8000, 16000)
                                  .process(x) for x in chunks]))  # fmt: skip


def test_chunks_completing_no_output_and_single_samples():
    batched, single = twins(48000, 16000, 4)
    rng = np.random.default_rng(5)
    for n in [1, 1, 1, 2, 0, 5, 3, 960]:
        step(batched, single, [rng.integers(-9000, 9000, n).astype(np.int16) for _ in range(4)])


@settings(max_examples=25, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    ticks=st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=1, max_size=6),
)
def test_random_tick_plans_equal_per_stream(pair, ticks):
    """Any plan of chunk sizes (0, 10, 20 or 30 ms per call and tick) over four calls."""
    a, b = pair
    batched, single = twins(a, b, 4)
    rng = np.random.default_rng(len(ticks))
    for sizes in ticks:
        chunks = [rng.integers(-20000, 20000, k * a // 100).astype(np.int16) for k in sizes]
        step(batched, single, chunks)


# --- resample_many: errors -----------------------------------------------------------------


def test_errors_leave_every_stream_unchanged():
    batched, single = twins(8000, 16000, 3)
    x = np.zeros(160, np.int16)
    step(batched, single, [x, x, x])
    bad_inputs = [
        ([x, x, x.astype(np.float32)], TypeError, "stream started as int16"),
        ([x, x, x.astype(np.int32)], TypeError, "expected int16"),
        ([x, x, np.zeros((2, 80), np.int16)], ValueError, "1-D"),
    ]
    for chunks, error, match in bad_inputs:
        with pytest.raises(error, match=match):
            resample_many(batched, chunks)
        for r, s in zip(batched, single):
            assert_same_state(r, s)
    with pytest.raises(ValueError, match="3 resamplers but 2 chunks"):
        resample_many(batched, [x, x])
    with pytest.raises(ValueError, match="appears twice"):
        resample_many([batched[0], batched[1], batched[0]], [x, x, x])
    assert resample_many([], []) == []


def test_block_toeplitz_matrix_is_cached_and_read_only():
    d = Resampler(8000, 24000)._design
    m1, step1 = batch._block_toeplitz(d.up, d.down, d.taps, 1, d.bank.tobytes())
    m2, _ = batch._block_toeplitz(d.up, d.down, d.taps, 1, d.bank.tobytes())
    assert m1 is m2 and not m1.flags.writeable
    assert step1 == m1.shape[1] // d.up * d.down  # k periods of `down` inputs per block
    assert np.count_nonzero(m1, axis=0).max() <= d.taps


@pytest.mark.parametrize(("a", "b"), [(8000, 16000), (24000, 8000), (48000, 16000)])
def test_every_gemm_stays_on_one_blas_thread(monkeypatch, a, b):
    """400 streams run as several products, each below OpenBLAS's threshold for threading."""
    shapes = []
    dot = np.dot

    def counted(x, y, out=None):
        shapes.append((x.shape[0], x.shape[1], y.shape[1]))
        return dot(x, y, out=out)

    monkeypatch.setattr(batch.np, "dot", counted)
    batched, single = twins(a, b, 400)
    x = np.zeros(a // 50, np.int16)
    resample_many(batched, [x] * 400)
    monkeypatch.undo()
    blocks = -(-Resampler(a, b)._count(a // 50) // shapes[0][2])  # rows per stream
    assert len(shapes) > 1 and sum(m for m, _, _ in shapes) == 400 * blocks
    assert all(m * k * n <= batch._BLAS_SINGLE_THREAD for m, k, n in shapes)
    for r, s in zip(batched, single):
        s.process(x)
        assert_same_state(r, s)
