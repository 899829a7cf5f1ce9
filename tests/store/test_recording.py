"""CallRecorder: two time-aligned channels written as the call goes, read back with wave."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.store import CallRecorder

SR = 8000


def read_stereo(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        return frames, w.getframerate()


def tone(n: int, value: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def test_round_trip_two_channels_aligned(tmp_path: Path) -> None:
    path = tmp_path / "calls" / "call_1.wav"
    rec = CallRecorder(path, sample_rate=SR)
    # caller speaks 20 ms frames continuously for 1 s
    for i in range(50):
        rec.caller(tone(160, 1000 + i), at_sample=i * 160)
    # the agent answers at 0.5 s with 200 ms (as bytes), then again at 3 s
    rec.agent(tone(1600, -2000).tobytes(), at_sample=4000)
    rec.agent(tone(800, 3000), at_sample=3 * SR)
    rec.close()

    frames, rate = read_stereo(path)
    assert rate == SR
    assert len(frames) == 3 * SR + 800  # timeline ends with the last agent chunk
    left, right = frames[:, 0], frames[:, 1]
    for i in range(50):
        assert np.all(left[i * 160 : (i + 1) * 160] == 1000 + i)
    assert np.all(left[8000:] == 0)  # caller silent after 1 s
    assert np.all(right[:4000] == 0)
    assert np.all(right[4000:5600] == -2000)
    assert np.all(right[5600 : 3 * SR] == 0)  # the gap is silence
    assert np.all(right[3 * SR :] == 3000)


def test_late_and_overlapping_agent_audio_lands_at_its_position(tmp_path: Path) -> None:
    path = tmp_path / "r.wav"
    with CallRecorder(path, sample_rate=SR, window_ms=2000, flush_ms=500) as rec:
        rec.agent(tone(1600, 500), at_sample=800)  # 100..300 ms
        rec.caller(tone(8000, 7), at_sample=0)  # 0..1 s
        rec.agent(tone(400, 900), at_sample=1200)  # overlaps: later write wins
        rec.agent(tone(160, 1), at_sample=160)  # late, before the first agent chunk
    frames, _ = read_stereo(path)
    right = frames[:, 1]
    assert np.all(right[:160] == 0)
    assert np.all(right[160:320] == 1)
    assert np.all(right[320:800] == 0)
    assert np.all(right[800:1200] == 500)
    assert np.all(right[1200:1600] == 900)
    assert np.all(right[1600:2400] == 500)
    assert np.all(frames[:8000, 0] == 7)


def test_writes_as_it_goes_and_header_is_valid_mid_call(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    rec = CallRecorder(path, sample_rate=SR, window_ms=1000, flush_ms=500)
    for i in range(5 * 50):  # 5 s of caller audio
        rec.caller(tone(160, 100), at_sample=i * 160)
    # at most window + flush is held back; the rest is on disk with a valid header
    assert rec.frames_written >= 5 * SR - (SR + SR // 2)
    frames, _ = read_stereo(path)
    assert len(frames) == rec.frames_written
    assert np.all(frames[:, 0] == 100)
    # audio for a position already written out is dropped (and counted), not misplaced
    rec.agent(tone(160, 5), at_sample=0)
    assert rec.dropped_samples == 160
    rec.close()
    rec.close()  # idempotent
    frames, _ = read_stereo(path)
    assert len(frames) == 5 * SR
    assert np.all(frames[:, 1] == 0)
    with pytest.raises(ValueError):
        rec.caller(tone(10, 1), at_sample=5 * SR)


def test_long_gap_keeps_memory_bounded(tmp_path: Path) -> None:
    path = tmp_path / "gap.wav"
    rec = CallRecorder(path, sample_rate=SR, window_ms=1000, flush_ms=500)
    rec.caller(tone(160, 3), at_sample=0)
    rec.agent(tone(160, 4), at_sample=600 * SR)  # ten minutes later
    assert len(rec._buf) < 10 * SR  # not a ten-minute buffer
    rec.close()
    frames, _ = read_stereo(path)
    assert len(frames) == 600 * SR + 160
    assert np.all(frames[:160, 0] == 3) and np.all(frames[160:, 0] == 0)
    assert np.all(frames[: 600 * SR, 1] == 0) and np.all(frames[600 * SR :, 1] == 4)
    assert rec.duration_ms == 600_020


def test_empty_recording_is_a_valid_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    CallRecorder(path, sample_rate=16000).close()
    frames, rate = read_stereo(path)
    assert len(frames) == 0 and rate == 16000


def test_rejects_bad_input(tmp_path: Path) -> None:
    with CallRecorder(tmp_path / "x.wav") as rec:
        with pytest.raises(TypeError):
            rec.caller(np.zeros(10, dtype=np.float32), 0)
        with pytest.raises(ValueError):
            rec.caller(b"\x00", 0)
        with pytest.raises(ValueError):
            rec.agent(tone(10, 1), -1)
