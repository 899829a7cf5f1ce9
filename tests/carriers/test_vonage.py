"""Golden tests for the Vonage adapter against Vonage's documented WebSocket messages.

Source: https://developer.vonage.com/en/voice/voice-api/concepts/websockets
(``golden/vonage.json``; its note says which frames are built from the described shapes).
"""

from __future__ import annotations

import json

import pytest

from gateway.carriers.events import Cleared, Connected, Dtmf, MarkAck, Media, ProtocolError, Started, Unhandled
from gateway.carriers.vonage import DOC_URL, VonageAdapter, VonageState, parse_content_type
from gateway.formats import L16_8K, L16_16K, L16_24K

from ._golden import compact, golden, text

G = golden("vonage")
IN, OUT = G["inbound"], G["outbound"]
FRAME_16K = bytes(640)  # 20 ms of L16 at 16 kHz


def started() -> VonageAdapter:
    adapter = VonageAdapter()
    events = adapter.receive(text(IN["connected_with_headers"]))
    assert [type(e) for e in events] == [Connected, Started]
    return adapter


def test_fixture_source_is_vonage_doc() -> None:
    assert G["source"] == DOC_URL


@pytest.mark.parametrize(
    ("key", "params"),
    [
        ("connected_minimal", {"prop1": "value1", "prop2": "value2"}),
        ("connected_with_headers", {"language": "en-GB", "caller-id": "447700900123"}),
    ],
)
def test_documented_connected_message(key: str, params: dict) -> None:
    adapter = VonageAdapter()
    assert adapter.receive(text(IN[key])) == [
        Connected("websocket:connected"),
        Started(stream_id="", call_id="", audio_format=L16_16K, custom_parameters=params),
    ]
    assert adapter.state is VonageState.STREAMING and adapter.audio_format == L16_16K


def test_binary_audio_frames() -> None:
    adapter = started()
    assert adapter.receive(FRAME_16K) == [Media(FRAME_16K)]
    assert adapter.receive(bytearray(b"\x01\x02")) == [Media(b"\x01\x02")]  # any whole-sample size


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("dtmf", [Dtmf("5")]),
        ("dtmf_nested", [Dtmf("5")]),
        ("notify", [MarkAck("m7")]),
        ("cleared", [Cleared()]),
    ],
)
def test_documented_text_events(key: str, expected: list) -> None:
    assert started().receive(text(IN[key])) == expected


def test_audio_before_connected() -> None:
    assert VonageAdapter().receive(FRAME_16K) == [ProtocolError("before_start", "audio (640 bytes)")]


def test_second_connected_is_refused() -> None:
    [event] = started().receive(text(IN["connected_minimal"]))
    assert event.kind == "unexpected_event"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("audio/l16;rate=16000", L16_16K),
        ("audio/l16;rate=8000", L16_8K),
        ("audio/L16; rate=24000", L16_24K),
    ],
)
def test_content_type_rates(content_type: str, expected) -> None:
    adapter = VonageAdapter()
    adapter.receive(text({"event": "websocket:connected", "content-type": content_type}))
    assert adapter.audio_format == expected


@pytest.mark.parametrize(
    "content_type", ["audio/pcmu;rate=8000", "audio/l16", "audio/l16;rate=44100", "audio/l16;rate=x"]
)
def test_bad_content_type(content_type: str) -> None:
    adapter = VonageAdapter()
    assert adapter.receive(text({"event": "websocket:connected", "content-type": content_type})) == [
        ProtocolError("bad_field", "content-type", fatal=True)
    ]
    assert adapter.state is VonageState.AWAITING_CONNECTED


def test_parse_content_type() -> None:
    assert parse_content_type("audio/l16;rate=16000") == 16000
    assert parse_content_type("audio/x-mulaw") is None


def test_unknown_vonage_event() -> None:
    assert started().receive('{"event":"websocket:something"}') == [Unhandled("websocket:something")]


# ------------------------------------------------------------------ outbound


def test_outbound_media_is_a_binary_20ms_frame() -> None:
    adapter = started()
    assert adapter.frame_ms == 20
    out = adapter.media(FRAME_16K)
    assert isinstance(out, bytes) and out == FRAME_16K
    for wrong in (bytes(638), bytes(642), bytes(320)):
        with pytest.raises(ValueError):
            adapter.media(wrong)


def test_outbound_notify_and_clear_match_documented_shapes() -> None:
    adapter = started()
    assert adapter.mark("m7") == compact(OUT["action_notify"])
    assert adapter.clear() == compact(OUT["action_clear"])


def test_notify_round_trip() -> None:
    """Vonage echoes the notify payload in websocket:notify: our mark comes back as MarkAck."""
    adapter = started()
    payload = json.loads(adapter.mark("gen3:17"))["payload"]
    assert adapter.receive(text({"event": "websocket:notify", "payload": payload})) == [MarkAck("gen3:17")]


def test_outbound_before_connected_is_our_bug() -> None:
    with pytest.raises(RuntimeError):
        VonageAdapter().media(FRAME_16K)
