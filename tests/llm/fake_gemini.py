"""A loopback server speaking the Gemini Live ``BidiGenerateContent`` wire protocol.

A real ``websockets`` server on 127.0.0.1 that checks the handshake (path, then the
``x-goog-api-key`` after ``setup`` as Google does), records every client message, and answers
with scripted turns whose audio is real recorded speech from ``../shared/audio`` streamed as
``inlineData`` parts. It keeps the server-side state a bridge must stay in step with: the
resumption handles and the caller audio each handle's state contains.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.llm.fake_common import _Recorder, speech, transcript_of

GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@dataclass
class _LiveSession:
    """Server-side session state: what a resumption handle restores."""

    audio: bytearray = field(default_factory=bytearray)
    messages: int = 0


class FakeLiveServer(_Recorder):
    """A Gemini Live ``BidiGenerateContent`` server on loopback.

    Args:
        api_key: the key ``x-goog-api-key`` must carry; a wrong key gets a 1008 close after
            ``setup`` as Google does ("API key not valid").
        replies: recordings the model speaks for successive turns (greeting first).
        user_transcripts: input transcriptions of successive caller turns.
        chunk_ms / pace_s: audio per ``inlineData`` part and pause between parts.
        handle_after_turn: issue a ``sessionResumptionUpdate`` after every ``turnComplete``.
        handle_with_input: defer those updates (and issue one after an ``interrupted`` turn
            too) until right after the next caller input message is processed, as a server
            that cuts its resumable state between two input messages: no caller input is then
            in flight when the handle is taken, so a resumption can be checked byte for byte
            while a caller streams audio without pause (the end-to-end tests do).
    """

    def __init__(
        self,
        *,
        api_key: str = "test",
        replies: list[str] | None = None,
        user_transcripts: list[str] | None = None,
        chunk_ms: int = 100,
        pace_s: float = 0.0,
        handle_after_turn: bool = True,
        tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
        reject_status: int | None = None,
        handle_with_input: bool = False,
    ) -> None:
        super().__init__()
        self.handle_with_input = handle_with_input
        self._handle_due = False
        self.api_key = api_key
        self.reject_status = reject_status
        self.replies = list(replies or [])
        self.user_transcripts = list(user_transcripts or [])
        self.chunk_ms = chunk_ms
        self.pace_s = pace_s
        self.handle_after_turn = handle_after_turn
        self.tool_calls = list(tool_calls or [])
        self.setups: list[dict[str, Any]] = []
        self.greetings = 0
        self.tool_responses: list[dict[str, Any]] = []
        self.handles: dict[str, bytes] = {}  # handle -> caller audio its state holds
        self.session = _LiveSession()
        self.turn_audio: dict[int, int] = {}  # turn number -> bytes of audio sent
        self.turn_text: dict[int, str] = {}
        self.connections = 0
        self._speaking: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._turns = 0

    def _cancel_tasks(self) -> None:
        if self._speaking:
            self._speaking.cancel()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{GEMINI_PATH}"

    def _check(self, connection: ServerConnection, request: Any) -> Any:
        self._record_handshake(request)
        if urlsplit(request.path).path != GEMINI_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.reject_status:
            return connection.respond(HTTPStatus(self.reject_status), "rejected\n")
        return None

    async def push(self, msg: dict[str, Any]) -> None:
        await self._send(msg, json.dumps(msg).encode())  # Google sends binary frames

    async def go_away(self, time_left: str = "5s") -> None:
        await self.push({"goAway": {"timeLeft": time_left}})

    async def issue_handle(self) -> str:
        handle = f"handle-{next(self._ids)}"
        self.handles[handle] = bytes(self.session.audio)
        await self.push({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
        return handle

    async def _handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        try:
            setup = json.loads(await conn.recv())
            self.received.append(setup)
            self.setups.append(setup)
            headers = {k.lower(): v for k, v in conn.request.headers.raw_items()}
            if headers.get("x-goog-api-key") != self.api_key:
                await conn.close(1008, "API key not valid. Please pass a valid API key.")
                return
            handle = (setup.get("setup", {}).get("sessionResumption") or {}).get("handle")
            if handle:
                if handle not in self.handles:
                    await conn.close(1008, "Invalid session resumption handle")
                    return
                self.session = _LiveSession(bytearray(self.handles[handle]))
            else:
                self.session = _LiveSession()
            if self._conn is not None and self._conn is not conn:
                await self._conn.close()  # one live connection per session
            self._conn = conn
            await self.push({"setupComplete": {}})
            await self._receive(conn)
        except ConnectionClosed:
            pass
        finally:
            if self._conn is conn:
                self._cancel_tasks()
                self._conn = None
            await self._notify()

    async def _on(self, msg: dict[str, Any]) -> None:
        self.session.messages += 1
        if "clientContent" in msg:
            self.greetings += 1
            self._start_turn()
        elif "toolResponse" in msg:
            self.tool_responses.append(msg["toolResponse"])
            self._start_turn()
        elif "realtimeInput" in msg:
            ri = msg["realtimeInput"]
            if "audio" in ri:
                self.session.audio += base64.b64decode(ri["audio"]["data"])
            if "activityStart" in ri and self._speaking and not self._speaking.done():
                self._speaking.cancel()
                await self.push({"serverContent": {"interrupted": True}})
                if self.handle_after_turn and self.handle_with_input:
                    self._handle_due = True
            if "activityEnd" in ri:
                if self.user_transcripts:
                    await self.push({"serverContent": {"inputTranscription": {"text": self.user_transcripts.pop(0)}}})
                if self.tool_calls:
                    name, args = self.tool_calls.pop(0)
                    await self.push({"toolCall": {"functionCalls": [{"id": f"fc-{next(self._ids)}", "name": name, "args": args}]}})
                else:
                    self._start_turn()
            if self._handle_due:
                self._handle_due = False
                await self.issue_handle()

    def _start_turn(self) -> None:
        recording = self.replies.pop(0) if self.replies else "speech/cards-001"
        self._turns += 1
        self._speaking = asyncio.create_task(self._speak(self._turns, recording))

    async def _speak(self, turn: int, recording: str) -> None:
        pcm = speech(recording, 24000).tobytes()
        words = transcript_of(recording).split()
        step = self.chunk_ms * 48
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        self.turn_audio[turn] = 0
        self.turn_text[turn] = " ".join(words)
        sent = 0
        for n, chunk in enumerate(chunks, 1):
            part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(chunk).decode()}}
            await self.push({"serverContent": {"modelTurn": {"parts": [part]}}})
            self.turn_audio[turn] += len(chunk)
            upto = len(words) * n // len(chunks)
            if upto > sent:
                text = " ".join(words[sent:upto]) + " "
                await self.push({"serverContent": {"outputTranscription": {"text": text}}})
                sent = upto
            await asyncio.sleep(self.pace_s)
        await self.push({"serverContent": {"generationComplete": True}})
        await self.push({"serverContent": {"turnComplete": True}})
        if self.handle_after_turn and self.handle_with_input:
            self._handle_due = True
        elif self.handle_after_turn:
            await self.issue_handle()
