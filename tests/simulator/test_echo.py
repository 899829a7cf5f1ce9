"""The echo path of simulated callers: pure DSP (gateway.simulator.echo) and a caller returning
the agent audio it plays as echo over a real socket, bit-exact against the offline path."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import orjson
import pytest
from websockets.asyncio.server import serve

from gateway.codecs.transcode import decode, encode
from gateway.simulator.caller import Backchannel, Listen, SimulatedCaller
from gateway.simulator.dialects import make_dialect
from gateway.simulator.echo import RESPONSES, EchoPath, echo_response, measured_return_loss_db
from gateway.simulator.noise import LineNoise
from gateway.simulator.picows_link import SendClock
from gateway.simulator.run import load_wav, to_rate

AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


def _speech(name: str, rate: int) -> np.ndarray:
    pcm, src = load_wav(AUDIO / "speech" / f"{name}.wav")
    return to_rate(pcm, src, rate)


@pytest.mark.parametrize("response", sorted(RESPONSES))
@pytest.mark.parametrize(("rate", "delay_ms"), [(8000, 20), (8000, 137), (16000, 200), (24000, 40)])
def test_streaming_equals_the_whole_signal_convolution(response: str, rate: int, delay_ms: float) -> None:
    x = _speech("librivox-0880", rate)[: rate * 2]
    path = EchoPath(rate, return_loss_db=18.0, delay_ms=delay_ms, response=response)
    n = rate // 50
    got = []
    for i in range(0, x.size - n + 1, n):  # as the caller: pull this tick's echo, then push what played
        got.append(path.pull(n))
        path.push(x[i:i + n])
    got = np.concatenate(got)
    d = int(round(delay_ms * rate / 1000))
    want = np.convolve(np.concatenate([np.zeros(d), x.astype(np.float64)]), path.taps)[: got.size]
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_flat_path_is_a_pure_delay_and_gain() -> None:
    path = EchoPath(8000, return_loss_db=20.0, delay_ms=100, response="flat")
    impulse = np.zeros(160, np.int16)
    impulse[7] = 10000
    path.push(impulse)
    path.push(np.zeros(1600, np.int16))
    out = path.pull(1600)
    assert np.flatnonzero(out).tolist() == [7 + 800]
    assert out[807] == pytest.approx(1000.0)


def test_responses_are_not_flat() -> None:
    for name in ("hybrid", "room"):
        mag = 20 * np.log10(np.abs(np.fft.rfft(echo_response(name, 8000), 512)) + 1e-12)
        band = mag[16:218]  # 250–3400 Hz
        assert band.max() - band.min() > 15, name
    hyb = np.abs(np.fft.rfft(echo_response("hybrid", 8000), 512))
    assert 20 * np.log10(hyb[0] / hyb[64]) < -20  # the hybrid's transformer: DC far below 1 kHz


@pytest.mark.parametrize("response", ["hybrid", "room"])
def test_return_loss_on_speech_is_near_the_nominal_one(response: str) -> None:
    for name in ("librivox-0870", "cards-005", "goforward"):
        x = _speech(name, 8000)
        path = EchoPath(8000, return_loss_db=25.0, delay_ms=60, response=response)
        path.push(x)
        path.push(np.zeros(480))
        assert abs(measured_return_loss_db(x, path.pull(x.size)) - 25.0) < 3.0, name


@pytest.mark.parametrize("kwargs", [dict(return_loss_db=-1, delay_ms=100), dict(return_loss_db=91, delay_ms=100),
                                    dict(return_loss_db=20, delay_ms=19), dict(return_loss_db=20, delay_ms=1001),
                                    dict(return_loss_db=20, delay_ms=100, response="cave")])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EchoPath(8000, **kwargs)


def test_echo_of_audio_not_played_yet_is_refused() -> None:
    path = EchoPath(8000, return_loss_db=20, delay_ms=20)
    path.pull(160)  # needs nothing played yet
    with pytest.raises(ValueError, match="not played yet"):
        path.pull(160)


def test_a_caller_refuses_an_echo_path_at_another_rate() -> None:
    with pytest.raises(ValueError, match="echo path at 16000 Hz"):
        SimulatedCaller("ws://127.0.0.1:1/x", make_dialect("twilio"), echo=EchoPath(16000, return_loss_db=20, delay_ms=50))


async def _agent_server(agent: bytes, sent: list[bytes], sid: str | None = None, *, pause_at: int | None = None,
                        pause_ms: int = 0):
    """A gateway stand-in (Twilio protocol): sends ``agent`` (μ-law) as 100 ms media messages,
    at once, or with ``pause_at`` paced 100 ms ahead of real time with a ``pause_ms`` gap
    before message ``pause_at``; keeps the caller's payloads. ``sid``: the stream's id (default:
    the one in the caller's start message)."""

    async def handler(ws):
        stream = sid
        while stream is None:
            msg = orjson.loads(await ws.recv())
            stream = msg.get("streamSid") if msg.get("event") == "start" else None

        async def reader():
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg.get("event") == "media":
                    sent.append(base64.b64decode(msg["media"]["payload"]))

        task = asyncio.create_task(reader())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(0, len(agent), 800):
            if pause_at is not None:
                due = t0 + (i // 800) * 0.1 - 0.1 + (pause_ms / 1000 if i // 800 >= pause_at else 0.0)
                await asyncio.sleep(max(0.0, due - loop.time()))
            payload = base64.b64encode(agent[i:i + 800]).decode()
            await ws.send(orjson.dumps({"event": "media", "streamSid": stream, "media": {"payload": payload}}).decode())
        await task

    return await serve(handler, "127.0.0.1", 0)


@pytest.mark.parametrize("link", ["websockets", "picows"])
async def test_caller_returns_what_it_played_as_echo_bit_exact(link: str) -> None:
    agent_pcm = _speech("librivox-0890", 8000)[:16000]  # 2 s
    agent = encode(agent_pcm, "pcmu")
    sent: list[bytes] = []
    dialect = make_dialect("twilio")
    server = await _agent_server(agent, sent, dialect.stream_sid)
    port = server.sockets[0].getsockname()[1]
    noise = LineNoise(8000, level_dbfs=-50.0, seed=5)
    caller = SimulatedCaller(f"ws://127.0.0.1:{port}/s", dialect, hangup_quiet_ms=0, drain_s=0.2, link=link,
                             noise=noise, echo=EchoPath(8000, return_loss_db=20.0, delay_ms=120),
                             keep_heard=True, clock=SendClock() if link == "picows" else None)
    report = await asyncio.wait_for(caller.run([Listen(2600)]), 10)
    server.close()
    heard = report.heard
    assert heard.size >= 16000 and report.listen_windows_ms
    # Offline: the same echo path over what the caller heard, plus the same noise, encoded.
    ref_path = EchoPath(8000, return_loss_db=20.0, delay_ms=120)
    ref_noise = LineNoise(8000, level_dbfs=-50.0, seed=5).frames(160)
    want = []
    for t in range(len(sent)):
        x = ref_noise[t % len(ref_noise)] + ref_path.pull(160)
        want.append(encode(np.clip(np.rint(x), -32768, 32767).astype(np.int16), "pcmu"))
        ref_path.push(heard[t * 160:(t + 1) * 160])
    assert sent == want
    # And independently of the code under test: the echo sits 120 ms after what played, ~20 dB down.
    got = decode(b"".join(sent), "pcmu").astype(np.float64)
    ear = heard[: got.size].astype(np.float64)
    lags = [int(np.dot(got[k:], ear[: ear.size - k])) for k in range(0, 2000, 8)]
    assert abs(int(np.argmax(lags)) * 8 - 960) <= 16
    assert 17.0 < report.echo_return_loss_db < 23.0


async def test_caller_reports_a_pause_in_the_agent_audio_and_its_backchannel_onset() -> None:
    agent = encode(_speech("librivox-0870", 8000)[:24000], "pcmu")  # 3 s, paused 600 ms after 1.2 s
    sent: list[bytes] = []
    dialect = make_dialect("twilio")
    server = await _agent_server(agent, sent, dialect.stream_sid, pause_at=12, pause_ms=600)
    port = server.sockets[0].getsockname()[1]
    mm = _speech("cards-001", 8000)[2000:4000]
    caller = SimulatedCaller(f"ws://127.0.0.1:{port}/s", dialect, hangup_quiet_ms=0, drain_s=0.2,
                             echo=EchoPath(8000, return_loss_db=30.0, delay_ms=60))
    report = await asyncio.wait_for(caller.run([Backchannel(mm, after_ms=300), Listen(2500)]), 10)
    server.close()
    assert [o.kind for o in report.onsets] == ["backchannel"]
    assert 250 <= report.onsets[0].onset_ms <= 1000
    # The sender went quiet for 600 ms (100 ms ahead): the ear ran dry for about as long.
    gaps = [(a, b) for a, b in report.agent_gaps_ms if b - a >= 100]
    assert len(gaps) == 1, report.agent_gaps_ms
    assert 1000 <= gaps[0][0] <= 1500 and 450 <= gaps[0][1] - gaps[0][0] <= 750, gaps
    assert report.clears == 0
