"""Round trips: a media frame we build, parsed the way the carrier (client side) parses it,
gives back the same bytes; echoed into the carrier's inbound media message, our own parser
gives the same bytes again. Marks: our mark has the documented outbound shape, and each
carrier's documented acknowledgement of it comes back as the name we sent."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.carriers.events import MarkAck, Media, Started
from gateway.carriers.registry import make_adapter

from ._golden import golden, key_order, text, with_payload

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


#: Mark acknowledgements in each carrier's *documented* shape. carrier → (start message,
#: documented outbound mark, path of the name in it, documented acknowledgements with the path of
#: the name in each). Golden files: tests/carriers/golden/*.json (checked against
#: ../shared/PROTOCOLS.md); the raw protocol's shapes are its module docstring's.
_RAW_START = {"event": "start", "sampleRate": 16000}
MARK_DOCS = {
    "twilio": (_doc("twilio", "start"), golden("twilio")["outbound"]["mark"], ("mark", "name"),
               [(_doc("twilio", "mark"), ("mark", "name"))]),
    "telnyx": (_doc("telnyx", "start"), golden("telnyx")["outbound"]["mark"], ("mark", "name"),
               [(_doc("telnyx", "mark"), ("mark", "name"))]),
    "exotel": (_doc("exotel", "start"), golden("exotel")["outbound"]["mark"], ("mark", "name"),
               [(_doc("exotel", "mark"), ("mark", "name"))]),
    "plivo": (_doc("plivo", "start"), golden("plivo")["outbound"]["checkpoint"], ("name",),
              [(_doc("plivo", "playedStream"), ("name",)), (_doc("plivo", "played"), ("name",))]),
    "vonage": (_doc("vonage", "connected_minimal"), golden("vonage")["outbound"]["action_notify"], ("payload", "name"),
               [(_doc("vonage", "notify"), ("payload", "name"))]),
    "raw": (_RAW_START, {"event": "mark", "name": "m"}, ("name",), [({"event": "mark", "name": "m"}, ("name",))]),
    "webrtc": ({"event": "start", "streamId": "pc", "sampleRate": 16000}, {"event": "mark", "name": "m"}, ("name",),
               [({"event": "mark", "name": "m"}, ("name",))]),
}  # fmt: skip


def _at(message: dict, path: tuple[str, ...]) -> object:
    for key in path:
        message = message[key]
    return message


def _put(message: dict, path: tuple[str, ...], value: object) -> dict:
    out = json.loads(json.dumps(message))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("name", sorted(MARK_DOCS))
def test_documented_mark_acknowledgement_gives_back_the_name_we_sent(name: str) -> None:
    """Our mark has the carrier's documented outbound shape, and the carrier's documented
    acknowledgement (an example from its docs, not our own output) carrying the name we put in
    that mark comes back as MarkAck of that name."""
    start, doc_mark, name_path, acks = MARK_DOCS[name]
    sent = "gen2:41"
    adapter = _started(name, start)
    ours = json.loads(adapter.mark(sent))
    assert key_order(ours) == key_order(doc_mark)
    assert _at(ours, name_path) == sent
    for ack, ack_path in acks:
        assert adapter.receive(text(ack)) == [MarkAck(_at(ack, ack_path))]  # the docs' example as is
        assert adapter.receive(text(_put(ack, ack_path, sent))) == [MarkAck(sent)]
