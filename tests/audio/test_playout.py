"""Playout ledger: pacing on an accumulating clock, marks, heard-ms, clear generations."""

from __future__ import annotations

import pytest

from gateway.audio.playout import PlayoutLedger

FRAME = 160  # 20 ms of 8 kHz μ-law


def ledger(**kw) -> PlayoutLedger:
    return PlayoutLedger(frame_bytes=FRAME, frame_ms=20, lead_ms=kw.pop("lead_ms", 60), mark_every=kw.pop("mark_every", 5), **kw)


def test_frames_are_cut_and_paced_with_a_bounded_lead():
    lg = ledger()
    lg.enqueue("a", bytes(FRAME * 10))
    first = lg.due(0.0)
    # 60 ms lead: the carrier is topped up while it holds <= 60 ms, so at most 80 ms.
    assert [f.play_at_ms for f in first] == [0.0, 20.0, 40.0, 60.0]
    assert lg.due(10.0) == []  # holds 70 ms
    assert lg.next_due_ms() == pytest.approx(20.0)  # played-until 80 minus the 60 ms lead
    assert [f.play_at_ms for f in lg.due(20.0)] == [80.0]
    assert lg.due(20.0) == []


def test_pacing_accumulates_instead_of_drifting():
    """Late wake-ups must not shift the schedule: play times stay on the 20 ms grid."""
    lg = ledger(lead_ms=20)
    lg.enqueue("a", bytes(FRAME * 50))
    times, now = [], 0.0
    while lg.next_due_ms() is not None:
        for f in lg.due(now):
            times.append(f.play_at_ms)
        now += 19.0 if len(times) % 2 else 21.0  # jittery wake-ups
    diffs = {round(b - a, 6) for a, b in zip(times, times[1:])}
    assert diffs == {20.0}
    assert len(times) == 50


def test_partial_frame_is_padded_with_silence_at_item_end():
    lg = ledger(silence_byte=0xFF)
    lg.enqueue("a", b"\x00" * (FRAME + 40))
    lg.end_item("a")
    frames = lg.due(0.0)
    assert len(frames) == 2
    assert frames[1].payload == b"\x00" * 40 + b"\xff" * (FRAME - 40)
    assert frames[1].mark is not None  # an item's end is always marked


def test_marks_every_n_frames_and_heard_follows_acknowledgements():
    lg = ledger(mark_every=2, lead_ms=1000)
    lg.enqueue("a", bytes(FRAME * 6))
    frames = lg.due(0.0)
    marks = [f.mark for f in frames if f.mark]
    assert len(marks) == 3  # after frames 2, 4 and 6
    # Nothing acknowledged, clock at 0: nothing heard.
    assert lg.heard(0.0).heard_ms == 0
    assert lg.acknowledge(marks[0], now_ms=45.0)
    h = lg.heard(45.0)
    assert (h.item_id, h.heard_ms, h.queued_ms) == ("a", 40, 120)
    # Between acks the clock interpolates, capped at the next unacknowledged mark (80 ms).
    assert lg.heard(55.0).heard_ms == 50
    assert lg.heard(500.0).heard_ms == 80


def test_clear_starts_a_new_generation_and_stale_acks_are_ignored():
    lg = ledger(mark_every=1, lead_ms=100)
    lg.enqueue("a", bytes(FRAME * 10))
    frames = lg.due(0.0)
    assert lg.acknowledge(frames[0].mark, now_ms=21.0)
    heard = lg.clear(now_ms=25.0)
    assert heard.item_id == "a" and 20 <= heard.heard_ms <= 40
    # Twilio echoes every pending mark on clear: those must not count as played.
    for f in frames[1:]:
        assert not lg.acknowledge(f.mark, now_ms=26.0)
    assert lg.stale_acks == len(frames) - 1 and lg.unknown_acks == 0
    assert not lg.playing(26.0)
    lg.enqueue("b", bytes(FRAME))
    lg.end_item("b")
    (f,) = lg.due(30.0)
    assert f.mark.startswith("g1.") and f.play_at_ms == 30.0
    assert lg.acknowledge(f.mark, now_ms=51.0)
    assert lg.heard(51.0).item_id == "b"


def test_heard_never_exceeds_what_was_queued():
    lg = ledger(mark_every=1, lead_ms=1000)
    lg.enqueue("a", bytes(FRAME * 2 + 10))
    lg.end_item("a")
    frames = lg.due(0.0)
    for f in frames:
        lg.acknowledge(f.mark, now_ms=100.0)
    h = lg.heard(10_000.0)
    assert h.heard_ms == h.queued_ms == 41  # 40 ms + 10/160 of a frame, whole ms


def test_without_marks_heard_is_estimated_by_clock():
    lg = ledger(has_marks=False, lead_ms=1000)
    lg.enqueue("a", bytes(FRAME * 5))
    frames = lg.due(0.0)
    assert all(f.mark is None for f in frames)
    assert lg.heard(45.0).heard_ms == 40
    assert lg.heard(1000.0).heard_ms == 100


def test_latest_item_is_the_one_being_played():
    lg = ledger(mark_every=1, lead_ms=1000)
    lg.enqueue("a", bytes(FRAME))
    lg.enqueue("b", bytes(FRAME * 2))
    frames = lg.due(0.0)
    assert [f.item_id for f in frames] == ["a", "b", "b"]
    assert lg.latest_sent_item() == "b"


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError):
        PlayoutLedger(frame_bytes=0)


def test_unknown_or_out_of_order_acks_change_nothing():
    """An ack naming no pending mark must not advance what was heard (it used to pop them all)."""
    lg = ledger(mark_every=1, lead_ms=10_000)
    lg.enqueue("a", bytes(FRAME * 50))  # 1 s
    lg.end_item("a")
    frames = lg.due(0.0)
    assert lg.acknowledge(frames[0].mark, now_ms=10.0)  # 20 ms played
    before = lg.heard(10.0)
    for name in ("g0.bogus", "g0.", "g0.999", "", "x", frames[0].mark):  # the last: already acked
        assert not lg.acknowledge(name, now_ms=10.0)
    assert lg.unknown_acks == 6 and lg.stale_acks == 0
    assert lg.heard(10.0) == before
    assert before.heard_ms == 20  # not 1000
    # A later mark settles the earlier ones (their acks were lost): audio plays in order.
    assert lg.acknowledge(frames[9].mark, now_ms=200.0)
    assert lg.heard(200.0).heard_ms == 200
    assert not lg.acknowledge(frames[5].mark, now_ms=201.0)  # out of order: already settled
    assert lg.heard(201.0).heard_ms == 201  # by clock from the last ack, unchanged by the stale one


def test_clear_all_reports_every_item_it_cut_including_ones_not_yet_played():
    """Two replies queued back to back ("Let me check…", then the answer): a barge-in in the
    first cuts both; the second was heard for 0 ms. Items already played are not reported."""
    lg = ledger(mark_every=1, lead_ms=100)
    lg.enqueue("old", bytes(FRAME * 2))
    lg.end_item("old")
    for f in lg.due(0.0):
        lg.acknowledge(f.mark, now_ms=40.0)
    lg.enqueue("a", bytes(FRAME * 50))  # 1 s
    lg.end_item("a")
    lg.enqueue("b", bytes(FRAME * 50))
    lg.end_item("b")
    now, sent = 100.0, []
    while now <= 400.0:
        for f in lg.due(now):
            sent.append(f)
        for f in sent:
            if f.mark and f.play_at_ms + 20 <= now:
                lg.acknowledge(f.mark, now_ms=now)
        now += 20.0
    cut = lg.clear_all(now)
    assert [h.item_id for h in cut] == ["a", "b"]
    assert 280 <= cut[0].heard_ms <= 320 and cut[0].queued_ms == 1000
    assert (cut[1].heard_ms, cut[1].queued_ms) == (0, 1000)
    assert not lg.playing(now) and lg.next_due_ms() is None
    assert lg.heard(now + 1000, "b").heard_ms == 0  # nothing of b was played, ever


def test_marks_never_acknowledged_stay_bounded_and_settle_by_clock():
    from gateway.audio.playout import MAX_PENDING_MARKS

    lg = ledger(mark_every=1, lead_ms=20)
    lg.enqueue("a", bytes(FRAME * 1000))  # 20 s, a mark per frame, none ever acknowledged
    now = 0.0
    while lg.next_due_ms() is not None:
        lg.due(now)
        now += 20.0
    assert len(lg._pending) == MAX_PENDING_MARKS
    assert lg.expired_marks == 1000 - MAX_PENDING_MARKS
    assert lg.heard(now).heard_ms >= (1000 - MAX_PENDING_MARKS) * 20


def test_messages_join_frames_of_one_item_and_marks_go_at_their_ends():
    lg = ledger(message_frames=5, lead_ms=1000)
    data = bytes(i % 251 for i in range(FRAME * 7))  # 7 frames
    lg.enqueue("a", data)
    lg.end_item("a")
    lg.enqueue("b", bytes(FRAME * 3 + 40))  # 3 frames and a partial one
    lg.end_item("b")
    out = lg.due(0.0)
    assert [(f.item_id, f.frames, len(f.payload)) for f in out] == [
        ("a", 5, 5 * FRAME), ("a", 2, 2 * FRAME), ("b", 4, 4 * FRAME)]  # never across items
    assert out[0].payload + out[1].payload == data  # the frames, in order
    assert [f.play_at_ms for f in out] == [0.0, 100.0, 140.0]
    assert all(f.mark is not None for f in out)  # 5 frames since the last mark, and item ends
    assert lg.frames_sent == 11


def test_a_message_takes_what_is_queued_and_the_lead_bounds_the_carrier():
    lg = ledger(message_frames=5, lead_ms=80)
    lg.enqueue("a", bytes(FRAME * 2))  # the model streams: 40 ms so far
    [first] = lg.due(0.0)
    assert first.frames == 2 and first.mark is not None  # nothing waits; the queue ran dry
    lg.enqueue("a", bytes(FRAME * 20))
    [second] = lg.due(0.0)  # holds 40 ms <= 80: one message more
    assert second.frames == 5 and lg.buffered_ms(0.0) == 140.0
    assert lg.due(50.0) == [] and lg.next_due_ms() == pytest.approx(60.0)
    [third] = lg.due(60.0)
    assert third.play_at_ms == 140.0 and lg.buffered_ms(60.0) == 180.0  # lead + one message at most


def test_heard_is_interpolated_inside_a_message_by_play_time():
    lg = ledger(message_frames=5, lead_ms=80)
    lg.enqueue("a", bytes(FRAME * 50))
    sent, now = [], 0.0
    while now < 430.0:  # the carrier plays on time and echoes each mark when its audio ended
        sent += lg.due(now)
        for f in sent:
            if f.mark and f.play_at_ms + f.frames * 20 == now:
                assert lg.acknowledge(f.mark, now)
        now += 5.0
    # 430 ms played: the last mark acknowledged at 400, 30 ms into the next 100 ms message.
    assert all(f.frames == 5 for f in sent) and lg.heard(430.0).heard_ms == 430
    assert lg.heard(499.0).heard_ms == 499 and lg.heard(520.0).heard_ms == 500  # capped at its mark
    assert lg.clear(430.0).heard_ms == 430


def test_without_marks_heard_counts_frames_inside_a_message():
    lg = ledger(has_marks=False, message_frames=5, lead_ms=1000)
    lg.enqueue("a", bytes(FRAME * 10))
    out = lg.due(0.0)
    assert [f.frames for f in out] == [5, 5] and all(f.mark is None for f in out)
    assert lg.heard(45.0).heard_ms == 40 and lg.heard(130.0).heard_ms == 120
    assert lg.heard(1000.0).heard_ms == 200


def test_message_frames_must_be_positive():
    with pytest.raises(ValueError):
        ledger(message_frames=0)
