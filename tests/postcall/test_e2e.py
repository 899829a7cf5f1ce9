"""End to end: an outbound call placed and hung up through the API (Twilio through the carrier
simulator, a callee speaking a real recording, the local agent) gets its summary and fields from
a fake chat-completions server on loopback, computed by the gateway's own post-call worker and
shown on ``GET /calls/{id}``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.config import Settings
from gateway.simulator.carrier_api import CarrierSimulator, ScriptBook, line_from_wav, person
from gateway.simulator.carrier_api.accounts import new_account, secret_refs
from gateway.simulator.demo import serve_in_background

from .fake_chat import FakeChat, answer

pytestmark = pytest.mark.slow

CALLEE, FROM = "+14155550121", "+14155550199"
FIELDS = [
    {"name": "new_day", "type": "string", "description": "The day the callee asks to move to"},
    {"name": "wants_to_move", "type": "boolean"},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def _gateway(tmp: Path, engines: Any, book: ScriptBook, chat: FakeChat) -> AsyncIterator[httpx.AsyncClient]:
    creds = new_account("twilio")
    refs, env = secret_refs("twilio", creds)
    with pytest.MonkeyPatch.context() as mp:
        for var, value in env.items():
            mp.setenv(var, value)
        sim = CarrierSimulator({"twilio": creds}, scripts=book)
        async with sim.serving() as api:
            port = _free_port()
            settings = Settings(
                _env_file=None, host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}",
                database_url=f"sqlite:///{tmp / 'gw.db'}", recordings_dir=tmp / "rec",
                carrier_api_urls={"twilio": api}, postcall_base_url=chat.base_url, postcall_model="m-1",
                postcall_poll_s=0.2, postcall_max_retries=0,
            )  # fmt: skip
            server, task, app = await serve_in_background(settings, engines=engines, warm_up=False)
            try:
                key, _ = await asyncio.to_thread(app.state.services.store.create_api_key, "test")
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key},
                                             timeout=10) as http:  # fmt: skip
                    r = await http.post("/carrier-accounts", json={"kind": "twilio", "name": "sim", "secretRefs": refs,
                                                                   "numbers": [FROM], "default": True})  # fmt: skip
                    assert r.status_code == 201, r.text
                    yield http
            finally:
                server.should_exit = True
                await asyncio.wait_for(task, 15)


async def _poll(http: httpx.AsyncClient, call_id: str, done: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rec = (await http.get(f"/calls/{call_id}")).json()
        if done(rec):
            return rec
        assert time.monotonic() < deadline, {k: rec.get(k) for k in ("status", "endReason", "transcript", "postCall")}
        await asyncio.sleep(0.1)


async def test_a_call_hung_up_through_the_api_gets_its_summary_and_fields(
    tmp_path: Path, local_engines: Any, shared_audio: Path
) -> None:
    ask = line_from_wav(shared_audio / "caller/reschedule.wav")  # "… could we move it to Thursday morning instead?"
    hold = (np.zeros(8000 * 20, dtype=np.int16), 8000)  # then stays on the line: the API hangs up
    book = ScriptBook({CALLEE: person(ask, hold, answer_pause_ms=2500, listen_timeout_s=30)})
    reply = answer("The callee asked to move the appointment to Thursday morning.", new_day="Thursday",
                   wants_to_move=True)  # fmt: skip
    with FakeChat([reply]) as chat:
        async with _gateway(tmp_path, local_engines, book, chat) as http:
            r = await http.post("/calls/outbound", json={
                "to": CALLEE, "systemPrompt": "You are a test agent.", "firstMessage": "Hello, this is the clinic.",
                "objective": "Confirm the appointment.", "fields": FIELDS,
            })  # fmt: skip
            assert r.status_code == 201, r.text
            call_id = r.json()["callId"]
            await _poll(http, call_id, lambda rec: rec["endedAt"] is not None or (  # the callee asked and
                len([t for t in rec["transcript"] if t["role"] == "agent"]) >= 2))  # got answers  # fmt: skip
            hung = await http.post(f"/calls/{call_id}/control", json={"action": "hangup"})
            assert hung.status_code == 202, hung.text
            rec = await _poll(http, call_id, lambda rec: rec["status"] in ("completed", "failed")
                              and rec.get("postCall", {}).get("status") in ("completed", "skipped", "failed"))  # fmt: skip
    assert rec["status"] == "completed" and rec["endReason"] == "api_hangup", rec
    assert rec["postCall"] == {"status": "completed", "error": None}
    assert rec["summary"] == "The callee asked to move the appointment to Thursday morning."
    assert rec["extracted"] == {"new_day": "Thursday", "wants_to_move": True}
    (seen,) = chat.requests
    assert seen.body["model"] == "m-1"
    schema = seen.body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["extracted"]["required"] == ["new_day", "wants_to_move"]
    prompt = seen.body["messages"][1]["content"]
    assert "Agent: Hello, this is the clinic." in prompt and "Caller: " in prompt
    assert "The call's objective: Confirm the appointment." in prompt
