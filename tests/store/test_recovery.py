"""Crash recovery: WAV header repair, and the start-up finalisation of calls a node left live."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.store import NODE_LOST, CallConfig, CallRecorder, CallStatus, Store, recover_lost_calls, repair_wav

SR = 8000
FRAME = 4  # bytes per stereo 16-bit frame


def recorded(path: Path, seconds: float = 1.0) -> Path:
    """A finished two-channel recording of ``seconds`` (caller: a ramp, agent: silence)."""
    n = int(SR * seconds)
    with CallRecorder(path, sample_rate=SR) as rec:
        rec.caller((np.arange(n) % 2000).astype(np.int16), 0)
    return path


def sizes(path: Path) -> tuple[int, int]:
    """(RIFF size, data size) as the header says (44-byte header of :mod:`wave`)."""
    head = path.read_bytes()[:44]
    return struct.unpack_from("<I", head, 4)[0], struct.unpack_from("<I", head, 40)[0]


def set_sizes(path: Path, riff: int, data: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(4)
        fh.write(struct.pack("<I", riff))
        fh.seek(40)
        fh.write(struct.pack("<I", data))


def frames_of(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getnframes()


# ----------------------------------------------------------------------------- repair_wav


def test_a_healthy_recording_is_valid_and_left_alone(tmp_path: Path) -> None:
    path = recorded(tmp_path / "ok.wav")
    before = path.read_bytes()
    check = repair_wav(path)
    assert check.valid and not check.repaired
    assert (check.frames, check.sample_rate, check.duration_ms) == (SR, SR, 1000)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "riff, data, extra, frames",
    [
        (36, 0, b"", SR),  # the sizes written at open, never patched (killed before any patch)
        (36 + 400, 400, b"", SR),  # patched once, then more audio written before the kill
        (36, 0, b"\x01\x02\x03", SR),  # a frame torn mid-write: cut off
        (0xFFFFFFF0, 0xFFFFFFD0, b"", SR),  # sizes larger than the file
    ],
    ids=["never-patched", "stale", "torn-frame", "too-large"],
)
def test_stale_sizes_are_rewritten_from_the_file_length(tmp_path: Path, riff: int, data: int, extra: bytes,
                                                         frames: int) -> None:  # fmt: skip
    path = recorded(tmp_path / "x.wav")
    audio = path.read_bytes()[44:]
    set_sizes(path, riff, data)
    with open(path, "ab") as fh:
        fh.write(extra)
    check = repair_wav(path)
    assert check.valid and check.repaired and check.frames == frames
    assert sizes(path) == (36 + frames * FRAME, frames * FRAME)
    assert path.stat().st_size == 44 + frames * FRAME
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, SR)
        assert w.readframes(frames) == audio[: frames * FRAME]


def test_an_empty_call_is_a_valid_empty_recording(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    CallRecorder(path, sample_rate=SR)  # never closed: what a process killed at once leaves
    check = repair_wav(path)
    assert check.valid and check.frames == 0 and check.duration_ms == 0


@pytest.mark.parametrize(
    "content, error",
    [
        (b"", "too short"),
        (b"RIFF\x00\x00", "too short"),
        (b"RIFX" + bytes(40), "not a RIFF WAVE"),
        (b"RIFF\x24\x00\x00\x00WAVEdata\x00\x00\x00\x00", "data chunk before fmt"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 3, 1, SR, 4 * SR, 4, 32),
         "not integer PCM"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 1, 2, SR, 4 * SR, 4, 16),
         "no data chunk"),
    ],
    ids=["empty", "short", "rifx", "no-fmt", "float", "no-data"],
)
def test_files_that_are_not_repairable_are_reported_and_not_touched(tmp_path: Path, content: bytes,
                                                                     error: str) -> None:  # fmt: skip
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    check = repair_wav(path)
    assert not check.valid and not check.repaired and error in (check.error or "")
    assert path.read_bytes() == content


def test_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        repair_wav(tmp_path / "missing.wav")


# ----------------------------------------------------------------------------- recovery


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path}/gw.db")
    s.create_all()
    return s


def started_call(store: Store, node: str, wav: Path | None) -> str:
    call, _ = store.create_call(CallConfig(), "twilio")
    store.mark_call_started(call.id, node_id=node, recording_path=wav)
    return call.id


def test_the_stream_claim_records_node_and_recording(store: Store, tmp_path: Path) -> None:
    call_id = started_call(store, "node-a", tmp_path / "a.wav")
    rec = store.get_call(call_id)
    assert rec is not None
    assert (rec.node_id, rec.recording_status, rec.recording_path) == ("node-a", "recording", str(tmp_path / "a.wav"))
    assert rec.recording_state == "recording"


def test_start_up_finalises_only_this_nodes_live_calls(store: Store, tmp_path: Path) -> None:
    healthy = started_call(store, "node-a", recorded(tmp_path / "healthy.wav", 2.0))
    stale_wav = recorded(tmp_path / "stale.wav", 1.5)
    set_sizes(stale_wav, 36, 0)
    stale = started_call(store, "node-a", stale_wav)
    missing = started_call(store, "node-a", tmp_path / "never-written.wav")
    unrecorded = started_call(store, "node-a", None)
    other_node = started_call(store, "node-b", recorded(tmp_path / "b.wav"))
    queued, _ = store.create_call(CallConfig(), "twilio")  # never connected: the sweeper's
    finished = started_call(store, "node-a", None)
    store.finalise_call(finished, status="completed", end_reason="carrier_stop", duration_ms=5)

    done = recover_lost_calls(store, "node-a")

    assert [d.call_id for d in done] == [healthy, stale, missing, unrecorded]
    for call_id in (healthy, stale, missing, unrecorded):
        rec = store.get_call(call_id)
        assert rec is not None and rec.status is CallStatus.FAILED
        assert (rec.end_reason, rec.error_code) == (NODE_LOST, NODE_LOST)
        assert [e.kind for e in rec.events] == [NODE_LOST] and rec.events[0].data["nodeId"] == "node-a"
        assert rec.ended_at is not None
    h, s, m, u = (store.get_call(c) for c in (healthy, stale, missing, unrecorded))
    assert (h.recording_status, h.recording_path, h.duration_ms) == ("completed", str(tmp_path / "healthy.wav"), 2000)
    assert (s.recording_status, s.duration_ms, s.events[0].data["recordingRepaired"]) == ("completed", 1500, True)
    assert frames_of(stale_wav) == 1.5 * SR
    assert (m.recording_status, m.recording_path, m.duration_ms) == ("failed", None, 0)
    assert "missing" in (m.recording_error or "")
    assert (u.recording_status, u.recording_path) == (None, None)
    assert store.get_call(other_node).status is CallStatus.IN_PROGRESS
    assert store.get_call(queued.id).status is CallStatus.QUEUED
    assert store.get_call(finished).end_reason == "carrier_stop"
    assert recover_lost_calls(store, "node-a") == []  # idempotent


def test_an_unrepairable_recording_is_reported_not_linked(store: Store, tmp_path: Path) -> None:
    wav = tmp_path / "torn.wav"
    wav.write_bytes(b"RIFF\x00")  # killed while the header itself was being written
    call_id = started_call(store, "n", wav)
    (done,) = recover_lost_calls(store, "n")
    rec = store.get_call(call_id)
    assert rec is not None and (rec.recording_status, rec.recording_path) == ("failed", None)
    assert "invalid" in (rec.recording_error or "") and done.recording_error == rec.recording_error


def test_finalise_derives_and_checks_the_recording_status(store: Store, tmp_path: Path) -> None:
    a, b, c = (started_call(store, "n", tmp_path / f"{i}.wav") for i in range(3))
    store.finalise_call(a, status="completed", end_reason="x", duration_ms=1, recording_path=tmp_path / "0.wav")
    store.finalise_call(b, status="completed", end_reason="x", duration_ms=1, recording_error="open: [Errno 20] Not a directory")
    with pytest.raises(ValueError, match="recording_status"):
        store.finalise_call(c, status="completed", end_reason="x", duration_ms=1, recording_status="recording")
    store.finalise_call(c, status="completed", end_reason="x", duration_ms=1)
    ra, rb, rc = (store.get_call(x) for x in (a, b, c))
    assert (ra.recording_state, rb.recording_state, rc.recording_state) == ("completed", "failed", None)
    assert rb.recording_error == "open: [Errno 20] Not a directory" and rb.recording_path is None
