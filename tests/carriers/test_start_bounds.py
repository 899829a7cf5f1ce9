"""What a ``start`` may ask for, and the bounds that keep parsers off their last resort.

Sample rates: each adapter accepts only the rates its carrier documents (anything else would
design a resampler for an odd rate pair on the event loop); a refused start is a *fatal*
ProtocolError. Corner cases that used to reach ``int()``, ``str()`` or ``orjson.dumps`` with
a peer's value (unicode digits, 1,000-deep nesting) are precise errors, never ``internal``.
"""

from __future__ import annotations

import json

import pytest

from gateway.carriers._wire import MAX_DEPTH, decimal_int
from gateway.carriers.events import ProtocolError, Started
from gateway.carriers.registry import make_adapter
from gateway.carriers.vonage import parse_content_type
from gateway.formats import AudioFormat, Encoding

from ._golden import golden, text

PCMU, PCMA, L16 = Encoding.PCMU, Encoding.PCMA, Encoding.L16


def _twilio(rate, encoding="audio/x-mulaw") -> dict:
    msg = golden("twilio")["inbound"]["start"]
    msg["start"]["mediaFormat"].update(encoding=encoding, sampleRate=rate)
    return msg


def _telnyx(rate, encoding="PCMU") -> dict:
    msg = golden("telnyx")["inbound"]["start"]
    msg["start"]["media_format"].update(encoding=encoding, sample_rate=rate)
    return msg


def _plivo(rate, encoding="audio/x-l16") -> dict:
    msg = golden("plivo")["inbound"]["start"]
    msg["start"]["mediaFormat"].update(encoding=encoding, sampleRate=rate)
    return msg


def _exotel(rate, encoding="audio/x-raw") -> dict:
    msg = golden("exotel")["inbound"]["start"]
    msg["start"]["media_format"].update(encoding=encoding, sample_rate=rate)
    return msg


def _vonage(rate, encoding="audio/l16") -> dict:
    return {"event": "websocket:connected", "content-type": f"{encoding};rate={rate}"}


def _raw(rate, encoding="l16") -> dict:
    return {"event": "start", "encoding": encoding, "sampleRate": rate}


#: carrier → (start builder, error path of its rate, {(wire encoding, Encoding): documented rates})
DOCUMENTED = {
    "twilio": (_twilio, "start.mediaFormat.sampleRate", {("audio/x-mulaw", PCMU): {8000}, ("audio/x-alaw", PCMA): {8000}}),
    "telnyx": (
        _telnyx,
        "start.media_format.sample_rate",
        {("PCMU", PCMU): {8000}, ("PCMA", PCMA): {8000}, ("L16", L16): {8000, 16000, 22050, 24000, 48000}},
    ),
    "plivo": (_plivo, "start.mediaFormat.sampleRate", {("audio/x-l16", L16): {8000, 16000}, ("audio/x-mulaw", PCMU): {8000}}),
    "exotel": (
        _exotel,
        "start.media_format.sample_rate",
        {("audio/x-raw", L16): {8000, 16000, 24000}, ("audio/x-mulaw", PCMU): {8000}},
    ),
    "vonage": (_vonage, "content-type", {("audio/l16", L16): {8000, 16000, 24000}}),
    "raw": (_raw, "sampleRate", {("l16", L16): {8000, 16000, 24000, 48000}, ("pcmu", PCMU): {8000}, ("pcma", PCMA): {8000}}),
}

#: Rates no carrier documents for any encoding (2 and 5 used to crash a call; 7,999 and 11,025
#: designed a resampler of ~90 MB on the event loop).
ODD_RATES = [0, -8000, 1, 2, 5, 7999, 8001, 11025, 12000, 32000, 44100, 96000, 10**12]
ALL_RATES = {8000, 16000, 22050, 24000, 48000}


def _started(name: str, msg: dict):
    adapter = make_adapter(name)
    events = adapter.receive(text(msg))
    return adapter, events


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_rates_start_the_stream(name: str) -> None:
    build, _, table = DOCUMENTED[name]
    for (wire, encoding), rates in table.items():
        for rate in rates:
            adapter, events = _started(name, build(rate, wire))
            started = [e for e in events if isinstance(e, Started)]
            assert started and started[0].audio_format == AudioFormat(encoding, rate), (wire, rate, events)
            assert adapter.audio_format == AudioFormat(encoding, rate)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_other_rate_is_a_fatal_bad_field(name: str) -> None:
    build, path, table = DOCUMENTED[name]
    for (wire, _), rates in table.items():
        for rate in [*ODD_RATES, *sorted(ALL_RATES - rates)]:
            adapter, events = _started(name, build(rate, wire))
            assert events == [ProtocolError("bad_field", path, fatal=True)], (wire, rate)
            assert adapter.audio_format is None


@pytest.mark.parametrize("name", ["twilio", "telnyx", "plivo", "exotel"])
@pytest.mark.parametrize("rate", ["8000 ", " 8000", "8_000", "８０００", "٨٠٠٠", "8000.0", 8000.0, True, None, [8000]])
def test_rates_that_only_look_like_8000_are_refused(name: str, rate) -> None:
    build, path, _ = DOCUMENTED[name]
    wire = {"twilio": "audio/x-mulaw", "telnyx": "PCMU", "plivo": "audio/x-mulaw", "exotel": "audio/x-mulaw"}[name]
    [event] = _started(name, build(rate, wire))[1]
    assert event.fatal and event.kind in ("bad_field", "missing_field") and event.detail == path, event


@pytest.mark.parametrize("rate", ["²", "١٦٠٠٠", "16000²", "", "1" * 5000])
def test_vonage_content_type_rate_must_be_ascii_digits(rate: str) -> None:
    assert parse_content_type(f"audio/l16;rate={rate}") is None
    [event] = make_adapter("vonage").receive(text({"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}"}))
    assert event == ProtocolError("bad_field", "content-type", fatal=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, 7), ("7", 7), ("0012", 12), ("9" * 18, 10**18 - 1), ("9" * 19, None), ("²", None), ("٥", None),
     (" 7", None), ("1_0", None), ("-5", None), ("", None), (True, None), (7.0, None), (None, None), ([7], None)],
)
def test_decimal_int_reads_ascii_digits_only(value, expected) -> None:
    assert decimal_int(value) == expected


# ------------------------------------------------------------------ nesting

def _nested(depth: int) -> object:
    node: object = "leaf"
    for i in range(depth):
        node = [node] if i % 2 else {"k": node}
    return node


def _nested_json(depth: int) -> str:
    """``_nested(depth)`` as JSON text (``json.dumps`` itself recurses too deep for 1,000)."""
    opens = "".join("[" if i % 2 else '{"k":' for i in reversed(range(depth)))
    closes = "".join("]" if i % 2 else "}" for i in range(depth))
    return opens + '"leaf"' + closes


DEEP = "__DEEP__"


def _deep_messages() -> dict[str, list[dict]]:
    """For each carrier, documented messages with a :data:`DEEP` placeholder where the adapter
    used to convert a peer's value generically (``str()``, ``orjson.dumps``)."""
    deep = DEEP
    tw = _twilio(8000)
    tw["start"]["mediaFormat"]["encoding"] = deep
    tw_params = _twilio(8000)
    tw_params["start"]["customParameters"] = {"p": deep}
    vo = golden("vonage")["inbound"]["connected_minimal"] | {"deep": deep}
    ex = _exotel(8000)
    ex["start"]["custom_parameters"] = {"p": deep}
    ex_fmt = _exotel(8000)
    ex_fmt["start"]["media_format"]["encoding"] = deep
    pl = _plivo(8000)
    pl["extra_headers"] = {"p": deep}
    tx = _telnyx(8000)
    tx["start"]["media_format"]["encoding"] = deep
    raw = _raw(16000) | {"customParameters": {"p": deep}}
    return {"twilio": [tw, tw_params], "vonage": [vo], "exotel": [ex, ex_fmt], "plivo": [pl], "telnyx": [tx], "raw": [raw]}


@pytest.mark.parametrize("depth", [300, 1000])
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_deeply_nested_starts_are_too_deep_not_internal(name: str, depth: int) -> None:
    assert json.loads(_nested_json(5)) == _nested(5)
    for msg in _deep_messages()[name]:
        frame = text(msg).replace(f'"{DEEP}"', _nested_json(depth))
        [event] = make_adapter(name).receive(frame)
        assert event.kind == "too_deep" and event.fatal, event


def test_plivo_extra_headers_json_string_nested_too_deep_gives_no_parameters() -> None:
    msg = _plivo(8000)
    msg["extra_headers"] = json.dumps({"p": _nested(400)})
    [event] = _started("plivo", msg)[1]
    assert isinstance(event, Started) and event.custom_parameters == {}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_nesting_up_to_the_limit_is_accepted(name: str) -> None:
    """Custom parameters may hold small JSON values: MAX_DEPTH levels in all still start."""
    # The message itself, ``start`` / ``customParameters`` and the value count as levels.
    levels_used = {"twilio": 3, "telnyx": 3, "plivo": 2, "exotel": 3, "vonage": 1, "raw": 1}[name]
    build, _, table = DOCUMENTED[name]
    (wire, _), rates = next(iter(table.items()))
    msg = build(min(rates), wire)
    value = _nested(MAX_DEPTH - levels_used)
    if name == "twilio":
        msg["start"]["customParameters"] = {"p": "x"}
        msg["start"]["extra"] = {"p": value}
    elif name in ("telnyx", "exotel"):
        msg["start"]["custom_parameters"] = {"p": value}
    elif name == "plivo":
        msg["extra_headers"] = {"p": value}
    elif name == "vonage":
        msg["deep"] = value
    else:
        msg["extra"] = value
    events = _started(name, msg)[1]
    assert any(isinstance(e, Started) for e in events), events
    msg_deeper = json.loads(text(msg).replace('"leaf"', '["leaf"]'))
    [*_, last] = _started(name, msg_deeper)[1]
    assert isinstance(last, ProtocolError) and last.kind == "too_deep", last


@pytest.mark.parametrize("name", ["twilio", "telnyx", "exotel"])
def test_deep_mark_and_dtmf_while_streaming_are_too_deep(name: str) -> None:
    adapter = make_adapter(name)
    start = {"twilio": _twilio(8000), "telnyx": _telnyx(8000), "exotel": _exotel(8000)}[name]
    assert any(isinstance(e, Started) for e in adapter.receive(text(start)))
    for msg in ({"event": "mark", "mark": {"name": DEEP}}, {"event": "dtmf", "dtmf": DEEP}):
        [event] = adapter.receive(text(msg).replace(f'"{DEEP}"', _nested_json(500)))
        assert event.kind == "too_deep" and not event.fatal, event


#: carrier → (start message, where its call id sits, where its ``from`` sits or None)
_ID_FIELDS = {
    "twilio": (lambda: golden("twilio")["inbound"]["start"], ("start", "callSid"), None),
    "telnyx": (lambda: golden("telnyx")["inbound"]["start"], ("start", "call_control_id"), ("start", "from")),
    "plivo": (lambda: golden("plivo")["inbound"]["start"], ("start", "callId"), None),
    "exotel": (lambda: golden("exotel")["inbound"]["start"], ("start", "call_sid"), ("start", "from")),
    "raw": (lambda: {"event": "start", "sampleRate": 16000, "callId": "c1"}, ("callId",), None),
}


def _set(msg: dict, path: tuple[str, ...], value: str) -> dict:
    node = msg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return msg


@pytest.mark.parametrize("carrier", sorted(_ID_FIELDS))
def test_an_id_longer_than_the_record_keeps_refuses_the_start(carrier: str) -> None:
    """A 300-character call id is nobody's: refused as fatal, not an error at the database."""
    build, id_path, _ = _ID_FIELDS[carrier]
    adapter = make_adapter(carrier)
    (event,) = adapter.receive(text(_set(build(), id_path, "C" * 300)))
    assert isinstance(event, ProtocolError) and event.kind == "bad_field" and event.fatal
    assert "over 128 characters" in event.detail and "C" * 20 not in event.detail
    (ok,) = make_adapter(carrier).receive(text(_set(build(), id_path, "C" * 128)))
    assert isinstance(ok, Started) and ok.call_id == "C" * 128


@pytest.mark.parametrize("carrier", [c for c, (_, _, f) in _ID_FIELDS.items() if f])
def test_a_long_from_is_cut_to_what_the_record_keeps(carrier: str) -> None:
    build, _, from_path = _ID_FIELDS[carrier]
    uri = "sip:" + "a" * 200 + "@example.com"
    (event,) = make_adapter(carrier).receive(text(_set(build(), from_path, uri)))
    assert isinstance(event, Started) and event.from_number == uri[:64]
