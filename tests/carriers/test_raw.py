"""Tests for the raw protocol (our own, documented in ``gateway/carriers/raw.py``)."""

from __future__ import annotations

import json

import pytest

from gateway.carriers.events import Cleared, Dtmf, MarkAck, Media, ProtocolError, Started, Stopped, Unhandled
from gateway.carriers.raw import L16_RATES, RawAdapter, RawState
from gateway.formats import AudioFormat, Encoding, L16_16K, PCMA_8K, PCMU_8K

START_16K = '{"event":"start","sampleRate":16000,"encoding":"l16","customParameters":{"lang":"en"}}'


def started(start: str = START_16K) -> RawAdapter:
    adapter = RawAdapter()
    [event] = adapter.receive(start)
    assert isinstance(event, Started), event
    return adapter


def test_start_as_documented() -> None:
    adapter = RawAdapter()
    assert adapter.receive(START_16K) == [
        Started(stream_id="", call_id="", audio_format=L16_16K, custom_parameters={"lang": "en"})
    ]
    assert adapter.state is RawState.STREAMING and adapter.frame_ms == 20


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ({"event": "start", "sampleRate": 16000}, L16_16K),  # encoding defaults to l16
        ({"event": "start", "sampleRate": 48000, "encoding": "L16"}, AudioFormat(Encoding.L16, 48000)),
        ({"event": "start", "encoding": "pcmu"}, PCMU_8K),  # G.711 rate defaults to 8000
        ({"event": "start", "encoding": "pcma", "sampleRate": 8000}, PCMA_8K),
    ],
)
def test_valid_starts(start: dict, expected: AudioFormat) -> None:
    assert started(json.dumps(start)).audio_format == expected


def test_call_id_is_echoed() -> None:
    [event] = RawAdapter().receive('{"event":"start","sampleRate":8000,"callId":"abc"}')
    assert event.call_id == "abc"


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ({"event": "start", "sampleRate": 44100}, ProtocolError("bad_field", "sampleRate")),
        ({"event": "start", "sampleRate": "16000"}, ProtocolError("bad_field", "sampleRate")),
        ({"event": "start"}, ProtocolError("missing_field", "sampleRate")),
        ({"event": "start", "encoding": "pcmu", "sampleRate": 16000}, ProtocolError("bad_field", "sampleRate")),
        ({"event": "start", "encoding": "opus", "sampleRate": 16000}, ProtocolError("bad_field", "encoding")),
        ({"event": "start", "encoding": 7, "sampleRate": 16000}, ProtocolError("bad_field", "encoding")),
        (
            {"event": "start", "sampleRate": 16000, "customParameters": {"n": 1}},
            ProtocolError("bad_field", "customParameters"),
        ),
        ({"event": "start", "sampleRate": 16000, "callId": 5}, ProtocolError("bad_field", "callId")),
    ],
)
def test_invalid_start_names_the_field(start: dict, expected: ProtocolError) -> None:
    adapter = RawAdapter()
    # A refused start is fatal: the session ends the call (bad_start) rather than wait on.
    assert adapter.receive(json.dumps(start)) == [ProtocolError(expected.kind, expected.detail, fatal=True)]
    assert adapter.state is RawState.AWAITING_START and adapter.audio_format is None


def test_allowed_l16_rates() -> None:
    assert L16_RATES == {8000, 16000, 24000, 48000}


def test_binary_audio() -> None:
    adapter = started()
    frame = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms at 16 kHz
    assert adapter.receive(frame) == [Media(frame)]
    assert adapter.receive(b"\x01\x02") == [Media(b"\x01\x02")]  # any whole number of samples


def test_odd_l16_byte_count_is_a_bad_field() -> None:
    [event] = started().receive(b"\x01\x02\x03")
    assert event == ProtocolError("bad_field", "audio: 3 bytes is not a whole number of samples")


def test_g711_frames_may_have_any_length() -> None:
    adapter = started('{"event":"start","encoding":"pcmu"}')
    assert adapter.receive(b"\xff" * 161) == [Media(b"\xff" * 161)]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"event":"mark","name":"m1"}', MarkAck("m1")),
        ('{"event":"dtmf","digit":"5"}', Dtmf("5")),
        ('{"event":"dtmf","digit":"#"}', Dtmf("#")),
        ('{"event":"cleared"}', Cleared()),
        ('{"event":"stop"}', Stopped()),
        ('{"event":"stop","reason":"hangup"}', Stopped("hangup")),
        ('{"event":"my-own-thing"}', Unhandled("my-own-thing")),
        ('{"event":"dtmf","digit":"55"}', ProtocolError("bad_field", "digit")),
        ('{"event":"mark"}', ProtocolError("missing_field", "name")),
    ],
)
def test_client_control_messages(message: str, expected) -> None:
    assert started().receive(message) == [expected]


def test_audio_after_stop() -> None:
    adapter = started()
    adapter.receive('{"event":"stop"}')
    [event] = adapter.receive(bytes(640))
    assert event.kind == "unexpected_event"


def test_outbound() -> None:
    adapter = started()
    pcm = bytes(640)
    assert adapter.media(pcm) is pcm  # binary frame, no copy
    assert adapter.mark("m1") == '{"event":"mark","name":"m1"}'
    assert adapter.clear() == '{"event":"clear"}'
    with pytest.raises(ValueError):
        adapter.media(b"\x00")
    with pytest.raises(RuntimeError):
        RawAdapter().media(pcm)
