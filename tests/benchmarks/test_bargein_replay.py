"""The offline barge-in replay: the bench's own plans through one call's echo stage and VAD."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import bargein_replay as replay_mod
from benchmarks.bargein import parse_bands, plan_calls
from benchmarks.bargein_audio import agent_speech
from gateway.codecs.resample import resample
from gateway.vadrun import VadFactory


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    clips = agent_speech(2, cache_dir=tmp_path_factory.mktemp("voice"))
    return [replay_mod._ulaw(resample(pcm, rate, replay_mod.RATE)) for pcm, rate, _ in clips]


def test_echo_only_with_a_dry_spell_does_not_stop_the_agent_and_a_caller_does(agents):
    """A 25–35 dB echo with the carrier running dry once (resuming up to 20 ms off the ledger):
    never paused; a caller talking over the agent pauses it within 600 ms of the onset."""
    plans = plan_calls(parse_bands("25-35"), 2, [1000.0 * a.size / 8000 for a in agents])
    factory = VadFactory("silero", barge_in_min_speech_ms=96, batched=False)
    for i, plan in enumerate(p for p in plans if p.kind in ("echo", "barge")):
        got = replay_mod.replay(plan, agents[plan.agent], factory, seed=i, dry_ms=100 if plan.kind == "echo" else 0)
        assert got["estimate"] is not None and abs(got["estimate"]["delayMs"] - plan.delay_ms) < 25
        if plan.kind == "echo":
            assert got["stops"] == [] and got["commits"] == []
        else:
            after = [t - got["onset"] for t in got["stops"]]
            assert after and 0 <= after[0] <= 600, (got["onset"], got["stops"])


def test_main_prints_a_row_per_band(capsys, monkeypatch, agents):
    monkeypatch.setattr(replay_mod, "agent_speech", lambda n, cache_dir=None: [(a, 8000, "") for a in agents])
    replay_mod.main(["--bands", "20-25", "--utterances", "1", "--kinds", "echo"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["band"] == "20-25" and row["echoCalls"] == 1 and row["falsePauses"] in (0, 1)
    assert np.isfinite(row["recall600"])
