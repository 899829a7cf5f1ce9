"""The post-call model call: the operator's OpenAI-compatible chat-completions endpoint.

One request per call (``POST <GATEWAY_POSTCALL_BASE_URL>/chat/completions`` through the
``openai`` SDK's :class:`~openai.AsyncOpenAI`) with a strict ``json_schema`` response format
(:func:`gateway.postcall.fields.answer_schema`) and ``temperature`` 0. Bounds: each request
is cut off after ``GATEWAY_POSTCALL_TIMEOUT_S``; the SDK retries a failed one (connection
errors, 408/409/429/5xx, exponential backoff) up to ``GATEWAY_POSTCALL_MAX_RETRIES`` times;
an answer that does not validate is asked for once more, with what was wrong, and a second
invalid answer fails the results with that reason.

The endpoint is an operator setting (never from a request), so it is not put through the
outbound policy that request-supplied URLs get. The key is sent as ``Authorization: Bearer``
and never logged or stored in an error.

Sources: OpenAI API reference, "Create chat completion" (``response_format`` of type
``json_schema`` with ``name``, ``schema``, ``strict``; ``message.refusal``); openai-python
README (timeouts, ``max_retries``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import openai

from gateway.postcall.fields import SCHEMA_NAME, Answer, InvalidAnswer, answer_schema, parse_answer
from gateway.postcall.prompt import messages_for
from gateway.store.records import CallRecord

__all__ = ["ChatExtractor", "ExtractionFailed"]

log = logging.getLogger("gateway.postcall")

#: Longest error text kept from the endpoint (characters).
_MAX_ERROR = 300


class ExtractionFailed(Exception):
    """The endpoint gave no valid results; ``str()`` is the reason for ``post_call_error``."""


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


@dataclass
class ChatExtractor:
    """Summary and fields of ended calls from one chat-completions endpoint.

    Attributes:
        client: the SDK client (its base URL, key, time limit and retries set).
        model: the model name sent with each request.
        max_transcript_chars: the transcript is cut to about this many characters.
    """

    client: openai.AsyncOpenAI
    model: str
    max_transcript_chars: int = 60_000

    @classmethod
    def from_settings(cls, settings: Any) -> ChatExtractor | None:
        """The extractor the settings configure; ``None`` when ``postcall_base_url`` is empty."""
        if not settings.postcall_base_url:
            return None
        client = openai.AsyncOpenAI(
            base_url=settings.postcall_base_url,
            api_key=settings.postcall_api_key.get_secret_value() or "unused",  # local servers need none
            timeout=settings.postcall_timeout_s,
            max_retries=settings.postcall_max_retries,
        )
        return cls(client, settings.postcall_model, settings.postcall_max_transcript_chars)

    async def aclose(self) -> None:
        """Close the SDK client's connections."""
        await self.client.close()

    async def extract(self, call: CallRecord) -> Answer:
        """The summary and fields of ``call`` (it has a conversation).

        Raises:
            ExtractionFailed: the endpoint failed after its retries, refused, or answered
                invalid JSON twice (the message says which, with the endpoint's own words).
        """
        fields = call.post_call_fields or []
        messages: list[dict[str, str]] = messages_for(call, max_chars=self.max_transcript_chars)
        fmt = {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": answer_schema(fields), "strict": True}}
        problem = ""
        for attempt in (1, 2):
            text = await self._complete(messages, fmt)
            try:
                return parse_answer(fields, text)
            except InvalidAnswer as exc:
                problem = str(exc)
                log.info("call %s: post-call answer %d invalid: %s", call.id, attempt, problem)
            messages = [
                *messages,
                {"role": "assistant", "content": text or ""},
                {"role": "user", "content": f"That answer is invalid ({problem}). Answer again with only the "
                                            "JSON object the response schema describes."},
            ]  # fmt: skip
        raise ExtractionFailed(f"the chat endpoint's answer was invalid twice: {_short(problem)}")

    async def _complete(self, messages: list[dict[str, str]], fmt: dict[str, Any]) -> str | None:
        """One chat completion (with the SDK's retries); the answer's text."""
        try:
            resp = await self.client.chat.completions.create(
                model=self.model, messages=messages, response_format=fmt, temperature=0,  # type: ignore[arg-type]
            )  # fmt: skip
        except openai.APITimeoutError:
            raise ExtractionFailed(f"the chat endpoint did not answer within {self.client.timeout} s") from None
        except openai.APIConnectionError as exc:
            raise ExtractionFailed(f"the chat endpoint could not be reached: {_short(str(exc.__cause__ or exc))}") from None
        except openai.APIStatusError as exc:
            raise ExtractionFailed(f"the chat endpoint answered HTTP {exc.status_code}: {_short(_detail(exc))}") from None
        except openai.OpenAIError as exc:  # e.g. a body that is not a chat completion
            raise ExtractionFailed(f"the chat endpoint's response was unusable: {_short(str(exc))}") from None
        if not resp.choices:
            raise ExtractionFailed("the chat endpoint answered with no choices")
        message = resp.choices[0].message
        if getattr(message, "refusal", None):
            raise ExtractionFailed(f"the model refused: {_short(message.refusal or '')}")
        return message.content


def _detail(exc: openai.APIStatusError) -> str:
    """The error body's message, else its text."""
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        return json.dumps(body)[:_MAX_ERROR]
    return str(body or exc.message)
