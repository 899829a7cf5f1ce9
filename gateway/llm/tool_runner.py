"""Forwarding a realtime model's function calls to the tools' HTTPS endpoints.

The declarations (:class:`~gateway.llm.tools.ToolSpec`) and their wire shapes are pure, in
:mod:`gateway.llm.tools`; this module is the I/O: one :class:`ToolRunner` per call POSTs each
call's arguments with ``httpx`` and turns the answer, or any failure, into the output text the
model reads. A tool never ends the call. :meth:`ToolRunner.submit` runs a call in the
background, so the model bridge keeps reading its socket; :meth:`ToolRunner.aclose` cancels
calls still running when the call ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import orjson

from gateway.llm.tools import MAX_OUTPUT_CHARS, ToolCall, ToolSpec, parse_arguments
from gateway.netpolicy import OutboundPolicy, OutboundRefused
from gateway.outbound import outbound_client

__all__ = ["ToolRunner"]

log = logging.getLogger(__name__)


#: Most bytes of a tool's answer ever read (the output is cut to ``max_output_chars`` anyway).
MAX_BODY_BYTES = 1 << 20


def _error(message: str) -> str:
    return json.dumps({"error": message}, separators=(",", ":"))


def _refusal(exc: BaseException) -> OutboundRefused | None:
    """The :class:`OutboundRefused` in ``exc``'s cause chain (httpx wraps httpcore's error,
    which wraps the policy's refusal at resolution time), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OutboundRefused):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


class ToolRunner:
    """Forwards function calls to their HTTPS endpoints (one runner per call).

    Args:
        specs: the call's tools.
        client: an ``httpx.AsyncClient`` to use (the app's shared one, or tests'; not closed
            here); otherwise an :func:`~gateway.outbound.outbound_client` with ``policy`` is
            created on first use and closed by :meth:`aclose`.
        policy: the outbound policy of that own client (default: no allow-list).
        max_output_chars: longer outputs are cut (the model's context is precious).
    """

    def __init__(
        self,
        specs: Iterable[ToolSpec],
        *,
        client: httpx.AsyncClient | None = None,
        policy: OutboundPolicy | None = None,
        max_output_chars: int = MAX_OUTPUT_CHARS,
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._policy = policy or OutboundPolicy()
        self._own_client = client is None
        self._client = client
        self._max = max_output_chars
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"ToolRunner(tools={sorted(self._specs)!r})"

    @property
    def specs(self) -> list[ToolSpec]:
        """The declared tools, in declaration order."""
        return list(self._specs.values())

    async def call(self, call: ToolCall) -> str:
        """POST ``call``'s arguments to its tool's URL; return the output text for the model.

        The whole exchange (connect, request, every byte of the answer) has one deadline,
        ``spec.timeout_s``; at most :data:`MAX_BODY_BYTES` (or 4 bytes per output character,
        whichever is smaller) of the answer are read; JSON nested deeper than 1024 levels is
        passed on as text. Never raises for tool failures of any kind: they come back as
        ``{"error": …}`` JSON (cancellation still propagates).
        """
        spec = self._specs.get(call.name)
        if spec is None:
            return _error(f"unknown tool {call.name!r}")
        try:
            args = parse_arguments(call.arguments)
        except ValueError:
            return _error("arguments are not a JSON object")
        headers = {"X-Tool-Name": spec.name, "X-Tool-Call-Id": call.call_id, "Accept-Encoding": "identity"}
        if spec.bearer:
            headers["Authorization"] = f"Bearer {spec.bearer}"
        if self._client is None:
            self._client = outbound_client(self._policy)
        try:
            async with asyncio.timeout(spec.timeout_s):
                return await self._post(spec, args, headers)
        except (TimeoutError, httpx.TimeoutException):
            log.warning("tool %s timed out after %.1f s", spec.name, spec.timeout_s)
            return _error(f"tool {spec.name} timed out")
        except httpx.HTTPError as exc:
            refused = _refusal(exc)
            if refused is not None:  # gateway.outbound refused the target
                log.warning("tool %s refused by the outbound policy: %s", spec.name, refused)
            else:
                log.warning("tool %s failed: %s", spec.name, type(exc).__name__)
            return _error(f"tool {spec.name} is unreachable")
        except Exception as exc:  # noqa: BLE001 - a tool's answer must never break the call
            log.warning("tool %s failed: %s", spec.name, type(exc).__name__)
            return _error(f"tool {spec.name} failed")

    async def _post(self, spec: ToolSpec, args: Any, headers: dict[str, str]) -> str:
        """One POST, the answer streamed up to the byte cap; the output text."""
        assert self._client is not None
        cap = min(MAX_BODY_BYTES, 4 * self._max + 4)
        async with self._client.stream(
            "POST", spec.url, json=args, headers=headers, timeout=spec.timeout_s
        ) as resp:
            if resp.status_code >= 400:
                log.warning("tool %s answered HTTP %d", spec.name, resp.status_code)
                return _error(f"tool {spec.name} failed with HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    log.warning("tool %s answered more than %d bytes: cut", spec.name, cap)
                    del body[cap:]
                    break
            encoding = resp.charset_encoding or "utf-8"
        return self._output(bytes(body), encoding)

    def _output(self, body: bytes, encoding: str) -> str:
        """JSON re-serialised compactly (orjson: depth ≤ 1024 to read, ≤ 254 to write), else
        the text; cut to ``max_output_chars``."""
        try:
            text = orjson.dumps(orjson.loads(body)).decode()
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            try:
                text = body.decode(encoding, errors="replace")
            except LookupError:  # an unknown charset name
                text = body.decode("utf-8", errors="replace")
        if len(text) > self._max:
            text = text[: self._max]
        return text or "{}"

    def submit(self, call: ToolCall, then: Callable[[ToolCall, str], Awaitable[None]]) -> None:
        """Run ``call`` in a background task (``tool-<name>``), then ``await then(call, output)``.

        :meth:`aclose` cancels the calls still running.
        """
        task = asyncio.create_task(self._call_then(call, then), name=f"tool-{call.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_then(self, call: ToolCall, then: Callable[[ToolCall, str], Awaitable[None]]) -> None:
        """The call, then its output handed on whatever happened (the model's bookkeeping of
        running calls is cleared by ``then``): only cancellation (:meth:`aclose`) skips it."""
        try:
            output = await self.call(call)
        except Exception:  # noqa: BLE001 - call() does not raise; never leave the model waiting
            log.exception("tool %s: unexpected failure", call.name)
            output = _error(f"tool {call.name} failed")
        try:
            await then(call, output)
        except Exception:  # noqa: BLE001 - the bridge's send failed; events() sees the socket
            log.warning("tool %s: the output could not be delivered", call.name, exc_info=True)

    async def aclose(self) -> None:
        """Cancel submitted calls still running and close the HTTP client if this runner created
        it; idempotent."""
        for task in list(self._tasks):
            task.cancel()
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
