"""The WebRTC leg's codec cost per call per 20 ms frame, for ``gateway bench media``.

A browser call (``connectionType: "webrtc"``) carries Opus (RFC 6716; RTP payload RFC 7587:
48 kHz clock, 20 ms per packet) instead of G.711. Per 20 ms frame, in each direction, the
gateway does what aiortc's codec classes do for it (:mod:`aiortc.codecs.opus`, libopus through
PyAV), plus the resampling between Opus's 48 kHz and the session's rate:

* **inbound** (browser → session): one Opus packet decoded by aiortc's ``OpusDecoder`` (48 kHz
  stereo s16, as aiortc's receiver decodes it), then the call's
  :class:`~gateway.webrtc.tracks.InboundAudio` (PyAV's ``AudioResampler`` to mono s16 at the
  session's rate, cut into the 20 ms chunks the transport hands the session);
* **outbound** (session → browser): 20 ms of agent audio at the session's rate pushed on the
  call's :class:`~gateway.webrtc.tracks.PacedTrack` and taken off it as the 48 kHz frame it
  emits (its resampler), then encoded by aiortc's ``OpusEncoder`` (mono to stereo, 96 kbit/s,
  ``application=voip``), as aiortc's sender does for every frame the track emits. The track's
  pacing (a sleep until each frame is due) is left out: the frame is taken as soon as pushed.

``calls`` calls each keep their own codec and resampler state and are served frame by frame in
turn, as simultaneous live calls are. The packets decoded are the shared 60 s recording encoded
beforehand (each call from its own offset), so the decoder sees real speech, not silence.
CPU µs from ``time.process_time`` (the process's CPU time, every thread). Not measured here:
SRTP, RTP packetisation and ICE/DTLS (aiortc's, per packet), and the session's own stages (VAD,
playout: the carrier rows' ``vad_feed`` etc. apply unchanged).

Where it runs: aiortc decodes on a thread per receiver and encodes in the event loop's default
executor; libopus runs inside PyAV's calls.
"""

from __future__ import annotations

import fractions
import gc
import time
from typing import Any, Sequence

import numpy as np

from benchmarks.media_stages import FRAME_MS, Audio, load_audio

__all__ = ["measure_webrtc", "run_webrtc", "webrtc_table", "WEBRTC_CALLS", "OPUS_RATE"]

#: Call counts for the ``webrtc`` rows.
WEBRTC_CALLS = (1, 100)
#: Opus's RTP clock and the rate aiortc's Opus codec runs at (Hz; RFC 7587 §4.1).
OPUS_RATE = 48000
_OPUS_FRAME = OPUS_RATE * FRAME_MS // 1000  # 960 samples
_WARM_FRAMES = 10


def _frame(pcm: np.ndarray, rate: int, layout: str, pts: int):
    """``pcm`` (int16, interleaved when stereo) as an ``av.AudioFrame`` at ``rate`` Hz."""
    import av

    channels = 2 if layout == "stereo" else 1
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    assert frame.samples == pcm.size // channels
    return frame


def _packets(audio: Audio, frames: int, offset_frames: int) -> list[bytes]:
    """``frames`` Opus packets (20 ms) of the recording from ``offset_frames`` on, encoded as a
    browser would send them (48 kHz; mono speech in a stereo frame, as aiortc's encoder takes)."""
    from aiortc.codecs.opus import OpusEncoder

    base = audio.at(OPUS_RATE)
    encoder, out = OpusEncoder(), []
    f = offset_frames
    while len(out) < frames:
        start = (f * _OPUS_FRAME) % max(1, base.size - _OPUS_FRAME)
        mono = base[start : start + _OPUS_FRAME]
        payloads, _ = encoder.encode(_frame(np.repeat(mono, 2), OPUS_RATE, "stereo", f * _OPUS_FRAME))
        out += payloads
        f += 1
    return out[:frames]


def measure_webrtc(calls: int, *, seconds: float = 2.0, session_rate: int = 16000,
                   audio: Audio | None = None) -> dict[str, Any]:
    """One row: ``calls`` calls' Opus legs for ``seconds`` of audio each way.

    Args:
        calls: simultaneous calls (each its own decoder, resampler and encoder).
        seconds: audio per call and direction (s).
        session_rate: the session's rate the WebRTC transport resamples to and from (Hz).
        audio: the recording (loaded if not given).

    Returns:
        ``{"calls", "session_rate", "us_in_per_frame", "us_decode_per_frame",
        "us_resample_per_frame", "us_out_per_frame", "cpu_ms_per_call_second", "bytes_per_packet"}``
        (µs of CPU per call per 20 ms frame; ms of CPU per call-second, both directions).
    """
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    from gateway.webrtc.tracks import InboundAudio, PacedTrack

    audio = audio or load_audio()
    frames = max(1, int(round(seconds * 1000 / FRAME_MS)))
    warm = _WARM_FRAMES  # not counted: the codecs' first frames (allocation, resampler priming)
    step = session_rate * FRAME_MS // 1000
    agent = audio.at(session_rate)
    packets = [_packets(audio, warm + frames, i * 977) for i in range(calls)]
    decoders = [OpusDecoder() for _ in range(calls)]
    inbound = [InboundAudio(session_rate) for _ in range(calls)]
    tracks = [PacedTrack(session_rate, on_mark=lambda name: None) for _ in range(calls)]
    encoders = [OpusEncoder() for _ in range(calls)]
    decode_ns = resample_ns = out_ns = 0
    gc.collect()
    gc.disable()
    try:
        for f in range(warm + frames):
            if f == warm:
                decode_ns = resample_ns = out_ns = 0
            for i in range(calls):
                t0 = time.process_time_ns()
                decoded = decoders[i].decode(JitterFrame(packets[i][f], f * _OPUS_FRAME))
                t1 = time.process_time_ns()
                for frame in decoded:
                    inbound[i].convert(frame)
                t2 = time.process_time_ns()
                start = ((i * 977 + f) * step) % max(1, agent.size - step)
                tracks[i].push(agent[start : start + step].tobytes())
                encoders[i].encode(tracks[i]._next_frame())  # what recv() returns once the frame is due
                t3 = time.process_time_ns()
                decode_ns += t1 - t0
                resample_ns += t2 - t1
                out_ns += t3 - t2
    finally:
        gc.enable()
    n = calls * frames
    us_in = (decode_ns + resample_ns) / 1000 / n
    us_out = out_ns / 1000 / n
    return {
        "calls": calls, "session_rate": session_rate, "seconds": frames * FRAME_MS / 1000,
        "us_in_per_frame": round(us_in, 1), "us_decode_per_frame": round(decode_ns / 1000 / n, 1),
        "us_resample_per_frame": round(resample_ns / 1000 / n, 1), "us_out_per_frame": round(us_out, 1),
        "cpu_ms_per_call_second": round((us_in + us_out) * (1000 / FRAME_MS) / 1000, 2),
        "bytes_per_packet": round(float(np.mean([len(p) for ps in packets for p in ps])), 1),
    }  # fmt: skip


def run_webrtc(calls: Sequence[int] = WEBRTC_CALLS, *, seconds: float = 2.0, session_rate: int = 16000,
               audio: Audio | None = None) -> list[dict[str, Any]]:
    """One :func:`measure_webrtc` row per call count."""
    audio = audio or load_audio()
    return [measure_webrtc(n, seconds=seconds, session_rate=session_rate, audio=audio) for n in calls]


def webrtc_table(rows: Sequence[dict[str, Any]]) -> str:
    """The webrtc rows as a Markdown table."""
    lines = ["| webrtc (Opus 48 kHz ↔ session) | calls | µs / inbound frame (decode + resample) | "
             "µs / outbound frame (resample + encode) | CPU ms / call-second | bytes / packet |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| L16 {r['session_rate'] // 1000} kHz | {r['calls']} | {r['us_in_per_frame']:.1f} "
                     f"({r['us_decode_per_frame']:.1f} + {r['us_resample_per_frame']:.1f}) | "
                     f"{r['us_out_per_frame']:.1f} | {r['cpu_ms_per_call_second']:.2f} | {r['bytes_per_packet']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    counts = [int(a) for a in sys.argv[1:]] or list(WEBRTC_CALLS)
    print(webrtc_table(run_webrtc(counts)))
