"""``gateway bench media``: CPU cost of the media path per 20 ms frame, in one process, no sockets.

What one call costs the gateway per 20 ms of audio in each direction, for many simultaneous
calls, exactly as :class:`gateway.session.CallSession` runs the pure stages:

* **inbound** (carrier → VAD), per caller frame: the carrier adapter parses the message
  (``adapter.receive``: JSON, base64), a :class:`~gateway.codecs.transcode.Transcoder` turns
  the carrier's audio into L16 at the VAD's rate (``aligned=True``, as the session's
  :class:`~gateway.session.caller.CallerPath`), and the VAD runs. The VAD's rate is the session's:
  :meth:`gateway.vadrun.VadFactory.rate_for` (8 kHz for 8 kHz carriers, so no resample, only the
  G.711 decode; 16 kHz otherwise), and rows are labelled with it (``silero@8k``, ``silero@16k``,
  ``webrtc@8k`` …). The VAD: WebRTC VAD per frame (``DirectVad``), or Silero through the split API
  (``feed`` / ``take_chunks`` / ``apply_scores``) with every waiting call's chunks scored in
  **one** ONNX run per batcher tick by :func:`gateway.audio.silero.score_blocks`, as
  :class:`gateway.vadrun.SileroBatcher` does. Callers' frames arrive spread over each 20 ms;
  the batcher closes a tick ``max_wait_ms`` (4 ms) after its first chunk, so a 20 ms period is
  modelled as ``windows`` (5) ticks, each holding the calls whose frames fell in it.
* **outbound** (model → carrier), per agent frame: 20 ms of 24 kHz PCM16 (what OpenAI-style
  models send) through ``Transcoder(L16_24K, carrier format)``, the
  :class:`~gateway.audio.playout.PlayoutLedger` (enqueue, ``due``) and ``adapter.media`` /
  ``adapter.mark`` (base64, JSON) — the session's :class:`~gateway.session.playout.Playout`.
* **amd** (reported apart, not in the totals: it runs on the callee's first seconds only):
  the voicemail detector :class:`gateway.audio.amd.AmdDetector` at the VAD's rate, fed each
  caller frame and the VAD's speaking state, as the call loop does; restarted whenever it
  reaches a final verdict, so every frame is an analysed one (the worst case). Target: ≤ 20 µs
  per frame (``AMD_TARGET_US``), reported as ``us_amd_per_frame``.
* **bridge** (reported apart, not in the totals): the OpenAI Realtime bridge's own per-frame
  work, ``input_audio_buffer.append`` built and serialised for each caller frame, and a
  ``response.output_audio.delta`` parsed for each agent frame (G.711 passed through for
  μ-law carriers, 24 kHz PCM otherwise).

Input: the 60 s conversational recording ``../shared/audio/speech/silero-test.wav`` (16 kHz),
resampled to each carrier's rate with :mod:`gateway.codecs`, encoded (μ-law for Twilio) and
wrapped in the carrier's media messages by the simulator's dialects; each call starts at a
different point of the recording. Agent audio is the same recording at 24 kHz.

Reported per row (``calls`` simultaneous calls, ``vad`` scorer, ``carrier``): CPU µs per inbound
and per outbound frame and CPU ms per call-second (50 inbound + 50 outbound frames: a call
where both sides talk all the time, the worst case), from ``time.process_time`` (the process's
CPU time, every thread), plus wall-clock µs and a per-stage split.

``--json`` prints one JSON document on the last line: ``{"rows": [...], ...}``.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gateway.audio.amd import AmdDetector, AmdState
from gateway.audio.playout import PlayoutLedger
from gateway.audio.silero import SileroModel, score_blocks
from gateway.audio.vad import SileroScorer, VadGate, VoiceDetector, WebRtcScorer
from gateway.carriers import events as ev
from gateway.carriers.registry import make_adapter
from gateway.codecs.transcode import Transcoder, decode, encode
from gateway.formats import L16_16K, L16_24K, AudioFormat, Encoding
from gateway.simulator.dialects import make_dialect
from gateway.simulator.run import load_wav, to_rate
from gateway.vadrun import VadFactory

__all__ = ["main", "run", "measure", "SHARED_AUDIO", "VADS", "CARRIERS", "TARGET_CPU_MS", "AMD_TARGET_US"]

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
                 "proto", "deltas", "pending", "vad_kind", "amd", "amd_buf")

    def __init__(self, carrier: str, vad: str, model: SileroModel | None, audio: Audio, index: int,
                 ticks: int, bridge: bool) -> None:
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
    """
    if vad not in VADS:
        raise ValueError(f"vad must be one of {VADS}")
    audio = audio or load_audio()
    if vad != "webrtc" and model is None:
        model = SileroModel()
    ticks = max(1, int(round(seconds * 1000 / FRAME_MS)))
    world = [_Call(carrier, vad, model, audio, i, ticks, bridge) for i in range(calls)]
    groups = [world[g::windows] for g in range(min(windows, calls))]
    cpu = dict.fromkeys(_STAGES, 0)
    wall = dict.fromkeys(_STAGES, 0)
    batches = chunks_scored = speech_events = out_frames = 0
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
                    waiting, blocks = [], []
                    for c, pcm in zip(group, pcms):
                        c.det.feed(pcm)
                        chunks = c.det.take_chunks()
                        if len(chunks):
                            waiting.append(c)
                            blocks.append(chunks)
                        else:
                            speech_events += len(c.det.apply_scores([]))
                    c3, w3 = _now()
                    if waiting:
                        probs = score_blocks([c.det.scorer.stream for c in waiting], blocks)
                        batches += 1
                        for c, p in zip(waiting, probs):
                            chunks_scored += len(p)
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
        "vad_events": speech_events,
    }


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


# ----------------------------------------------------------------------------- runner


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def run(
    calls: Sequence[int] = (1, 10, 100, 500),
    *,
    seconds: float = 3.0,
    vads: Sequence[str] = VADS,
    carriers: Sequence[str] = CARRIERS,
    carrier_calls: int = 100,
    carrier_vads: Sequence[str] = ("silero",),
    windows: int = 5,
    bridge: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole benchmark: a Twilio sweep over ``calls`` × ``vads``, then every carrier."""
    audio = load_audio()
    model = SileroModel() if any(v != "webrtc" for v in (*vads, *carrier_vads)) else None
    plan = [("twilio", n, v) for v in vads for n in calls]
    plan += [(c, carrier_calls, v) for v in carrier_vads for c in carriers if (c, carrier_calls, v) not in plan]
    rows = []
    t0 = time.monotonic()
    with _progress(progress, len(plan)) as advance:
        for carrier, n, vad in plan:
            rows.append(measure(n, vad, carrier=carrier, seconds=seconds, windows=windows, audio=audio,
                                model=model, bridge=bridge))
            advance(f"{carrier} × {n} calls, {vad}")
    return {
        "benchmark": "media",
        "rows": rows,
        "target_cpu_ms_per_call_second": TARGET_CPU_MS,
        "amd_target_us_per_frame": AMD_TARGET_US,
        "input": audio.source,
        "seconds_per_call": seconds,
        "windows_per_frame": windows,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _progress:
    """A rich progress bar on stderr (nothing when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self._p = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda label: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("[bold]media[/bold] {task.description}"), BarColumn(),
                           TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                           console=Console(stderr=True), transient=True)  # fmt: skip
        self._p.__enter__()
        task = self._p.add_task("starting", total=self.total)

        def advance(label: str) -> None:
            self._p.update(task, advance=1, description=label)

        return advance

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)


def table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| carrier | calls | VAD | µs / inbound frame | µs / outbound frame | CPU ms / call-second | calls / core (media only) | + bridge: CPU ms / call-s | AMD µs / frame |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['carrier']} ({r['format']}) | {r['calls']} | {r['vad']} | {r['us_per_in_frame']:.1f} | "
            f"{r['us_per_out_frame']:.1f} | {r['cpu_ms_per_call_second']:.2f} | {r['calls_per_core_media_only']:.0f} | "
            f"{r['cpu_ms_per_call_second_with_bridge'] if r['cpu_ms_per_call_second_with_bridge'] is not None else '—'} | "
            f"{r.get('us_amd_per_frame', '—')} |"
        )
    return "\n".join(lines)


def stage_table(result: dict[str, Any], calls: int = 100) -> str:
    """Per-stage CPU µs per frame for the Twilio rows at ``calls`` (or the largest below)."""
    rows = [r for r in result["rows"] if r["carrier"] == "twilio"]
    sizes = sorted({r["calls"] for r in rows})
    if not sizes:
        return ""
    n = max([s for s in sizes if s <= calls] or sizes[:1])
    lines = ["| VAD | " + " | ".join(_STAGES) + " |", "|---|" + "---:|" * len(_STAGES)]
    for r in rows:
        if r["calls"] == n:
            lines.append(f"| {r['vad']} | " + " | ".join(f"{r['stages_us'][s]:.1f}" for s in _STAGES) + " |")
    return f"Twilio, {n} calls, CPU µs per frame by stage:\n\n" + "\n".join(lines)


def plot_png(result: dict[str, Any], path: Path) -> Path | None:
    """Two panels: CPU ms per call-second vs calls (Twilio, by VAD) and per carrier."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    rows = result["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for vad in dict.fromkeys(r["vad"] for r in rows):
        pts = sorted((r["calls"], r["cpu_ms_per_call_second"]) for r in rows if r["carrier"] == "twilio" and r["vad"] == vad)
        if pts:
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=vad)
    ax1.axhline(TARGET_CPU_MS, color="red", linestyle="--", linewidth=1, label=f"target {TARGET_CPU_MS} ms")
    ax1.set_xscale("log")
    ax1.set_xlabel("simultaneous calls")
    ax1.set_ylabel("CPU ms per call-second (in + out)")
    ax1.set_title("Media path, Twilio μ-law 8 kHz")
    ax1.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    ax1.legend()
    n_carrier = result.get("carrier_calls")
    carrier_rows: dict[tuple[str, str], dict] = {}
    kind = lambda r: r.get("vad_kind", r["vad"])  # noqa: E731 - silero@8k and silero@16k in one series
    carrier_vads = {kind(r) for r in rows if r["carrier"] != "twilio"} or {kind(r) for r in rows}
    for r in rows:  # each carrier at the per-carrier call count, for the per-carrier VADs
        key = (r["carrier"], kind(r))
        if kind(r) in carrier_vads and (r["calls"] == n_carrier or key not in carrier_rows):
            carrier_rows[key] = r
    vads = list(dict.fromkeys(k[1] for k in carrier_rows))
    carriers = list(dict.fromkeys(k[0] for k in carrier_rows))
    width = 0.8 / max(1, len(vads))
    for j, vad in enumerate(vads):
        ins = [carrier_rows.get((c, vad), {}).get("us_per_in_frame", 0) for c in carriers]
        outs = [carrier_rows.get((c, vad), {}).get("us_per_out_frame", 0) for c in carriers]
        xs = np.arange(len(carriers)) + j * width
        ax2.bar(xs, ins, width, label=f"inbound ({vad})")
        ax2.bar(xs, outs, width, bottom=ins, label=f"outbound ({vad})", alpha=0.6)
    ax2.set_xticks(np.arange(len(carriers)) + width * (len(vads) - 1) / 2)
    labels = {c: carrier_rows[k]["vad"] for k in carrier_rows for c in [k[0]]}  # e.g. silero@8k
    ax2.set_xticklabels([f"{c}\n{labels[c]}" for c in carriers], fontsize=8)
    ax2.set_ylabel("CPU µs per 20 ms frame")
    ax2.set_title("Per carrier (VAD at the session's rate: 8 kHz for 8 kHz carriers)")
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"gateway bench media — {result['machine']['cpu']} ({result['machine']['cores']} cores)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(
    calls: Sequence[int] = (1, 10, 100, 500),
    seconds: float = 3.0,
    json_out: bool = False,
    plot: Path | None = Path("bench-out/media.png"),
    *,
    vads: Sequence[str] = VADS,
    carriers: Sequence[str] = CARRIERS,
    carrier_calls: int = 100,
    windows: int = 5,
    bridge: bool = True,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run, print a table (or one JSON line last with ``json_out``), write the plot; return the result."""
    result = run(calls, seconds=seconds, vads=vads, carriers=carriers, carrier_calls=carrier_calls,
                 windows=windows, bridge=bridge, progress=sys.stderr.isatty())  # fmt: skip
    result["carrier_calls"] = carrier_calls
    if plot is not None:
        written = plot_png(result, Path(plot))
        result["plot"] = str(written) if written else None
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1))
    if json_out:
        print(table(result), file=sys.stderr)
        print(json.dumps(result))
    else:
        print(table(result))
        print()
        print(stage_table(result))
        if result.get("plot"):
            print(f"\nplot: {result['plot']}")
    return result


if __name__ == "__main__":  # python -m benchmarks.media [calls] [seconds]
    args = sys.argv[1:]
    main([int(x) for x in args[0].split(",")] if args else (1, 10, 100, 500),
         float(args[1]) if len(args) > 1 else 3.0, json_out="--json" in args)
