"""Golden tests for the Telnyx adapter against Telnyx's documented example messages.

Source: https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming
(stored verbatim in ``golden/telnyx.json``; see its note for the one constructed frame).
"""

from __future__ import annotations

import base64
import json
import struct

import pytest

from gateway.carriers.events import Connected, Dtmf, MarkAck, Media, ProtocolError, Started, Stopped
from gateway.carriers.telnyx import DOC_URL, TelnyxAdapter, TelnyxState
from gateway.formats import L16_16K, PCMA_8K, PCMU_8K

from ._golden import compact, golden, key_order, text, with_payload

G = golden("telnyx")
IN, OUT = G["inbound"], G["outbound"]
STREAM_ID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CALL_ID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"


def started(start: dict | None = None, **kwargs) -> TelnyxAdapter:
    adapter = TelnyxAdapter(**kwargs)
    assert adapter.receive(text(IN["connected"])) == [Connected()]
    [event] = adapter.receive(text(start or IN["start"]))
    assert isinstance(event, Started), event
    return adapter


def test_fixture_source_is_telnyx_doc() -> None:
    assert G["source"] == DOC_URL


def test_documented_start() -> None:
    adapter = TelnyxAdapter()
    assert adapter.receive(text(IN["start"])) == [
        Started(
            stream_id=STREAM_ID,
            call_id=CALL_ID,
            audio_format=PCMU_8K,
            account_id="3E6F995F-85F7-4705-9741-53B116D28237",
            from_number="+13122010094",
            to_number="+13122123456",
            custom_parameters={
                "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
                "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
            },
        )
    ]
    assert adapter.state is TelnyxState.STREAMING and adapter.stream_id == STREAM_ID


def test_older_start_example_with_mime_encoding() -> None:
    [event] = TelnyxAdapter().receive(text(IN["start_asyncapi"]))
    assert isinstance(event, Started)
    assert event.audio_format == PCMU_8K
    assert event.stream_id == "32de0dea-53cb-4b21-89a4-9e1819c043bc"
    assert event.custom_parameters == {"client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d"}


def test_documented_media_payload_decodes() -> None:
    payload = base64.b64decode(IN["media"]["media"]["payload"])
    assert started().receive(text(IN["media"])) == [
        Media(payload, timestamp_ms=5, sequence=2, track="inbound/outbound")
    ]
    assert len(payload) == 792


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("mark", [MarkAck("some_mark_name")]),
        ("dtmf", [Dtmf("1")]),
        ("error", [ProtocolError("carrier_error", "100003 malformed_frame")]),
        ("stop", [Stopped()]),
    ],
)
def test_documented_inbound_messages(key: str, expected: list) -> None:
    assert started().receive(text(IN[key])) == expected


def test_error_before_start_is_reported_as_carrier_error() -> None:
    assert TelnyxAdapter().receive(text(IN["error"])) == [ProtocolError("carrier_error", "100003 malformed_frame")]


def test_out_of_order_media_comes_out_in_chunk_order() -> None:
    adapter = started()
    frames = []
    for chunk in (1, 3, 2):
        msg = with_payload(IN["media"], bytes([chunk]) * 160)
        msg["media"]["chunk"] = str(chunk)
        frames += adapter.receive(text(msg))
    assert [f.sequence for f in frames] == [1, 2, 3]
    assert [f.payload[0] for f in frames] == [1, 2, 3]


def test_pcma_call_leg() -> None:
    start = golden("telnyx")["inbound"]["start"]
    start["start"]["media_format"]["encoding"] = "PCMA"
    assert started(start).audio_format == PCMA_8K


def test_unsupported_codec_is_a_bad_field() -> None:
    start = golden("telnyx")["inbound"]["start"]
    start["start"]["media_format"]["encoding"] = "OPUS"
    assert TelnyxAdapter().receive(text(start)) == [
        ProtocolError("bad_field", "start.media_format.encoding", fatal=True)
    ]


def test_l16_is_big_endian_on_the_wire() -> None:
    start = golden("telnyx")["inbound"]["start"]
    start["start"]["media_format"].update(encoding="L16", sample_rate=16000)
    adapter = started(start)
    assert adapter.audio_format == L16_16K
    samples = (1, -2, 300, -32768)
    wire = struct.pack(">4h", *samples)
    [media] = adapter.receive(text(with_payload(IN["media"], wire)))
    assert media.payload == struct.pack("<4h", *samples)
    out = json.loads(adapter.media(struct.pack("<4h", *samples)))
    assert base64.b64decode(out["media"]["payload"]) == wire


def test_l16_byte_swap_can_be_turned_off() -> None:
    start = golden("telnyx")["inbound"]["start"]
    start["start"]["media_format"].update(encoding="L16", sample_rate=16000)
    adapter = started(start, l16_big_endian=False)
    pcm = struct.pack("<2h", 7, -7)
    [media] = adapter.receive(text(with_payload(IN["media"], pcm)))
    assert media.payload == pcm


# ------------------------------------------------------------------ outbound


def test_outbound_media_matches_documented_shape_exactly() -> None:
    ulaw = bytes(range(160))
    out = started().media(ulaw)
    expected = with_payload(OUT["media"], ulaw)
    assert out == compact(expected)
    assert key_order(json.loads(out)) == key_order(OUT["media"])


def test_outbound_mark_and_clear_match_documented_shapes_exactly() -> None:
    adapter = started()
    assert adapter.mark("some_mark_name") == compact(OUT["mark"])
    assert adapter.clear() == compact(OUT["clear"])
