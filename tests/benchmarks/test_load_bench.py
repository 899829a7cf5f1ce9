"""``gateway bench load`` pieces and a tiny end-to-end run. No timing is asserted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fake_realtime import FakeRealtimeModel
from gateway.simulator.load import (
    CallResult,
    StepResult,
    _call_model_to_carrier,
    check_loopback,
    percentiles,
    summarise,
)

ROOT = Path(__file__).resolve().parents[2]


def test_percentiles():
    p = percentiles([1, 2, 3, 4, 100])
    assert p["p50"] == 3 and p["max"] == 100 and p["n"] == 5
    assert percentiles([])["p99"] is None


@pytest.mark.parametrize("url", ["http://10.0.0.1:8080", "ws://example.com/x", "http://192.168.1.2"])
def test_only_loopback_targets(url):
    with pytest.raises(ValueError, match="loopback"):
        check_loopback(url)
    check_loopback("http://127.0.0.1:8080")
    check_loopback("ws://localhost:1/stream")


def test_model_to_carrier_pairs_each_reply_with_its_first_frame():
    res = CallResult(0, "twilio", tag="s0c0")
    # Two bursts of frames: at 10.002 s (reply sent at 10.000) and 12.0035 (sent at 12.000).
    res.media_arrivals = [10.002, 10.022, 10.042, 12.0035, 12.0235]
    stats = {"responses": {"s0c0": [{"first_delta": 10.0}, {"first_delta": 12.0}, {"first_delta": None}]}}
    assert [round(x, 2) for x in _call_model_to_carrier(res, stats)] == [2.0, 3.5]
    # A reply whose audio never reached the caller (cancelled) is not paired with a later burst.
    stats = {"responses": {"s0c0": [{"first_delta": 10.03}]}}
    assert _call_model_to_carrier(res, stats) == []


def test_summary_fields_and_lost_frames():
    a = CallResult(0, "twilio", call_id="c0", tag="s0c0", lateness_ms=[0, 0, 3], turn_latency_ms=[650],
                   barge_in_ms=[210], connected_at=1.0, ended_at=20.0, frames_sent=900, frames_received=400,
                   gateway_frames_out=402, gateway_frames_in=900, status="completed")  # fmt: skip
    b = CallResult(1, "vonage", call_id="c1", tag="s0c1", connected_at=2.0, ended_at=21.0, frames_sent=10,
                   frames_received=5, gateway_frames_out=5, gateway_frames_in=10, status="completed")  # fmt: skip
    step = StepResult([a, b], 0.0, 22.0, samples=[(3.0, 10.0, 100 << 20, 2), (19.0, 12.0, 104 << 20, 2)],
                      rss_baseline=100 << 20, lag_ms=[0.1, 0.5])  # fmt: skip
    row = summarise(step, calls=2, carriers=["twilio", "vonage"])
    assert row["frames_lost_out"] == 2 and row["frames_lost_in"] == 0
    assert not row["ok"]
    assert row["gateway_cores_used"] == pytest.approx(2 / 16, abs=1e-3)
    assert row["calls_per_core"] == pytest.approx(16.0, abs=0.1)
    assert row["rss_per_call_mb"] == pytest.approx(2.0)
    assert set(row["by_carrier"]) == {"twilio", "vonage"}
    for key in ("lateness_ms", "turn_latency_ms", "barge_in_ms", "model_to_carrier_ms"):
        assert set(row[key]) >= {"p50", "p95", "p99", "max", "n"}


async def test_fake_model_speaks_to_the_real_bridge():
    from gateway.config import Settings
    from gateway.formats import PCMU_8K
    from gateway.llm import base as llm
    from gateway.llm.registry import make_bridge

    async with FakeRealtimeModel(speed=0) as model:
        config = llm.AgentConfig(model="compat:bench", system_prompt="[t1] test", interruptible=True)
        bridge = make_bridge(config, Settings(compat_g711=True, compat_realtime_url=model.base_url))
        await bridge.start(config, PCMU_8K)
        assert bridge.output_format == PCMU_8K
        audio = 0
        async with asyncio.timeout(10):
            async for event in bridge.events():
                if isinstance(event, llm.AudioOut):
                    audio += len(event.audio)
                if isinstance(event, llm.ResponseDone) and audio:
                    break
        await bridge.close()
    assert audio > 8000  # over a second of μ-law speech
    assert model.stats()["responses"]["t1"][0]["first_delta"] is not None


def test_cli_tiny_load_run_emits_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "load", "--calls", "2", "--carriers", "twilio,vonage",
         "--script", "short", "--no-settle", "--no-pin", "--arrival", "0.2", "--json",
         "--plot", str(tmp_path / "load.png"), "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    (row,) = doc["rows"]
    assert row["calls"] == 2
    for key in ("lateness_ms", "frames_lost_out", "frames_lost_in", "turn_latency_ms", "barge_in_ms",
                "model_to_carrier_ms", "gateway_cores_used", "calls_per_core", "rss_per_call_mb", "errors"):  # fmt: skip
        assert key in row, key
    assert row["errors"] == 0, row["error_examples"]
    assert row["frames_out"] > 0 and row["frames_received"] > 0
    # Recording on, as users run it; frames after the hang-up apart from lost ones.
    assert row["recordings_linked"] == 2
    assert row["frames_in_flight_at_hangup"] >= 0 and row["frames_lost_out"] == 0
    assert row["send_slip_ms"]["n"] > 0 and "driver_bound" in row
    assert row["driver"] == {"caller_link": "picows", "send_slot_ms": 5.0}  # the light callers, one shared clock
    assert doc["headline"] in (None, 2)
    assert (tmp_path / "load.png").exists() and (tmp_path / "load.md").exists()
