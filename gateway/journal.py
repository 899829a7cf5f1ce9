"""CallJournal: one call's event list, protocol-error counts and log lines, all bounded.

A peer can send any number of frames, so nothing a call keeps per message may grow with them:
a flood of 200,000 DTMF frames or of made-up event names must cost a counter, not 200,000
events, a 13 MB record, or one metrics key and one log line per name. The journal keeps:

- events: at most ``max_events`` in all and ``max_per_kind`` of each kind (the call's final
  ``ended`` event is always kept); the rest are counted in :attr:`dropped` by kind;
- protocol errors: counted by kind (the kinds are a fixed set, see
  :class:`gateway.carriers.events.ProtocolError`); the first ``log_first`` are logged, then at
  most one summary line per ``log_every_s`` seconds;
- unhandled event names: at most ``max_names`` distinct names (cut to 64 characters), the rest
  counted under ``"(other)"``; each name is logged once.

Pure and synchronous; time comes in as ms from the call's start.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["CallJournal"]

OTHER = "(other)"


class CallJournal:
    """Bounded per-call events, counters and log lines.

    Args:
        log: the call's logger (carries ``call_id``).
        max_events: events kept in all (besides the final ``ended``).
        max_per_kind: events kept of any one kind.
        max_names: distinct unhandled event names counted by name.
        log_first: protocol errors logged one by one before rate limiting starts.
        log_every_s: at most one summary line of further protocol errors per this many seconds.
    """

    def __init__(
        self,
        log: logging.LoggerAdapter | logging.Logger,
        *,
        max_events: int = 1000,
        max_per_kind: int = 200,
        max_names: int = 16,
        log_first: int = 20,
        log_every_s: float = 10.0,
    ) -> None:
        self.log = log
        self.events: list[dict[str, Any]] = []
        self.dropped: Counter[str] = Counter()
        self.protocol_errors: Counter[str] = Counter()
        self.unhandled: Counter[str] = Counter()
        self._kinds: Counter[str] = Counter()
        self._max_events = max_events
        self._max_per_kind = max_per_kind
        self._max_names = max_names
        self._log_first = log_first
        self._log_every_ms = log_every_s * 1000.0
        self._logged_at_ms: float | None = None
        self._suppressed = 0
        #: Optional observer, called with ``(event, kept)`` for every event, kept or not (the
        #: record's dict, not a copy; ``kept`` False: a bound dropped it from the record): the
        #: WebRTC transport's live view (:meth:`gateway.webrtc.transport.WebRtcTransport.observe`),
        #: whose agent state follows the caller's speech however long the call.
        self.on_event: Callable[[dict[str, Any], bool], None] | None = None

    def event(self, kind: str, at_ms: float, data: dict[str, Any], *, final: bool = False) -> bool:
        """Append an event unless a bound is reached (then count it); True if it was kept."""
        if not final and (len(self.events) >= self._max_events or self._kinds[kind] >= self._max_per_kind):
            self.dropped[kind] += 1
            if self.on_event is not None:
                self.on_event({"kind": kind, "at_ms": int(at_ms), "data": data}, False)
            return False
        self._kinds[kind] += 1
        entry = {"kind": kind, "at_ms": int(at_ms), "data": data}
        self.events.append(entry)
        if self.on_event is not None:
            self.on_event(entry, True)
        return True

    def protocol_error(self, kind: str, detail: str, at_ms: float) -> None:
        """Count a protocol error; log it (rate limited) and keep it as an event (bounded)."""
        self.protocol_errors[kind] += 1
        total = sum(self.protocol_errors.values())
        if total <= self._log_first:
            self.log.warning("protocol error %s: %s", kind, detail[:200])
            self.event("protocol_error", at_ms, {"kind": kind, "detail": detail[:200]})
            self._logged_at_ms = at_ms
            return
        self._suppressed += 1
        if self._logged_at_ms is None or at_ms - self._logged_at_ms >= self._log_every_ms:
            self.flush_log(at_ms)

    def flush_log(self, at_ms: float) -> None:
        """Log one summary line for protocol errors not logged one by one (if any)."""
        if self._suppressed:
            self.log.warning(
                "%d more protocol errors (%d in all: %s)",
                self._suppressed,
                sum(self.protocol_errors.values()),
                ", ".join(f"{k} {n}" for k, n in self.protocol_errors.most_common()),
            )
            self._suppressed = 0
        self._logged_at_ms = at_ms

    def unhandled_event(self, name: str) -> None:
        """Count a well-formed message this call does not act on, by (bounded) name."""
        name = name[:64]
        if name not in self.unhandled and len(self.unhandled) >= self._max_names:
            name = OTHER
        self.unhandled[name] += 1
        if self.unhandled[name] == 1:
            self.log.info("unhandled carrier event %r", name)
