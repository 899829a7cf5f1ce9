"""Transcript turn spans and per-turn response times (``start_ms``, ``end_ms``, ``latency_ms``)."""

from __future__ import annotations

from gateway.llm.base import Transcript
from gateway.session.common import CallStats
from gateway.session.turns import Turns


def test_a_caller_turn_spans_its_speech_and_the_reply_its_audio_and_response_time():
    stats = CallStats()
    turns = Turns(stats)
    turns.speech_started(1000)
    turns.speech_ended(1800)
    turns.speech_started(2100)  # a second utterance before the transcript: one caller turn
    turns.speech_ended(2600)
    turns.add(Transcript("user", "I need a cleaning, please."), 2700)
    assert turns.agent_audio("a1", 3050, 400.0)  # the reply's first audio: 450 ms after the end
    assert turns.agent_audio("a1", 3100, 600.0)
    turns.add(Transcript("agent", "Sure.", "a1"), 3200)  # text after its audio began
    assert turns.agent_audio("a1", 3300, 500.0)  # more audio after the text: the end moves
    user, agent = turns.transcript
    assert (user["start_ms"], user["end_ms"]) == (1000, 2600) and "latency_ms" not in user
    assert (agent["start_ms"], agent["end_ms"], agent["latency_ms"]) == (3050, 3050 + 1500, 450)
    assert stats.turn_latency_ms == [450]


def test_an_item_whose_text_comes_first_takes_its_span_from_its_audio():
    turns = Turns(CallStats())
    turns.add(Transcript("agent", "Hello, Smile Dental.", "g"), 10)  # a greeting: no caller speech before
    assert "start_ms" not in turns.transcript[0]
    turns.agent_audio("g", 40, 1200.0)
    assert turns.transcript[0] | {} == {"role": "agent", "text": "Hello, Smile Dental.", "at_ms": 10,
                                        "interrupted": False, "start_ms": 40, "end_ms": 1240}  # fmt: skip


def test_a_cut_turn_ends_where_the_caller_stopped_hearing_it():
    turns = Turns(CallStats())
    turns.speech_ended(500)
    turns.agent_audio("a1", 800, 3000.0)
    turns.add(Transcript("agent", "One two three four five six.", "a1"), 900)
    turns.barge_in("a1", 700, 3000, 150.0)
    turn = turns.transcript[0]
    assert (turn["start_ms"], turn["end_ms"], turn["latency_ms"], turn["heard_ms"]) == (800, 1500, 300, 700)
    assert not turns.agent_audio("a1", 1600, 20.0)  # dropped after the cut: the span stays


def test_a_caller_turn_without_measured_speech_has_no_span():
    turns = Turns(CallStats())
    turns.add(Transcript("user", "typed"), 100)  # e.g. server-side VAD: the gateway saw no onset
    assert "start_ms" not in turns.transcript[0] and "end_ms" not in turns.transcript[0]
    turns.speech_started(300)
    turns.add(Transcript("user", "again"), 700)  # onset seen, its end not yet
    assert turns.transcript[1]["start_ms"] == 300 and "end_ms" not in turns.transcript[1]
