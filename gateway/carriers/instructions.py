"""The carrier's instruction document that points a call at our stream URL.

The REST API returns it when a call is created (and serves it from the carrier's answer
webhook), so the carrier opens a WebSocket to ``stream_url``:

* **twilio** — TwiML ``<Response><Connect><Stream url="wss://…"><Parameter name value/>…``
  (``<Connect>`` makes the stream bidirectional; ``<Start><Stream>`` would be one-way). Twilio
  drops query strings from the stream URL, so a URL with ``?`` is refused: put per-call tokens in
  the path or in ``parameters`` (they come back in ``start.customParameters``).
  https://www.twilio.com/docs/voice/twiml/stream
* **telnyx** — TeXML ``<Response><Connect><Stream url bidirectionalMode="rtp"
  bidirectionalCodec="PCMU">`` (without ``rtp`` Telnyx expects MP3 files and drops our audio).
  ``<Parameter>`` children are Twilio-compatible syntax; UNCERTAIN whether Telnyx returns them in
  ``start`` — put anything essential in the URL path too.
  https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream
* **plivo** — Plivo XML ``<Response><Stream bidirectional="true" keepCallAlive="true"
  contentType="audio/x-mulaw;rate=8000" extraHeaders="k=v,…">wss://…</Stream></Response>``
  (the URL is the element text; ``keepCallAlive`` stops Plivo moving past the stream).
  ``extraHeaders`` allows only ``[A-Za-z0-9]`` in names and values, 512 bytes at most.
  https://docs.plivo.com/docs/voice/xml/audiostream
* **vonage** — an NCCO (JSON list) with one ``connect`` action to a ``websocket`` endpoint,
  ``content-type: audio/l16;rate=16000`` and ``headers`` = ``parameters`` (512 bytes at most;
  they come back flattened in ``websocket:connected``).
  https://developer.vonage.com/en/voice/voice-api/ncco-reference
* **exotel**, **raw**, **webrtc** — ``None``: Exotel's Voicebot applet is configured with the
  stream URL in Exotel's App Bazaar flow builder (custom parameters go in the URL's query string,
  up to three); raw clients connect by themselves; a WebRTC peer posts its SDP offer to the
  call's offer URL (:mod:`gateway.webrtc`).

XML is built with :mod:`xml.etree.ElementTree`, never by string concatenation, so URLs and
parameter values are escaped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import orjson

from gateway.carriers.registry import CARRIERS, UnknownCarrier

__all__ = ["instruction_document", "stream_format", "STREAM_FORMATS", "XML_CONTENT_TYPE", "JSON_CONTENT_TYPE"]

#: The media format each carrier is asked to stream, ``(codec, Hz)``: the documents below and
#: the outbound calls the dialer places (:func:`stream_format`) ask for the same. Vonage
#: streams L16 at 8, 16 or 24 kHz: 16 kHz, wideband (speech recognition hears far better).
STREAM_FORMATS: dict[str, tuple[str, int]] = {
    "twilio": ("PCMU", 8000), "telnyx": ("PCMU", 8000), "plivo": ("PCMU", 8000), "vonage": ("L16", 16000),
}

XML_CONTENT_TYPE = "text/xml"
JSON_CONTENT_TYPE = "application/json"

_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_PLIVO_HEADER_TEXT = re.compile(r"[A-Za-z0-9]+\Z")
_MAX_HEADER_BYTES = 512


def _check_ws_url(stream_url: str) -> None:
    if not stream_url.startswith(("wss://", "ws://")):
        raise ValueError("stream_url must be a ws:// or wss:// URL")


def _xml(root: ET.Element) -> str:
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode")


def _stream_with_parameters(parent: ET.Element, attrs: dict[str, str], parameters: dict[str, str]) -> None:
    stream = ET.SubElement(parent, "Stream", attrs)
    for key, value in parameters.items():
        ET.SubElement(stream, "Parameter", {"name": key, "value": value})


def _twilio(stream_url: str, parameters: dict[str, str]) -> tuple[str, str]:
    if "?" in stream_url:
        raise ValueError("twilio drops the query string of a stream URL: use the path or parameters")
    root = ET.Element("Response")
    _stream_with_parameters(ET.SubElement(root, "Connect"), {"url": stream_url}, parameters)
    return XML_CONTENT_TYPE, _xml(root)


def _telnyx(stream_url: str, parameters: dict[str, str]) -> tuple[str, str]:
    root = ET.Element("Response")
    attrs = {"url": stream_url, "bidirectionalMode": "rtp", "bidirectionalCodec": "PCMU"}
    _stream_with_parameters(ET.SubElement(root, "Connect"), attrs, parameters)
    return XML_CONTENT_TYPE, _xml(root)


def _plivo(stream_url: str, parameters: dict[str, str]) -> tuple[str, str]:
    attrs = {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
    }
    if parameters:
        for key, value in parameters.items():
            if not _PLIVO_HEADER_TEXT.match(key) or not _PLIVO_HEADER_TEXT.match(value):
                raise ValueError(f"plivo extraHeaders allow only [A-Za-z0-9]; parameter {key[:32]!r} does not fit")
        extra = ",".join(f"{k}={v}" for k, v in parameters.items())
        if len(extra) > _MAX_HEADER_BYTES:
            raise ValueError(f"plivo extraHeaders is {len(extra)} bytes; at most {_MAX_HEADER_BYTES}")
        attrs["extraHeaders"] = extra
    root = ET.Element("Response")
    stream = ET.SubElement(root, "Stream", attrs)
    stream.text = stream_url
    return XML_CONTENT_TYPE, _xml(root)


def _vonage(stream_url: str, parameters: dict[str, str]) -> tuple[str, str]:
    endpoint: dict[str, object] = {
        "type": "websocket",
        "uri": stream_url,
        "content-type": f"audio/l16;rate={STREAM_FORMATS['vonage'][1]}",
    }
    if parameters:
        size = len(orjson.dumps(parameters))
        if size > _MAX_HEADER_BYTES:
            raise ValueError(f"vonage websocket headers are {size} bytes; at most {_MAX_HEADER_BYTES}")
        endpoint["headers"] = dict(parameters)
    ncco = [{"action": "connect", "endpoint": [endpoint]}]
    return JSON_CONTENT_TYPE, orjson.dumps(ncco).decode()


_BUILDERS = {"twilio": _twilio, "telnyx": _telnyx, "plivo": _plivo, "vonage": _vonage}


def stream_format(carrier: str) -> tuple[str, int]:
    """``(codec, sample rate Hz)`` that ``carrier`` is asked to stream (:data:`STREAM_FORMATS`;
    μ-law 8 kHz for a carrier not listed)."""
    return STREAM_FORMATS.get(carrier, ("PCMU", 8000))


def instruction_document(
    carrier: str, stream_url: str, *, parameters: dict[str, str] | None = None
) -> tuple[str, str] | None:
    """The document that makes ``carrier`` stream a call to ``stream_url``.

    Args:
        carrier: one of :data:`gateway.carriers.registry.CARRIERS`.
        stream_url: the per-call ``wss://`` URL (a per-call token belongs in its path).
        parameters: string key/values handed back to the gateway in the stream's start message
            (Twilio ``<Parameter>``, Plivo ``extraHeaders``, Vonage NCCO ``headers``).

    Returns:
        ``(content_type, body)`` — ``text/xml`` for TwiML / TeXML / Plivo XML,
        ``application/json`` for a Vonage NCCO — or ``None`` for carriers configured out of band
        (``exotel``, ``raw``, ``webrtc``).

    Raises:
        UnknownCarrier: ``carrier`` is not a known carrier.
        ValueError: ``stream_url`` is not a WebSocket URL, or the carrier cannot carry the
            URL or parameters as given (see the module doc).
    """
    if carrier not in CARRIERS:
        raise UnknownCarrier(f"unknown carrier {carrier!r}; expected one of {', '.join(CARRIERS)}")
    builder = _BUILDERS.get(carrier)
    if builder is None:
        return None
    _check_ws_url(stream_url)
    params = dict(parameters or {})
    for key, value in params.items():
        if type(key) is not str or type(value) is not str:
            raise ValueError("parameters must map strings to strings")
    return builder(stream_url, params)
