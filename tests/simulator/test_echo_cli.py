"""``gateway call --echo-db / --echo-delay-ms / --echo-path``: bad values fail clearly (exit 2,
the option named) before any call is placed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gateway.cli import app


@pytest.mark.parametrize(("args", "option", "words"), [
    (["--echo-db", "-3"], "--echo-db", "0…90 dB"),
    (["--echo-db", "120"], "--echo-db", "0…90 dB"),
    (["--echo-db", "25", "--echo-delay-ms", "5"], "--echo-delay-ms", "20…1000 ms"),
    (["--echo-db", "25", "--echo-delay-ms", "2000"], "--echo-delay-ms", "20…1000 ms"),
    (["--echo-db", "25", "--echo-path", "cave"], "--echo-path", "hybrid, room, flat"),
    (["--echo-delay-ms", "80"], "--echo-delay-ms", "add --echo-db"),
    (["--echo-db", "loud"], "--echo-db", "valid number"),
])
def test_bad_echo_options_fail_clearly(shared_audio, args: list[str], option: str, words: str) -> None:
    wav = str(shared_audio / "caller" / "hello.wav")
    result = CliRunner().invoke(app, ["call", "ws://127.0.0.1:9/x", "--wav", wav, *args])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert option in flat and words in flat, result.output


async def test_run_call_returns_the_echo_asked_for(shared_audio, tmp_path) -> None:
    """What ``gateway call --echo-db 25 --echo-delay-ms 80`` runs, against a stand-in gateway."""
    from gateway.codecs.transcode import encode
    from gateway.simulator.echo import EchoPath
    from gateway.simulator.run import load_wav, run_call, to_rate
    from tests.simulator.test_echo import _agent_server

    agent, rate = load_wav(shared_audio / "speech" / "librivox-0890.wav")
    sent: list[bytes] = []
    server = await _agent_server(encode(to_rate(agent, rate, 8000)[:16000], "pcmu"), sent)
    port = server.sockets[0].getsockname()[1]
    try:
        line = load_wav(shared_audio / "caller" / "hello.wav")
        result = await run_call(f"ws://127.0.0.1:{port}/s", "twilio", line, wait_greeting=False, out=tmp_path / "h.wav",
                                transcribe_heard=False, echo=EchoPath(8000, return_loss_db=25.0, delay_ms=80.0))
    finally:
        server.close()
    assert 22.0 < result["echoReturnLossDb"] < 28.0, result
    assert result["agentAudioMs"] >= 1900 and result["clears"] == 0 and (tmp_path / "h.wav").exists()
