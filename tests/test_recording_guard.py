"""BestEffortRecording: a recorder's I/O error stops the recording, is reported once, never raises."""

from __future__ import annotations

import errno
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.recording_guard import BestEffortRecording, RecordingResult
from gateway.store import CallRecorder

SR = 8000
SECOND = np.full(SR, 100, dtype=np.int16)


def opener(path: Path, **kwargs):
    return lambda rate: CallRecorder(path, sample_rate=rate, **kwargs)


class Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, stage: str, error: str) -> None:
        self.seen.append((stage, error))


def no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_healthy_recording_completes(tmp_path: Path) -> None:
    failures = Failures()
    rec = BestEffortRecording(opener(tmp_path / "a.wav"), SR, on_failure=failures)
    for i in range(5):
        rec.caller(SECOND, i * SR)
        rec.agent(SECOND, i * SR)
    assert rec.close() == RecordingResult("completed", str(tmp_path / "a.wav"))
    assert rec.close() == rec.result  # idempotent
    assert failures.seen == [] and not rec.active
    with wave.open(str(tmp_path / "a.wav"), "rb") as w:
        assert w.getnframes() == 5 * SR


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_unusable_directory_fails_the_recording_at_open(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "recordings"
    blocker.write_text("a regular file where the directory should be")
    path = blocker / "c.wav" if where == "file" else blocker / "sub" / "c.wav"
    failures = Failures()
    rec = BestEffortRecording(opener(path), SR, on_failure=failures)
    assert not rec.active
    rec.caller(SECOND, 0)  # a no-op, not an error
    result = rec.close()
    assert result is not None and result.status == "failed" and result.path is None
    assert result.error is not None and result.error.startswith("open: [Errno")
    assert [stage for stage, _ in failures.seen] == ["open"]


def test_a_full_disk_mid_call_stops_recording_and_keeps_what_was_written(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    path = tmp_path / "full.wav"
    failures = Failures()
    rec = BestEffortRecording(opener(path, window_ms=1000, flush_ms=1000), SR, on_failure=failures)
    for i in range(3):
        rec.caller(SECOND, i * SR)  # two seconds go out to the file
    monkeypatch.setattr(wave.Wave_write, "writeframes", no_space)
    for i in range(3, 6):
        rec.caller(SECOND, i * SR)
        rec.agent(SECOND, i * SR)
    assert not rec.active
    assert failures.seen == [("write", "write: [Errno 28] No space left on device")]
    monkeypatch.undo()
    result = rec.close()
    assert result == RecordingResult("failed", None, "write: [Errno 28] No space left on device")
    with wave.open(str(path), "rb") as w:  # the partial file stays, valid up to the failure
        assert w.getnframes() == 2 * SR


def test_a_failing_close_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failures = Failures()
    rec = BestEffortRecording(opener(tmp_path / "c.wav"), SR, on_failure=failures)
    rec.caller(SECOND, 0)  # still in memory: written at close
    monkeypatch.setattr(wave.Wave_write, "writeframes", no_space)
    result = rec.close()
    assert result is not None and result.status == "failed" and result.error.startswith("close: [Errno 28]")
    assert [stage for stage, _ in failures.seen] == ["close"]


def test_a_bug_in_the_recorder_is_contained_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = BestEffortRecording(opener(tmp_path / "d.wav"), SR)
    rec.caller(np.zeros(10, dtype=np.float32), 0)  # TypeError inside the recorder
    assert not rec.active and rec.error == "write: expected int16 samples, got float32"
    assert any(r.exc_info for r in caplog.records)  # logged with its traceback


def test_not_recorded_when_the_hook_returns_none() -> None:
    rec = BestEffortRecording(lambda rate: None, SR)
    rec.caller(SECOND, 0)
    assert rec.close() is None and not rec.active
