"""``gateway demo``: serve on loopback, place one simulated phone call, print what happened.

Uses the embedded defaults: the local agent (pocketsphinx → responder → Piper), SQLite in
``./gateway.db`` and recordings in ``./recordings``. Needs no network and no keys.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from gateway.app import create_app
from gateway.config import Settings
from gateway.logs import install_redaction
from gateway.simulator.run import caller_line, run_call

__all__ = ["run_demo", "serve_in_background"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve_in_background(settings: Settings, **app_kwargs) -> tuple[uvicorn.Server, asyncio.Task, object]:
    """Start the gateway in this event loop; returns once it accepts connections."""
    app = create_app(settings, **app_kwargs)
    # log_config=None: uvicorn's records go to the handlers already set up, which redact
    # stream tokens (gateway.logs)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", log_config=None,
                            ws_max_size=1 << 20, ws_ping_interval=None, ws=settings.ws_impl, lifespan="on")
    install_redaction()
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task, app


async def run_demo(console: Console, *, wav: Path | None, say: str, carrier: str = "twilio",
                   barge_in: Path | None = None) -> int:
    """Run the demo; returns a process exit code (0 when the call completed)."""
    port = _free_port()
    settings = Settings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}")
    console.print(f"[bold]Gateway[/bold] serving on 127.0.0.1:{port}; loading the local agent's speech models…")
    server, task, app = await serve_in_background(settings)
    services = app.state.services
    try:
        t = time.monotonic()
        line = await asyncio.to_thread(caller_line, wav, say)
        if services.warm is not None:
            await services.warm
        console.print(f"Models ready in {time.monotonic() - t:.1f} s. Placing a simulated {carrier} call "
                      f"({'from ' + str(wav) if wav else 'a line synthesised now'}), sent as 8 kHz μ-law…")
        key, _ = await asyncio.to_thread(services.store.create_api_key, "demo")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as http:
            r = await http.post("/calls/inline", json={
                "systemPrompt": "You are a friendly phone agent.",
                "voice": "joe",
                "language": "en-US",
                "greeting": "Hello, thanks for calling. How can I help you today?",
                "connectionType": carrier,
                "interruptible": barge_in is not None,
            })
            r.raise_for_status()
            created = r.json()
            report = await run_call(created["streamUrl"], carrier, line, barge_in=barge_in,
                                    out=Path("recordings") / f"{created['callId']}-heard.wav")
            for _ in range(100):
                record = (await http.get(f"/calls/{created['callId']}")).json()
                if record.get("status") in ("completed", "failed"):
                    break
                await asyncio.sleep(0.05)
    finally:
        server.should_exit = True
        await task
    _print(console, record, report)
    return 0 if record.get("status") == "completed" else 1


def _print(console: Console, record: dict, report: dict) -> None:
    table = Table(title=f"Call {record.get('callId', record.get('id', ''))}: {record.get('status')} "
                        f"({record.get('endReason')})", show_lines=False)
    table.add_column("who", style="bold")
    table.add_column("said")
    for turn in record.get("transcript", []):
        who = "caller (recognised)" if turn["role"] == "user" else "agent"
        text = turn["text"] + (" [interrupted]" if turn.get("interrupted") else "")
        table.add_row(who, text)
    console.print(table)
    latency = report.get("turnLatencyMs") or []
    metrics = record.get("metrics") or {}
    console.print(f"Turn latency heard by the caller (end of speech → first agent audio): "
                  f"{', '.join(f'{x:.0f} ms' for x in latency) or 'n/a'}")
    if report.get("bargeInReactionMs"):
        console.print(f"Barge-in reaction (speech onset → clear): "
                      f"{', '.join(f'{x:.0f} ms' for x in report['bargeInReactionMs'])}")
    console.print(f"The caller heard (recognised from its own ear): {report.get('heardText', '')!r}")
    console.print(f"Frames: {metrics.get('framesIn', 0)} in, {metrics.get('framesOut', 0)} out; "
                  f"marks acknowledged: {metrics.get('marksAcked', 0)}")
    rec = record.get("recording") or {}
    if rec:
        console.print(f"Recording (caller left, agent right): {rec.get('path')}  (GET {rec.get('url')})")
    console.print(f"Call record: GET /calls/{record.get('id', '')} (stored in ./gateway.db)")
    console.print(f"What the caller heard: {report.get('heardWav')}")
