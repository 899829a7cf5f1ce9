"""Puts media back in sequence for carriers that do not guarantee order (Telnyx).

Sans-I/O: feed each :class:`Media` in arrival order, get back the media that is now in order.
A frame that arrives ahead of a missing one waits, up to ``window`` frames; then the gap is
given up (reported as a :class:`ProtocolError` ``media_gap``) and playback moves on. A frame
that arrives after its place was given up is dropped as ``late_media``. At ``stop``,
:meth:`flush` releases whatever is still held, in order.

Source: https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming
("the order of media messages is not guaranteed"; order by ``sequence_number``/``chunk``).
"""

from __future__ import annotations

from gateway.carriers.events import CarrierEvent, Media, ProtocolError

__all__ = ["MediaReorderer"]


class MediaReorderer:
    """In-order release of media by ``Media.sequence``.

    Args:
        window: most frames held while waiting for a missing one (3 frames = 60 ms of added
            delay at most, and only while a frame is missing).
        first: the first sequence number if known; default: the first frame to arrive (the
            documented Telnyx example's first media is chunk 2, so no start is assumed).
    """

    def __init__(self, *, window: int = 3, first: int | None = None) -> None:
        self.window = window
        self._next: int | None = first
        self._held: dict[int, Media] = {}

    def push(self, media: Media) -> list[CarrierEvent]:
        """Media now in order (possibly none), plus any gap or lateness reports."""
        seq = media.sequence
        if seq is None:
            return [media]
        if self._next is None:
            self._next = seq
        if seq == self._next and not self._held:  # in order, nothing waiting: the usual case
            self._next = seq + 1
            return [media]
        if seq < self._next or seq in self._held:
            return [ProtocolError("late_media", f"chunk {seq} arrived after its place")]
        self._held[seq] = media
        out: list[CarrierEvent] = self._drain()
        if len(self._held) > self.window:
            first = min(self._held)
            out.append(ProtocolError("media_gap", f"chunks {self._next}..{first - 1} never arrived"))
            self._next = first
            out.extend(self._drain())
        return out

    def flush(self) -> list[CarrierEvent]:
        """Release every held frame in order (at the end of the stream)."""
        out: list[CarrierEvent] = [self._held.pop(k) for k in sorted(self._held)]
        if out:
            self._next = out[-1].sequence + 1  # type: ignore[union-attr, operator]
        return out

    def _drain(self) -> list[CarrierEvent]:
        out: list[CarrierEvent] = []
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        return out
