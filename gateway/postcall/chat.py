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

A failure's reason (:class:`ExtractionFailed`, stored as the call's ``postCall.error``, which
its tenant reads) is generic: "the chat endpoint answered HTTP 401", "… did not answer within
30 s", "… could not be reached (ConnectError)", or the invalid answer's field-level reason.
The endpoint's own words (an error body may echo part of the operator's key, a connection
error names the operator's host) go only to the operator's log (``gateway.postcall``,
WARNING, with the call's id).

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

#: Longest error text kept from the endpoint (characters): the invalid answer's reason and
#: a refusal in ``post_call_error``, the endpoint's error body in the log.
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
                invalid JSON twice (the message says which in generic words, the invalid
                answer's field-level reason; the endpoint's error text is only logged).
        """
        fields = call.post_call_fields or []
        messages: list[dict[str, str]] = messages_for(call, max_chars=self.max_transcript_chars)
        fmt = {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": answer_schema(fields), "strict": True}}
        problem = ""
        for attempt in (1, 2):
            text = await self._complete(messages, fmt, call.id)
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

    async def _complete(self, messages: list[dict[str, str]], fmt: dict[str, Any], call_id: str) -> str | None:
        """One chat completion (with the SDK's retries); the answer's text. A failure is
        logged with the endpoint's words and raised with a generic reason."""
        try:
            resp = await self.client.chat.completions.create(
                model=self.model, messages=messages, response_format=fmt, temperature=0,  # type: ignore[arg-type]
            )  # fmt: skip
        except openai.APITimeoutError:
            raise ExtractionFailed(f"the chat endpoint did not answer within {self.client.timeout} s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            log.warning("call %s: post-call chat endpoint unreachable: %s", call_id, _short(str(cause)))
            raise ExtractionFailed(f"the chat endpoint could not be reached ({type(cause).__name__})") from None
        except openai.APIStatusError as exc:
            log.warning("call %s: post-call chat endpoint answered HTTP %d: %s", call_id, exc.status_code,
                        _short(_detail(exc)))  # fmt: skip
            raise ExtractionFailed(f"the chat endpoint answered HTTP {exc.status_code}") from None
        except openai.OpenAIError as exc:  # e.g. a body that is not a chat completion
            log.warning("call %s: post-call chat endpoint's response unusable: %s", call_id, _short(str(exc)))
            raise ExtractionFailed(f"the chat endpoint's response was unusable ({type(exc).__name__})") from None
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
