"""AudioBudget: how much caller audio one call may hand the media path, per message and per second.

Every ms of inbound audio costs decode, resample and VAD work on the shared event loop (about
6 µs of CPU per 20 ms frame at 8 kHz, 10× that with Silero at 16 kHz). A carrier sends audio in
real time; a peer that sends one 32 s message, or streams far faster than real time, would take
the loop from every other call. The budget is a token bucket in ms of audio: it fills at
``rate`` × real time up to ``burst_ms`` (so a client may send a recorded utterance at once, or
catch up after a network stall), and one message may carry at most ``max_message_ms``. Audio
over either bound is refused (the session drops it and counts a protocol error).

Pure and synchronous: time comes in as ``now_ms`` (any monotonic ms clock).
"""

from __future__ import annotations

__all__ = ["AudioBudget"]


class AudioBudget:
    """A token bucket of caller audio (ms) for one call.

    Args:
        rate: audio admitted per ms of clock time, in the long run (2.0: twice real time).
        burst_ms: the most audio admitted at once after a quiet spell (the bucket's size).
        max_message_ms: the most audio one message may carry.
    """

    __slots__ = ("rate", "burst_ms", "max_message_ms", "_credit_ms", "_at_ms")

    def __init__(self, *, rate: float = 2.0, burst_ms: float = 10_000.0, max_message_ms: float = 2_000.0) -> None:
        if rate <= 0 or burst_ms <= 0 or max_message_ms <= 0:
            raise ValueError("rate, burst_ms and max_message_ms must be positive")
        self.rate = rate
        self.burst_ms = burst_ms
        self.max_message_ms = max_message_ms
        self._credit_ms = burst_ms
        self._at_ms: float | None = None

    def admit(self, audio_ms: float, now_ms: float) -> str | None:
        """Take ``audio_ms`` of audio arriving at ``now_ms``; ``None`` if admitted.

        Returns:
            ``None``, or the protocol-error kind that refused it: ``audio_oversize`` (one message
            over ``max_message_ms``) or ``audio_too_fast`` (the bucket is empty). Refused audio
            takes no credit.
        """
        if audio_ms > self.max_message_ms:
            return "audio_oversize"
        if self._at_ms is not None and now_ms > self._at_ms:
            self._credit_ms = min(self.burst_ms, self._credit_ms + (now_ms - self._at_ms) * self.rate)
        self._at_ms = now_ms if self._at_ms is None else max(self._at_ms, now_ms)
        if audio_ms > self._credit_ms:
            return "audio_too_fast"
        self._credit_ms -= audio_ms
        return None
