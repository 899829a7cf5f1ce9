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

import httpx

from gateway.llm.tools import MAX_OUTPUT_CHARS, ToolCall, ToolSpec, parse_arguments
from gateway.netpolicy import OutboundRefused

__all__ = ["ToolRunner"]

log = logging.getLogger(__name__)


def _error(message: str) -> str:
    return json.dumps({"error": message}, separators=(",", ":"))


class ToolRunner:
    """Forwards function calls to their HTTPS endpoints (one runner per call).

    Args:
        specs: the call's tools.
        client: an ``httpx.AsyncClient`` to use (tests); one is created otherwise and closed
            by :meth:`aclose`.
        max_output_chars: longer outputs are cut (the model's context is precious).
    """

    def __init__(
        self,
        specs: Iterable[ToolSpec],
        *,
        client: httpx.AsyncClient | None = None,
        max_output_chars: int = MAX_OUTPUT_CHARS,
    ) -> None:
        self._specs = {s.name: s for s in specs}
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

        Never raises for tool failures: they come back as ``{"error": …}`` JSON.
        """
        spec = self._specs.get(call.name)
        if spec is None:
            return _error(f"unknown tool {call.name!r}")
        try:
            args = parse_arguments(call.arguments)
        except ValueError:
            return _error("arguments are not a JSON object")
        headers = {"X-Tool-Name": spec.name, "X-Tool-Call-Id": call.call_id}
        if spec.bearer:
            headers["Authorization"] = f"Bearer {spec.bearer}"
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        try:
            resp = await self._client.post(
                spec.url, json=args, headers=headers, timeout=spec.timeout_s
            )
        except httpx.TimeoutException:
            log.warning("tool %s timed out after %.1f s", spec.name, spec.timeout_s)
            return _error(f"tool {spec.name} timed out")
        except httpx.HTTPError as exc:
            if isinstance(exc.__cause__, OutboundRefused):  # gateway.outbound refused the target
                log.warning("tool %s refused by the outbound policy: %s", spec.name, exc.__cause__)
            else:
                log.warning("tool %s failed: %s", spec.name, type(exc).__name__)
            return _error(f"tool {spec.name} is unreachable")
        if resp.status_code >= 400:
            log.warning("tool %s answered HTTP %d", spec.name, resp.status_code)
            return _error(f"tool {spec.name} failed with HTTP {resp.status_code}")
        text = resp.text
        try:
            text = json.dumps(resp.json(), separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            pass
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
        await then(call, await self.call(call))

    async def aclose(self) -> None:
        """Cancel submitted calls still running and close the HTTP client if this runner created
        it; idempotent."""
        for task in list(self._tasks):
            task.cancel()
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
