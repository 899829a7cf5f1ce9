"""What a simulated caller puts on the wire, tick by tick, is what the per-frame path made:
pre-encoded line noise and lines mixed and encoded ahead of their ticks give the same bytes as
mixing ``LineNoise.under`` / ``LineNoise.frame`` and encoding each 20 ms frame when it is sent;
and both socket links (websockets, picows on the shared send clock) send the same messages."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from websockets.asyncio.server import serve

from gateway.codecs.transcode import encode
from gateway.simulator.caller import Pause, Say, SimulatedCaller
from gateway.simulator.dialects import make_dialect
from gateway.simulator.noise import LineNoise
from gateway.simulator.picows_link import SendClock
from gateway.simulator.run import load_wav, to_rate

DIALECTS = ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw")
AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


def _line(rate: int) -> np.ndarray:
    pcm, src = load_wav(AUDIO / "caller" / "confirm.wav")
    return to_rate(pcm, src, rate) if src != rate else pcm


def _reference(carrier: str, line: np.ndarray, *, seed: int, say_at: int, ticks: int) -> list[bytes]:
    """The per-frame path: at each tick, noise alone, or the next line frame with noise under it."""
    fmt = make_dialect(carrier).audio_format
    noise = LineNoise(fmt.sample_rate, level_dbfs=-52.0, seed=seed)  # as _run_link's and the test's callers
    n = fmt.sample_rate // 50
    padded = np.concatenate([line, np.zeros((-line.size) % n, np.int16)]).reshape(-1, n)
    out = []
    for t in range(ticks):
        k = t - say_at
        pcm = noise.under(padded[k]) if 0 <= k < len(padded) else noise.frame(n)
        out.append(encode(pcm, fmt.encoding))
    return out


@pytest.mark.parametrize("carrier", DIALECTS)
def test_payloads_equal_the_per_frame_path(carrier: str) -> None:
    fmt = make_dialect(carrier).audio_format
    line = _line(fmt.sample_rate)
    say_at, seed = 37, 11
    frames = -(-line.size // (fmt.sample_rate // 50))
    ticks = say_at + frames + 250  # past the 4 s noise loop's wrap, twice
    caller = SimulatedCaller("ws://127.0.0.1:1/x", make_dialect(carrier),
                             noise=LineNoise(fmt.sample_rate, level_dbfs=-52.0, seed=seed), keep_heard=False)
    payloads = []
    caller._send = lambda frame: None
    for t in range(ticks):
        if t == say_at:
            n = caller._frame_samples
            padded = np.concatenate([line, np.zeros((-line.size) % n, np.int16)]).reshape(-1, n)
            caller._mouth.extend(caller._mouth_payloads(padded))
        payloads.append(caller._next_payload())
        caller._tick += 1
    assert payloads == _reference(carrier, line, seed=seed, say_at=say_at, ticks=ticks)


def test_a_loop_frames_do_not_divide_falls_back_to_mixing_when_sent() -> None:
    noise = LineNoise(8000, level_dbfs=-52.0, period_s=0.0105, seed=3)  # 84 samples: not 160
    assert noise.frames(160) is None
    caller = SimulatedCaller("ws://127.0.0.1:1/x", make_dialect("twilio"), noise=noise)
    ref = LineNoise(8000, level_dbfs=-52.0, period_s=0.0105, seed=3)
    pcm = (np.arange(320) * 37 % 2000 - 1000).astype(np.int16).reshape(2, 160)
    caller._mouth.extend(caller._mouth_payloads(pcm))
    got = [caller._next_payload() for _ in range(3)]
    assert got == [encode(ref.under(pcm[0]), "pcmu"), encode(ref.under(pcm[1]), "pcmu"), encode(ref.frame(160), "pcmu")]


async def _record_server(received: list):
    """A carrier-side peer that records every message and closes after the caller's stop."""
    async def handler(ws) -> None:
        async for msg in ws:
            received.append((time.monotonic(), msg))
            if isinstance(msg, str) and '"stop"' in msg:
                await ws.close(1000)
                return
    return await serve(handler, "127.0.0.1", 0, compression=None)


async def _run_link(link: str, clock: SendClock | None) -> tuple[list, object]:
    received: list = []
    server = await _record_server(received)
    try:
        port = server.sockets[0].getsockname()[1]
        caller = SimulatedCaller(f"ws://127.0.0.1:{port}/stream", make_dialect("twilio"),
                                 noise=LineNoise(8000, level_dbfs=-52.0, seed=5), keep_heard=False, link=link,
                                 clock=clock, hangup_quiet_ms=0)
        report = await asyncio.wait_for(caller.run([Pause(60), Say(_line(8000)[:4000], "line"), Pause(100)]), 20)
    finally:
        server.close()
        await server.wait_closed()
    return received, report


def _strip(msg: str) -> dict:
    out = orjson.loads(msg)
    for key in ("streamSid", "start", "stop"):
        out.pop(key, None)
    return out


async def test_both_links_send_the_same_messages() -> None:
    line = _line(8000)[:4000]
    for link, clock in (("websockets", None), ("picows", SendClock())):
        msgs, report = await _run_link(link, clock)
        assert report.close_code == 1000, link
        events = [_strip(m)["event"] for _, m in msgs]
        assert events == ["connected", "start"] + ["media"] * report.frames_sent + ["stop"], link
        media = [_strip(m)["media"] for _, m in msgs if '"media"' in m]
        assert [m["chunk"] for m in media] == [str(i + 1) for i in range(len(media))]
        assert [m["timestamp"] for m in media] == [str(20 * i) for i in range(len(media))]
        got = [base64.b64decode(m["payload"]) for m in media]
        # the line starts on whichever tick the script reached it (real time): the same bytes
        refs = [_reference("twilio", line, seed=5, say_at=k, ticks=len(got)) for k in range(12)]
        assert got in refs, link
        # paced at 20 ms: no burst, no drift
        times = [t for t, m in msgs if '"media"' in m]
        assert (times[-1] - times[0]) * 1000 == pytest.approx((len(times) - 1) * 20, abs=30), link
        assert max(report.send_slip_ms) < 50, link


async def test_shared_clock_spreads_callers_over_the_slots() -> None:
    clock = SendClock(slot_ms=5.0)
    callers = [SimulatedCaller("ws://127.0.0.1:1/x", make_dialect("raw"), keep_heard=False) for _ in range(8)]
    starts = [clock.join(c) for c in callers]
    for c, t0 in zip(callers, starts):
        c._t0 = t0
        c._send = lambda frame: None
    await asyncio.sleep(0.2)
    for c in callers:
        clock.leave(c)
    phases = sorted(round((t - starts[0]) * 1000 / 5) % 4 for t in starts)
    assert phases == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(0 <= t - time.monotonic() + 0.2 <= 0.021 for t in starts)
    for c in callers:  # each ticked on its own schedule, 20 ms apart, ~10 times in 200 ms
        assert 8 <= c.report.frames_sent <= 11
        assert max(c.report.send_slip_ms) < 20


async def test_picows_link_reports_a_refused_upgrade() -> None:
    async def refuse(connection, request):
        return connection.respond(403, "no\n")

    async with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        caller = SimulatedCaller(f"ws://127.0.0.1:{port}/x", make_dialect("raw"), link="picows", clock=SendClock())
        report = await asyncio.wait_for(caller.run([Pause(100)]), 10)
    assert report.close_code == 403 and report.close_reason == "rejected at handshake"
    assert report.frames_sent == 0


async def test_picows_link_raises_on_a_message_the_carrier_rejects() -> None:
    async def handler(ws) -> None:
        await ws.send('{"event":"media","streamSid":"MZnot-this-one","media":{"payload":""}}')
        await asyncio.sleep(5)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        caller = SimulatedCaller(f"ws://127.0.0.1:{port}/x", make_dialect("twilio"), link="picows", clock=SendClock(),
                                 drain_s=0.5)
        with pytest.raises(ValueError, match="another stream"):
            await asyncio.wait_for(caller.run([Pause(2000)]), 10)


@pytest.mark.parametrize("link", ["websockets", "picows"])
@pytest.mark.parametrize("code", [4401, 1011, None])
async def test_a_gateway_close_ends_the_call_at_once(link: str, code: int | None) -> None:
    """Closed by the gateway (a refusal code, an error, or a dropped connection): the caller sends
    nothing more (a frame counted as sent after the close would be reported lost), its script
    stops, and the close code is what the gateway sent (1006 without a close frame)."""
    async def handler(ws) -> None:
        await asyncio.sleep(0.1)
        if code is None:
            ws.transport.abort()
        else:
            await ws.close(code, "closing")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        caller = SimulatedCaller(f"ws://127.0.0.1:{port}/x", make_dialect("raw"), link=link, clock=SendClock(),
                                 drain_s=0.5)
        t0 = time.monotonic()
        report = await asyncio.wait_for(caller.run([Pause(3000)]), 10)
    assert time.monotonic() - t0 < 1.5
    assert report.close_code == (1006 if code is None else code)
    assert 2 <= report.frames_sent <= 9  # 100 ms of 20 ms frames, give or take a slow loop
