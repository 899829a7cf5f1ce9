"""Responders: what the local agent says back to a recognised caller turn.

:class:`ChatCompletionsResponder` asks any OpenAI-compatible ``/chat/completions`` endpoint (a
local llama.cpp, Ollama or vLLM server, or a hosted one). :class:`EchoResponder` is a loopback
diagnostic: it repeats what it heard, which shows the whole media path works end to end
without any language model.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import httpx

from gateway.outbound import shared_ssl_context

__all__ = ["Responder", "EchoResponder", "ChatCompletionsResponder", "Message"]

log = logging.getLogger(__name__)

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


class Responder(Protocol):
    """Produces the agent's next line from the conversation so far."""

    name: str

    async def reply(self, history: list[Message]) -> str:
        """The assistant's reply to ``history`` (whose last message is the caller's)."""
        ...

    async def aclose(self) -> None: ...


class EchoResponder:
    """Loopback diagnostic: answers with what it heard. Not a conversational agent."""

    name = "echo (loopback diagnostic)"

    async def reply(self, history: list[Message]) -> str:
        heard = history[-1]["content"].strip() if history else ""
        if not heard:
            return "Sorry, I did not catch that. Could you say it again?"
        return f"I heard you say: {heard}."

    async def aclose(self) -> None:
        return None


class ChatCompletionsResponder:
    """Replies through an OpenAI-compatible chat-completions endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:11434/v1``; ``/chat/completions`` is
            appended.
        model: model name sent in the request.
        api_key: bearer token, if the server wants one (never logged).
        temperature: sampling temperature, 0–1.
        timeout_s: whole-request time limit (s).
        apology: what the agent says when the endpoint fails.
        client: a shared ``httpx.AsyncClient`` (the app's; not closed by :meth:`aclose`);
            default: one of its own, on the process's shared TLS context, closed by
            :meth:`aclose`. Key and time limit go with each request either way.
    """

    name = "chat-completions"

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str = "",
        temperature: float = 0.0,
        timeout_s: float = 20.0,
        apology: str = "Sorry, I am having trouble answering right now.",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._temperature = temperature
        self._apology = apology
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(verify=shared_ssl_context())

    async def reply(self, history: list[Message]) -> str:
        body = {"model": self._model, "messages": history, "temperature": self._temperature}
        try:
            async with asyncio.timeout(self._timeout_s):  # the whole request, not each read
                r = await self._client.post(
                    self._url, json=body, headers=self._headers, timeout=self._timeout_s
                )
            r.raise_for_status()
            text = r.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, TimeoutError, LookupError, TypeError, ValueError, RecursionError) as exc:
            log.warning("chat-completions request failed: %s", type(exc).__name__)
            return self._apology
        return str(text).strip() or self._apology

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
