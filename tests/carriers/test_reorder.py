"""Media reordering for carriers without ordered delivery (Telnyx)."""

from __future__ import annotations

import orjson
import pybase64

from gateway.carriers.events import Media, ProtocolError, Stopped
from gateway.carriers.reorder import MediaReorderer
from gateway.carriers.telnyx import TelnyxAdapter


def m(seq: int) -> Media:
    return Media(bytes([seq]), sequence=seq)


def seqs(events) -> list:
    return [e.sequence if isinstance(e, Media) else e.kind for e in events]


def test_out_of_order_frames_come_out_in_order():
    r = MediaReorderer(window=3)
    out = []
    for s in [1, 3, 2, 5, 4, 6]:  # the first frame to arrive sets the start
        out += r.push(m(s))
    assert seqs(out) == [1, 2, 3, 4, 5, 6]


def test_a_frame_that_never_comes_is_given_up_after_the_window():
    r = MediaReorderer(window=3)
    out = []
    for s in [1, 3, 4, 5]:
        out += r.push(m(s))
    assert seqs(out) == [1]  # 3, 4, 5 wait for 2
    out = r.push(m(6))
    assert seqs(out) == ["media_gap", 3, 4, 5, 6]
    late = r.push(m(2))
    assert seqs(late) == ["late_media"]


def test_duplicates_are_reported_and_flush_releases_in_order():
    r = MediaReorderer(window=5, first=10)
    assert seqs(r.push(m(10))) == [10]
    assert seqs(r.push(m(10))) == ["late_media"]
    assert seqs(r.push(m(13)) + r.push(m(12))) == []
    assert seqs(r.flush()) == [12, 13]


def test_a_known_first_sequence_puts_the_first_frames_right_too():
    r = MediaReorderer(first=1)
    assert seqs(r.push(m(2)) + r.push(m(1))) == [1, 2]


def test_media_without_sequence_passes_straight_through():
    assert MediaReorderer().push(Media(b"x")) == [Media(b"x")]


def test_telnyx_adapter_reorders_and_flushes_at_stop():
    a = TelnyxAdapter()
    start = {"event": "start", "sequence_number": "1", "stream_id": "s1",
             "start": {"call_control_id": "c1", "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}
    assert type(a.receive(orjson.dumps(start).decode())[0]).__name__ == "Started"

    def media(chunk: int) -> str:
        return orjson.dumps({"event": "media", "sequence_number": str(chunk + 1), "stream_id": "s1",
                             "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * chunk),
                                       "payload": pybase64.b64encode(bytes([chunk]) * 160).decode()}}).decode()

    out = []
    for c in [1, 2, 4, 3, 6]:
        out += a.receive(media(c))
    assert [e.payload[0] for e in out if isinstance(e, Media)] == [1, 2, 3, 4]
    tail = a.receive(orjson.dumps({"event": "stop", "sequence_number": "9", "stream_id": "s1", "stop": {}}).decode())
    assert [e.payload[0] for e in tail if isinstance(e, Media)] == [6]
    assert isinstance(tail[-1], Stopped)
    assert not any(isinstance(e, ProtocolError) for e in out + tail)
