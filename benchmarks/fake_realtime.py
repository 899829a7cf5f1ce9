"""A cheap stand-in for a realtime speech model: the OpenAI Realtime (GA) wire protocol on loopback.

``gateway bench load`` points its calls at this server (``model = compat:bench``; the gateway
is started with ``GATEWAY_COMPAT_REALTIME_URL=ws://127.0.0.1:PORT/v1``) so that what is measured is the gateway's own cost, not a speech model's. It speaks just enough
of the protocol for :mod:`gateway.llm.openai_realtime`: ``session.update`` → ``session.updated``;
``input_audio_buffer.append`` (counted, never decoded); ``input_audio_buffer.commit`` →
``committed``, the user item and a transcript; ``conversation.item.create`` → ``added``;
``response.create`` → a reply of **pre-recorded speech** from ``../shared/audio/speech`` streamed
as ``response.output_audio.delta`` chunks (``chunk_ms`` of audio each, ``speed`` × real time,
as hosted models stream faster than real time), with transcript deltas, ``output_item.done``
and ``response.done``; ``response.cancel`` stops the reply (``response.done`` cancelled);
``conversation.item.truncate`` / ``delete`` are acknowledged.

Audio goes out in the session's ``audio.output.format``: ``audio/pcmu`` / ``audio/pcma``
(8 kHz G.711, when the gateway passes G.711 through) or ``audio/pcm`` at its ``rate``.

For the latency figures it records, per call, the monotonic time (``time.monotonic()``, the
same clock in every process on the machine) at which the first audio delta of each response
was sent. A call is named by the first ``[tag]`` in its session instructions.
``GET /stats`` (on its own HTTP port, ``stats_port`` of the ready line) returns
``{"responses": {tag: [{"id", "first_delta", "cancelled"}, ...]}, "connections": n, "appends": n}``
as JSON.

Run alone: ``python -m benchmarks.fake_realtime --port 8765``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import logging
import re
import time
import wave
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
from picows import WSListener, WSMsgType, WSTransport, WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

__all__ = ["FakeRealtimeModel", "Voice", "main"]

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
#: What the model "says": a short greeting, one long reply (long enough to be interrupted),
#: then short replies.
GREETINGS = ("cards-001", "cards-003", "cards-004")
LONG_REPLIES = ("librivox-0890", "librivox-0920", "librivox-0870")
SHORT_REPLIES = ("cards-002", "goforward", "librivox-0880", "cards-005")
_TAG = re.compile(r"\[([A-Za-z0-9_.:-]+)\]")
log = logging.getLogger("benchmarks.fake_realtime")


def _pick(tag: str, n: int) -> str:
    """Response ``n`` of call ``tag``: greeting, a long reply, then short ones (stable per tag)."""
    h = zlib.crc32(tag.encode())
    if n == 0:
        return GREETINGS[h % len(GREETINGS)]
    if n == 1:
        return LONG_REPLIES[h % len(LONG_REPLIES)]
    return SHORT_REPLIES[(h + n) % len(SHORT_REPLIES)]


def _load(name: str) -> tuple[np.ndarray, int, str]:
    path = SHARED_AUDIO / "speech" / f"{name}.wav"
    text_path = path.with_suffix(".txt")
    if not path.exists():  # no shared audio: a 2 s tone burst, so the server still works
        t = np.arange(32000) / 16000
        return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 16000, name
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
        rate = w.getframerate()
    text = text_path.read_text().strip() if text_path.exists() else name
    return pcm, rate, text


class Voice:
    """Pre-recorded replies, encoded once per output format and cut into ``chunk_ms`` deltas.

    ``recordings``: the replies by name, ``(int16 pcm, rate Hz, transcript)`` (default: the
    shared recordings of :data:`GREETINGS`, :data:`LONG_REPLIES` and :data:`SHORT_REPLIES`)."""

    def __init__(self, chunk_ms: int = 100, recordings: dict[str, tuple[np.ndarray, int, str]] | None = None) -> None:
        from gateway.codecs.transcode import encode
        from gateway.simulator.run import to_rate

        self.chunk_ms = chunk_ms
        self._raw = recordings if recordings is not None else {
            name: _load(name) for name in (*GREETINGS, *LONG_REPLIES, *SHORT_REPLIES)}
        self._encode = encode
        self._to_rate = to_rate
        self._cache: dict[tuple[str, str, int], tuple[list[str], str, int]] = {}

    def chunks(self, name: str, fmt: dict[str, Any]) -> tuple[list[str], str, int]:
        """(base64 deltas, transcript, ms of audio) of recording ``name`` in wire format ``fmt``."""
        kind = fmt.get("type", "audio/pcm")
        rate = 8000 if kind in ("audio/pcmu", "audio/pcma") else int(fmt.get("rate", 24000))
        key = (name, kind, rate)
        if key not in self._cache:
            pcm, src_rate, text = self._raw[name]
            pcm = self._to_rate(pcm, src_rate, rate)
            enc = {"audio/pcmu": "pcmu", "audio/pcma": "pcma"}.get(kind, "l16")
            data = self._encode(pcm, enc)
            step = (rate * self.chunk_ms // 1000) * (2 if enc == "l16" else 1)
            deltas = [base64.b64encode(data[i : i + step]).decode() for i in range(0, len(data), step)]
            self._cache[key] = (deltas, text, int(pcm.size * 1000 / rate))
        return self._cache[key]


@dataclass
class _Conn:
    transport: WSTransport
    tag: str = ""
    fmt: dict[str, Any] = field(default_factory=lambda: {"type": "audio/pcm", "rate": 24000})
    appended: int = 0
    responses: int = 0
    active: asyncio.Task | None = None
    cancel: asyncio.Future | None = None  # resolved by response.cancel (the active reply stops)


class _Listener(WSListener):
    """One model socket: the gateway's events in a callback, the replies written without awaiting."""

    def __init__(self, model: FakeRealtimeModel) -> None:
        self.model = model
        self.c: _Conn | None = None
        self._parts: list[bytes] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.c = _Conn(transport)
        self.model.connections += 1
        self.model._send(self.c, {"type": "session.created",
                                  "session": {"type": "realtime", "id": f"sess_{next(self.model._ids)}"}})

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        t = frame.msg_type
        if t is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if t not in (WSMsgType.TEXT, WSMsgType.CONTINUATION):
            return  # ping (answered by picows), pong; binary: not in this protocol
        if not frame.fin or self._parts:  # a fragmented message: join it
            self._parts.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            raw, self._parts = b"".join(self._parts), []
        else:
            raw = frame.get_payload_as_bytes()
        if raw.startswith(b'{"type":"input_audio_buffer.append"'):
            self.c.appended += len(raw)  # hot path: never decoded
            self.model.appends += 1
            return
        self.model._on(self.c, orjson.loads(raw))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.c is not None and self.c.active is not None:
            self.c.active.cancel()


class FakeRealtimeModel:
    """The server. ``async with FakeRealtimeModel(port=0) as m: m.base_url`` (``ws://…/v1``).

    WebSocket on picows (the gateway's model sockets; a callback per message, sends written
    without awaiting: the model shares the load driver's core, so it must cost little), and
    ``GET /stats`` on its own small HTTP port (:attr:`stats_port`).

    Args:
        host: loopback address to bind.
        port: TCP port (0: any free one).
        chunk_ms: audio per ``response.output_audio.delta``.
        speed: how much faster than real time replies stream (hosted models burst).
        voice: the replies (default: :class:`Voice` of the shared recordings).
        pick: ``pick(tag, n)`` names reply ``n`` of call ``tag`` in ``voice`` (default: a
            greeting, a long reply, then short ones).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, chunk_ms: int = 100, speed: float = 2.0,
                 voice: Voice | None = None, pick: Callable[[str, int], str] | None = None) -> None:
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError("the fake model serves loopback only")
        self.host, self.port = host, port
        self.stats_port = 0
        self.speed = speed
        self.voice = voice if voice is not None else Voice(chunk_ms)
        self.pick = pick or _pick
        self.responses: dict[str, list[dict[str, Any]]] = {}
        self.connections = 0
        self.appends = 0
        self._ids = itertools.count(1)
        self._server: Any = None
        self._http_server: Any = None

    @property
    def base_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        return {"responses": self.responses, "connections": self.connections, "appends": self.appends}

    async def __aenter__(self) -> FakeRealtimeModel:
        self._server = await ws_create_server(self._listener, self.host, self.port, max_frame_size=2**22,
                                              logger_name="fake_realtime")  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        self._http_server = await asyncio.start_server(self._http, self.host, 0)
        self.stats_port = self._http_server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in (self._server, self._http_server):
            server.close()
        for server in (self._server, self._http_server):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def serve_forever(self) -> None:
        async with self:
            print(json.dumps({"ready": True, "port": self.port, "stats_port": self.stats_port}), flush=True)
            await asyncio.Future()

    def _listener(self, request: Any) -> Any:
        path = request.path.split(b"?", 1)[0]
        if not path.endswith(b"/realtime"):
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(HTTPStatus.NOT_FOUND, b"no such endpoint\n"), None)
        return _Listener(self)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``GET /stats`` (JSON); anything else 404. One request per connection."""
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].split(b"?", 1)[0] if head.count(b" ") >= 2 else b""
            if path == b"/stats":
                status, body = b"200 OK", orjson.dumps(self.stats())
            else:
                status, body = b"404 Not Found", b"no such endpoint\n"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    # ------------------------------------------------------------------ protocol

    def _send(self, c: _Conn, event: dict[str, Any]) -> None:
        event["event_id"] = f"event_{next(self._ids)}"
        if not c.transport.is_disconnected:
            c.transport.send(WSMsgType.TEXT, orjson.dumps(event))

    def _on(self, c: _Conn, msg: dict[str, Any]) -> None:
        t = msg.get("type")
        if t == "session.update":
            session = msg.get("session") or {}
            m = _TAG.search(str(session.get("instructions") or ""))
            c.tag = m.group(1) if m else f"conn{self.connections}"
            fmt = ((session.get("audio") or {}).get("output") or {}).get("format")
            if fmt:
                c.fmt = fmt
            self._send(c, {"type": "session.updated", "session": session})
        elif t == "input_audio_buffer.append":
            c.appended += 1
            self.appends += 1
        elif t == "input_audio_buffer.commit":
            item_id = f"item_user_{next(self._ids)}"
            self._send(c, {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None})
            self._send(c, {"type": "conversation.item.added", "previous_item_id": None, "item": {
                "id": item_id, "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}})  # fmt: skip
            self._send(c, {"type": "conversation.item.input_audio_transcription.completed",
                           "item_id": item_id, "content_index": 0, "transcript": "caller turn"})  # fmt: skip
        elif t == "conversation.item.create":
            item = dict(msg.get("item") or {})
            item.setdefault("id", f"item_{next(self._ids)}")
            self._send(c, {"type": "conversation.item.added", "previous_item_id": None, "item": item})
        elif t == "response.create":
            if c.active is not None and not c.active.done():
                self._send(c, {"type": "error", "error": {"type": "invalid_request_error",
                               "code": "conversation_already_has_active_response",
                               "message": "Conversation already has an active response in progress",
                               "event_id": msg.get("event_id")}})  # fmt: skip
                return
            c.cancel = asyncio.get_running_loop().create_future()
            c.active = asyncio.get_running_loop().create_task(self._respond(c, c.cancel))
        elif t == "response.cancel":
            if c.active is None or c.active.done():
                self._send(c, {"type": "error", "error": {"type": "invalid_request_error",
                               "code": "response_cancel_not_active",
                               "message": "Cancellation failed: no active response found",
                               "event_id": msg.get("event_id")}})  # fmt: skip
            elif c.cancel is not None and not c.cancel.done():
                c.cancel.set_result(None)
        elif t == "conversation.item.truncate":
            self._send(c, {"type": "conversation.item.truncated", "item_id": msg.get("item_id"),
                           "content_index": 0, "audio_end_ms": msg.get("audio_end_ms")})  # fmt: skip
        elif t == "conversation.item.delete":
            self._send(c, {"type": "conversation.item.deleted", "item_id": msg.get("item_id")})

    async def _respond(self, c: _Conn, cancel: asyncio.Future) -> None:
        n = c.responses
        c.responses += 1
        name = self.pick(c.tag, n)
        deltas, text, _ = self.voice.chunks(name, c.fmt)
        rid, item_id = f"resp_{next(self._ids)}", f"item_{next(self._ids)}"
        record: dict[str, Any] = {"id": rid, "first_delta": None, "cancelled": False, "recording": name}
        self.responses.setdefault(c.tag, []).append(record)
        base = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        self._send(c, {"type": "response.created", "response": {"id": rid, "status": "in_progress", "output": []}})
        self._send(c, {"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
        words = text.split()
        loop = asyncio.get_running_loop()
        pace = self.voice.chunk_ms / 1000 / self.speed if self.speed > 0 else 0.0
        t0 = loop.time()
        status = "completed"
        sent_words = 0
        for i, delta in enumerate(deltas):
            if cancel.done():
                status = "cancelled"
                break
            if i == 0:
                record["first_delta"] = time.monotonic()
            self._send(c, {"type": "response.output_audio.delta", **base, "delta": delta})
            upto = len(words) * (i + 1) // len(deltas)
            if upto > sent_words:
                self._send(c, {"type": "response.output_audio_transcript.delta", **base,
                               "delta": " ".join(words[sent_words:upto]) + " "})  # fmt: skip
                sent_words = upto
            if pace:  # until the next chunk's time, or a cancel
                await asyncio.wait({cancel}, timeout=max(0.0, t0 + (i + 1) * pace - loop.time()))
        record["cancelled"] = status == "cancelled"
        spoken = " ".join(words[:sent_words]) if status == "cancelled" else text
        if status == "completed":
            self._send(c, {"type": "response.output_audio.done", **base})
            self._send(c, {"type": "response.output_audio_transcript.done", **base, "transcript": text})
        done_item = {**item, "status": "completed" if status == "completed" else "incomplete",
                     "content": [{"type": "output_audio", "transcript": spoken}]}  # fmt: skip
        self._send(c, {"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": done_item})
        self._send(c, {"type": "response.done", "response": {"id": rid, "status": status, "output": [done_item]}})


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.fake_realtime --port P``: serve until killed; prints one ready line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--chunk-ms", type=int, default=100)
    ap.add_argument("--speed", type=float, default=2.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = FakeRealtimeModel(host=args.host, port=args.port, chunk_ms=args.chunk_ms, speed=args.speed)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(model.serve_forever())
    except KeyboardInterrupt:
        pass


def _loop_factory():
    """uvloop when installed (as the gateway and the load driver: less loop overhead per message
    on the core this process shares with the driver), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
