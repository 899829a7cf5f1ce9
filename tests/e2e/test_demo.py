"""The issue's acceptance, as a user runs it: ``gateway demo --wav goforward.wav``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_on_a_real_recording_prints_the_words_and_leaves_a_record(shared_audio, tmp_path):
    wav = shared_audio / "speech" / "goforward.wav"
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--wav", str(wav)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert "completed (carrier_stop)" in text
    recognised = next(line for line in out.stdout.splitlines() if "caller (recognised)" in line)
    assert "forward" in recognised and "meters" in recognised, recognised
    assert "Turn latency heard by the caller" in text
    assert (tmp_path / "gateway.db").is_file()
    wavs = list((tmp_path / "recordings").glob("call_*.wav"))
    assert len(wavs) == 2  # the two-channel call recording and what the caller heard
