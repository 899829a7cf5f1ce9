"""Golden tests for the Exotel adapter against Exotel's documented AgentStream messages.

Source: https://developer.exotel.com/docs/agentstream/websocket-protocol (``golden/exotel.json``).
"""

from __future__ import annotations

import json

import pytest

from gateway.carriers.events import Connected, Dtmf, MarkAck, Media, ProtocolError, Started, Stopped
from gateway.carriers.exotel import DOC_URL, ExotelAdapter, ExotelState, chunk_ms
from gateway.formats import L16_8K, L16_16K, L16_24K, PCMU_8K

from ._golden import compact, golden, key_order, text, with_payload

G = golden("exotel")
IN, OUT = G["inbound"], G["outbound"]
SID = "MZxxxxxxxxxxxxxxxxxxxxxxxx"
PCM_100MS = bytes(range(256)) * 6 + bytes(64)  # 1,600 bytes: 100 ms of L16 at 8 kHz


def started(start: dict | None = None) -> ExotelAdapter:
    adapter = ExotelAdapter()
    assert adapter.receive(text(IN["connected"])) == [Connected()]
    [event] = adapter.receive(text(start or IN["start"]))
    assert isinstance(event, Started), event
    return adapter


def test_fixture_source_is_exotel_doc() -> None:
    assert G["source"] == DOC_URL


def test_documented_start() -> None:
    adapter = ExotelAdapter()
    assert adapter.receive(text(IN["start"])) == [
        Started(
            stream_id=SID,
            call_id="CAxxxxxxxxxxxxxxxxxxxxxxxx",
            audio_format=L16_8K,
            account_id="ACxxxxxxxxxxxxxxxxxxxxxxxx",
            from_number="+919876543210",
            to_number="+918047491899",
            custom_parameters={"key1": "value1"},
        )
    ]
    assert adapter.state is ExotelState.STREAMING


@pytest.mark.parametrize("key", ["media", "media_numeric"])
def test_documented_media_placeholder_is_not_base64(key: str) -> None:
    [event] = started().receive(text(IN[key]))
    assert event == ProtocolError("bad_base64", "media.payload (20 chars)")


@pytest.mark.parametrize("key", ["media", "media_numeric"])
def test_documented_media_with_a_real_payload(key: str) -> None:
    assert started().receive(text(with_payload(IN[key], PCM_100MS))) == [
        Media(PCM_100MS, timestamp_ms=200, sequence=2)
    ]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("dtmf", [Dtmf("5")]),
        ("mark", [MarkAck("my-label")]),
        ("stop", [Stopped("callended")]),
    ],
)
def test_documented_inbound_messages(key: str, expected: list) -> None:
    assert started().receive(text(IN[key])) == expected


@pytest.mark.parametrize(
    ("media_format", "expected", "frame_ms"),
    [
        ({"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}, L16_8K, 200),
        ({"encoding": "audio/x-raw", "sample_rate": "16000"}, L16_16K, 100),
        ({"encoding": "audio/x-raw", "sample_rate": 24000}, L16_24K, 80),
        ({"encoding": "audio/x-mulaw", "sample_rate": "8000"}, PCMU_8K, 400),
        (None, L16_8K, 200),
    ],
)
def test_media_formats_and_chunk_duration(media_format: dict | None, expected, frame_ms: int) -> None:
    start = golden("exotel")["inbound"]["start"]
    if media_format is None:
        del start["start"]["media_format"]
    else:
        start["start"]["media_format"] = media_format
    adapter = started(start)
    assert adapter.audio_format == expected
    assert adapter.frame_ms == frame_ms == chunk_ms(expected)
    size = expected.bytes_for_ms(frame_ms)
    assert size % 320 == 0 and size >= 3200


# ------------------------------------------------------------------ outbound


def test_outbound_media_matches_documented_shape_exactly() -> None:
    adapter = started()
    chunk = bytes(3200)
    out = adapter.media(chunk)
    assert out == compact(with_payload(OUT["media"], chunk))
    assert key_order(json.loads(out)) == key_order(OUT["media"])


@pytest.mark.parametrize("size", [0, 100, 3201, 100_160])
def test_outbound_media_refuses_sizes_exotel_cannot_play(size: int) -> None:
    with pytest.raises(ValueError):
        started().media(bytes(size))


def test_outbound_mark_and_clear_match_documented_shapes_exactly() -> None:
    adapter = started()
    assert adapter.mark("turn-3-end") == compact(OUT["mark"])
    assert adapter.clear() == compact(OUT["clear"])
