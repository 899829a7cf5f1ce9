"""Fixtures: a SQLite store with ended calls, and the fake chat-completions server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Store

from .fake_chat import FakeChat

FIELDS: list[dict[str, Any]] = [
    {"name": "callback_time", "type": "string", "description": "When the caller wants a call back"},
    {"name": "interested", "type": "boolean", "description": ""},
    {"name": "party_size", "type": "integer", "description": ""},
    {"name": "budget", "type": "number", "description": "In dollars"},
    {"name": "tier", "type": "enum", "description": "", "values": ["gold", "silver"]},
]
TRANSCRIPT = [
    {"role": "agent", "text": "Hello, this is Ada from Smile Dental.", "at_ms": 400},
    {"role": "user", "text": "Hi, I'd like a table, sorry, an appointment, for two on Friday.", "at_ms": 3100},
    {"role": "agent", "text": "Friday at ten works. Shall I book it?", "at_ms": 5200, "interrupted": True},
    {"role": "user", "text": "Yes please, call me back at noon.", "at_ms": 7000},
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    s.create_all()
    yield s
    s.close()


@pytest.fixture
def chat() -> Iterator[FakeChat]:
    with FakeChat() as fake:
        yield fake


def ended_call(store: Store, *, transcript: Sequence[dict[str, Any]] = TRANSCRIPT,
               fields: Sequence[dict[str, Any]] = FIELDS, status: str = "completed") -> str:
    """A call that ran and ended (``status``) with ``transcript``; its results pending."""
    call_id = store.create_call({"system_prompt": "x"}, "twilio", post_call_fields=fields,
                                direction="outbound", outbound={"objective": "Book a check-up"})[0].id  # fmt: skip
    if status in ("completed", "voicemail") or transcript:
        store.mark_call_started(call_id)
        store.finalise_call(call_id, status=status, end_reason="caller_hangup", duration_ms=8000,
                            transcript=transcript)  # fmt: skip
    else:
        store.finalise_call(call_id, status=status, end_reason=f"carrier_{status}", duration_ms=0)
    return call_id
