"""``gateway bench media`` at tiny sizes: it runs, covers every carrier, emits the JSON fields.

No timing is asserted (a shared, noisy machine): only that the numbers exist and are sane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import media
from gateway.simulator.dialects import make_dialect

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ("calls", "vad", "us_per_in_frame", "us_per_out_frame", "cpu_ms_per_call_second")


@pytest.fixture(scope="module")
def audio():
    return media.load_audio()


@pytest.mark.parametrize("carrier", media.CARRIERS)
def test_every_carrier_runs_the_whole_path(carrier, audio):
    row = media.measure(2, "webrtc", carrier=carrier, seconds=0.2, audio=audio)
    assert row["calls"] == 2 and row["vad_kind"] == "webrtc" and row["vad"].startswith("webrtc@") and row["carrier"] == carrier
    for key in REQUIRED[2:]:
        assert row[key] > 0
    assert row["frames"] == 2 * 10
    assert row["out_frames"] > 0  # the ledger released frames and the adapter framed them


def test_silero_rows_score_in_batches(audio):
    from gateway.audio.silero import SileroModel

    row = media.measure(6, "silero", seconds=0.4, windows=2, audio=audio, model=SileroModel())
    assert row["silero_runs"] > 0
    assert row["mean_batch"] > 1  # several calls' chunks in one ONNX run
    assert row["stages_us"]["vad_score"] > 0


def test_silero_rows_report_the_pregate(audio):
    from gateway.audio.silero import SileroModel

    model = SileroModel()
    kw = dict(seconds=4.0, windows=2, audio=audio, model=model, bridge=False, noise_dbfs=-55.0)
    off = media.measure(3, "silero", pregate="off", **kw)
    gated = media.measure(3, "silero", pregate="energy", **kw)
    assert off["vad_pregate"] == "off" and off["vad_gate_skipped_share"] == 0.0
    assert off["silero_chunks"] == 3 * (4000 // 32)  # every chunk of every call
    assert gated["vad_pregate"] == "energy" and gated["us_vad_gate_per_frame"] > 0
    assert 0 < gated["vad_gate_skipped_share"] < 1
    assert gated["silero_chunks"] < off["silero_chunks"]  # skipped chunks never reach the batch
    assert "energy" in media.gate_line({"rows": [gated]}) and "% skipped" in media.gate_line({"rows": [gated]})
    assert media.measure(1, "webrtc", seconds=0.2, audio=audio, bridge=False)["vad_gate_skipped_share"] is None


@pytest.mark.parametrize("carrier", media.CARRIERS)
def test_silero_rows_run_the_vad_at_the_sessions_rate(carrier, audio):
    from gateway.audio.silero import SileroModel
    from gateway.vadrun import VadFactory

    row = media.measure(2, "silero", carrier=carrier, seconds=0.2, windows=1, audio=audio, model=SileroModel())
    rate = VadFactory.rate_for(make_dialect(carrier).audio_format.sample_rate)
    assert row["vad_rate"] == rate and row["vad"] == f"silero@{rate // 1000}k"
    assert row["silero_chunks"] > 0
    if rate == make_dialect(carrier).audio_format.sample_rate:
        assert row["stages_us"]["to_vad"] < row["stages_us"]["vad_score"]  # a decode, no resampler


def test_cli_prints_json_last_and_writes_a_plot(tmp_path):
    png = tmp_path / "media.png"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "media", "--calls", "1,3", "--seconds", "0.2", "--json",
         "--plot", str(png), "--carriers", "twilio,vonage", "--carrier-calls", "2", "--echo-calls", "1,3",
         "--webrtc-calls", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = doc["rows"]
    # Each VAD at the rate the session runs it for the carrier, and labelled so.
    assert {(r["calls"], r["vad"]) for r in rows if r["carrier"] == "twilio"} >= {
        (n, v) for n in (1, 3) for v in ("webrtc@8k", "silero@8k")
    }
    assert {r["vad"] for r in rows if r["carrier"] == "vonage"} == {"silero@16k"}
    assert {r["carrier"] for r in rows} == {"twilio", "vonage"}
    for r in rows:
        for key in REQUIRED:
            assert key in r
        assert r["cpu_ms_per_call_second"] > 0
    assert png.exists() and png.stat().st_size > 1000
    assert {(k["kernel"], k["calls"]) for k in doc["kernels"]} >= {("decode pcmu", 3), ("resample 8->16k", 3)}
    engine = {(r["carrier"], r["calls"]): r for r in doc["engine"]}
    assert set(engine) == {(c, n) for c in ("twilio", "vonage") for n in (1, 3)}
    for r in engine.values():  # the engine's stages, the per-frame path beside it, their ratio
        assert r["us_per_in_frame"] > 0 and r["stages_us"]["vad_score"] > 0
        assert r["ratio_vs_frame"] == pytest.approx(r["frame_us_per_in_frame"] / r["us_per_in_frame"], rel=0.02)
    echo = {(r["agent"], r["calls"]): r for r in doc["echo"]}  # the echo stage: steady, its first 2 s, silent
    assert set(echo) == {(a, n) for a in ("talking", "first 2 s", "silent") for n in (1, 3)}
    assert all(r["us_per_frame"] > 0 and r["target_us"] == 30.0 for r in echo.values())
    [webrtc] = doc["webrtc"]  # the Opus leg of a browser call
    assert webrtc["calls"] == 2 and webrtc["us_in_per_frame"] > 0 and webrtc["us_out_per_frame"] > 0
