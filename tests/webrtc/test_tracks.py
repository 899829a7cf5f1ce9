"""The paced outbound track (marks from emitted frames, clear, bounds) and the inbound resampling."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from av import AudioFrame

from gateway.simulator.run import to_rate
from gateway.webrtc.tracks import MAX_LAG_S, MAX_QUEUE_MS, InboundAudio, PacedTrack, set_jitter_frames
from tests.conftest import load_wav


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def track(clock=None, out_rate=16000):
    acked: list[str] = []
    frames: list[bool] = []
    t = PacedTrack(16000, on_mark=acked.append, on_frame=frames.append, clock=clock or Clock(), out_rate=out_rate)
    return t, acked, frames


async def test_frames_are_20_ms_with_sample_pts_and_silence_when_empty():
    t, acked, frames = track()
    t.push(np.full(480, 1000, "<i2").tobytes())  # 30 ms
    out = [await t.recv() for _ in range(3)]
    assert [f.pts for f in out] == [0, 320, 640] and all(f.samples == 320 for f in out)
    assert all(f.sample_rate == 16000 and f.format.name == "s16" and f.layout.name == "mono" for f in out)
    pcm = [f.to_ndarray()[0] for f in out]
    assert (pcm[0] == 1000).all() and (pcm[1][:160] == 1000).all() and not pcm[1][160:].any() and not pcm[2].any()
    assert frames == [True, True, False] and t.emitted_bytes == 960


async def test_frames_leave_at_48_khz_lagging_the_audio_by_the_resampler_delay_only():
    t, _, frames = track(out_rate=48000)
    t.push(np.full(480, 1000, "<i2").tobytes())  # 30 ms at 16 kHz
    out = [await t.recv() for _ in range(3)]
    assert [f.pts for f in out] == [0, 960, 1920] and all(f.samples == 960 and f.sample_rate == 48000 for f in out)
    pcm = np.concatenate([f.to_ndarray()[0] for f in out]).astype(int)
    loud = np.flatnonzero(np.abs(pcm) > 500)
    assert loud[0] <= 60  # about 1 ms of filter delay, not a frame held back
    assert 1440 - 60 <= loud[-1] <= 1440 + 100 and abs(np.median(pcm[200:1300]) - 1000) < 20
    assert frames == [True, True, False]


async def test_a_mark_is_acknowledged_once_the_audio_before_it_was_emitted():
    t, acked, _ = track()
    t.mark("m0")
    assert acked == ["m0"]  # nothing queued: at once
    t.push(bytes(640 * 3))
    t.mark("m1")
    t.push(bytes(640))
    t.mark("m2")
    await t.recv()
    await t.recv()
    assert acked == ["m0"]
    await t.recv()
    assert acked == ["m0", "m1"]
    await t.recv()
    assert acked == ["m0", "m1", "m2"] and t.queued_ms == 0


async def test_clear_drops_the_queue_at_once_and_returns_the_pending_marks():
    t, acked, _ = track()
    t.push(bytes(640 * 10))
    t.mark("a")
    t.push(bytes(640 * 10))
    t.mark("b")
    await t.recv()
    assert t.clear() == ["a", "b"] and t.queued_ms == 0
    assert (await t.recv()).to_ndarray().any() == False and acked == []  # noqa: E712 - silence next


def test_the_queue_is_bounded():
    t, _, _ = track()
    limit = 2 * 16000 * MAX_QUEUE_MS // 1000
    t.push(bytes(limit - 100))
    t.push(bytes(300))
    assert t.queued_ms == MAX_QUEUE_MS and t.dropped_bytes == 200


async def test_recv_paces_on_real_time_and_skips_the_frame_times_a_long_lag_missed():
    t = PacedTrack(16000, on_mark=lambda name: None)
    start = time.monotonic()
    for _ in range(6):
        await t.recv()
    assert 0.095 <= time.monotonic() - start < 0.3  # five waits of 20 ms after the first frame
    clock = Clock()
    t, _, _ = track(clock)
    t.push(bytes(640 * 3))
    assert (await t.recv()).pts == 0
    clock.t += 0.02 + 0.2  # the loop was held up 200 ms past the next frame's time
    assert (await t.recv()).pts == 320 * 11  # the 10 frame times missed are skipped, not sent late
    assert t.skipped_frames == 10 and t.emitted_bytes == 1280  # no audio was dropped
    wait = asyncio.ensure_future(t.recv())
    await asyncio.sleep(0.005)
    assert not wait.done()  # no burst: the next one is due 20 ms on
    clock.t += 0.02
    assert (await wait).pts == 320 * 12


async def test_a_stopped_track_raises():
    from aiortc.mediastreams import MediaStreamError

    t, _, _ = track()
    t.stop()
    with pytest.raises(MediaStreamError):
        await t.recv()


def test_inbound_audio_is_resampled_to_the_session_rate_in_20_ms_chunks(shared_audio):
    pcm, rate = load_wav(shared_audio / "speech/goforward.wav")
    at48 = to_rate(pcm, rate, 48000)
    stereo = np.repeat(at48[:, None], 2, axis=1).reshape(1, -1)  # packed s16 stereo, as aiortc decodes
    inbound, chunks = InboundAudio(16000), []
    for i in range(0, stereo.shape[1] - 1920 + 1, 1920):  # 20 ms frames of 960 samples × 2 channels
        frame = AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, i:i + 1920]), format="s16", layout="stereo")
        frame.sample_rate = 48000
        chunks += inbound.convert(frame)
    assert chunks and all(len(c) == 640 for c in chunks)
    out = np.frombuffer(b"".join(chunks), "<i2").astype(float)
    ref = to_rate(pcm, rate, 16000)[: out.size].astype(float)
    lag = int(np.argmax(np.correlate(out[:16000], ref[:16000], "full"))) - 15999
    assert abs(lag) < 40
    a, b = out[max(lag, 0):], ref[max(-lag, 0):]
    n = min(a.size, b.size)
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.95


async def test_the_receiver_jitter_buffer_is_set():
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("audio")
    assert transceiver.receiver._RTCRtpReceiver__jitter_buffer._prefetch == 4  # aiortc's own
    assert set_jitter_frames(transceiver.receiver, 1)
    assert transceiver.receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1
    assert not set_jitter_frames(object(), 1)
    await pc.close()


def _packet(seq: int):
    from aiortc.rtp import RtpPacket

    p = RtpPacket(sequence_number=seq % 65536, timestamp=960 * seq % 2**32)
    p._data = b"f%d" % seq
    return p


def test_the_prompt_buffer_releases_in_order_packets_at_once_and_reorders_the_rest():
    from gateway.webrtc.tracks import prompt_audio_buffer

    buf = prompt_audio_buffer()
    out = lambda seq: (f := buf.add(_packet(seq))[1]) and f.data  # noqa: E731
    assert [out(s) for s in (65534, 65535, 0, 1)] == [b"f65534", b"f65535", b"f0", b"f1"]  # wraps too
    assert out(3) is None  # 2 is missing: held back
    assert out(2) == b"f2"  # the gap filled: released in order, 3 after the next packet (aiortc's prefetch 1)
    assert out(4) == b"f3" and out(5) == b"f4"
    assert out(1) is None  # a late duplicate is dropped


def test_inbound_audio_follows_a_codec_switch_to_another_rate():
    """Opus (48 kHz stereo) then PCMU (8 kHz mono), as aiortc decodes a peer that switches
    payload type: PyAV's resampler refuses the second shape, so a new one takes it."""
    inbound = InboundAudio(16000)
    opus = AudioFrame.from_ndarray(np.zeros((1, 1920), "<i2"), format="s16", layout="stereo")
    opus.sample_rate = 48000
    pcmu = AudioFrame.from_ndarray(np.full((1, 160), 1000, "<i2"), format="s16", layout="mono")
    pcmu.sample_rate = 8000
    chunks = [c for f in (opus, opus, pcmu, pcmu, pcmu) for c in inbound.convert(f)]
    assert len(chunks) >= 3 and all(len(c) == 640 for c in chunks)
