"""A fake OpenAI-compatible chat-completions server: real HTTP on a loopback port.

:class:`FakeChat` serves ``POST /v1/chat/completions`` from a thread
(:class:`http.server.ThreadingHTTPServer`), records every request (path, headers, JSON body)
and answers each with the next scripted :class:`Reply` (the last one repeats): a JSON
answer as the assistant message's content, raw content, an HTTP error, a refusal, or a
delay before the answer. Errors carry ``retry-after-ms: 1`` so the SDK's retries wait 1 ms.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeChat", "Reply", "answer"]


@dataclass
class Reply:
    """One scripted reply: ``content`` (the assistant message's text), else ``status`` (an
    HTTP error with ``error`` as its message), or ``refusal``; after ``delay_s``."""

    content: str | None = None
    status: int = 200
    error: str = "boom"
    refusal: str | None = None
    delay_s: float = 0.0


def answer(summary: str, **extracted: Any) -> Reply:
    """A reply whose content is the JSON answer ``{"summary", "extracted"}``."""
    return Reply(json.dumps({"summary": summary, "extracted": extracted}))


@dataclass
class Seen:
    """One request the server got."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeChat:
    """See the module docstring. Use as a context manager; :attr:`base_url` is ``…/v1``."""

    replies: list[Reply] = field(default_factory=lambda: [answer("The caller said hello.")])
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeChat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"{}"))
                reply = fake._next(seen)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if self.path != "/v1/chat/completions":
                    reply = Reply(status=404, error=f"no route {self.path}")
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": reply.error, "type": "server_error"}})
                    return
                message = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
                self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                    "model": seen.body.get("model", "m"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })  # fmt: skip

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("retry-after-ms", "1")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its time limit)
                    pass

        return Handler
