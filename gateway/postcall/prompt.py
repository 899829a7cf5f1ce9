"""What the post-call model is told: the instructions, the call's facts and its transcript.

The transcript goes in as plain lines, ``[mm:ss] Caller: …`` / ``[mm:ss] Agent: …`` (time
since the call started; an interrupted agent turn is marked ``(cut off)``), cut to a
character budget by dropping its middle (the opening and the close of a call carry most of
what a summary needs). A call with no turn of text (never answered, nobody spoke) has no
conversation: :func:`no_conversation_summary` says what happened from its status, with no
model call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.store.records import CallRecord

__all__ = ["has_conversation", "no_conversation_summary", "transcript_text", "messages_for", "SYSTEM_PROMPT"]

SYSTEM_PROMPT = (
    "You read the transcript of a phone call between an AI agent and a caller (the person on the "
    "other end, whoever placed the call) and report on it. Answer with one JSON object, exactly "
    "as the response schema says: 'summary', a plain-language summary of the call in 1 to 5 "
    "sentences (who wanted what, what was agreed or decided, what is left to do), and "
    "'extracted', one value per requested field. Use only what the conversation supports: when "
    "the transcript does not state or clearly imply a field's value, give null; never guess. "
    "Speech recognition may have misheard words: prefer the reading that fits the conversation."
)

_SPEAKERS = {"user": "Caller", "agent": "Agent"}
_NO_CONVERSATION = {
    "no_answer": "The call was not answered.",
    "busy": "The line was busy; the call did not connect.",
    "declined": "The call was declined.",
    "canceled": "The call was canceled before it connected.",
    "expired": "The call never connected: its media stream did not start in time.",
    "voicemail": "The call reached voicemail; nothing was said in it.",
    "completed": "The call connected, but nobody said anything.",
}


def has_conversation(call: CallRecord) -> bool:
    """Whether ``call`` has at least one transcript turn with words in it."""
    return any(t.text.strip() for t in call.turns)


def no_conversation_summary(call: CallRecord) -> str:
    """A one-sentence summary of a call that had no conversation, from its status and reason."""
    status = call.status.value
    if status == "failed":
        why = call.error_message or call.end_reason or "no reason recorded"
        return f"The call failed before any conversation took place ({why})."
    return _NO_CONVERSATION.get(status, f"The call ended ({status}) before any conversation took place.")


def _clock(ms: int) -> str:
    s = max(0, ms) // 1000
    return f"{s // 60:02d}:{s % 60:02d}"


def transcript_text(call: CallRecord, max_chars: int) -> str:
    """The call's turns as lines, at most about ``max_chars`` characters (middle dropped)."""
    lines = []
    for t in call.turns:
        text = " ".join(t.text.split())
        if not text:
            continue
        start = getattr(t, "start_ms", None)  # measured spans: newer records only
        at = start if start is not None else t.at_ms
        cut = " (cut off)" if t.interrupted else ""
        lines.append(f"[{_clock(at)}] {_SPEAKERS.get(t.role, t.role)}: {text}{cut}")
    text = "\n".join(lines)
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    head, tail = text[:half].rsplit("\n", 1)[0], text[-half:].split("\n", 1)[-1]
    return f"{head}\n[… {len(text) - len(head) - len(tail)} characters of the transcript left out …]\n{tail}"


def _field_lines(fields: Sequence[Mapping[str, Any]]) -> str:
    if not fields:
        return "No fields were requested: 'extracted' is an empty object."
    out = []
    for f in fields:
        kind = f["type"] if f["type"] != "enum" else "one of " + ", ".join(repr(v) for v in f["values"])
        desc = f" — {f['description']}" if f.get("description") else ""
        out.append(f"- {f['name']} ({kind}){desc}")
    return "Fields to extract (null when the conversation does not support a value):\n" + "\n".join(out)


def messages_for(call: CallRecord, *, max_chars: int) -> list[dict[str, str]]:
    """The chat messages (system, user) asking for ``call``'s summary and fields."""
    facts = [f"Direction: {call.direction}", f"Outcome: {call.status.value} ({call.end_reason or 'no reason'})"]
    if call.duration_ms:
        facts.append(f"Duration: {call.duration_ms / 1000:.0f} s")
    objective = (call.outbound or {}).get("objective")
    if objective:
        facts.append(f"The call's objective: {objective}")
    body = "\n".join(facts) + "\n\n" + _field_lines(call.post_call_fields or [])
    body += "\n\nTranscript:\n" + transcript_text(call, max_chars)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": body}]
