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
  :class:`gateway.vadrun.SileroBatcher` does. Before that the Silero pre-gate
  (:mod:`gateway.audio.pregate`, the gateway's default ``energy``) keeps chunks without possible
  speech from Silero (they score 0); its cost is part of ``vad_feed`` and also reported alone as
  ``us_vad_gate_per_frame``, with ``vad_gate_skipped_share`` (chunks it skipped). The recording is a
  conversation where the caller talks nearly all the time, so the gate skips little here: the
  skipped share of a real call grows with the time the caller listens. Callers' frames arrive spread over each 20 ms;
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
* **kernels** (reported apart): the per-tick engine's batched codec kernels against their
  per-call forms at the sweep's call counts (:mod:`benchmarks.media_kernels`): G.711 decode
  (:func:`~gateway.codecs.batch.decode_many`) and resampling 8 → 16, 8 → 24 and 24 → 8 kHz
  (:func:`~gateway.codecs.batch.resample_many`), CPU µs per call per 20 ms frame
  (``--calls 1,100,400,1000`` gives the issue's sizes).
* **webrtc** (reported apart): a browser call's Opus leg (:mod:`benchmarks.media_webrtc`):
  aiortc's Opus decode + resampling to the session's rate per inbound frame, resampling + Opus
  encode per outbound frame, CPU µs per call per 20 ms frame at ``--webrtc-calls`` (1, 100).
* **echo** (reported apart): the echo stage (:mod:`benchmarks.media_echo`: reference, sample
  clock, echo path estimator, echo canceller batched per tick, double-talk gate), CPU µs per
  call per 20 ms frame at ``--echo-calls`` (1, 100, 400): with the agent talking (steady state,
  after 3 s of agent audio), over the first 2 s of agent audio (the canceller on its long filter
  before the echo path is known), and with the agent silent; target ≤ 30 µs (``ECHO_TARGET_US``).

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

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.media_echo import ECHO_CALLS, ECHO_TARGET_US, echo_table, run_echo
from benchmarks.media_engine import engine_table, run_engine
from benchmarks.media_kernels import kernel_table, measure_kernels
from benchmarks.media_webrtc import WEBRTC_CALLS, run_webrtc, webrtc_table
from benchmarks.media_stages import (  # noqa: F401 - re-exported: tests and the report import them from here
    _STAGES,
    AMD_TARGET_US,
    CARRIERS,
    FRAME_MS,
    RECORDING,
    SHARED_AUDIO,
    TARGET_CPU_MS,
    VADS,
    Audio,
    load_audio,
    measure,
)
from gateway.audio.silero import SileroModel

__all__ = ["main", "run", "measure", "SHARED_AUDIO", "VADS", "CARRIERS", "TARGET_CPU_MS", "AMD_TARGET_US"]


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
    kernel_calls: Sequence[int] | None = None,
    engine_calls: Sequence[int] | None = None,
    echo_calls: Sequence[int] = ECHO_CALLS,
    webrtc_calls: Sequence[int] = WEBRTC_CALLS,
) -> dict[str, Any]:
    """The whole benchmark: a Twilio sweep over ``calls`` × ``vads``, then every carrier, then
    the batched kernels at ``kernel_calls`` and the per-tick engine at ``engine_calls`` (each
    default: the sweep's ``calls``; none if empty), the echo stage at ``echo_calls``
    (:mod:`benchmarks.media_echo`) and the WebRTC leg's Opus codec at ``webrtc_calls``
    (:mod:`benchmarks.media_webrtc`; each none if empty)."""
    kernel_calls = calls if kernel_calls is None else kernel_calls
    engine_calls = calls if engine_calls is None else engine_calls
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
        "kernels": measure_kernels(kernel_calls, seconds=min(seconds, 0.4), audio=audio) if kernel_calls else [],
        "engine": run_engine(engine_calls, seconds=min(seconds, 2.0), carriers=("twilio", "vonage"), audio=audio,
                             model=model) if engine_calls else [],  # fmt: skip
        "echo": run_echo(echo_calls, seconds=min(seconds, 2.0), audio=audio) if echo_calls else [],  # (steady: STEADY_S)
        "webrtc": run_webrtc(webrtc_calls, seconds=min(seconds, 2.0), audio=audio) if webrtc_calls else [],
        "echo_target_us_per_frame": ECHO_TARGET_US,
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


def gate_line(result: dict[str, Any]) -> str:
    """The Silero pre-gate's cost and skipped share, per Twilio Silero row."""
    rows = [r for r in result["rows"] if r["carrier"] == "twilio" and r.get("vad_gate_skipped_share") is not None]
    if not rows:
        return "Silero pre-gate: off"
    parts = [f"{r['calls']} calls: {r['us_vad_gate_per_frame']:.2f} µs / frame, "
             f"{100 * r['vad_gate_skipped_share']:.1f} % skipped" for r in rows]
    return f"Silero pre-gate ({rows[0]['vad_pregate']}), part of vad_feed: " + "; ".join(parts)


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
    kernel_calls: Sequence[int] | None = None,
    engine_calls: Sequence[int] | None = None,
    echo_calls: Sequence[int] = ECHO_CALLS,
    webrtc_calls: Sequence[int] = WEBRTC_CALLS,
) -> dict[str, Any]:
    """Run, print a table (or one JSON line last with ``json_out``), write the plot; return the result."""
    result = run(calls, seconds=seconds, vads=vads, carriers=carriers, carrier_calls=carrier_calls,
                 windows=windows, bridge=bridge, progress=sys.stderr.isatty(), kernel_calls=kernel_calls,
                 engine_calls=engine_calls, echo_calls=echo_calls, webrtc_calls=webrtc_calls)  # fmt: skip
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
        print()
        print(gate_line(result))
        if result["kernels"]:
            print()
            print(kernel_table(result["kernels"]))
        if result["engine"]:
            print()
            print(engine_table(result["engine"]))
        if result["echo"]:
            print()
            print(echo_table(result["echo"]))
        if result["webrtc"]:
            print()
            print(webrtc_table(result["webrtc"]))
        if result.get("plot"):
            print(f"\nplot: {result['plot']}")
    return result


if __name__ == "__main__":  # python -m benchmarks.media [calls] [seconds]
    args = sys.argv[1:]
    main([int(x) for x in args[0].split(",")] if args else (1, 10, 100, 500),
         float(args[1]) if len(args) > 1 else 3.0, json_out="--json" in args)
