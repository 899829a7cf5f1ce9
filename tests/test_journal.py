"""CallJournal: per-call events, counters and log lines stay bounded whatever the peer sends."""

from __future__ import annotations

import logging

from gateway.journal import OTHER, CallJournal


def test_events_are_bounded_in_all_and_per_kind_but_the_final_event_is_kept():
    j = CallJournal(logging.getLogger("t"), max_events=50, max_per_kind=10)
    for i in range(100):
        j.event("dtmf", i, {"digit": "1"})
    for kind in "abcdefgh":
        for i in range(10):
            j.event(kind, 200, {})
    assert len(j.events) == 50
    assert j.dropped["dtmf"] == 90 and sum(j.dropped.values()) == 90 + 80 - 40
    assert j.event("ended", 300, {"reason": "x"}, final=True)
    assert j.events[-1]["kind"] == "ended" and len(j.events) == 51


def test_protocol_errors_are_logged_one_by_one_then_summarised_at_most_every_10_s(caplog):
    j = CallJournal(logging.getLogger("t.proto"), log_first=3, log_every_s=10.0)
    with caplog.at_level(logging.WARNING, logger="t.proto"):
        for i in range(10_000):  # 10,000 errors over 30 s of call time
            j.protocol_error("bad_field", f"detail {i}", at_ms=i * 3.0)
        j.flush_log(30_000.0)
    lines = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("protocol error") for m in lines) == 3
    summaries = [m for m in lines if "more protocol errors" in m]
    assert 3 <= len(summaries) <= 5  # one per 10 s of call time, plus the final flush
    assert sum(int(m.split()[0]) for m in summaries) == 10_000 - 3
    assert j.protocol_errors == {"bad_field": 10_000}
    assert sum(e["kind"] == "protocol_error" for e in j.events) == 3


def test_unhandled_names_are_bounded_and_each_is_logged_once(caplog):
    j = CallJournal(logging.getLogger("t.unh"), max_names=4)
    with caplog.at_level(logging.INFO, logger="t.unh"):
        for i in range(1000):
            j.unhandled_event(f"name_{i % 10}" + "x" * 100)
    assert len(j.unhandled) == 5 and j.unhandled[OTHER] == 600
    assert all(len(k) <= 64 for k in j.unhandled)
    assert len(caplog.records) == 5


def test_the_observer_hears_every_event_and_whether_the_record_kept_it():
    j = CallJournal(logging.getLogger("t"), max_events=50, max_per_kind=3)
    heard: list[tuple[str, int, bool]] = []
    j.on_event = lambda event, kept: heard.append((event["kind"], event["at_ms"], kept))
    for i in range(5):
        j.event("caller_speech_end", i, {})
    assert j.event("ended", 9, {}, final=True)
    assert heard == [("caller_speech_end", i, i < 3) for i in range(5)] + [("ended", 9, True)]
    assert len(j.events) == 4 and j.dropped["caller_speech_end"] == 2
