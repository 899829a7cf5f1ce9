"""Golden tests for the Plivo adapter against Plivo's documented example messages.

Source: https://plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference
plus the support articles named in ``golden/plivo.json`` (``played``, ``clearedAudio``).
"""

from __future__ import annotations

import json

import pytest

from gateway.carriers.events import Cleared, Dtmf, MarkAck, Media, ProtocolError, Started, Stopped, Unhandled
from gateway.carriers.plivo import DOC_URL, PlivoAdapter, PlivoState, parse_extra_headers
from gateway.formats import L16_8K, L16_16K, PCMU_8K

from ._golden import compact, golden, key_order, text, with_payload

G = golden("plivo")
IN, OUT = G["inbound"], G["outbound"]
STREAM_ID = "87654321-4321-4321-4321-cba987654321"
ULAW = bytes(range(96, 256))


def started(start: dict | None = None) -> PlivoAdapter:
    adapter = PlivoAdapter()
    [event] = adapter.receive(text(start or IN["start"]))
    assert isinstance(event, Started), event
    return adapter


def test_fixture_source_is_plivo_doc() -> None:
    assert G["source"] == DOC_URL


def test_documented_start() -> None:
    adapter = PlivoAdapter()
    assert adapter.receive(text(IN["start"])) == [
        Started(
            stream_id=STREAM_ID,
            call_id="12345678-1234-1234-1234-123456789abc",
            audio_format=PCMU_8K,
            account_id="MAXXXXXXXXXXXXXXXXXX",
            tracks=("inbound",),
            custom_parameters={"userId": "12345", "sessionId": "abc-xyz"},
        )
    ]
    assert adapter.state is PlivoState.STREAMING
    assert isinstance(IN["start"]["sequenceNumber"], int)  # a number, unlike Twilio


def test_documented_media_verbatim_has_an_abbreviated_payload() -> None:
    [event] = started().receive(text(IN["media"]))
    assert event == ProtocolError("bad_base64", "media.payload (36 chars)")


def test_documented_media_with_a_real_payload() -> None:
    adapter = started()
    first = with_payload(IN["media"], ULAW)
    second = with_payload(IN["media"], ULAW)
    second["media"].update(timestamp="1705312200020", chunk=42)
    assert adapter.receive(text(first)) == [Media(ULAW, timestamp_ms=0, sequence=41, track="inbound")]
    assert adapter.receive(text(second)) == [Media(ULAW, timestamp_ms=20, sequence=42, track="inbound")]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("dtmf", [Dtmf("5")]),
        ("playedStream", [MarkAck("greeting-complete")]),
        ("played", [MarkAck("customer greeting audio")]),
        ("clearedAudio", [Cleared()]),
        ("clearedAudio_support", [Cleared()]),
    ],
)
def test_documented_inbound_messages(key: str, expected: list) -> None:
    assert started().receive(text(IN[key])) == expected


def test_no_documented_stop_but_one_is_accepted() -> None:
    adapter = started()
    assert adapter.receive('{"event":"stop"}') == [Stopped()]
    assert adapter.state is PlivoState.STOPPED


def test_connected_is_not_a_plivo_event() -> None:
    assert PlivoAdapter().receive('{"event":"connected"}') == [Unhandled("connected")]


@pytest.mark.parametrize(
    ("media_format", "expected"),
    [
        (None, L16_8K),  # Plivo's default contentType is audio/x-l16;rate=8000
        ({"encoding": "audio/x-l16", "sampleRate": 16000}, L16_16K),
        ({"encoding": "audio/x-mulaw", "sampleRate": 8000}, PCMU_8K),
    ],
)
def test_media_formats(media_format: dict | None, expected) -> None:
    start = golden("plivo")["inbound"]["start"]
    if media_format is None:
        del start["start"]["mediaFormat"]
    else:
        start["start"]["mediaFormat"] = media_format
    assert started(start).audio_format == expected


def test_mulaw_at_16k_is_refused() -> None:
    start = golden("plivo")["inbound"]["start"]
    start["start"]["mediaFormat"]["sampleRate"] = 16000
    assert PlivoAdapter().receive(text(start)) == [
        ProtocolError("bad_field", "start.mediaFormat.sampleRate", fatal=True)
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("userId=12345;sessionId=abc-xyz", {"userId": "12345", "sessionId": "abc-xyz"}),
        ("test1=12,test2=123", {"test1": "12", "test2": "123"}),
        ("{}", {}),
        ('{"a": "b", "n": 1}', {"a": "b", "n": "1"}),
        ("", {}),
        ("novalue;k=v", {"k": "v"}),
    ],
)
def test_parse_extra_headers(raw: str, expected: dict) -> None:
    assert parse_extra_headers(raw) == expected


# ------------------------------------------------------------------ outbound


def test_outbound_play_audio_matches_documented_shape_exactly() -> None:
    out = started().media(ULAW)
    expected = with_payload(OUT["playAudio"], ULAW)
    assert out == compact(expected)
    assert key_order(json.loads(out)) == key_order(OUT["playAudio"])


def test_outbound_play_audio_repeats_an_l16_stream_format() -> None:
    start = golden("plivo")["inbound"]["start"]
    start["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": 16000}
    media = json.loads(started(start).media(b"\x01\x00" * 320))["media"]
    assert (media["contentType"], media["sampleRate"]) == ("audio/x-l16", 16000)


def test_outbound_checkpoint_and_clear_audio_match_documented_shapes_exactly() -> None:
    adapter = started()
    assert adapter.mark("greeting-complete") == compact(OUT["checkpoint"])
    assert adapter.clear() == compact(OUT["clearAudio"])


def test_send_dtmf() -> None:
    assert started().send_dtmf("12#") == '{"event":"sendDTMF","dtmf":"12#"}'
    with pytest.raises(ValueError):
        started().send_dtmf("1x")


def test_outbound_before_start_is_our_bug() -> None:
    with pytest.raises(RuntimeError):
        PlivoAdapter().media(ULAW)
