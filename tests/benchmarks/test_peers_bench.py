"""``gateway bench peers`` without Pipecat: the shared messages, the gateway's side, the summary, the peer protocol.

Pipecat itself is never installed or imported here (it runs in its own venv, by the command);
the peer process is exercised with a stand-in script speaking the same line protocol.
No timing is asserted.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.media_stages import load_audio
from benchmarks.peers import run as peers
from gateway.carriers import events as ev
from gateway.carriers.registry import make_adapter
from gateway.codecs.transcode import encode
from gateway.formats import Encoding
from gateway.simulator.dialects import make_dialect


@pytest.fixture(scope="module")
def audio():
    return load_audio()


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_messages_are_twilio_media_of_the_recording_tick_major(tmp_path, audio):
    path = tmp_path / "m.jsonl"
    msgs = peers.write_messages(path, 3, 0.2, audio)
    rows = _read(path)
    assert len(rows) == 3 * 10 and [r["call"] for r in rows[:6]] == [0, 1, 2, 0, 1, 2]
    assert [r["message"] for r in rows if r["call"] == 1] == msgs[1]
    ulaw = encode(audio.at(8000), Encoding.PCMU)  # the recording through the gateway's own μ-law
    starts = []
    for i in range(3):
        texts = [r["message"] for r in rows if r["call"] == i]
        parsed = [json.loads(t) for t in texts]
        assert {p["event"] for p in parsed} == {"media"} and len({p["streamSid"] for p in parsed}) == 1
        payloads = [base64.b64decode(p["media"]["payload"]) for p in parsed]
        assert {len(p) for p in payloads} == {160}  # 20 ms of μ-law 8 kHz
        joined = b"".join(payloads)
        starts.append(ulaw.find(joined))
        assert starts[-1] >= 0, "each call is a contiguous stretch of the recording"
    assert len(set(starts)) == 3  # each call from its own offset


def test_gateway_adapter_reads_the_messages_as_the_benchmark_feeds_them(audio):
    msgs = peers.call_messages(2, 0.1, audio)
    adapter = make_adapter("twilio")
    for frame in make_dialect("twilio").opening({}):
        adapter.receive(frame)
    events = adapter.receive(msgs[0][0])
    assert type(events[0]) is ev.Media
    assert events[0].payload == base64.b64decode(json.loads(msgs[0][0])["media"]["payload"])


def test_gateway_round_is_the_inbound_path(audio):
    from gateway.audio.silero import SileroModel

    row = peers.gateway_round(3, 0.2, audio, SileroModel())
    assert row["vad"] == "silero@8k" and row["frames"] == 30
    assert {"parse", "queue", "decode", "vad_plan", "vad_score", "vad_apply", "take"} <= set(row["stages_us"])
    assert row["us_per_frame"] > 0 and row["stages_us"]["vad_score"] > 0
    assert row["us_per_frame"] == pytest.approx(sum(row["stages_us"].values()), abs=0.05)
    assert row["cpu_ms_per_call_second"] == pytest.approx(row["us_per_frame"] * 50 / 1000, abs=1e-3)
    assert 0.5 < row["silero_chunks_share"] <= 1.0  # speech: Silero scored most of the audio


def test_summary_ratios_are_per_round_and_headline_is_the_smallest_pipeline_ratio():
    gw = [{"us_per_frame": u} for u in (10.0, 20.0, 10.0)]
    row = lambda u: {"us_per_frame": u, "us_deserialize": 1.0, "us_vad": u - 1}  # noqa: E731
    s = peers.summarize(gw, {"pipecat@16k": [row(u) for u in (100.0, 100.0, 60.0)],
                             "pipecat@8k": [row(u) for u in (50.0, 80.0, 30.0)],
                             "pipecat@8k-inline": [row(u) for u in (20.0, 20.0, 20.0)]})  # fmt: skip
    assert s["gateway"]["us_per_frame"] == {"median": 10.0, "min": 10.0, "max": 20.0}
    assert s["gateway"]["cpu_ms_per_call_second"]["median"] == 0.5
    assert s["peers"]["pipecat@16k"]["ratio"] == {"median": 6.0, "min": 5.0, "max": 10.0}
    assert s["peers"]["pipecat@8k"]["ratio"] == {"median": 4.0, "min": 3.0, "max": 5.0}
    assert s["headline"]["peer"] == "pipecat@8k" and s["headline"]["met"] is False  # inline is not a pipeline


STAND_IN = textwrap.dedent("""
    import json, sys, time
    print("log line that is not JSON", flush=True)
    print(json.dumps({"ready": True, "versions": {"python": "x"}}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["rate"] == 1:
            print(json.dumps({"error": "bad rate"}), flush=True)
        elif cmd["rate"] == 2:
            time.sleep(30)
        elif cmd["rate"] == 3:
            sys.exit(4)
        else:
            print(json.dumps({"us_per_frame": cmd["rate"] / 100, "direct": cmd["direct"]}), flush=True)
""")


def _peer(tmp_path: Path, timeout_s: float = 20.0) -> peers.PeerProcess:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    messages = tmp_path / "m.jsonl"
    messages.write_text("")
    return peers.PeerProcess(sys.executable, messages, script=script, timeout_s=timeout_s)


def test_peer_process_answers_rounds_and_fails_loudly(tmp_path):
    p = _peer(tmp_path)
    try:
        assert p.hello["ready"] is True
        assert p.round(16000, False) == {"us_per_frame": 160.0, "direct": False}
        assert p.round(8000, True)["direct"] is True
        with pytest.raises(peers.PeerError, match="bad rate"):
            p.round(1, False)
        with pytest.raises(peers.PeerError, match="exited"):
            p.round(3, False)
        with pytest.raises(peers.PeerError, match="gone|exited"):
            p.round(16000, False)
    finally:
        p.close()
    p = _peer(tmp_path, timeout_s=0.5)
    try:
        with pytest.raises(peers.PeerError, match="no answer"):
            p.round(2, False)
    finally:
        p.close()


def test_a_peer_venv_with_torch_is_refused(tmp_path):
    fake_torch = tmp_path / "site"
    (fake_torch / "torch").mkdir(parents=True)
    (fake_torch / "torch" / "__init__.py").write_text("")
    assert not peers.torch_present(sys.executable)  # nor in the gateway's own environment
    assert peers.torch_present(sys.executable, env={**os.environ, "PYTHONPATH": str(fake_torch)})
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{fake_torch}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(peers.PeerError, match="torch is installed"):
        peers.ensure_venv(venv)
