"""``gateway demo --outbound``: two outbound calls through the carrier simulator, and how they went.

The gateway (local agent, SQLite, loopback) and the carrier simulator (:mod:`gateway.simulator.
carrier_api`) run in this process. A simulated Twilio account is registered with
``POST /carrier-accounts`` (credentials by ``GATEWAY_SECRET_*`` reference, set for this process
only), and ``POST /calls/outbound`` places two calls through it with voicemail detection on
(``leave_message``): one answered by a person ("Hello? This is Sam."), one by a voicemail box
(a greeting, then a 1 kHz beep). The real Twilio SDK places each call against the simulator,
whose callee opens the media stream in Twilio's dialect and sends signed status callbacks.
For each call the demo prints the detector's verdict and decision time, the final status, the
lifecycle with each transition's source, and what the agent said.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from gateway.config import Settings
from gateway.simulator.carrier_api import CarrierSimulator, ScriptBook, person, tone, voicemail
from gateway.simulator.carrier_api.accounts import new_account, secret_refs
from gateway.simulator.demo import serve_in_background
from gateway.simulator.run import caller_line

__all__ = ["run_outbound_demo", "PERSON", "VOICEMAIL", "FROM"]

# valid numbers of the 555-01xx block (phonenumbers refuses the fictional +1 555 area)
PERSON, VOICEMAIL, FROM = "+14155550101", "+14155550102", "+14155550199"
PERSON_SAYS = "Hello? This is Sam."
GREETING = ("Hi, you have reached Alex Morgan. I am not available to take your call right now. "
            "Please leave your name, your number and a short message after the tone, and I will call you back.")
MESSAGE = "Hi, this is the appointment desk calling about your visit tomorrow. Please call us back. Goodbye."
TERMINAL = {"completed", "failed", "no_answer", "busy", "declined", "voicemail", "canceled", "expired"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scripts() -> ScriptBook:
    """The two callees, their lines synthesised now with the bundled Piper voice."""
    sam = caller_line(None, PERSON_SAYS)
    greeting = caller_line(None, GREETING)
    beep = tone(1000.0, 500, greeting[1], dbfs=-12.0)
    book = ScriptBook()
    book.add(PERSON, person(sam, answer_pause_ms=400, listen_timeout_s=25))
    book.add(VOICEMAIL, voicemail(greeting, beep=beep, silence_ms=12000))
    return book


async def _wait_final(http: httpx.AsyncClient, call_id: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        record = (await http.get(f"/calls/{call_id}")).json()
        if record.get("status") in TERMINAL or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.2)


async def run_outbound_demo(console: Console, *, engines=None, workdir: Path | None = None) -> int:
    """Run the demo; returns a process exit code (0 when both calls ended as they should).

    Args:
        engines: the local agent's speech engines to use (default: the app's own pool).
        workdir: where the database and recordings go (default: ``./gateway.db``,
            ``./recordings``).
    """
    creds = new_account("twilio")
    refs, env = secret_refs("twilio", creds, prefix="DEMO")
    os.environ.update(env)  # this process only: the gateway reads credentials by reference
    try:
        return await _run(console, creds, refs, engines, workdir)
    finally:
        for var in env:
            os.environ.pop(var, None)


async def _run(console: Console, creds: dict, refs: dict, engines, workdir: Path | None) -> int:
    console.print("[bold]Outbound demo[/bold]: synthesising the callees' lines…")
    book = await asyncio.to_thread(_scripts)
    sim = CarrierSimulator({"twilio": creds}, scripts=book)
    async with sim.serving() as api_url:
        port = _free_port()
        where = {} if workdir is None else {"database_url": f"sqlite:///{workdir}/gateway.db",
                                            "recordings_dir": workdir / "recordings"}  # fmt: skip
        settings = Settings(host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                            carrier_api_urls={"twilio": api_url}, **where)  # fmt: skip
        server, task, app = await serve_in_background(settings, **({"engines": engines} if engines else {}))
        services = app.state.services
        try:
            if services.warm is not None:
                await services.warm
            key, _ = await asyncio.to_thread(services.store.create_api_key, "demo")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key},
                                         timeout=30) as http:  # fmt: skip
                r = await http.post("/carrier-accounts", json={
                    "kind": "twilio", "name": "demo (simulated Twilio)", "secretRefs": refs,
                    "numbers": [FROM], "default": True,
                })  # fmt: skip
                r.raise_for_status()
                records = await asyncio.gather(*(_place(console, http, to) for to in (PERSON, VOICEMAIL)))
        finally:
            server.should_exit = True
            await task
    ok = True
    for (label, expect), record in zip((("person", "completed"), ("voicemail", "voicemail")), records):
        _print(console, label, record)
        ok &= record.get("status") == expect
    return 0 if ok else 1


async def _place(console: Console, http: httpx.AsyncClient, to: str) -> dict:
    r = await http.post("/calls/outbound", json={
        "to": to,
        "systemPrompt": "You are the appointment desk's phone agent. Be brief.",
        "firstMessage": "Hello, this is the appointment desk calling about your visit tomorrow.",
        "objective": "Confirm tomorrow's appointment.",
        "voicemail": {"detect": True, "action": "leave_message", "message": MESSAGE, "holdGreetingMs": 2500},
        "ringTimeout": 20, "maxDuration": 120,
    })  # fmt: skip
    if r.status_code != 201:
        console.print(f"[red]POST /calls/outbound answered {r.status_code}: {r.text}[/red]")
        return {"status": "not_placed"}
    placed = r.json()
    console.print(f"Placed {placed['callId']} to {to} ({placed['status']}; language {placed['language']}, "
                  f"voice {placed['voice']})")  # fmt: skip
    return await _wait_final(http, placed["callId"])


def _print(console: Console, label: str, record: dict) -> None:
    vm = record.get("voicemail") or {}
    verdict = vm.get("verdict", "n/a")
    decided = f"{vm['decidedMs'] / 1000:.2f} s after answer" if vm.get("decidedMs") is not None else "n/a"
    table = Table(title=f"{label}: status {record.get('status')} ({record.get('endReason')}); "
                        f"verdict {verdict}, decided {decided}")  # fmt: skip
    table.add_column("who", style="bold")
    table.add_column("said")
    for turn in record.get("transcript", []):
        table.add_row("callee (recognised)" if turn["role"] == "user" else "agent", turn["text"])
    console.print(table)
    if vm.get("beepEndMs") is not None:
        console.print(f"  beep ended {vm['beepEndMs'] / 1000:.2f} s after answer; action: {vm.get('action')}")
    steps = [f"{t['to']} ({t['source']})" for t in record.get("transitions", [])]
    console.print("  lifecycle: " + " → ".join(steps))
