"""The chat endpoint call over real HTTP (a fake chat-completions server on loopback): what the
request carries (model, strict json_schema from the fields, the transcript, the key), the
validated answer, one retry of an invalid answer, and each failure's reason (generic: the
endpoint's own words only in the operator's log)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import Settings
from gateway.postcall import ChatExtractor, ExtractionFailed, answer_schema
from gateway.store import Store

from .conftest import FIELDS, ended_call
from .fake_chat import FakeChat, Reply, answer


def _settings(chat: FakeChat, **kw: Any) -> Settings:
    return Settings(_env_file=None, postcall_base_url=chat.base_url, postcall_model="summariser-1",
                    postcall_api_key="sk-test-123", postcall_timeout_s=kw.pop("timeout", 5.0), **kw)  # fmt: skip


@pytest.fixture
async def extractor(chat: FakeChat) -> AsyncIterator[ChatExtractor]:
    ex = ChatExtractor.from_settings(_settings(chat, postcall_max_retries=1))
    assert ex is not None
    yield ex
    await ex.aclose()


def test_no_base_url_no_extractor() -> None:
    assert ChatExtractor.from_settings(Settings(_env_file=None)) is None


async def test_the_request_carries_the_schema_transcript_and_key(store: Store, chat: FakeChat,
                                                                 extractor: ChatExtractor) -> None:  # fmt: skip
    chat.replies = [answer("They booked Friday at ten for two; call back at noon.", callback_time="noon",
                           interested=True, party_size=2.0, budget=None, tier=None)]  # fmt: skip
    result = await extractor.extract(store.get_call(ended_call(store)))
    assert result.summary == "They booked Friday at ten for two; call back at noon."
    assert result.extracted == {"callback_time": "noon", "interested": True, "party_size": 2, "budget": None,
                                "tier": None}  # fmt: skip
    (seen,) = chat.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-test-123"
    body = seen.body
    assert body["model"] == "summariser-1" and body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema == answer_schema(FIELDS)
    props = schema["properties"]["extracted"]["properties"]
    assert schema["properties"]["extracted"]["required"] == [f["name"] for f in FIELDS]
    assert props["tier"] == {"type": ["string", "null"], "enum": ["gold", "silver", None],
                             "description": "null if the conversation does not say."}  # fmt: skip
    assert props["party_size"]["type"] == ["integer", "null"] and props["budget"]["type"] == ["number", "null"]
    assert props["callback_time"]["description"].startswith("When the caller wants a call back")
    system, user = body["messages"]
    assert system["role"] == "system" and "null" in system["content"]
    assert "[00:03] Caller: Hi, I'd like a table" in user["content"]
    assert "[00:05] Agent: Friday at ten works. Shall I book it? (cut off)" in user["content"]
    assert "The call's objective: Book a check-up" in user["content"]
    assert "- tier (one of 'gold', 'silver')" in user["content"]


async def test_an_invalid_answer_is_asked_for_once_more_with_the_reason(store: Store, chat: FakeChat,
                                                                        extractor: ChatExtractor) -> None:  # fmt: skip
    chat.replies = [answer("ok", tier="platinum", interested="yes"), answer("Booked.", tier="gold")]
    result = await extractor.extract(store.get_call(ended_call(store)))
    assert result.extracted["tier"] == "gold" and result.extracted["interested"] is None  # left out: null
    first, second = chat.requests
    retry = second.body["messages"]
    assert retry[:2] == first.body["messages"]
    assert retry[2]["role"] == "assistant" and "platinum" in retry[2]["content"]
    assert "extracted.tier" in retry[3]["content"] and "extracted.interested" in retry[3]["content"]


@pytest.mark.parametrize(
    ("replies", "says", "requests"),
    [
        ([Reply("not json")], "answer was invalid twice: the answer is not JSON", 2),
        ([Reply(json.dumps({"summary": "", "extracted": {}}))], "summary", 2),
        ([Reply(status=500, error="overloaded")], "the chat endpoint answered HTTP 500", 2),  # retried once
        ([Reply(refusal="I can't help with that")], "the model refused: I can't help with that", 1),
    ],
)
async def test_failures_say_why(store: Store, chat: FakeChat, extractor: ChatExtractor,
                                replies: list[Reply], says: str, requests: int) -> None:  # fmt: skip
    chat.replies = replies
    with pytest.raises(ExtractionFailed) as err:
        await extractor.extract(store.get_call(ended_call(store)))
    assert says in str(err.value) and "sk-test" not in str(err.value)
    assert len(chat.requests) == requests


async def test_the_endpoints_error_text_is_logged_not_stored(store: Store, chat: FakeChat, extractor: ChatExtractor,
                                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """OpenAI's 401 body echoes a masked fragment of the key: the tenant-visible reason is the
    status alone, the body goes to the operator's log with the call's id."""
    chat.replies = [Reply(status=401, error="Incorrect API key provided: sk-test-***123.")]
    call_id = ended_call(store)
    with caplog.at_level(logging.WARNING, logger="gateway.postcall"), pytest.raises(ExtractionFailed) as err:
        await extractor.extract(store.get_call(call_id))
    assert str(err.value) == "the chat endpoint answered HTTP 401" and len(chat.requests) == 1  # not retried
    logged = [r.getMessage() for r in caplog.records]
    assert any(call_id in m and "HTTP 401" in m and "Incorrect API key provided" in m for m in logged), logged


async def test_a_slow_endpoint_is_cut_off_by_the_time_limit(store: Store, chat: FakeChat) -> None:
    chat.replies = [Reply(delay_s=1.0, content="{}")]
    ex = ChatExtractor.from_settings(_settings(chat, timeout=0.2, postcall_max_retries=0))
    try:
        with pytest.raises(ExtractionFailed, match="did not answer within 0.2 s"):
            await ex.extract(store.get_call(ended_call(store)))
    finally:
        await ex.aclose()


async def test_an_unreachable_endpoint_says_so(store: Store) -> None:
    with FakeChat() as gone:
        url = gone.base_url
    s = Settings(_env_file=None, postcall_base_url=url, postcall_max_retries=0)
    ex = ChatExtractor.from_settings(s)
    try:
        with pytest.raises(ExtractionFailed, match=r"^the chat endpoint could not be reached \((\w+)\)$"):
            await ex.extract(store.get_call(ended_call(store)))
    finally:
        await ex.aclose()


async def test_a_long_transcript_is_cut_in_the_middle(store: Store, chat: FakeChat) -> None:
    turns = [{"role": "user" if i % 2 else "agent", "text": f"turn {i} " + "word " * 40, "at_ms": i * 1000}
             for i in range(400)]  # fmt: skip
    ex = ChatExtractor.from_settings(_settings(chat, postcall_max_transcript_chars=5_000))
    try:
        await ex.extract(store.get_call(ended_call(store, transcript=turns, fields=[])))
    finally:
        await ex.aclose()
    text = chat.requests[0].body["messages"][1]["content"]
    transcript = text.split("Transcript:\n", 1)[1]
    assert len(transcript) < 5_200 and "characters of the transcript left out" in transcript
    assert "turn 0 " in transcript and "turn 399 " in transcript and "turn 200 " not in transcript
    assert "No fields were requested" in text
