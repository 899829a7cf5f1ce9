"""The WebRTC leg's codec rows of ``gateway bench media`` (:mod:`benchmarks.media_webrtc`)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import media_webrtc
from benchmarks.media_stages import FRAME_MS


@pytest.fixture(scope="module")
def audio():
    return media_webrtc.load_audio()


def test_the_packets_decoded_are_the_recording_through_opus(audio):
    """What the inbound row decodes is real speech: the packets, decoded and resampled to 16 kHz
    as the call's transport does (the row's inbound path), match the recording (after the codec's delay) to within Opus's loss."""
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.jitterbuffer import JitterFrame

    from gateway.webrtc.tracks import InboundAudio

    frames = 100
    packets = media_webrtc._packets(audio, frames, offset_frames=250)  # 5 s in: speech
    decoder, inbound = OpusDecoder(), InboundAudio(16000)
    out = []
    for f, packet in enumerate(packets):
        for frame in decoder.decode(JitterFrame(packet, f * 960)):
            out += inbound.convert(frame)
    got = np.frombuffer(b"".join(out), "<i2").astype(np.float64)
    step = 16000 * FRAME_MS // 1000
    ref = audio.at(16000)[250 * step : (250 + frames) * step].astype(np.float64)
    n = min(got.size, ref.size) - 800
    best = max(np.corrcoef(got[d : d + n], ref[:n])[0, 1] for d in range(0, 800, 4))  # delay up to 50 ms
    assert best > 0.9, best
    assert 100 < np.mean([len(p) for p in packets]) < 400  # 96 kbit/s at 20 ms is 240 bytes


def test_a_row_per_call_count_with_both_directions(audio):
    rows = media_webrtc.run_webrtc((1, 3), seconds=0.2, audio=audio)
    assert [r["calls"] for r in rows] == [1, 3]
    for r in rows:
        assert r["us_in_per_frame"] == pytest.approx(r["us_decode_per_frame"] + r["us_resample_per_frame"], abs=0.2)
        assert r["us_out_per_frame"] > 0 and r["session_rate"] == 16000
        assert r["cpu_ms_per_call_second"] == pytest.approx((r["us_in_per_frame"] + r["us_out_per_frame"]) / 20, abs=0.02)
    table = media_webrtc.webrtc_table(rows)
    assert table.count("\n") == 3 and "| L16 16 kHz | 3 |" in table
