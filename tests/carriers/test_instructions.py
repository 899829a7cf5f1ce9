"""Instruction documents (TwiML, TeXML, Plivo XML, Vonage NCCO) for a stream URL."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from gateway.carriers.instructions import instruction_document
from gateway.carriers.registry import CARRIERS, UnknownCarrier

from ._golden import golden

URL = "wss://gw.example.com/v1/stream/twilio/tok_123"
NASTY_URL = 'wss://gw.example.com/s/a&b"c<d>'


def _xml(body: str) -> ET.Element:
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(body.split("?>", 1)[1])


def test_twilio_connect_stream_with_parameters() -> None:
    content_type, body = instruction_document("twilio", URL, parameters={"FirstName": "Jane", "LastName": "Doe"})
    assert content_type == "text/xml"
    root = _xml(body)
    assert root.tag == "Response" and [c.tag for c in root] == ["Connect"]
    [stream] = list(root[0])
    assert stream.tag == "Stream" and stream.attrib == {"url": URL}
    assert [(p.tag, p.attrib) for p in stream] == [
        ("Parameter", {"name": "FirstName", "value": "Jane"}),
        ("Parameter", {"name": "LastName", "value": "Doe"}),
    ]


def test_twilio_escapes_everything() -> None:
    params = {'k"<&>': 'v"<&>\'', "tab": "a\tb"}
    _, body = instruction_document("twilio", NASTY_URL, parameters=params)
    stream = _xml(body)[0][0]
    assert stream.get("url") == NASTY_URL
    assert {p.get("name"): p.get("value") for p in stream} == params


def test_twilio_refuses_a_query_string() -> None:
    with pytest.raises(ValueError, match="query"):
        instruction_document("twilio", URL + "?token=x")


def test_twilio_without_parameters() -> None:
    _, body = instruction_document("twilio", URL)
    assert list(_xml(body)[0][0]) == []


def test_telnyx_texml_bidirectional_rtp() -> None:
    content_type, body = instruction_document("telnyx", URL, parameters={"a": "b"})
    assert content_type == "text/xml"
    root = _xml(body)
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.attrib == {"url": URL, "bidirectionalMode": "rtp", "bidirectionalCodec": "PCMU"}
    assert [p.attrib for p in stream] == [{"name": "a", "value": "b"}]


def test_plivo_stream_xml() -> None:
    content_type, body = instruction_document("plivo", NASTY_URL, parameters={"callId": "abc123", "tenant": "T9"})
    assert content_type == "text/xml"
    root = _xml(body)
    [stream] = list(root)
    assert stream.tag == "Stream"
    assert stream.text == NASTY_URL  # the URL is the element text, escaped
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
        "extraHeaders": "callId=abc123,tenant=T9",
    }


@pytest.mark.parametrize("params", [{"call-id": "x"}, {"a": "b c"}, {"a": "x" * 600}])
def test_plivo_refuses_extra_headers_it_cannot_carry(params: dict) -> None:
    with pytest.raises(ValueError):
        instruction_document("plivo", URL, parameters=params)


def test_vonage_ncco_matches_the_documented_connect_action() -> None:
    content_type, body = instruction_document(
        "vonage", "wss://example.com/socket", parameters={"language": "en-GB", "caller-id": "447700900123"}
    )
    assert content_type == "application/json"
    assert json.loads(body) == golden("vonage")["ncco"]


def test_vonage_without_headers() -> None:
    _, body = instruction_document("vonage", URL)
    [endpoint] = json.loads(body)[0]["endpoint"]
    assert endpoint == {"type": "websocket", "uri": URL, "content-type": "audio/l16;rate=16000"}


def test_vonage_headers_are_limited_to_512_bytes() -> None:
    with pytest.raises(ValueError):
        instruction_document("vonage", URL, parameters={"k": "v" * 600})


@pytest.mark.parametrize("carrier", ["exotel", "raw", "webrtc"])
def test_carriers_configured_out_of_band(carrier: str) -> None:
    assert instruction_document(carrier, URL) is None


def test_every_carrier_is_handled() -> None:
    for carrier in CARRIERS:
        result = instruction_document(carrier, URL)
        assert result is None or (isinstance(result, tuple) and len(result) == 2)


def test_errors() -> None:
    with pytest.raises(UnknownCarrier):
        instruction_document("skype", URL)
    with pytest.raises(ValueError):
        instruction_document("twilio", "https://example.com/stream")
    with pytest.raises(ValueError):
        instruction_document("twilio", URL, parameters={"n": 1})  # type: ignore[dict-item]
