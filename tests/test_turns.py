"""The call's transcript: barge-in cuts, late transcripts, and a bridge's corrections."""

from __future__ import annotations

from gateway.llm.base import Transcript
from gateway.session.common import CallStats
from gateway.session.turns import Turns


def test_a_bridges_second_transcript_of_an_item_corrects_its_turn():
    turns = Turns(CallStats())
    turns.add(Transcript("agent", "One two three. Four five six. Seven eight nine.", "a1"), 0)
    # A barge-in while only the first sentence's 1,000 ms were queued: the session's own cut is
    # by that share of audio, which says nothing of the sentences not yet made.
    turns.barge_in("a1", 900, 1000, 120.0)
    assert turns.transcript[0]["text"] == "One two three. Four five six. Seven eight"  # 8 of 9 words
    turns.add(Transcript("agent", "One two", "a1"), 50)  # the bridge's correction
    assert len(turns.transcript) == 1
    assert turns.transcript[0] == {"role": "agent", "text": "One two", "at_ms": 0, "interrupted": True, "heard_ms": 900}
    turns.add(Transcript("user", "hello"), 60)
    turns.add(Transcript("agent", "Sure.", "a2"), 70)  # another item: a new turn
    assert [t["text"] for t in turns.transcript] == ["One two", "hello", "Sure."]


def test_a_late_transcript_of_a_cut_item_is_flagged_not_cut_again():
    turns = Turns(CallStats())
    turns.barge_in("r1", 400, 2000, None)
    turns.add(Transcript("agent", "Already cut", "r1"), 10)
    assert turns.transcript == [{"role": "agent", "text": "Already cut", "at_ms": 10, "interrupted": True, "heard_ms": 400}]
