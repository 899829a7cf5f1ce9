"""The WebRTC transport's internal protocol (gateway.carriers.webrtc): a table of frames → events."""

from __future__ import annotations

import orjson
import pytest

from gateway.carriers.events import Cleared, Dtmf, MarkAck, Media, ProtocolError, Started, Stopped, Unhandled
from gateway.carriers.webrtc import (
    CLEARED_FRAME, MAX_PAGE_CHARS, WebRtcAdapter, mark_frame, page_frame, start_frame, stop_frame,
)  # fmt: skip
from gateway.carriers._wire import StreamState
from gateway.formats import AudioFormat, Encoding

START = start_frame("webrtc-call_1", 16000)


def streaming() -> WebRtcAdapter:
    adapter = WebRtcAdapter()
    (started,) = adapter.receive(START)
    assert started == Started(stream_id="webrtc-call_1", call_id="", audio_format=AudioFormat(Encoding.L16, 16000))
    return adapter


def page(message: object) -> str:
    return page_frame(message if isinstance(message, (str, bytes)) else orjson.dumps(message).decode())


@pytest.mark.parametrize(("frame", "event"), [
    (bytes(640), Media(bytes(640))),
    (mark_frame("gen1:5"), MarkAck("gen1:5")),
    (CLEARED_FRAME, Cleared()),
    (page({"type": "dtmf", "digit": "5"}), Dtmf("5")),
    (page({"type": "dtmf", "digit": "55"}), ProtocolError("bad_field", "page.digit")),
    (page({"type": "dtmf"}), ProtocolError("missing_field", "page.digit")),
    (page({"type": "wave"}), Unhandled("page:wave")),
    (page({"kind": "hangup"}), ProtocolError("missing_field", "page.type")),
    (page({"type": 5}), ProtocolError("bad_field", "page.type")),
    (page("{not json"), ProtocolError("malformed_json", "page: 9 chars")),
    (page("[1, 2]"), ProtocolError("malformed_json", "page: not a JSON object")),
    (page("x" * (MAX_PAGE_CHARS + 1)), ProtocolError("oversize", f"page: {MAX_PAGE_CHARS + 1} chars > {MAX_PAGE_CHARS}")),
    (page(b"\x00\x01\x02"), ProtocolError("unexpected_binary", "page: 3 bytes")),
    (page({"event": "mark", "name": "forged"}), ProtocolError("missing_field", "page.type")),  # a page cannot ack
    (bytes(3), ProtocolError("bad_field", "audio: 3 bytes is not a whole number of samples")),
    (START, ProtocolError("unexpected_event", "start in state streaming")),
])  # fmt: skip
def test_frames_while_streaming(frame, event):
    adapter = streaming()
    assert adapter.receive(frame) == [event]
    assert adapter.state is StreamState.STREAMING


@pytest.mark.parametrize("frame", [page({"type": "hangup"}), stop_frame("peer_closed")])
def test_a_hangup_or_the_peer_gone_stops_the_stream(frame):
    adapter = streaming()
    (event,) = adapter.receive(frame)
    assert event == Stopped("hangup" if "page" in frame else "peer_closed")
    assert adapter.state is StreamState.STOPPED
    assert adapter.receive(bytes(640)) == [ProtocolError("unexpected_event", "audio (640 bytes) after stop")]


@pytest.mark.parametrize(("frame", "event"), [
    (bytes(640), ProtocolError("before_start", "audio (640 bytes)")),
    (mark_frame("m"), ProtocolError("before_start", "mark")),
    (page({"type": "hangup"}), ProtocolError("before_start", "page")),
    (start_frame("x", 11025), ProtocolError("bad_field", "sampleRate", fatal=True)),
    ('{"event":"start","streamId":5,"sampleRate":16000}', ProtocolError("bad_field", "streamId", fatal=True)),
    (stop_frame("peer_closed"), Stopped("peer_closed")),
])  # fmt: skip
def test_frames_before_start(frame, event):
    assert WebRtcAdapter().receive(frame) == [event]


def test_outbound_frames_are_the_transport_protocol():
    adapter = WebRtcAdapter()
    with pytest.raises(RuntimeError):
        adapter.media(bytes(640))
    adapter = streaming()
    assert adapter.media(bytearray(640)) == bytes(640)
    with pytest.raises(ValueError):
        adapter.media(bytes(3))
    assert orjson.loads(adapter.mark("gen2:7")) == {"event": "mark", "name": "gen2:7"}
    assert orjson.loads(adapter.clear()) == {"event": "clear"}
    assert (adapter.name, adapter.frame_ms, adapter.has_marks) == ("webrtc", 20, True)


def test_an_oversize_page_message_waits_for_the_session_by_its_size_only():
    frame = page_frame("x" * 1_000_000)  # what the transport queues (up to 64 of them)
    assert len(frame) < 64
    assert streaming().receive(frame) == [ProtocolError("oversize", f"page: 1000000 chars > {MAX_PAGE_CHARS}")]
    assert len(page_frame("x" * MAX_PAGE_CHARS)) > MAX_PAGE_CHARS  # a message at the bound is kept whole
