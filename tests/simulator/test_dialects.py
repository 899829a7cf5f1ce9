"""Each simulated caller dialect against the gateway adapter for the same carrier.

The dialects (carrier side) and the adapters (gateway side) were written separately from the
carriers' documentation; a frame one builds must parse in the other, both ways. The dialects'
JSON is also checked against the carriers' documented example messages (the golden fixtures):
no field the carrier does not send, and the same JSON types for the fields it does.
"""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from gateway.carriers import events as ev
from gateway.carriers.registry import make_adapter
from gateway.codecs.transcode import encode
from gateway.formats import Encoding
from gateway.simulator.dialects import DIALECTS, Inbound, make_dialect
from tests.carriers._golden import golden

CARRIERS = ["twilio", "telnyx", "plivo", "vonage", "exotel", "raw"]

#: Dialect options worth pairing besides the defaults.
VARIANTS = [
    ("twilio", {}),
    ("telnyx", {}),
    ("telnyx", {"encoding": "pcma"}),
    ("telnyx", {"encoding": "l16", "sample_rate": 16000}),
    ("plivo", {}),
    ("plivo", {"encoding": "l16", "sample_rate": 8000}),
    ("plivo", {"encoding": "l16", "sample_rate": 16000}),
    ("vonage", {}),
    ("vonage", {"sample_rate": 8000}),
    ("exotel", {}),
    ("exotel", {"sample_rate": 16000}),
    ("raw", {}),
    ("raw", {"sample_rate": 8000}),
]
IDS = [f"{c}-{'-'.join(f'{v}' for v in o.values()) or 'default'}" for c, o in VARIANTS]


def _pcm(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 3000).astype(np.int16)


def _only(events: list[ev.CarrierEvent], kind: type) -> ev.CarrierEvent:
    assert len(events) == 1, events
    assert isinstance(events[0], kind), events
    return events[0]


def _started(name: str, options: dict, params: dict[str, str] | None = None):
    dialect = make_dialect(name, **options)
    adapter = make_adapter(name)
    events: list[ev.CarrierEvent] = []
    for frame in dialect.opening(params or {}):
        events.extend(adapter.receive(frame))
    assert not [e for e in events if isinstance(e, (ev.ProtocolError, ev.Unhandled))], events
    starts = [e for e in events if isinstance(e, ev.Started)]
    assert len(starts) == 1, events
    return dialect, adapter, starts[0]


def test_every_gateway_carrier_has_a_dialect():
    from gateway.carriers.registry import CARRIERS as GATEWAY

    # a WebRTC call has no WebSocket dialect: its simulated caller is gateway.simulator.webrtc_caller
    assert set(DIALECTS) == set(GATEWAY) - {"webrtc"}


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_opening_negotiates_the_dialects_format(name, options):
    dialect, adapter, started = _started(name, options)
    assert started.audio_format == dialect.audio_format
    assert adapter.audio_format == dialect.audio_format


@pytest.mark.parametrize("name", ["twilio", "plivo", "vonage", "exotel", "raw"])
def test_custom_parameters_reach_the_adapter(name):
    _, _, started = _started(name, {}, {"agent": "sales", "lang": "en"})
    assert started.custom_parameters.get("agent") == "sales"
    assert started.custom_parameters.get("lang") == "en"


def test_telnyx_parameters_travel_in_client_state():
    _, _, started = _started("telnyx", {}, {"agent": "sales"})
    state = started.custom_parameters["client_state"]
    assert orjson.loads(base64.b64decode(state)) == {"agent": "sales"}


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_caller_audio_arrives_unchanged(name, options):
    dialect, adapter, _ = _started(name, options)
    fmt = dialect.audio_format
    n = fmt.sample_rate // 50  # 20 ms
    for i in range(3):
        payload = encode(_pcm(n, i), fmt.encoding)
        media = _only(adapter.receive(dialect.media(payload)), ev.Media)
        assert media.payload == payload
        if media.sequence is not None and i:
            assert media.sequence > 0


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_gateway_frames_parse_on_the_caller_side(name, options):
    dialect, adapter, _ = _started(name, options)
    fmt = dialect.audio_format
    frame_bytes = fmt.bytes_for_ms(adapter.frame_ms)
    payload = encode(_pcm(fmt.samples_for_bytes(frame_bytes), 7), fmt.encoding)
    assert dialect.parse(adapter.media(payload)) == [Inbound("media", audio=payload)]
    mark = adapter.mark("g0.1")
    if mark is not None:
        assert dialect.parse(mark) == [Inbound("mark", name="g0.1")]
    assert dialect.parse(adapter.clear()) == [Inbound("clear")]


@pytest.mark.parametrize("name", CARRIERS)
def test_control_messages_parse_in_the_adapter(name):
    dialect, adapter, _ = _started(name, {})
    assert _only(adapter.receive(dialect.dtmf("7")), ev.Dtmf).digit == "7"
    ack = dialect.mark_played("g0.3")
    if ack is not None:
        assert _only(adapter.receive(ack), ev.MarkAck).name == "g0.3"
    cleared = dialect.cleared()
    if cleared is not None:
        _only(adapter.receive(cleared), ev.Cleared)
    stop = dialect.stop()
    if stop is None:
        assert name in ("plivo", "vonage")  # these carriers just close the socket
    else:
        _only(adapter.receive(stop), ev.Stopped)


def test_exotel_caller_rejects_chunks_exotel_would_refuse():
    dialect, adapter, _ = _started("exotel", {})
    good = bytes(3200)
    assert dialect.parse(adapter.media(good))[0].audio == good
    bad = orjson.dumps({"event": "media", "stream_sid": dialect.stream_sid,
                        "media": {"payload": base64.b64encode(bytes(100)).decode()}}).decode()
    with pytest.raises(ValueError, match="multiple of 320"):
        dialect.parse(bad)


def test_vonage_caller_rejects_frames_that_are_not_20_ms():
    dialect, _, _ = _started("vonage", {})
    with pytest.raises(ValueError, match="exactly 640"):
        dialect.parse(bytes(600))


def test_plivo_caller_rejects_play_audio_in_another_format():
    dialect, _, _ = _started("plivo", {})
    other = orjson.dumps({"event": "playAudio", "media": {"contentType": "audio/x-l16", "sampleRate": 8000,
                                                          "payload": ""}}).decode()
    with pytest.raises(ValueError, match="playAudio"):
        dialect.parse(other)


@pytest.mark.parametrize("name", ["twilio", "exotel"])
def test_json_callers_refuse_another_streams_messages(name):
    dialect, _, _ = _started(name, {})
    _, other_adapter, _ = _started(name, {})
    with pytest.raises(ValueError, match="another stream"):
        dialect.parse(other_adapter.clear())


def test_telnyx_l16_is_big_endian_on_the_wire():
    dialect, _, _ = _started("telnyx", {"encoding": "l16", "sample_rate": 16000})
    pcm = np.array([1, -2, 300], dtype="<i2")
    wire = orjson.loads(dialect.media(pcm.tobytes()))["media"]["payload"]
    assert base64.b64decode(wire) == pcm.astype(">i2").tobytes()


# ----------------------------------------------------------------------- against the docs

def _shape_errors(mine: object, doc: object, path: str = "") -> list[str]:
    """Fields in ``mine`` the documented example lacks, and JSON type mismatches."""
    errors: list[str] = []
    if isinstance(mine, dict) and isinstance(doc, dict):
        for key, value in mine.items():
            if key not in doc:
                errors.append(f"{path}.{key}: not in the documented message")
            else:
                errors += _shape_errors(value, doc[key], f"{path}.{key}")
    elif isinstance(doc, dict) and doc and not isinstance(mine, dict):
        errors.append(f"{path}: {type(mine).__name__}, documented as an object")
    elif type(mine) is not type(doc) and not (isinstance(doc, list) and isinstance(mine, list)):
        errors.append(f"{path}: {type(mine).__name__}, documented as {type(doc).__name__}")
    return errors


def _messages(name: str) -> dict[str, dict]:
    dialect = make_dialect(name)
    frames = dialect.opening({"key1": "value1"})
    out = {}
    if name in ("twilio", "telnyx", "exotel"):
        out["connected"] = orjson.loads(frames[0])
        out["start"] = orjson.loads(frames[1])
    elif name == "plivo":
        out["start"] = orjson.loads(frames[0])
    else:  # vonage
        out["connected_minimal"] = orjson.loads(frames[0])
    fmt = dialect.audio_format
    media = dialect.media(encode(_pcm(fmt.sample_rate // 50), fmt.encoding))
    if isinstance(media, str):
        out["media_inbound_track" if name == "twilio" else "media"] = orjson.loads(media)
    out["dtmf"] = orjson.loads(dialect.dtmf("5"))
    ack = orjson.loads(dialect.mark_played("m1"))
    out[{"plivo": "playedStream", "vonage": "notify"}.get(name, "mark")] = ack
    if dialect.cleared() is not None:
        out[{"plivo": "clearedAudio", "vonage": "cleared"}[name]] = orjson.loads(dialect.cleared())
    if dialect.stop() is not None:
        out["stop"] = orjson.loads(dialect.stop())
    return out


@pytest.mark.parametrize("name", ["twilio", "telnyx", "plivo", "vonage", "exotel"])
def test_dialect_messages_match_the_documented_examples(name):
    doc = golden(name)["inbound"]
    for kind, msg in _messages(name).items():
        example = doc[kind]
        if kind == "connected_minimal":  # Vonage flattens the NCCO headers: only fixed keys
            assert msg["event"] == example["event"] and msg["content-type"] == example["content-type"]
            continue
        for key in ("customParameters", "custom_parameters"):  # free-form: the user's own keys
            if kind == "start" and key in msg["start"]:
                msg["start"][key] = example["start"][key]
        assert _shape_errors(msg, example) == [], (kind, msg)
        assert msg.get("event") == example.get("event")


@pytest.mark.parametrize("name", ["twilio", "telnyx", "plivo", "exotel"])
def test_dialect_encodings_are_the_documented_names(name):
    start = _messages(name)["start"]["start"]
    fmt = start.get("mediaFormat") or start.get("media_format")
    doc = golden(name)["inbound"]["start"]["start"]
    doc_fmt = doc.get("mediaFormat") or doc.get("media_format")
    assert fmt["encoding"] == doc_fmt["encoding"]
    assert make_dialect(name).audio_format.encoding in (Encoding.PCMU, Encoding.L16)
