"""Playout ledger: paces agent audio to the carrier and knows what the caller has heard.

Agent audio arrives in bursts (a model streams faster than real time). The ledger cuts it into
fixed frames (``frame_ms``, 20 ms for most carriers), releases them on an accumulating clock so
the carrier holds between ``lead_ms`` and ``lead_ms`` + one message of audio ahead of real time
(small enough that a ``clear`` is heard at once, large enough to ride out network jitter), and
puts a mark at the first message boundary after every ``mark_every`` frames and at the end of
each item. A *message* joins up to ``message_frames`` consecutive frames of one item into one
payload (for carriers that accept larger media messages: fewer messages per call-second); it
never spans two items, and it is shorter when the queue runs short (nothing waits for audio
not yet queued).

What the caller heard comes from the carrier's mark acknowledgements: a mark is echoed when the
audio before it has played. Between acknowledgements the ledger interpolates by clock (play
time, so within a message as within a frame), never past the next unacknowledged mark; without
marks it counts the frames whose scheduled play time ended, frame by frame inside a message. A ``clear`` starts a new *generation*: acknowledgements of
marks from an older generation mean "cleared", not "played" (Twilio echoes every pending mark on
``clear``), so they are ignored.

Interpolation counts only *scheduled play time*: when a release starts after the carrier ran
out of our audio (the queue ran dry, or the ledger was paused), the idle interval between is a
*gap*, and the clock time inside gaps is not counted as heard.

**Pause** (:meth:`PlayoutLedger.pause`, for pause-then-commit barge-in): nothing more is
released; the carrier plays out what it holds (its lead) and a mark put after the last message
sent (when it carried none) is acknowledged once that lead has played, so what the caller heard
stays exact. Queued audio waits, and audio enqueued while paused queues behind it.
:meth:`PlayoutLedger.resume` releases again from the next unsent frame, its play times shifted
by the pause (the idle part of the pause is a gap). A clear while paused ends the pause.

Pure and synchronous: time comes in as ``now_ms`` (any monotonic ms clock), nothing sleeps.

Sources: https://www.twilio.com/docs/voice/media-streams/websocket-messages (mark, clear).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["PlayoutLedger", "OutFrame", "Heard", "MAX_PENDING_MARKS", "MAX_GAPS"]

#: Marks kept waiting for an acknowledgement; past this the oldest is taken as played (a
#: carrier that stopped acknowledging must not grow the ledger, 256 marks are >= 25 s of audio).
MAX_PENDING_MARKS = 256
#: Idle gaps remembered for interpolation (they are dropped whenever every mark is acknowledged;
#: a carrier that stopped acknowledging must not grow the ledger either).
MAX_GAPS = 64


@dataclass(frozen=True, slots=True)
class OutFrame:
    """One message to send: ``payload`` bytes in the carrier format, then ``mark`` if not None.

    ``play_at_ms`` is when its first sample is due to play; ``frames`` how many ``frame_ms``
    frames the payload joins (1 unless the ledger's ``message_frames`` is larger).
    """

    payload: bytes
    mark: str | None
    item_id: str
    play_at_ms: float
    frames: int = 1


@dataclass(frozen=True, slots=True)
class Heard:
    """How much of one agent audio item the caller heard (whole ms) out of what was queued."""

    item_id: str
    heard_ms: int
    queued_ms: int


@dataclass(slots=True)
class _Item:
    item_id: str
    queued_ms: float = 0.0  # audio handed to the ledger for this item
    acked_ms: float = 0.0  # position of the last acknowledged mark
    ack_at_ms: float | None = None  # clock time of that acknowledgement
    first_play_ms: float | None = None  # clock time its first frame was due to play


class PlayoutLedger:
    """Frame pacing and heard-ms accounting for one call's outbound audio.

    Args:
        frame_bytes: bytes per outbound frame in the carrier format (160 for 20 ms PCMU at 8 kHz).
        frame_ms: duration of one frame (ms).
        silence_byte: the byte that encodes silence (``0xFF`` for μ-law, ``0xD5`` for A-law,
            ``0x00`` for L16); used to pad the last partial frame of an item.
        lead_ms: audio the carrier is kept holding ahead of real time (ms); it holds at most
            ``lead_ms`` + one message (``message_frames * frame_ms``).
        mark_every: put a mark at the first message boundary after this many frames (and
            always at an item's end).
        has_marks: False for carriers without marks: heard time is then estimated by clock.
        message_frames: frames joined into one outbound message at most (1: one message per
            frame); the carrier adapter says which sizes it accepts.

    Raises:
        ValueError: ``frame_bytes``, ``frame_ms`` or ``message_frames`` not positive.
    """

    def __init__(
        self,
        *,
        frame_bytes: int,
        frame_ms: int = 20,
        silence_byte: int = 0xFF,
        lead_ms: float = 80.0,
        mark_every: int = 5,
        has_marks: bool = True,
        message_frames: int = 1,
    ) -> None:
        if frame_bytes <= 0 or frame_ms <= 0 or message_frames <= 0:
            raise ValueError("frame_bytes, frame_ms and message_frames must be positive")
        self.message_frames = message_frames
        self.frame_bytes = frame_bytes
        self.frame_ms = frame_ms
        self.lead_ms = lead_ms
        self.mark_every = max(1, mark_every)
        self.has_marks = has_marks
        self._silence = bytes([silence_byte]) * frame_bytes
        self._queue: deque[tuple[bytes, str, float, bool]] = deque()  # payload, item, end_ms, last
        self._partial = bytearray()
        self._partial_item = ""
        self._items: dict[str, _Item] = {}
        self._order: list[str] = []
        self._generation = 0
        self._seq = 0
        self._since_mark = 0
        self._play_until_ms: float | None = None  # when the carrier finishes what we sent
        self._pending: deque[tuple[str, str, float, float]] = deque()  # mark, item, pos, play end
        self._gaps: deque[tuple[float, float]] = deque(maxlen=MAX_GAPS)  # carrier idle between releases
        self._tail: tuple[str, float, float] | None = None  # last message sent with no mark: item, pos, end
        self._paused_at: float | None = None  # clock time of the pause, while paused
        self.frames_sent = 0
        self.stale_acks = 0  # acknowledgements of marks a clear dropped
        self.unknown_acks = 0  # acknowledgements of marks that were not pending
        self.expired_marks = 0  # marks never acknowledged, settled by clock (MAX_PENDING_MARKS)

    # ----------------------------------------------------------------- input
    def enqueue(self, item_id: str, payload: bytes) -> None:
        """Queue agent audio (carrier-format bytes, any length) for item ``item_id``."""
        if item_id != self._partial_item and self._partial:
            self.end_item(self._partial_item)
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item(item_id)
            self._order.append(item_id)
        self._partial_item = item_id
        buf = self._partial
        buf += payload
        n_full = len(buf) // self.frame_bytes
        fb = self.frame_bytes
        for i in range(n_full):
            item.queued_ms += self.frame_ms
            self._queue.append((bytes(buf[i * fb : (i + 1) * fb]), item_id, item.queued_ms, False))
        del buf[: n_full * fb]

    def end_item(self, item_id: str) -> None:
        """The item is complete: pad its last partial frame and mark its end."""
        item = self._items.get(item_id)
        if item is None:
            return
        if self._partial and self._partial_item == item_id:
            frac = len(self._partial) / self.frame_bytes
            item.queued_ms += frac * self.frame_ms
            payload = bytes(self._partial) + self._silence[len(self._partial) :]
            self._queue.append((payload, item_id, item.queued_ms, True))
            self._partial.clear()
        elif self._queue and self._queue[-1][1] == item_id:
            p, i, e, _ = self._queue[-1]
            self._queue[-1] = (p, i, e, True)

    # ----------------------------------------------------------------- output
    def due(self, now_ms: float) -> list[OutFrame]:
        """Messages to send now: the carrier is topped up while it holds ``<= lead_ms`` of audio.

        Each message joins up to :attr:`message_frames` queued frames of one item; a mark
        follows it when ``mark_every`` frames passed since the last mark, at its item's end, or
        when the queue is empty.
        """
        out: list[OutFrame] = []
        queue, fms, most = self._queue, self.frame_ms, self.message_frames
        if not queue or self._paused_at is not None:
            return out
        if self._play_until_ms is None or self._play_until_ms < now_ms:
            if self._play_until_ms is not None:  # the carrier ran out of our audio: an idle gap
                self._gaps.append((self._play_until_ms, now_ms))
            self._play_until_ms = now_ms
        while queue and self._play_until_ms - now_ms <= self.lead_ms:
            payload, item_id, end_ms, last = queue.popleft()
            start = self._play_until_ms
            n = 1
            if most > 1 and not last:
                parts = [payload]
                while n < most and queue and queue[0][1] == item_id:
                    if not self.has_marks:  # clock accounting stays per frame inside a message
                        self._pending.append(("", item_id, end_ms, start + n * fms))
                    part, _, end_ms, last = queue.popleft()
                    parts.append(part)
                    n += 1
                    if last:
                        break
                payload = b"".join(parts)
            self._play_until_ms = start + n * fms
            self._since_mark += n
            mark = None
            if self.has_marks and (last or self._since_mark >= self.mark_every or not queue):
                self._seq += 1
                mark = f"g{self._generation}.{self._seq}"
                self._pending.append((mark, item_id, end_ms, self._play_until_ms))
                if len(self._pending) > MAX_PENDING_MARKS:  # the carrier stopped acknowledging
                    self._expire_oldest_mark()
                self._since_mark = 0
                self._tail = None
            elif not self.has_marks:
                self._pending.append(("", item_id, end_ms, self._play_until_ms))
                self._settle_clock(now_ms)
            else:
                self._tail = (item_id, end_ms, self._play_until_ms)
            self.frames_sent += n
            item = self._items[item_id]
            if item.first_play_ms is None:
                item.first_play_ms = start
            out.append(OutFrame(payload, mark, item_id, start, n))
        return out

    def next_due_ms(self) -> float | None:
        """Clock time at which :meth:`due` will release the next message (None: nothing queued,
        or paused)."""
        if not self._queue or self._paused_at is not None:
            return None
        if self._play_until_ms is None:
            return 0.0
        return self._play_until_ms - self.lead_ms

    def acknowledge(self, name: str, now_ms: float) -> bool:
        """Record the carrier's acknowledgement of mark ``name``.

        Audio plays in order, so an acknowledged mark also settles every earlier pending mark
        (their own acknowledgements were lost). A mark of an older generation (echoed by a
        ``clear``, not played) is counted in :attr:`stale_acks`; a name that is not pending (never
        sent, already acknowledged, or out of order) is counted in :attr:`unknown_acks`. Neither
        changes what the caller heard.

        Returns:
            True if ``name`` was a pending mark of the current generation.
        """
        if not name.startswith(f"g{self._generation}."):
            gen = name[1:].partition(".")[0]
            if name.startswith("g") and gen.isascii() and gen.isdecimal() and int(gen) < self._generation:
                self.stale_acks += 1
            else:
                self.unknown_acks += 1
            return False
        idx = next((i for i, p in enumerate(self._pending) if p[0] == name), None)
        if idx is None:
            self.unknown_acks += 1
            return False
        for _ in range(idx + 1):
            _, item_id, pos, _ = self._pending.popleft()
            item = self._items.get(item_id)
            if item is not None:
                item.acked_ms = max(item.acked_ms, pos)
                item.ack_at_ms = now_ms
        if not self._pending:  # no interpolation reaches back past this acknowledgement
            self._gaps.clear()
        return True

    # ----------------------------------------------------------------- pause
    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume` (or a clear)."""
        return self._paused_at is not None

    def pause(self, now_ms: float) -> str | None:
        """Stop releasing audio (the carrier plays out what it holds); queued audio waits.

        Returns:
            the name of a mark the caller must send now (after the audio already sent) when the
            last message sent carried none, so the carrier confirms when its lead has played
            out; ``None`` otherwise (a mark already follows it, the carrier has no marks, or
            the ledger was already paused).
        """
        if self._paused_at is not None:
            return None
        self._paused_at = now_ms
        if self._tail is None:
            return None
        item_id, pos, play_end = self._tail
        self._tail = None
        self._seq += 1
        mark = f"g{self._generation}.{self._seq}"
        self._pending.append((mark, item_id, pos, play_end))
        if len(self._pending) > MAX_PENDING_MARKS:
            self._expire_oldest_mark()
        self._since_mark = 0
        return mark

    def resume(self, now_ms: float) -> float:
        """Release again from the next unsent frame; how long it was paused (ms; 0 if it was not).

        The next message plays at ``max(now, end of what the carrier holds)``: the play times of
        everything after it shift by the pause's idle part, which interpolation skips (a gap).
        """
        if self._paused_at is None:
            return 0.0
        paused_ms = max(0.0, now_ms - self._paused_at)
        self._paused_at = None
        return paused_ms

    # ----------------------------------------------------------------- state
    def playing(self, now_ms: float) -> bool:
        """True while agent audio is queued here or still playing at the carrier."""
        if self._queue or self._partial:
            return True
        return self._play_until_ms is not None and self._play_until_ms > now_ms

    def buffered_ms(self, now_ms: float) -> float:
        """Audio sent to the carrier that has not yet played, by clock (ms)."""
        if self._play_until_ms is None:
            return 0.0
        return max(0.0, self._play_until_ms - now_ms)

    def heard(self, now_ms: float, item_id: str | None = None) -> Heard | None:
        """What the caller heard of ``item_id`` (default: the latest item that was sent).

        With marks: the last acknowledged position, advanced by clock since that
        acknowledgement (or since the item's first frame was due to play), but never past the
        item's next unacknowledged mark. Without marks: frames whose scheduled play time ended.
        """
        if item_id is None:
            item_id = self.latest_sent_item()
            if item_id is None:
                return None
        item = self._items.get(item_id)
        if item is None:
            return None
        heard = item.acked_ms
        nxt = next((p for p in self._pending if p[1] == item_id), None)
        if self.has_marks:
            ref = item.ack_at_ms if item.ack_at_ms is not None else item.first_play_ms
            if nxt is not None and ref is not None:
                heard = min(nxt[2], heard + self._played_ms(ref, now_ms))
        else:
            for _, iid, pos, play_end in self._pending:
                if iid == item_id and play_end <= now_ms:
                    heard = max(heard, pos)
        heard = min(heard, item.queued_ms)
        return Heard(item_id, int(heard), int(round(item.queued_ms)))

    def _played_ms(self, since_ms: float, now_ms: float) -> float:
        """Clock time from ``since_ms`` to ``now_ms`` outside the idle gaps (ms, >= 0)."""
        played = max(0.0, now_ms - since_ms)
        for start, end in self._gaps:
            played -= max(0.0, min(end, now_ms) - max(start, since_ms))
        return max(0.0, played)

    def _expire_oldest_mark(self) -> None:
        """Fold the oldest pending mark into its item as played (by clock: it is
        :data:`MAX_PENDING_MARKS` marks, seconds of audio, behind) and count it."""
        _, iid, pos, _ = self._pending.popleft()
        item = self._items.get(iid)
        if item is not None:
            item.acked_ms = max(item.acked_ms, pos)
        self.expired_marks += 1

    def _settle_clock(self, now_ms: float) -> None:
        """Without marks: fold frames whose play time has passed into the items' heard ms."""
        while self._pending and self._pending[0][3] <= now_ms and len(self._pending) > 1:
            _, iid, pos, _ = self._pending.popleft()
            item = self._items.get(iid)
            if item is not None:
                item.acked_ms = max(item.acked_ms, pos)

    def latest_sent_item(self) -> str | None:
        """The item whose audio the carrier received most recently."""
        if self._pending:
            return self._pending[-1][1]
        for iid in reversed(self._order):
            if self._items[iid].acked_ms > 0:
                return iid
        return None

    def clear(self, now_ms: float) -> Heard | None:
        """Barge-in: drop everything queued, start a new generation, return what was heard.

        Returns what the caller heard of the latest item sent (see :meth:`clear_all` for every
        item the clear cut). The caller must send the carrier's ``clear`` frame as well: the
        carrier holds up to ``lead_ms`` of audio.
        """
        heard = self.heard(now_ms)
        self.clear_all(now_ms)
        return heard

    def clear_all(self, now_ms: float) -> list[Heard]:
        """Barge-in: drop everything queued, start a new generation, return every item it cut.

        An item is cut when some of its audio was not heard: the one playing, and any later one
        whose audio was queued here or sent but not yet played (``heard_ms`` 0). Items are in
        the order they were queued. Like :meth:`clear`, the carrier's ``clear`` must be sent too.
        """
        live = {entry[1] for entry in self._queue}
        live.update(entry[1] for entry in self._pending if entry[3] > now_ms)
        if self._partial:
            live.add(self._partial_item)
        cut = []
        for item_id in self._order:
            if item_id in live:
                heard = self.heard(now_ms, item_id)
                if heard is not None and heard.heard_ms < int(self._items[item_id].queued_ms):
                    cut.append(heard)
        self._queue.clear()
        self._partial.clear()
        self._pending.clear()
        self._gaps.clear()
        self._tail = None
        self._paused_at = None  # a clear ends a pause (pause-then-commit: the commit)
        self._generation += 1
        self._since_mark = 0
        self._play_until_ms = now_ms
        for heard in cut:  # what was dropped is no longer queued: the item ends where it was cut
            self._items[heard.item_id].queued_ms = heard.heard_ms
        return cut
