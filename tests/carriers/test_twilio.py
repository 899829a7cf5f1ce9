"""Golden tests for the Twilio adapter against Twilio's documented example messages.

Source of every fixture: https://www.twilio.com/docs/voice/media-streams/websocket-messages
(stored verbatim in ``golden/twilio.json``).
"""

from __future__ import annotations

import base64
import json

import pytest

from gateway.carriers.events import Connected, Dtmf, MarkAck, Media, ProtocolError, Started, Stopped
from gateway.carriers.twilio import DOC_URL, TwilioAdapter, TwilioState
from gateway.formats import PCMU_8K

from ._golden import compact, golden, key_order, text, with_payload

G = golden("twilio")
IN, OUT = G["inbound"], G["outbound"]
SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
ULAW_20MS = bytes(range(96, 256))  # 160 μ-law bytes: 20 ms at 8 kHz


def started() -> TwilioAdapter:
    adapter = TwilioAdapter()
    assert adapter.receive(text(IN["connected"])) == [Connected("Call")]
    [event] = adapter.receive(text(IN["start"]))
    assert isinstance(event, Started)
    return adapter


def test_fixture_source_is_twilios_doc() -> None:
    assert G["source"] == DOC_URL


def test_connected_then_start() -> None:
    adapter = TwilioAdapter()
    assert adapter.receive(text(IN["connected"])) == [Connected("Call")]
    assert adapter.audio_format is None and adapter.state is TwilioState.AWAITING_START
    assert adapter.receive(text(IN["start"])) == [
        Started(
            stream_id=SID,
            call_id="CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            audio_format=PCMU_8K,
            account_id="ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            tracks=("inbound",),
            custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        )
    ]
    assert adapter.audio_format == PCMU_8K
    assert adapter.stream_sid == SID
    assert adapter.state is TwilioState.STREAMING
    assert adapter.frame_ms == 20


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # The docs abbreviate payloads ("no+JhoaJjpz..."): verbatim they are not base64.
        ("media_outbound_track", [ProtocolError("bad_base64", "media.payload (14 chars)")]),
        ("media_inbound_track", [ProtocolError("bad_base64", "media.payload (15 chars)")]),
        ("dtmf", [Dtmf("1")]),
        ("mark", [MarkAck("my label")]),
        ("stop", [Stopped()]),
    ],
)
def test_documented_inbound_messages(key: str, expected: list) -> None:
    assert started().receive(text(IN[key])) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("media_outbound_track", Media(ULAW_20MS, timestamp_ms=5, sequence=1, track="outbound")),
        ("media_inbound_track", Media(ULAW_20MS, timestamp_ms=5, sequence=2, track="inbound")),
    ],
)
def test_documented_media_with_a_real_payload(key: str, expected: Media) -> None:
    assert started().receive(text(with_payload(IN[key], ULAW_20MS))) == [expected]


def test_media_timestamp_and_chunk_are_strings_on_the_wire() -> None:
    msg = IN["media_inbound_track"]["media"]
    assert isinstance(msg["timestamp"], str) and isinstance(msg["chunk"], str)
    assert isinstance(IN["start"]["sequenceNumber"], str)


def test_stop_ends_the_stream() -> None:
    adapter = started()
    assert adapter.receive(text(IN["stop"])) == [Stopped()]
    assert adapter.state is TwilioState.STOPPED
    [late] = adapter.receive(text(with_payload(IN["media_inbound_track"], ULAW_20MS)))
    assert isinstance(late, ProtocolError) and late.kind == "unexpected_event"


def test_second_start_is_refused_and_keeps_the_first() -> None:
    adapter = started()
    other = json.loads(text(IN["start"]))
    other["start"]["streamSid"] = "MZother"
    [event] = adapter.receive(text(other))
    assert event == ProtocolError("unexpected_event", "start in state streaming")
    assert adapter.stream_sid == SID


# ------------------------------------------------------------------ outbound


def test_outbound_media_matches_documented_shape_exactly() -> None:
    adapter = started()
    out = adapter.media(ULAW_20MS)
    assert isinstance(out, str)
    expected = with_payload(OUT["media"], ULAW_20MS)
    assert json.loads(out) == expected
    assert key_order(json.loads(out)) == key_order(OUT["media"])
    assert out == compact(expected)


def test_outbound_mark_matches_documented_shape_exactly() -> None:
    out = started().mark("my label")
    assert out == compact(OUT["mark"])


def test_outbound_clear_matches_documented_shape_exactly() -> None:
    assert started().clear() == compact(OUT["clear"])


def test_outbound_mark_name_is_json_escaped() -> None:
    name = 'he said "hi" \\ \u00e9'
    assert json.loads(started().mark(name))["mark"]["name"] == name


def test_outbound_before_start_is_our_bug() -> None:
    adapter = TwilioAdapter()
    for build in (lambda: adapter.media(b"\xff"), lambda: adapter.mark("m"), adapter.clear):
        with pytest.raises(RuntimeError):
            build()


def test_outbound_media_of_any_size() -> None:
    adapter = started()
    for size in (0, 1, 160, 8000):
        payload = bytes(size)
        assert base64.b64decode(json.loads(adapter.media(payload))["media"]["payload"]) == payload
