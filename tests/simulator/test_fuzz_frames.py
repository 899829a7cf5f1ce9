"""The fuzzed call frames of ``gateway fuzz``: reproducible, in the dialect, really mixed.

Each dialect's fuzzer is checked against the matching carrier adapter (sans-I/O): its normal
opening starts the stream, its odd-rate opening is refused as a fatal start, and the mix
holds valid media as well as the malformed kinds it promises.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.carriers.events import ProtocolError, Started
from gateway.carriers.registry import make_adapter
from gateway.simulator.fuzz_frames import MIX, CallFuzzer

DIALECTS = ["twilio", "telnyx", "plivo", "vonage", "exotel", "raw"]


def _fuzzer(name: str, seed: int, *, odd: bool | None = None) -> CallFuzzer:
    fuzzer = CallFuzzer(name, random.Random(seed))
    if odd is not None:
        fuzzer.odd_start = odd
    return fuzzer


@pytest.mark.parametrize("name", DIALECTS)
def test_same_seed_same_frames(name: str) -> None:
    def frames(seed: int) -> list:
        f = _fuzzer(name, seed)
        out = f.opening()
        for _ in range(200):
            out += f.next_frames()
        return out + f.closing()

    def shape(seed: int) -> list:  # stream ids are random uuids; the draws are seeded
        return [(type(f), len(f)) for f in frames(seed)]

    assert shape(3) == shape(3)
    assert shape(3) != shape(4)


@pytest.mark.parametrize("name", DIALECTS)
def test_the_opening_starts_the_matching_adapter_and_an_odd_rate_is_refused(name: str) -> None:
    for seed in range(20):
        fuzzer = _fuzzer(name, seed, odd=False)
        opening = fuzzer.dialect.opening({})  # the documented opening, without early frames
        adapter = make_adapter(name)
        events = [e for frame in opening for e in adapter.receive(frame)]
        assert any(isinstance(e, Started) for e in events), (seed, events)
        odd_opening = [*opening[:-1], fuzzer._odd_rate_start(opening[-1])]
        adapter = make_adapter(name)
        events = [e for frame in odd_opening for e in adapter.receive(frame)]
        assert not any(isinstance(e, Started) for e in events), (seed, events)
        assert any(isinstance(e, ProtocolError) and e.fatal for e in events), (seed, events)


@pytest.mark.parametrize("name", DIALECTS)
def test_the_mix_has_valid_media_and_every_kind(name: str) -> None:
    fuzzer = _fuzzer(name, 1, odd=False)
    adapter = make_adapter(name)
    for frame in fuzzer.dialect.opening({}):
        adapter.receive(frame)
    kinds: Counter = Counter()
    events: Counter = Counter()
    build = fuzzer._build
    for _ in range(3000):
        kind = fuzzer.rng.choices(fuzzer._kinds, fuzzer._weights)[0]
        kinds[kind] += 1
        for frame in build[kind]():
            assert isinstance(frame, (str, bytes))
            for event in adapter.receive(frame):
                events[type(event).__name__] += 1
    assert set(kinds) == set(MIX)
    assert events["Media"] > 1000 and events["ProtocolError"] > 300 and events["Unhandled"] > 50, events
