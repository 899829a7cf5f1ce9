"""Pause-then-commit and the model's turns: a backchannel that resumes never reaches the model
as a turn; a commit starts the model's turn late; a commit while the model stalls between the
chunks of its reply still cuts the reply."""

from __future__ import annotations

from gateway.llm import base as llm
from tests.test_session_bargein import FRAME, drive, kinds, make, reply


async def test_a_backchannel_that_resumes_never_reaches_the_model_as_a_turn():
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    outcome, _carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 250))
    assert kinds(outcome) == ["barge_in_paused", "barge_in_resumed"]
    calls = [c[0] for c in bridge.calls]
    assert "speech_started" not in calls and "end_of_turn" not in calls, calls
    assert "interrupt" not in calls


async def test_a_commit_starts_the_models_turn_then_ends_it():
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    outcome, _carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500))
    assert "barge_in" in kinds(outcome)
    calls = [c[0] for c in bridge.calls]
    assert calls.count("speech_started") == 1 and calls.count("end_of_turn") == 1, calls
    assert calls.index("interrupt") < calls.index("speech_started") < calls.index("end_of_turn"), calls


async def test_immediate_mode_tells_the_model_at_once():
    session, clock, transport, bridge, dialect = make("immediate")
    outcome, _carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 250))
    calls = [c[0] for c in bridge.calls]
    assert "barge_in" in kinds(outcome)
    assert calls.count("speech_started") == 1 and calls.count("end_of_turn") == 1, calls


async def test_a_commit_while_the_model_stalls_between_chunks_still_cuts_the_reply():
    session, clock, transport, bridge, dialect = make("pause_then_commit")
    audio = reply()
    first = 36 * FRAME  # 720 ms, all sent before the pause: the ledger runs dry during it

    async def rest():  # the model's next chunk, after a stall
        bridge.queue.put_nowait(llm.AudioOut("item_1", audio[first:]))
        bridge.queue.put_nowait(llm.ResponseDone("item_1"))

    outcome, carrier = await drive(session, clock, transport, bridge, dialect, speak=(600, 1500),
                                   first=audio[:first], at={1100: rest})
    assert kinds(outcome)[:2] == ["barge_in_paused", "barge_in"], kinds(outcome)
    played_while_talking = [t for t, _ in carrier.frames if 1150 <= t < 2100]
    assert played_while_talking == []  # the rest of the reply never played over the caller
