"""``gateway bench peers``: the gateway's inbound media path against Pipecat 1.14's, same messages, same run.

Both sides get the same Twilio ``media`` messages: ``calls`` calls × ``seconds`` of the
recording ``gateway bench media`` uses (``../shared/audio/speech/silero-test.wav``), each call
from its own offset, built by that benchmark's own call set-up (:class:`benchmarks.media_stages._Call`:
the simulator's Twilio dialect, μ-law 8 kHz via :mod:`gateway.codecs`, base64 in the media JSON),
written to a JSON-lines file (:func:`write_messages`).

* **gateway**: the per-tick media engine, the sessions' default path
  (:func:`benchmarks.media_engine.measure_engine`), with Silero at the session's rate (8 kHz for
  Twilio) and the same calls, frames and recording offsets, so its calls receive the same
  payloads in the same message layout (only each call's random ``streamSid`` differs); its
  inbound figure (``us_per_in_frame``: parse + base64, queue, batched μ-law decode, pre-gate,
  batched Silero, events, results taken) is what is compared.
* **peer**: ``benchmarks/peers/pipecat_media.py`` in its own virtual environment
  (``benchmarks/peers/.venv-pipecat``, created on first use by :func:`ensure_venv`:
  ``pip install "pipecat-ai[silero]==1.14.0"``, and refused if torch is in it), started once in
  ``--serve`` mode and asked for one round per configuration: Pipecat's default pipeline rate
  (16 kHz: ``TwilioFrameSerializer`` resamples, Silero at 16 kHz) and 8 kHz (no resample, Silero
  at 8 kHz, as the gateway), both through ``analyze_audio`` as Pipecat's transport calls it, and
  8 kHz with ``_run_analyzer`` inline (no executor hop: the work alone, a lower bound).

The machine may be shared: rounds alternate (gateway, peers; then peers, gateway; …) so that
other load falls on both sides alike, and every figure is reported as the median with its
min–max spread over the rounds; each ratio is computed per round (peer ÷ gateway of the same
round). CPU is ``time.process_time`` of each side's own process around its per-message work.
Nothing is asserted: the issue's ≥ 8× target is reported next to the measurement.
"""

from __future__ import annotations

import json
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.media_engine import measure_engine
from benchmarks.media_stages import FRAME_MS, Audio, _Call, load_audio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv-pipecat"
PEER_SCRIPT = HERE / "pipecat_media.py"
PIPECAT_REQUIREMENT = "pipecat-ai[silero]==1.14.0"
RESULTS = ROOT / "benchmarks" / "results" / "peers.json"
#: Issue #9 target: the gateway's media path ≥ 8× cheaper than Pipecat's. Reported, not asserted.
TARGET_RATIO = 8.0
#: Peer configurations: (label, pipeline rate in Hz, analyzer called inline).
PEER_CONFIGS: tuple[tuple[str, int, bool], ...] = (
    ("pipecat@16k", 16000, False),
    ("pipecat@8k", 8000, False),
    ("pipecat@8k-inline", 8000, True),
)
PER_SECOND = 1000 // FRAME_MS


class PeerError(RuntimeError):
    """The peer environment or process failed (install, torch present, crash, timeout)."""


# ----------------------------------------------------------------------------- the peer venv


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def torch_present(python: Path | str, env: dict[str, str] | None = None) -> bool:
    """Whether ``import torch`` would find a package in ``python``'s environment (10 s timeout)."""
    code = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') else 1)"
    return subprocess.run([str(python), "-c", code], env=env, timeout=10, capture_output=True).returncode == 0


def ensure_venv(venv: Path = VENV, *, timeout_s: float = 1200.0) -> Path:
    """Create the peer venv with Pipecat 1.14 on first use; return its python.

    Raises:
        PeerError: the install failed, or torch is installed in the venv.
    """
    python = venv_python(venv)
    if not python.exists():
        print(f"peers: creating {venv} and installing {PIPECAT_REQUIREMENT} (first use)", file=sys.stderr)
        base = getattr(sys, "_base_executable", sys.executable)
        steps = ([base, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "--quiet", PIPECAT_REQUIREMENT])  # fmt: skip
        for cmd in steps:
            done = subprocess.run(cmd, timeout=timeout_s, capture_output=True, text=True)
            if done.returncode != 0:
                raise PeerError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    if torch_present(python):
        raise PeerError(f"torch is installed in {venv}: the peer must run Pipecat without it; remove the venv")
    return python


class PeerProcess:
    """``pipecat_media.py --serve`` in the peer venv: one JSON command in, one JSON round out."""

    def __init__(self, python: Path | str, messages: Path, *, script: Path = PEER_SCRIPT,
                 timeout_s: float = 300.0, args: Sequence[str] = ()) -> None:  # fmt: skip
        self.timeout_s = timeout_s
        self._stderr = open(messages.with_suffix(".peer.log"), "w")
        cmd = [str(python), str(script), "--messages", str(messages), "--serve", *args]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True, bufsize=1)  # fmt: skip
        self._stuck = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.hello = self._answer()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _answer(self) -> dict[str, Any]:
        while True:
            try:
                line = self._lines.get(timeout=self.timeout_s)
            except queue.Empty:
                self._stuck = True
                raise PeerError(f"peer gave no answer within {self.timeout_s} s") from None
            if line is None:
                self._lines.put(None)  # every later answer fails at once too
                raise PeerError(f"peer exited ({self._proc.wait(timeout=10)}); see {self._stderr.name}")
            if line.lstrip().startswith("{"):
                row = json.loads(line)
                if "error" in row:
                    raise PeerError(f"peer: {row['error']}")
                return row

    def round(self, rate: int, direct: bool) -> dict[str, Any]:
        """One timed round of every call's messages at ``rate``."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps({"rate": rate, "direct": direct}) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:  # it has exited
            raise PeerError(f"peer is gone ({exc}); see {self._stderr.name}") from exc
        return self._answer()

    def close(self) -> None:
        """End the peer: end of input (it exits), or killed if it hung or does not exit within 10 s."""
        try:
            if self._stuck:
                raise subprocess.TimeoutExpired("peer", 0)
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            self._proc.kill()
            self._proc.wait(timeout=10)
        finally:
            self._stderr.close()


# ----------------------------------------------------------------------------- messages, gateway side


def call_messages(calls: int, seconds: float, audio: Audio) -> list[list[str]]:
    """``[call][tick]`` Twilio media texts, exactly as ``measure`` builds them for its Twilio calls."""
    ticks = max(1, int(round(seconds * 1000 / FRAME_MS)))
    return [_Call("twilio", "webrtc", None, audio, i, ticks, False).inbound for i in range(calls)]


def write_messages(path: Path, calls: int, seconds: float, audio: Audio) -> list[list[str]]:
    """Write :func:`call_messages` as JSON lines ``{"call": i, "message": text}``, tick-major; return them."""
    msgs = call_messages(calls, seconds, audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for tick in range(len(msgs[0])):
            for i, m in enumerate(msgs):
                f.write(json.dumps({"call": i, "message": m[tick]}) + "\n")
    return msgs


def gateway_round(calls: int, seconds: float, audio: Audio, model: Any) -> dict[str, Any]:
    """One timed round of the gateway's inbound path on the same calls: the per-tick media engine
    (the sessions' default path: :func:`benchmarks.media_engine.measure_engine`, Twilio, Silero,
    the default pre-gate, no added noise), from the carrier message to the VAD's events."""
    row = measure_engine(calls, vad="silero", carrier="twilio", seconds=seconds, audio=audio, model=model,
                         noise_dbfs=None, compare=False)  # fmt: skip
    us = row["us_per_in_frame"]
    return {"side": "gateway", "vad": row["vad"], "calls": calls, "frames": row["frames"], "us_per_frame": us,
            "cpu_ms_per_call_second": round(us * PER_SECOND / 1000, 3), "stages_us": row["stages_us"],
            "lanes_per_tick": row["lanes_per_tick"],
            # how much of the audio Silero scored (32 ms chunks), so a skipping gate is visible
            "silero_chunks_share": round(row["silero_chunks"] / (row["frames"] * FRAME_MS / 32), 3),
            "vad_gate_skipped_share": row.get("vad_gate_skipped_share")}  # fmt: skip


# ----------------------------------------------------------------------------- summary


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max (rounded to 0.01)."""
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def summarize(gateway: Sequence[dict], peers: dict[str, Sequence[dict]]) -> dict[str, Any]:
    """Per side: µs per frame and CPU ms per call-second (median, spread); per peer: the per-round ratio.

    ``gateway[r]`` and ``peers[label][r]`` are the rows of round ``r``.
    """
    g_us = [r["us_per_frame"] for r in gateway]
    out: dict[str, Any] = {"gateway": {"us_per_frame": spread(g_us),
                                       "cpu_ms_per_call_second": spread([u * PER_SECOND / 1000 for u in g_us])},
                           "peers": {}}  # fmt: skip
    for label, rows in peers.items():
        p_us = [r["us_per_frame"] for r in rows]
        ratios = [p / g for p, g in zip(p_us, g_us) if g > 0]
        out["peers"][label] = {"us_per_frame": spread(p_us),
                               "cpu_ms_per_call_second": spread([u * PER_SECOND / 1000 for u in p_us]),
                               "ratio": spread(ratios),
                               "us_deserialize": spread([r["us_deserialize"] for r in rows]),
                               "us_vad": spread([r["us_vad"] for r in rows]),
                               "messages_without_frame": rows[0].get("messages_without_frame"),
                               "audio_share": rows[0].get("audio_share")}  # fmt: skip
    pipeline = {k: v for k, v in out["peers"].items() if not k.endswith("-inline")} or out["peers"]
    if pipeline:
        worst = min(pipeline, key=lambda k: pipeline[k]["ratio"]["median"])
        out["headline"] = {"peer": worst, "ratio": pipeline[worst]["ratio"], "target": TARGET_RATIO,
                           "met": pipeline[worst]["ratio"]["median"] >= TARGET_RATIO}  # fmt: skip
    return out


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def run(calls: int = 100, seconds: float = 3.0, rounds: int = 5, *, configs=PEER_CONFIGS,
        work_dir: Path = ROOT / "bench-out", venv: Path = VENV) -> dict[str, Any]:  # fmt: skip
    """The whole comparison; see the module docstring. Raises :class:`PeerError` if the peer fails."""
    from benchmarks.media import machine
    from gateway.audio.silero import SileroModel

    python = ensure_venv(venv)
    audio = load_audio()
    messages = work_dir / "peers-messages.jsonl"
    write_messages(messages, calls, seconds, audio)
    model = SileroModel()
    peer = PeerProcess(python, messages)
    gateway_rows: list[dict] = []
    peer_rows: dict[str, list[dict]] = {label: [] for label, _r, _d in configs}
    load_before, t0 = _loadavg(), time.monotonic()
    try:
        gateway_round(min(calls, 10), 0.4, audio, model)  # warm-up, both sides, untimed
        peer.round(configs[0][1], configs[0][2])
        for r in range(rounds):
            steps = ["gateway", *[c[0] for c in configs]]
            for step in steps if r % 2 == 0 else steps[::-1]:  # alternate the order round by round
                if step == "gateway":
                    gateway_rows.append(gateway_round(calls, seconds, audio, model))
                else:
                    _label, rate, direct = next(c for c in configs if c[0] == step)
                    peer_rows[step].append(peer.round(rate, direct))
            print(f"peers: round {r + 1}/{rounds}: gateway {gateway_rows[-1]['us_per_frame']} µs, "
                  + ", ".join(f"{k} {v[-1]['us_per_frame']} µs" for k, v in peer_rows.items()), file=sys.stderr)
    finally:
        peer.close()
    return {
        "benchmark": "peers", "calls": calls, "seconds_per_call": seconds, "rounds": rounds,
        "input": audio.source, "messages": str(messages), "messages_per_round": gateway_rows[0]["frames"],
        "summary": summarize(gateway_rows, peer_rows),
        "gateway_rounds": gateway_rows, "peer_rounds": peer_rows,
        "machine": {"gateway": machine(), "peer": peer.hello.get("versions"), "loadavg_before": load_before,
                    "loadavg_after": _loadavg(), "elapsed_s": round(time.monotonic() - t0, 1)},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """The summary as a Markdown table (median and min–max over the rounds)."""
    s = result["summary"]

    def cell(d: dict) -> str:
        return f"{d['median']} ({d['min']}–{d['max']})"

    lines = ["| side | µs per call per 20 ms frame | CPU ms per call-second | peer ÷ gateway |",
             "|---|---:|---:|---:|",
             f"| gateway ({result['gateway_rounds'][0]['vad']}, per-tick engine) | {cell(s['gateway']['us_per_frame'])} | "
             f"{cell(s['gateway']['cpu_ms_per_call_second'])} | 1 |"]  # fmt: skip
    for label, p in s["peers"].items():
        lines.append(f"| {label} | {cell(p['us_per_frame'])} | {cell(p['cpu_ms_per_call_second'])} | "
                     f"{cell(p['ratio'])} |")  # fmt: skip
    return "\n".join(lines)


def main(calls: int = 100, seconds: float = 3.0, rounds: int = 5, *, json_out: bool = False,
         out: Path | None = RESULTS) -> dict[str, Any]:  # fmt: skip
    """Run, print the table (or one JSON line last with ``json_out``), write ``out``; return the result."""
    result = run(calls, seconds, rounds)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    head = result["summary"].get("headline")
    text = table(result) + (f"\n\nheadline: {head['peer']} ÷ gateway = {head['ratio']['median']}× "
                            f"(target ≥ {TARGET_RATIO}×: {'met' if head['met'] else 'not met'})" if head else "")
    print(text, file=sys.stderr if json_out else sys.stdout)
    if json_out:
        print(json.dumps(result))
    return result


if __name__ == "__main__":  # python -m benchmarks.peers.run [calls] [seconds] [rounds]
    a = [x for x in sys.argv[1:] if not x.startswith("--")]
    main(int(a[0]) if a else 100, float(a[1]) if len(a) > 1 else 3.0, int(a[2]) if len(a) > 2 else 5,
         json_out="--json" in sys.argv)  # fmt: skip
