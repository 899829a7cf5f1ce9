"""The per-frame stage measurements of ``gateway bench media`` (:mod:`benchmarks.media`).

The recording at every rate (:func:`load_audio`), one simulated call's gateway-side state
(:class:`_Call`) and :func:`measure`, which times ``calls`` such calls per 20 ms frame; see
:mod:`benchmarks.media` for what each stage is and how the figures are reported.
"""

from __future__ import annotations

import functools
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.audio.amd import AmdDetector, AmdState
from gateway.audio.playout import PlayoutLedger
from gateway.audio.pregate import PreGate, chunk_power_dbfs
from gateway.audio.silero import SileroModel, score_blocks
from gateway.audio.vad import SileroScorer, VadGate, VoiceDetector, WebRtcScorer
from gateway.carriers import events as ev
from gateway.carriers.registry import make_adapter
from gateway.codecs.transcode import Transcoder, decode, encode
from gateway.formats import L16_24K, AudioFormat, Encoding
from gateway.simulator.dialects import make_dialect
from gateway.simulator.noise import LineNoise
from gateway.simulator.run import load_wav, to_rate
from gateway.vadrun import PREGATE_HOLD, VadFactory

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
RECORDING = SHARED_AUDIO / "speech" / "silero-test.wav"
VADS = ("webrtc", "silero")
CARRIERS = ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw")
#: Issue #4 target: media path with Silero at 100+ calls (CPU ms per call-second). Reported, not asserted.
TARGET_CPU_MS = 1.5
#: Issue #8 target: the voicemail detector's cost per 20 ms frame per call (µs). Reported, not asserted.
AMD_TARGET_US = 20.0
FRAME_MS = 20
_SILENCE = {Encoding.PCMU: 0xFF, Encoding.PCMA: 0xD5, Encoding.L16: 0x00}
_STAGES = ("parse", "to_vad", "vad_feed", "vad_score", "out_transcode", "out_pace_frame", "bridge_in", "bridge_out",
           "amd")


# ----------------------------------------------------------------------------- audio


@dataclass
class Audio:
    """The recording at every rate the benchmark needs (int16)."""

    by_rate: dict[int, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def at(self, rate: int) -> np.ndarray:
        if rate not in self.by_rate:
            base = self.by_rate[16000]
            self.by_rate[rate] = to_rate(base, 16000, rate)
        return self.by_rate[rate]


def load_audio(path: Path = RECORDING) -> Audio:
    """The 60 s recording (16 kHz); a synthetic fallback only if ``../shared/audio`` is absent."""
    if path.exists():
        pcm, rate = load_wav(path)
        if rate != 16000:
            pcm = to_rate(pcm, rate, 16000)
        return Audio({16000: pcm}, str(path))
    # Fresh clone without ../shared: speech-like bursts of noise so the benchmark still runs.
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 20) / 16000
    envelope = (np.sin(2 * np.pi * 0.3 * t) > 0).astype(np.float64)
    pcm = (rng.standard_normal(t.size) * 3000 * envelope + rng.standard_normal(t.size) * 30).astype(np.int16)
    return Audio({16000: pcm}, "synthetic (shared audio not found)")


# ----------------------------------------------------------------------------- one call


class _Call:
    """One simulated call's gateway-side state: adapter, transcoders, VAD, ledger, bridge."""

    __slots__ = ("adapter", "fmt", "to_vad", "vad_rate", "det", "from_model", "ledger", "inbound", "outbound",
                 "proto", "deltas", "pending", "vad_kind", "amd", "amd_buf", "gate")

    def __init__(self, carrier: str, vad: str, model: SileroModel | None, audio: Audio, index: int,
                 ticks: int, bridge: bool, pregate: str = "energy", noise_dbfs: float | None = None) -> None:
        dialect = make_dialect(carrier)
        self.adapter = make_adapter(carrier)
        for frame in dialect.opening({}):
            self.adapter.receive(frame)
        fmt = self.fmt = self.adapter.audio_format
        assert fmt is not None and fmt == dialect.audio_format
        self.vad_kind = vad
        vad_rate = VadFactory.rate_for(fmt.sample_rate)  # the session's choice (``CallSession._setup``)
        self.vad_rate = vad_rate
        if vad_rate == fmt.sample_rate:  # as the session: decode only, no resampler
            self.to_vad = functools.partial(decode, encoding=fmt.encoding)
        else:
            resampler = Transcoder(fmt, AudioFormat(Encoding.L16, vad_rate), aligned=True)
            self.to_vad = lambda payload: np.frombuffer(resampler.process(payload), dtype="<i2")
        if vad == "webrtc":
            scorer = WebRtcScorer(vad_rate, mode=2, frame_ms=20)
            gate = VadGate(vad_rate, threshold=0.5, min_speech_ms=160, min_silence_ms=600)
        else:
            assert model is not None
            scorer = SileroScorer(model, vad_rate)
            gate = VadGate(vad_rate, threshold=0.5, min_speech_ms=160, min_silence_ms=600)
        self.det = VoiceDetector(scorer, gate)
        # The Silero pre-gate, as VadFactory makes it (the session's runner holds it open in a turn).
        self.gate = PreGate(vad_rate, pregate) if (vad == "silero" and pregate != "off") else None
        self.amd = AmdDetector(vad_rate)
        self.amd_buf = np.zeros(0, dtype=np.int16)
        self.from_model = Transcoder(L16_24K, fmt)
        self.ledger = PlayoutLedger(
            frame_bytes=fmt.bytes_for_ms(self.adapter.frame_ms), frame_ms=self.adapter.frame_ms,
            silence_byte=_SILENCE[fmt.encoding], lead_ms=80.0, mark_every=5,
            has_marks=self.adapter.mark("probe") is not None,
        )  # fmt: skip
        # Caller frames: the recording from a per-call offset, in the carrier's messages.
        n = fmt.sample_rate * FRAME_MS // 1000
        src = audio.at(fmt.sample_rate)
        frames_total = src.size // n
        start = (index * 7919) % max(1, frames_total - ticks)
        pcm = src[start * n : (start + ticks) * n]
        if pcm.size < ticks * n:
            pcm = np.resize(src, ticks * n)
        if noise_dbfs is not None:  # line noise under the caller, as the load driver's callers send
            pcm = LineNoise(fmt.sample_rate, level_dbfs=noise_dbfs, seed=index).under(pcm)
        self.inbound = [dialect.media(encode(pcm[i * n : (i + 1) * n], fmt.encoding)) for i in range(ticks)]
        # Agent frames: 20 ms of 24 kHz PCM16 each (model output), from another offset.
        m = 24000 * FRAME_MS // 1000
        agent = audio.at(24000)
        a0 = ((index * 3571) % max(1, agent.size // m - ticks)) * m
        agent_pcm = agent[a0 : a0 + ticks * m]
        if agent_pcm.size < ticks * m:
            agent_pcm = np.resize(agent, ticks * m)
        self.outbound = [agent_pcm[i * m : (i + 1) * m].astype("<i2").tobytes() for i in range(ticks)]
        self.pending: np.ndarray | None = None
        self.proto = None
        self.deltas: list[str] = []
        if bridge:
            self._bridge(fmt, agent_pcm, m, ticks)

    def _bridge(self, fmt: AudioFormat, agent_pcm: np.ndarray, m: int, ticks: int) -> None:
        import orjson
        import pybase64

        from gateway.llm.base import AgentConfig
        from gateway.llm.openai_realtime import RealtimeProtocol, choose_formats, openai_backend

        backend = openai_backend("gpt-realtime")
        wire, afmt = choose_formats(backend, fmt)
        self.proto = RealtimeProtocol(backend, AgentConfig(), wire_format=wire, audio_format=afmt)
        self.proto.session_update()
        self.proto.data_to_send()
        self.proto.receive(orjson.dumps({"type": "response.created", "response": {"id": "resp_1"}}))
        # What the model sends for each 20 ms: G.711 when passed through, else 24 kHz PCM.
        if afmt == L16_24K:
            chunks = self.outbound
        else:
            out = Transcoder(L16_24K, afmt)
            chunks = [out.process(c) for c in self.outbound]
        self.deltas = [
            orjson.dumps({"type": "response.output_audio.delta", "event_id": f"ev_{i}", "response_id": "resp_1",
                          "item_id": "item_1", "output_index": 0, "content_index": 0,
                          "delta": pybase64.b64encode_as_string(c)}).decode()
            for i, c in enumerate(chunks)
        ]  # fmt: skip


# ----------------------------------------------------------------------------- the loop


def _now() -> tuple[int, int]:
    return time.process_time_ns(), time.perf_counter_ns()


def measure(
    calls: int,
    vad: str,
    *,
    carrier: str = "twilio",
    seconds: float = 3.0,
    windows: int = 5,
    audio: Audio | None = None,
    model: SileroModel | None = None,
    bridge: bool = True,
    pregate: str = "energy",
    noise_dbfs: float | None = None,
) -> dict[str, Any]:
    """Run ``calls`` simultaneous calls for ``seconds`` of audio each; return one result row.

    Args:
        calls: simultaneous calls.
        vad: ``webrtc`` or ``silero``, run at the session's rate for the carrier (the row's
            ``vad`` label says which, e.g. ``silero@8k``).
        carrier: which carrier's messages and formats.
        seconds: call audio per call (20 ms ticks).
        windows: batcher ticks per 20 ms (calls' frames spread over them; 20 ms / 4 ms = 5).
        audio: the recording (loaded if not given).
        model: the shared Silero model (loaded if needed and not given).
        bridge: also time the OpenAI Realtime bridge's per-frame work (reported apart).
        pregate: Silero pre-gate (``off``, ``energy``, ``webrtc``; the gateway's default is
            ``energy``): its cost is part of ``vad_feed`` and also reported alone as
            ``us_vad_gate_per_frame``, with the share of chunks it kept from Silero
            (``vad_gate_skipped_share``).
        noise_dbfs: line noise under the caller's audio (dBFS RMS; ``None``: the recording as is).
    """
    if vad not in VADS:
        raise ValueError(f"vad must be one of {VADS}")
    audio = audio or load_audio()
    if vad != "webrtc" and model is None:
        model = SileroModel()
    ticks = max(1, int(round(seconds * 1000 / FRAME_MS)))
    world = [_Call(carrier, vad, model, audio, i, ticks, bridge, pregate, noise_dbfs) for i in range(calls)]
    groups = [world[g::windows] for g in range(min(windows, calls))]
    cpu = dict.fromkeys(_STAGES, 0)
    wall = dict.fromkeys(_STAGES, 0)
    batches = chunks_scored = speech_events = out_frames = 0
    gate_ns = chunks_seen = chunks_skipped = 0
    silero = vad != "webrtc"
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()  # a collection landing in one stage would skew its share; CPU totals are the same
    try:
        for tick in range(ticks):
            now_ms = tick * FRAME_MS
            for group in groups:
                # ---- inbound: parse
                c0, w0 = _now()
                payloads = []
                for c in group:
                    events = c.adapter.receive(c.inbound[tick])
                    media = events[0]
                    if type(media) is not ev.Media:
                        raise RuntimeError(f"{carrier}: expected Media, got {events}")
                    payloads.append(media.payload)
                c1, w1 = _now()
                # ---- inbound: to L16 at the VAD's rate (decode only when that is the carrier's)
                pcms = [c.to_vad(p) for c, p in zip(group, payloads)]
                c2, w2 = _now()
                # ---- inbound: VAD
                if silero:
                    taken = []
                    for c, pcm in zip(group, pcms):
                        c.det.feed(pcm)
                        taken.append(c.det.take_chunks())
                    g0 = time.process_time_ns()
                    waiting, blocks, plans, idle = _gate(group, taken)
                    gate_ns += time.process_time_ns() - g0
                    for c, k in idle:  # nothing to score: no chunk, or every chunk skipped (0)
                        chunks_seen += k
                        chunks_skipped += k
                        speech_events += len(c.det.apply_scores(np.zeros(k, np.float32)))
                    c3, w3 = _now()
                    if waiting:
                        probs = score_blocks([c.det.scorer.stream for c in waiting], blocks)
                        batches += 1
                        for c, p, (k, keep, w) in zip(waiting, probs, plans):
                            chunks_scored += len(p)
                            chunks_seen += k
                            if keep is not None:  # skipped chunks score 0, warm-up scores are dropped
                                chunks_skipped += k - keep.size
                                full = np.zeros(k, np.float32)
                                full[keep] = p[w:]
                                p = full
                            speech_events += len(c.det.apply_scores(p))
                    c4, w4 = _now()
                else:
                    for c, pcm in zip(group, pcms):
                        speech_events += len(c.det.process(pcm))
                    c3, w3 = _now()
                    c4, w4 = c3, w3
                # ---- outbound: model audio to the carrier's format
                outs = [c.from_model.process(c.outbound[tick]) for c in group]
                c5, w5 = _now()
                # ---- outbound: ledger, carrier frames
                for c, out in zip(group, outs):
                    ledger = c.ledger
                    ledger.enqueue("item_1", out)
                    adapter = c.adapter
                    for frame in ledger.due(now_ms):
                        adapter.media(frame.payload)
                        out_frames += 1
                        if frame.mark is not None:
                            adapter.mark(frame.mark)
                c6, w6 = _now()
                # ---- bridge (reported apart)
                if bridge:
                    for c, p in zip(group, payloads):
                        proto = c.proto
                        proto.append_audio(p)
                        for event in proto.data_to_send():
                            _dumps(event)
                    c7, w7 = _now()
                    for c in group:
                        c.proto.receive(c.deltas[tick])
                    c8, w8 = _now()
                else:
                    c7 = c8 = c6
                    w7 = w8 = w6
                # ---- voicemail detector (reported apart), in its 20 ms frames
                for c, pcm in zip(group, pcms):
                    _amd_feed(c, pcm)
                c9, w9 = _now()
                for name, a, b, x, y in (
                    ("parse", c0, c1, w0, w1), ("to_vad", c1, c2, w1, w2), ("vad_feed", c2, c3, w2, w3),
                    ("vad_score", c3, c4, w3, w4), ("out_transcode", c4, c5, w4, w5),
                    ("out_pace_frame", c5, c6, w5, w6), ("bridge_in", c6, c7, w6, w7), ("bridge_out", c7, c8, w7, w8),
                    ("amd", c8, c9, w8, w9),
                ):  # fmt: skip
                    cpu[name] += b - a
                    wall[name] += y - x
    finally:
        if gc_was:
            gc.enable()
    frames = calls * ticks
    us = {k: v / 1000 / frames for k, v in cpu.items()}
    us_wall = {k: v / 1000 / frames for k, v in wall.items()}
    in_us = us["parse"] + us["to_vad"] + us["vad_feed"] + us["vad_score"]
    out_us = us["out_transcode"] + us["out_pace_frame"]
    per_second = 1000 // FRAME_MS
    cpu_ms = (in_us + out_us) * per_second / 1000
    bridge_us = us["bridge_in"] + us["bridge_out"]
    return {
        "calls": calls,
        "vad": f"{vad}@{world[0].vad_rate // 1000}k",
        "vad_kind": vad,
        "vad_rate": world[0].vad_rate,
        "carrier": carrier,
        "format": str(world[0].fmt),
        "us_per_in_frame": round(in_us, 2),
        "us_per_out_frame": round(out_us, 2),
        "cpu_ms_per_call_second": round(cpu_ms, 3),
        "calls_per_core_media_only": round(1000 / cpu_ms, 1) if cpu_ms else None,
        "us_per_in_frame_wall": round(sum(us_wall[k] for k in ("parse", "to_vad", "vad_feed", "vad_score")), 2),
        "us_per_out_frame_wall": round(us_wall["out_transcode"] + us_wall["out_pace_frame"], 2),
        "us_bridge_per_frame_pair": round(bridge_us, 2) if bridge else None,
        "cpu_ms_per_call_second_with_bridge": round(cpu_ms + bridge_us * per_second / 1000, 3) if bridge else None,
        "us_amd_per_frame": round(us["amd"], 2),
        "us_amd_per_frame_wall": round(us_wall["amd"], 2),
        "stages_us": {k: round(v, 2) for k, v in us.items()},
        "seconds": ticks * FRAME_MS / 1000,
        "frames": frames,
        "out_frames": out_frames,
        "silero_runs": batches,
        "silero_chunks": chunks_scored,
        "mean_batch": round(chunks_scored / batches, 1) if batches else None,
        "vad_pregate": pregate if silero else None,
        "noise_dbfs": noise_dbfs,
        "us_vad_gate_per_frame": round(gate_ns / 1000 / frames, 3) if silero else None,
        "vad_gate_skipped_share": round(chunks_skipped / chunks_seen, 3) if (silero and chunks_seen) else None,
        "vad_events": speech_events,
    }


def _gate(group: list[_Call], taken: list[np.ndarray]):
    """The pre-gate over one tick's calls, as :class:`gateway.vadrun._Runner` runs it.

    Returns ``(waiting, blocks, plans, idle)``: the calls with chunks for Silero, their blocks
    (warm-up chunks first), per call ``(k, kept indices or None, warm-up count)``, and the
    ``(call, k)`` whose ``k`` chunks (maybe 0) all score 0.
    """
    waiting, blocks, plans, idle = [], [], [], []
    gated = [chunks for c, chunks in zip(group, taken) if c.gate is not None and len(chunks)]
    powers = iter(())
    if gated:  # every call's chunk powers in one numpy pass, then each call's scalar plan
        flat = chunk_power_dbfs(np.concatenate(gated) if len(gated) > 1 else gated[0]).tolist()
        sizes = np.cumsum([0] + [len(b) for b in gated]).tolist()
        powers = iter([flat[i:j] for i, j in zip(sizes, sizes[1:])])
    for c, chunks in zip(group, taken):
        k = len(chunks)
        if not k:
            idle.append((c, 0))
        elif c.gate is None:
            waiting.append(c)
            blocks.append(chunks)
            plans.append((k, None, 0))
        else:
            plan = c.gate.plan(chunks, hold=c.det.state in PREGATE_HOLD, power_dbfs=next(powers))
            keep = np.flatnonzero(plan.mask)
            if not keep.size:
                idle.append((c, k))
                continue
            w = len(plan.warm)
            waiting.append(c)
            blocks.append(np.concatenate((plan.warm, chunks[keep])) if w else chunks[keep])
            plans.append((k, keep, w))
    return waiting, blocks, plans, idle


def _amd_feed(c: _Call, pcm: np.ndarray) -> None:
    """One caller frame into the call's voicemail detector (restarted after a final verdict)."""
    det = c.amd
    n = det.frame_samples
    if pcm.size != n or c.amd_buf.size:
        c.amd_buf = np.concatenate((c.amd_buf, pcm))
        while c.amd_buf.size >= n:
            _amd_push(c, c.amd_buf[:n])
            c.amd_buf = c.amd_buf[n:]
    else:
        _amd_push(c, pcm)


def _amd_push(c: _Call, frame: np.ndarray) -> None:
    det = c.amd
    det.push(frame, c.det.is_speaking)
    if det.state is AmdState.DONE:
        det.reset()


def _dumps(event: dict) -> str:
    import orjson

    return orjson.dumps(event).decode()
