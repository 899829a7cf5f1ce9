"""Round trips: a media frame we build, parsed the way the carrier (client side) parses it,
gives back the same bytes; echoed into the carrier's inbound media message, our own parser
gives the same bytes again."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.carriers.events import Media, Started
from gateway.carriers.registry import make_adapter

from ._golden import golden, text, with_payload

ULAW_20MS = bytes(range(96, 256))
PCM_200MS_8K = bytes(range(256)) * 12 + bytes(128)  # 3,200 bytes


def _started(name: str, start: dict | str):
    adapter = make_adapter(name)
    events = adapter.receive(start if isinstance(start, str) else text(start))
    assert any(isinstance(e, Started) for e in events), events
    return adapter


def _doc(name: str, key: str) -> dict:
    return golden(name)["inbound"][key]


# name, start message, payload path in our outbound media, the carrier's inbound media message, audio
JSON_CARRIERS = [
    ("twilio", _doc("twilio", "start"), ("media", "payload"), _doc("twilio", "media_inbound_track"), ULAW_20MS),
    ("telnyx", _doc("telnyx", "start"), ("media", "payload"), _doc("telnyx", "media"), ULAW_20MS),
    ("plivo", _doc("plivo", "start"), ("media", "payload"), _doc("plivo", "media"), ULAW_20MS),
    ("exotel", _doc("exotel", "start"), ("media", "payload"), _doc("exotel", "media"), PCM_200MS_8K),
]


@pytest.mark.parametrize(
    ("name", "start", "path", "inbound", "audio"), JSON_CARRIERS, ids=[c[0] for c in JSON_CARRIERS]
)
def test_json_media_round_trip(name, start, path, inbound, audio) -> None:
    adapter = _started(name, start)
    frame = adapter.media(audio)
    assert isinstance(frame, str)
    # Client side (the carrier): JSON, then base64 of the payload field.
    node = json.loads(frame)
    for key in path:
        node = node[key]
    assert base64.b64decode(node, validate=True) == audio
    # Echo: the carrier sends the same bytes back in its own media message.
    peer = _started(name, start)
    [event] = peer.receive(text(with_payload(inbound, audio)))
    assert isinstance(event, Media) and event.payload == audio


def test_vonage_binary_round_trip() -> None:
    adapter = _started("vonage", golden("vonage")["inbound"]["connected_minimal"])
    pcm = bytes(range(256)) * 2 + bytes(128)
    frame = adapter.media(pcm)
    assert isinstance(frame, bytes) and frame == pcm
    assert adapter.receive(frame) == [Media(pcm)]


@pytest.mark.parametrize("start", ['{"event":"start","sampleRate":24000}', '{"event":"start","encoding":"pcma"}'])
def test_raw_binary_round_trip(start: str) -> None:
    adapter = _started("raw", start)
    audio = bytes(range(256)) * 3 + bytes(192)
    frame = adapter.media(audio)
    assert isinstance(frame, bytes) and frame == audio
    assert adapter.receive(frame) == [Media(audio)]


def test_mark_round_trips_through_an_echo() -> None:
    """What each carrier echoes for our mark comes back as the same MarkAck name."""
    name = "gen2:41"
    tw = _started("twilio", golden("twilio")["inbound"]["start"])
    echo = json.loads(tw.mark(name)) | {"sequenceNumber": "9"}
    assert tw.receive(text(echo))[0].name == name
    tx = _started("telnyx", golden("telnyx")["inbound"]["start"])
    assert tx.receive(text(json.loads(tx.mark(name))))[0].name == name
    ex = _started("exotel", golden("exotel")["inbound"]["start"])
    assert ex.receive(text(json.loads(ex.mark(name))))[0].name == name
    pl = _started("plivo", golden("plivo")["inbound"]["start"])
    checkpoint = json.loads(pl.mark(name))
    played = {"event": "playedStream", "streamId": checkpoint["streamId"], "name": checkpoint["name"]}
    assert pl.receive(text(played))[0].name == name
    raw = _started("raw", '{"event":"start","sampleRate":16000}')
    assert raw.receive(raw.mark(name))[0].name == name
