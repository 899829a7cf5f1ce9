"""Command line: ``gateway serve | demo | call | keys | bench``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

__all__ = ["main", "app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Realtime media gateway for AI phone calls.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage REST API keys (only their hashes are stored).")
app.add_typer(keys_app, name="keys")
console = Console()


def _settings(**overrides):
    from gateway.config import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Interface to listen on (GATEWAY_HOST)."),
    port: Optional[int] = typer.Option(None, help="TCP port (GATEWAY_PORT)."),
) -> None:
    """Serve the REST API and the carrier media streams."""
    import uvicorn

    from gateway.app import create_app

    settings = _settings(host=host, port=port)
    _logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_max_size=1 << 20,
        log_level=settings.log_level.lower(),
        ws_ping_interval=None,
    )


@keys_app.command("create")
def keys_create(name: str = typer.Argument("default", help="A label for the key.")) -> None:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    from gateway.store import Store

    settings = _settings()
    store = Store(settings.database_url)
    store.create_all()
    key, record = store.create_api_key(name)
    console.print(f"[bold]{key}[/bold]")
    console.print(f"id {record.id}: store it now, it is not shown again.", style="dim")


@app.command()
def call(
    url: str = typer.Argument(..., help="The call's stream URL (ws:// or wss://)."),
    carrier: str = typer.Option("twilio", help="Protocol to speak: twilio or raw."),
    wav: Optional[Path] = typer.Option(None, help="WAV the caller speaks (any rate, mono PCM16)."),
    say: str = typer.Option("Hello, I would like to check my appointment for tomorrow.",
                            help="Line to synthesise when no --wav is given."),
    barge_in: Optional[Path] = typer.Option(None, help="WAV spoken over the agent's reply."),
    out: Path = typer.Option(Path("heard.wav"), help="Where to save what the caller heard."),
    wait_greeting: bool = typer.Option(True, help="Wait for the agent's greeting before speaking."),
) -> None:
    """Place one simulated carrier call against a stream URL and report what happened."""
    from gateway.simulator.dialects import DIALECTS
    from gateway.simulator.run import caller_line, run_call

    if carrier not in DIALECTS:
        raise typer.BadParameter(f"choose one of {', '.join(sorted(DIALECTS))}", param_hint="--carrier")

    _logging("WARNING")
    line = caller_line(wav, say)
    report = asyncio.run(run_call(url, carrier, line, barge_in=barge_in, wait_greeting=wait_greeting, out=out))
    console.print_json(data=report)


@app.command()
def demo(
    wav: Optional[Path] = typer.Option(None, help="WAV the caller speaks (default: a line synthesised now)."),
    say: str = typer.Option("Hello, I would like to check my appointment for tomorrow.",
                            help="Line to synthesise when no --wav is given."),
    carrier: str = typer.Option("twilio", help="Protocol the simulated caller speaks: twilio or raw."),
    barge_in: Optional[Path] = typer.Option(None, help="WAV the caller speaks over the agent's reply."),
) -> None:
    """Serve on loopback, place one simulated phone call of real speech, print what happened."""
    from gateway.simulator.demo import run_demo

    _logging(os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"))
    code = asyncio.run(run_demo(console, wav=wav, say=say, carrier=carrier, barge_in=barge_in))
    raise typer.Exit(code)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: media-path cost and load.")
app.add_typer(bench_app, name="bench")


@bench_app.command("media")
def bench_media(
    calls: str = typer.Option("1,10,100,500", help="Simultaneous call counts to measure."),
    seconds: float = typer.Option(3.0, help="Seconds of call audio per call and row."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on the last line."),
    plot: Optional[Path] = typer.Option(Path("bench-out/media.png"), help="PNG plot path."),
) -> None:
    """CPU cost of the media path per 20 ms frame, per carrier, no sockets."""
    from benchmarks.media import main as bench_main

    bench_main(calls=[int(c) for c in calls.split(",") if c], seconds=seconds, json_out=json_out, plot=plot)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
