"""Playout ledger pause / resume: nothing released while paused, release resumes at the next
unsent frame with play times shifted, and heard-ms stays exact (with and without marks)."""

from __future__ import annotations

import pytest

from gateway.audio.playout import PlayoutLedger

FRAME = 160  # 20 ms of 8 kHz μ-law


def frames(n: int, first: int = 0) -> bytes:
    """``n`` frames, frame ``k`` filled with byte ``(first + k) % 256`` (to check order)."""
    return b"".join(bytes([(first + k) % 256]) * FRAME for k in range(n))


class IdealCarrier:
    """Plays what it is sent back to back on the ledger's schedule and acknowledges each mark
    exactly when the audio before it has played; tracks the true heard position of one item."""

    def __init__(self, lg: PlayoutLedger) -> None:
        self.lg = lg
        self.played: list[tuple[float, float, float]] = []  # (play start, item pos at start, ms)
        self.marks: list[tuple[float, str]] = []  # (play end, name)
        self.payloads: list[bytes] = []
        self.pos = 0.0

    def send(self, now_ms: float) -> None:
        for f in self.lg.due(now_ms):
            ms = f.frames * self.lg.frame_ms
            self.played.append((f.play_at_ms, self.pos, ms))
            self.payloads.append(f.payload)
            self.pos += ms
            if f.mark is not None:
                self.marks.append((f.play_at_ms + ms, f.mark))

    def mark_alone(self, name: str | None) -> None:
        """A mark sent with no media before it (the pause's): it plays when the last audio ends."""
        if name is not None:
            end = max((s + ms for s, _, ms in self.played), default=0.0)
            self.marks.append((end, name))

    def ack_until(self, now_ms: float) -> None:
        due = sorted(m for m in self.marks if m[0] <= now_ms)
        for end, name in due:
            assert self.lg.acknowledge(name, end)
            self.marks.remove((end, name))

    def truth(self, now_ms: float) -> float:
        heard = 0.0
        for start, pos, ms in self.played:
            if now_ms >= start:
                heard = max(heard, pos + min(ms, now_ms - start))
        return heard

    def run(self, until_ms: float, step_ms: float = 5.0, t: float = 0.0) -> float:
        while t < until_ms:
            self.ack_until(t)
            self.send(t)
            t += step_ms
        return t


def heard(lg: PlayoutLedger, now_ms: float) -> int:
    h = lg.heard(now_ms, "a")
    return h.heard_ms if h is not None else 0


@pytest.mark.parametrize("message_frames", [1, 5])
def test_nothing_is_released_while_paused_and_release_resumes_at_the_next_frame(message_frames):
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=60, message_frames=message_frames)
    carrier = IdealCarrier(lg)
    lg.enqueue("a", frames(100))
    t = carrier.run(500.0)
    sent_before = len(b"".join(carrier.payloads)) // FRAME
    carrier.mark_alone(lg.pause(t))
    assert lg.paused and lg.next_due_ms() is None and lg.playing(t)
    lg.enqueue("a", frames(10, first=100))  # the model's audio keeps queueing
    assert lg.due(t + 300) == [] and lg.due(t + 600) == []
    assert len(b"".join(carrier.payloads)) // FRAME == sent_before
    resume_at = t + 700
    assert lg.resume(resume_at) == pytest.approx(700.0)
    assert not lg.paused and lg.resume(resume_at) == 0.0
    before = len(carrier.played)
    carrier.send(resume_at)
    assert carrier.played[before][0] == resume_at  # shifted by the pause: the carrier had run dry
    carrier.run(10_000.0, t=resume_at + 5)
    audio = b"".join(carrier.payloads)
    assert len(audio) == 110 * FRAME  # every frame once, in order, none lost or repeated
    assert [audio[k * FRAME] for k in range(110)] == [k % 256 for k in range(110)]


@pytest.mark.parametrize("message_frames", [1, 5])
@pytest.mark.parametrize("pause_for_ms", [30.0, 400.0])
def test_heard_with_marks_is_exact_through_a_pause_and_resume(message_frames, pause_for_ms):
    """Marks sent before the pause (and the pause's own) are acknowledged as the lead plays out;
    heard stops at what was sent, does not run on through the paused gap, and goes on after."""
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=80, mark_every=5, message_frames=message_frames)
    carrier = IdealCarrier(lg)
    lg.enqueue("a", frames(150))
    t = carrier.run(1010.0)
    carrier.mark_alone(lg.pause(t))
    sent_ms = carrier.pos
    assert sent_ms > carrier.truth(t)  # the carrier holds a lead
    end = t + pause_for_ms
    while t < end:
        carrier.ack_until(t)
        assert heard(lg, t) == int(carrier.truth(t)), t
        t += 5.0
    if pause_for_ms > 200:
        assert heard(lg, t) == int(sent_ms)  # the lead played out, nothing more
    lg.resume(t)
    while t < 3500.0:
        carrier.ack_until(t)
        carrier.send(t)
        assert abs(heard(lg, t) - carrier.truth(t)) <= 1, t
        t += 5.0
    assert heard(lg, 10_000.0) == 3000


def test_heard_without_marks_is_exact_through_a_pause_and_resume():
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=80, has_marks=False)
    carrier = IdealCarrier(lg)
    lg.enqueue("a", frames(100))
    t = carrier.run(400.0)
    assert lg.pause(t) is None  # no marks to send
    for _ in range(60):
        assert heard(lg, t) == 20 * int(carrier.truth(t) // 20)  # whole frames whose time passed
        t += 5.0
    assert heard(lg, t) == int(carrier.pos)
    lg.resume(t)
    while t < 3000.0:
        carrier.send(t)
        assert heard(lg, t) == 20 * int(carrier.truth(t) // 20), t
        t += 5.0
    assert heard(lg, 10_000.0) == 2000


def test_the_pause_mark_is_only_asked_for_when_the_last_message_has_none():
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=60, mark_every=5)
    lg.enqueue("a", frames(3))
    lg.end_item("a")
    sent = lg.due(0.0)
    assert sent[-1].mark is not None  # the item's end is marked
    assert lg.pause(10.0) is None
    assert lg.pause(20.0) is None  # already paused
    lg.resume(30.0)
    lg.enqueue("b", frames(20))
    sent = lg.due(100.0)
    assert sent[-1].mark is None  # mid-item: no mark after the last message sent
    mark = lg.pause(105.0)
    assert mark is not None and mark.startswith("g0.")
    assert lg.acknowledge(mark, 180.0)
    assert lg.heard(180.0, "b").heard_ms == 20 * len(sent)


def test_heard_while_paused_never_passes_what_was_sent_even_unacknowledged():
    """A carrier that has not (yet) acknowledged: interpolation stops at the pause's mark."""
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=60, mark_every=5)
    lg.enqueue("a", frames(50))
    sent = lg.due(0.0)
    assert all(f.mark is None for f in sent)
    assert lg.pause(10.0) is not None  # never acknowledged
    sent_ms = 20 * len(sent)
    assert lg.heard(5_000.0, "a").heard_ms == sent_ms


def test_a_clear_while_paused_cuts_at_what_played_before_the_pause_and_ends_the_pause():
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=80, mark_every=5)
    carrier = IdealCarrier(lg)
    lg.enqueue("a", frames(100))
    t = carrier.run(1010.0)
    carrier.mark_alone(lg.pause(t))
    sent_ms = carrier.pos
    lg.enqueue("b", frames(10))  # a later reply queued while paused
    t += 400.0
    carrier.ack_until(t)
    cut = lg.clear_all(t)
    assert [(h.item_id, h.heard_ms) for h in cut] == [("a", int(sent_ms)), ("b", 0)]
    assert lg.heard(t + 1000, "a").heard_ms == int(sent_ms)
    assert not lg.paused and not lg.playing(t)
    lg.enqueue("c", frames(3))
    out = lg.due(t)
    assert len(out) == 3 and out[0].play_at_ms == t and out[0].mark is None and out[-1].mark.startswith("g1.")


def test_a_clear_while_paused_with_no_acknowledgement_cuts_at_what_was_sent():
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=60, mark_every=5)
    lg.enqueue("a", frames(30))
    sent = lg.due(0.0)
    lg.pause(5.0)
    heard_at_clear = lg.clear(500.0)
    assert heard_at_clear.heard_ms == 20 * len(sent)


def test_interpolation_skips_an_underrun_gap_too():
    """The model slower than real time: the carrier ran dry between two bursts of one item, and
    that idle time is not counted as heard (it used to be, up to the next mark)."""
    lg = PlayoutLedger(frame_bytes=FRAME, lead_ms=60, mark_every=3)
    lg.enqueue("a", frames(3))
    out = lg.due(0.0)
    assert out[-1].mark is not None  # the queue ran empty: marked
    assert lg.acknowledge(out[-1].mark, 60.0)
    lg.enqueue("a", frames(10))
    lg.due(200.0)  # 140 ms after the carrier ran dry
    assert lg.heard(250.0, "a").heard_ms == 60 + 50
