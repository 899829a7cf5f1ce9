"""Pause-then-commit on a barge-in cue (``VadCue``), through the call session and its echo stage.

The caller's line: an unvoiced onset (a 1.8–3.9 kHz noise burst standing for "s", "sh",
"f", which Silero scores low) alone, or in front of a real recording. The session's own
Silero VAD (per frame and on the media engine) with the double-talk rule of its echo stage.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gateway.codecs.transcode import encode
from gateway.engine import MediaEngine
from gateway.formats import Encoding
from gateway.vadrun import VadFactory
from tests.test_session_bargein import FRAME, REPLY_FRAMES, drive, event, kinds, make, recorded_speech, reply
from tests.test_vadrun_cues import fricative

BURST_MS = 160


def burst_frames() -> list[bytes]:
    noise = np.random.default_rng(7).normal(0, 32768 * 10 ** (-60 / 20), BURST_MS * 8)
    pcm = np.clip(fricative(BURST_MS, 8000) + noise, -32768, 32767).astype(np.int16)
    return [encode(pcm[i:i + FRAME], Encoding.PCMU) for i in range(0, pcm.size, FRAME)]


def session_for(ticked: bool):
    engine = MediaEngine(scheduled=False) if ticked else None
    vad = VadFactory("silero", barge_in_min_speech_ms=96, batched=False, pregate="off").create(8000)
    return engine, make("pause_then_commit", engine=engine, vad=vad)


@pytest.mark.parametrize("ticked", [False, True], ids=["per_frame", "engine"])
async def test_an_unvoiced_burst_alone_pauses_at_once_and_resumes_with_nothing_lost(ticked):
    engine, (session, clock, transport, bridge, dialect) = session_for(ticked)
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 0), engine=engine,
                                   voice=burst_frames())  # fmt: skip
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    paused = event(outcome, "barge_in_paused")
    assert paused["at_ms"] - 580 <= 64 + 60  # the burst begins at 580 ms: two chunks (+ a frame and a tick)
    assert event(outcome, "barge_in_resumed")["data"]["reason"] == "short"
    assert not carrier.clears and not any(c[0] == "interrupt" for c in bridge.calls)
    assert carrier.played() == [reply()[k * FRAME:(k + 1) * FRAME] for k in range(REPLY_FRAMES)]
    assert not [e for e in outcome.events if e["kind"] == "caller_speech_start"]  # a cue is no turn


@pytest.mark.parametrize("ticked", [False, True], ids=["per_frame", "engine"])
async def test_an_unvoiced_onset_before_a_sentence_pauses_early_and_commits_from_that_onset(ticked):
    engine, (session, clock, transport, bridge, dialect) = session_for(ticked)
    voice = burst_frames() + recorded_speech(8, 60)
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 0), engine=engine,
                                   voice=voice)  # fmt: skip
    assert kinds(outcome) == ["barge_in_paused", "barge_in"]
    paused, barge = event(outcome, "barge_in_paused"), event(outcome, "barge_in")
    assert paused["at_ms"] - 580 <= 64 + 60
    start = event(outcome, "caller_speech_start")
    assert start["at_ms"] > paused["at_ms"] + 60  # Silero confirmed the voice well after the cue paused
    assert len(carrier.clears) == 1 and barge["data"]["voicedMs"] >= 400


async def test_with_cues_off_only_the_vad_s_confirmation_pauses():
    engine, (session, clock, transport, bridge, dialect) = session_for(True)
    session.policy = dataclasses.replace(session.policy, barge_in_cues=False)  # GATEWAY_BARGE_IN_CUES=off
    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 0), engine=engine,
                                   voice=burst_frames())  # fmt: skip
    assert kinds(outcome) == [] and not carrier.clears
