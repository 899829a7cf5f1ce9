"""VAD scorers, the hysteresis gate and the streaming detector, on real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.audio.silero import SileroModel, score_blocks
from gateway.audio.vad import (
    TRANSITIONS,
    FrameScorer,
    SileroScorer,
    SpeechEnd,
    SpeechStart,
    VadGate,
    VadState,
    VadStateError,
    VoiceDetector,
    WebRtcScorer,
    check_transition,
)
from tests.conftest import load_wav

Q, ST, SP, SO = VadState.QUIET, VadState.STARTING, VadState.SPEAKING, VadState.STOPPING


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel()


def frame_scores(scorer: FrameScorer, x: np.ndarray) -> np.ndarray:
    n = scorer.frame_samples
    k = len(x) // n
    return np.array([scorer.score(f) for f in x[: k * n].reshape(k, n)])


def energy_span(x: np.ndarray, sr: int) -> tuple[int, int]:
    """Reference onset / offset (samples): first / last 10 ms window above 10 % of peak RMS."""
    n = sr // 100
    k = len(x) // n
    rms = np.sqrt((x[: k * n].reshape(k, n).astype(np.float64) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > 0.1 * rms.max())
    return int(loud[0]) * n, int(loud[-1] + 1) * n


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    sd = np.sqrt(np.mean(x.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    y = x + np.random.default_rng(seed).normal(0, sd, len(x))
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def make_scorer(kind: str, model: SileroModel, sr: int) -> FrameScorer:
    return SileroScorer(model, sr) if kind == "silero" else WebRtcScorer(sr, mode=2, frame_ms=20)


# --- WebRTC scorer ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_webrtc_speech_and_silence(shared_audio: Path, mode: int, frame_ms: int) -> None:
    x, sr = load_wav(shared_audio / "speech/librivox-0870.wav")
    scorer = WebRtcScorer(sr, mode=mode, frame_ms=frame_ms)
    assert scorer.frame_samples == sr * frame_ms // 1000
    assert frame_scores(scorer, x).mean() > 0.8
    scorer.reset()
    assert frame_scores(scorer, np.zeros(3 * sr, np.int16)).max() == 0.0


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_webrtc_8k_voicemail(shared_audio: Path, mode: int) -> None:
    x, sr = load_wav(shared_audio / "voicemail/vm-intro.wav")
    assert frame_scores(WebRtcScorer(sr, mode=mode), x).mean() > 0.8


@pytest.mark.parametrize("rate", [8000, 16000, 32000, 48000])
def test_webrtc_rates(rate: int) -> None:
    scorer = WebRtcScorer(rate, frame_ms=30)
    assert isinstance(scorer, FrameScorer)
    assert scorer.frame_samples == rate * 3 // 100
    assert frame_scores(scorer, np.zeros(rate, np.int16)).sum() == 0.0


@pytest.mark.parametrize(
    "name,snr_db",
    [("speech/goforward.wav", 10), ("speech/librivox-0870.wav", 20), ("caller/confirm.wav", 20)],
)
def test_webrtc_mode3_flags_no_more_than_mode0(shared_audio: Path, name: str, snr_db: int) -> None:
    x, sr = load_wav(shared_audio / name)
    y = add_noise(x, snr_db, seed=1)
    counts = [frame_scores(WebRtcScorer(sr, mode=m, frame_ms=30), y).sum() for m in range(4)]
    assert counts[3] <= counts[0]
    assert counts[3] > 0


def test_webrtc_rejects_bad_arguments() -> None:
    for kwargs in [dict(sample_rate=44100), dict(sample_rate=16000, mode=4),
                   dict(sample_rate=16000, frame_ms=25)]:
        with pytest.raises(ValueError):
            WebRtcScorer(**kwargs)
    scorer = WebRtcScorer(16000)
    with pytest.raises(ValueError):
        scorer.score(np.zeros(100, np.int16))
    with pytest.raises(TypeError):
        scorer.score(np.zeros(320, np.float32))


def test_silero_scorer_is_a_frame_scorer(model: SileroModel) -> None:
    for rate, n in [(16000, 512), (8000, 256)]:
        scorer = SileroScorer(model, rate)
        assert isinstance(scorer, FrameScorer) and scorer.frame_samples == n
        with pytest.raises(TypeError):
            scorer.score(np.zeros(n, np.float32))


# --- the state machine ------------------------------------------------------------------

LEGAL = {(Q, ST), (ST, Q), (ST, SP), (SP, SO), (SO, SP), (SO, Q)}


@pytest.mark.parametrize("src", list(VadState))
@pytest.mark.parametrize("dst", list(VadState))
def test_transition_table(src: VadState, dst: VadState) -> None:
    assert ((src, dst) in LEGAL) == (dst in TRANSITIONS[src])
    if (src, dst) in LEGAL:
        check_transition(src, dst)
    else:
        with pytest.raises(VadStateError):
            check_transition(src, dst)


# Gate scenarios at 1,000 Hz with 10-sample frames, so samples read as ms.
# (name, gate kwargs, per-frame probabilities, expected [(frame index, event)], final state)
H, M, L = 0.9, 0.4, 0.0  # above threshold, between thresholds, below neg_threshold
GATE_CASES = [
    ("all quiet", {}, [L] * 20, [], Q),
    ("mid band never starts", {}, [M] * 20, [], Q),
    ("short blip rejected", {"min_speech_ms": 50}, [L, H, H, H, L, L, L], [], Q),
    ("start reports onset not confirmation", {"min_speech_ms": 50},
     [L, L, L] + [H] * 10, [(7, SpeechStart(30))], SP),
    ("mid band holds a start", {"min_speech_ms": 50}, [L, H, M, M, M, M],
     [(5, SpeechStart(10))], SP),
    ("dip below neg aborts a start", {"min_speech_ms": 50}, [H, H, L, H, H, H, H, H],
     [(7, SpeechStart(30))], SP),
    ("min_speech 0 starts at once", {"min_speech_ms": 0}, [L, H], [(1, SpeechStart(10))], SP),
    ("min_silence bridges a short pause", {"min_speech_ms": 20, "min_silence_ms": 50},
     [H] * 5 + [L] * 3 + [H] * 5 + [L] * 10,
     [(1, SpeechStart(0)), (17, SpeechEnd(130))], Q),
    ("end reports offset not confirmation", {"min_speech_ms": 0, "min_silence_ms": 30},
     [H, H, L, L, L, L], [(0, SpeechStart(0)), (4, SpeechEnd(20))], Q),
    ("mid band keeps speaking", {"min_speech_ms": 0, "min_silence_ms": 30},
     [H] + [M] * 10, [(0, SpeechStart(0))], SP),
    ("mid band does not resume a stop", {"min_speech_ms": 0, "min_silence_ms": 30},
     [H, L, M, M, M], [(0, SpeechStart(0)), (3, SpeechEnd(10))], Q),
    ("two utterances", {"min_speech_ms": 20, "min_silence_ms": 20},
     [H, H, H, L, L, L, H, H, H, L, L],
     [(1, SpeechStart(0)), (4, SpeechEnd(30)), (7, SpeechStart(60)), (10, SpeechEnd(90))], Q),
    ("still stopping", {"min_speech_ms": 0, "min_silence_ms": 100}, [H, L, L],
     [(0, SpeechStart(0))], SO),
    ("custom thresholds", {"threshold": 0.8, "neg_threshold": 0.7, "min_speech_ms": 0,
                           "min_silence_ms": 0}, [0.75, 0.85, 0.75, 0.65, 0.75],
     [(1, SpeechStart(10)), (3, SpeechEnd(30))], Q),
]


@pytest.mark.parametrize("name,kwargs,probs,expected,final", GATE_CASES,
                         ids=[c[0] for c in GATE_CASES])
def test_gate(name: str, kwargs: dict, probs: list, expected: list, final: VadState) -> None:
    gate = VadGate(1000, **kwargs)
    got = [(i, ev) for i, p in enumerate(probs) if (ev := gate.push(p, 10)) is not None]
    assert got == expected
    assert gate.state is final
    assert gate.position == 10 * len(probs)
    gate.reset()
    assert gate.push_many(probs, 10) == [ev for _, ev in expected]


def test_gate_default_neg_threshold_and_speech_ms() -> None:
    gate = VadGate(16000, threshold=0.5, min_speech_ms=64, min_silence_ms=100)
    assert gate.neg_threshold == pytest.approx(0.35)
    assert VadGate(16000, threshold=0.1).neg_threshold == pytest.approx(0.01)
    assert gate.push_many([0.0, 0.9, 0.9], 512) == [SpeechStart(512)]
    assert gate.is_speaking and gate.speech_ms == pytest.approx(64.0)
    gate.push(0.9, 512)
    assert gate.speech_ms == pytest.approx(96.0)
    assert gate.push_many([0.0] * 4, 512) == [SpeechEnd(4 * 512)]
    assert not gate.is_speaking and gate.speech_ms == 0.0


@pytest.mark.parametrize("kwargs", [dict(threshold=1.5), dict(threshold=0.5, neg_threshold=0.6),
                                    dict(min_speech_ms=-1), dict(min_silence_ms=-1)])
def test_gate_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        VadGate(16000, **kwargs)
    with pytest.raises(ValueError):
        VadGate(16000).push(0.5, 0)
    for prob in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError):
            VadGate(16000).push(prob, 512)


# --- the detector on real recordings ----------------------------------------------------


def padded(shared_audio: Path, name: str, pad_s: float = 1.0) -> tuple[np.ndarray, int, int]:
    """The file between ``pad_s`` of digital silence each side: (pcm, rate, pad samples)."""
    x, sr = load_wav(shared_audio / name)
    pad = np.zeros(int(pad_s * sr), np.int16)
    return np.concatenate([pad, x, pad]), sr, len(pad)


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
@pytest.mark.parametrize(
    "name",
    ["speech/goforward.wav", "speech/librivox-0870.wav", "speech/librivox-0930.wav",
     "caller/confirm.wav", "caller/hello.wav"],
)
def test_one_utterance_near_true_onset(
    model: SileroModel, shared_audio: Path, kind: str, name: str
) -> None:
    x, sr, pad = padded(shared_audio, name)
    onset, offset = energy_span(x[pad:-pad], sr)
    det = VoiceDetector(make_scorer(kind, model, sr), VadGate(sr, min_silence_ms=500))
    events = det.process(x)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    start, end = events[0].sample - pad, events[1].sample - pad
    assert abs(start - onset) <= 0.1 * sr
    assert -0.15 * sr <= end - offset <= 0.4 * sr  # WebRTC VAD has a built-in hangover
    assert not det.is_speaking and det.speech_ms == 0.0


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("noise_sd", [0, 30])
def test_no_events_in_silence_or_low_noise(
    model: SileroModel, kind: str, rate: int, noise_sd: int
) -> None:
    x = np.round(np.random.default_rng(7).normal(0, noise_sd, 5 * rate)).astype(np.int16)
    det = VoiceDetector(make_scorer(kind, model, rate), VadGate(rate))
    assert det.process(x) == []
    assert det.state is VadState.QUIET


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
def test_8k_voicemail_detected(model: SileroModel, shared_audio: Path, kind: str) -> None:
    x, sr, pad = padded(shared_audio, "voicemail/vm-nobodyavail.wav")
    events = VoiceDetector(make_scorer(kind, model, sr), VadGate(sr, min_silence_ms=500)).process(x)
    assert isinstance(events[0], SpeechStart) and isinstance(events[-1], SpeechEnd)
    assert events[0].sample >= pad - 0.1 * sr


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
def test_chunking_invariance(model: SileroModel, shared_audio: Path, kind: str) -> None:
    x, sr, _ = padded(shared_audio, "caller/interrupt.wav", pad_s=0.5)

    def run(sizes: list[int] | None) -> list:
        det = VoiceDetector(make_scorer(kind, model, sr), VadGate(sr, min_silence_ms=100))
        if sizes is None:
            return det.process(x)
        events, pos = [], 0
        for n in sizes:
            events += det.process(x[pos : pos + n])
            pos += n
        assert pos >= len(x)
        return events

    one_shot = run(None)
    assert len(one_shot) >= 4  # several utterances with 100 ms min_silence
    assert run([sr // 50] * (len(x) // (sr // 50) + 1)) == one_shot  # 20 ms carrier frames
    rng = np.random.default_rng(3)
    assert run(list(rng.integers(0, 2000, size=len(x) // 500 + 10))) == one_shot


def test_split_api_batched_across_calls(model: SileroModel, shared_audio: Path) -> None:
    """A batcher: every call's chunks scored by one ONNX run per round; events unchanged."""
    names = ["caller/interrupt.wav", "speech/cards-005.wav", "speech/goforward.wav",
             "caller/reschedule.wav", "caller/hello.wav"]
    calls = [padded(shared_audio, n, pad_s=0.5)[0] for n in names]
    expected = [
        VoiceDetector(SileroScorer(model, 16000), VadGate(16000, min_silence_ms=200)).process(x)
        for x in calls
    ]
    dets = [VoiceDetector(SileroScorer(model, 16000), VadGate(16000, min_silence_ms=200))
            for _ in calls]
    got: list[list] = [[] for _ in calls]
    rng = np.random.default_rng(5)
    pos = [0] * len(calls)
    while any(p < len(x) for p, x in zip(pos, calls)):
        for i, x in enumerate(calls):  # jittery arrivals: 0–60 ms per call per tick
            n = int(rng.integers(0, 960))
            dets[i].feed(x[pos[i] : pos[i] + n])
            pos[i] += n
        blocks = [d.take_chunks() for d in dets]
        probs = score_blocks([d.scorer.stream for d in dets], blocks)
        for i, d in enumerate(dets):
            got[i] += d.apply_scores(probs[i])
    assert got == expected


def test_split_api_misuse(model: SileroModel) -> None:
    det = VoiceDetector(SileroScorer(model, 16000), VadGate(16000))
    det.feed(np.zeros(1500, np.int16))
    chunks = det.take_chunks()
    assert chunks.shape == (2, 512) and chunks.dtype == np.int16
    assert det.buffered_samples == 1500 - 1024
    with pytest.raises(RuntimeError):
        det.take_chunks()
    with pytest.raises(RuntimeError):
        det.process(np.zeros(10, np.int16))
    with pytest.raises(ValueError):
        det.apply_scores([0.1])
    assert det.apply_scores([0.1, 0.1]) == []
    assert det.gate.position == 1024
    assert det.take_chunks().shape == (0, 512) and det.apply_scores([]) == []
    with pytest.raises(TypeError):
        det.feed(np.zeros(10, np.float32))
    with pytest.raises(ValueError):
        det.feed(np.zeros((2, 10), np.int16))
    with pytest.raises(ValueError):
        VoiceDetector(SileroScorer(model, 8000), VadGate(16000))


def test_detector_reset(model: SileroModel, shared_audio: Path) -> None:
    x, sr, _ = padded(shared_audio, "caller/hello.wav", pad_s=0.5)
    det = VoiceDetector(SileroScorer(model, sr), VadGate(sr))
    first = det.process(x[:-300])
    assert det.buffered_samples > 0
    det.reset()
    assert det.buffered_samples == 0 and det.gate.position == 0 and det.state is VadState.QUIET
    assert det.process(x[:-300]) == first
