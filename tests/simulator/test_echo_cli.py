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
