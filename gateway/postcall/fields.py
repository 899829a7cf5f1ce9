"""The answer a post-call model must give: its JSON schema, and the pydantic model checking it.

The answer is one JSON object::

    {"summary": "<plain-language summary>", "extracted": {"<field name>": <value or null>, ...}}

with every requested field present, typed by its spec (``calls.post_call_fields``, the
:meth:`gateway.api.after_call_schemas.FieldSpec.stored` dicts): ``string``, ``boolean``,
``number``, ``integer`` (``3.0`` is read as ``3``) or ``enum`` (one of its ``values``), or
``null`` when the conversation does not support a value. :func:`answer_schema` is the
``response_format`` JSON schema, written for OpenAI's strict structured outputs (every
property required, ``additionalProperties: false``, null as a second type);
:func:`parse_answer` validates the model's text with a pydantic model built from the same
specs. A field the answer leaves out is ``null``; names it adds are dropped.

Sources: OpenAI, "Structured Outputs" (supported schemas: strict mode needs all fields
required and ``additionalProperties: false``; a union with ``null`` for optional values).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

__all__ = ["Answer", "InvalidAnswer", "answer_schema", "answer_model", "parse_answer", "SCHEMA_NAME"]

#: The ``json_schema.name`` of the response format.
SCHEMA_NAME = "post_call_results"
#: Longest summary kept (characters); a longer one is cut at a word.
MAX_SUMMARY_CHARS = 4_000

_JSON_TYPES = {"string": "string", "boolean": "boolean", "number": "number", "integer": "integer", "enum": "string"}


class InvalidAnswer(ValueError):
    """The model's answer is not the JSON the schema asks for; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A validated answer: the summary and ``{field name: value or None}`` for every field."""

    summary: str
    extracted: dict[str, Any]


def _integral(value: Any) -> Any:
    """``3.0`` → ``3`` (JSON has one number type; a model may write an integer as a float)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _python_type(spec: Mapping[str, Any]) -> Any:
    kind = spec["type"]
    if kind == "string":
        return str
    if kind == "boolean":
        return bool
    if kind == "number":
        return float
    if kind == "integer":
        return Annotated[int, BeforeValidator(_integral)]
    if kind == "enum":
        return Literal[tuple(spec["values"])]  # type: ignore[misc]
    raise ValueError(f"unknown field type {kind!r}")


def _property(spec: Mapping[str, Any]) -> dict[str, Any]:
    kind = spec["type"]
    prop: dict[str, Any] = {"type": [_JSON_TYPES[kind], "null"]}
    if kind == "enum":
        prop["enum"] = [*spec["values"], None]
    text = str(spec.get("description") or "").strip()
    prop["description"] = (text + " " if text else "") + "null if the conversation does not say."
    return prop


def answer_schema(fields: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The strict JSON schema of the answer for ``fields`` (see the module docstring).

    Raises:
        ValueError / KeyError: a malformed field spec.
    """
    names = [str(f["name"]) for f in fields]
    extracted = {
        "type": "object",
        "properties": {str(f["name"]): _property(f) for f in fields},
        "required": names,
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "A plain-language summary of the call, 1-5 sentences."},
            "extracted": extracted,
        },
        "required": ["summary", "extracted"],
        "additionalProperties": False,
    }


def answer_model(fields: Sequence[Mapping[str, Any]]) -> type[BaseModel]:
    """A pydantic model of the answer for ``fields`` (strict types; fields default to None).

    Field names are aliases of internal attribute names, so a field called ``json`` or
    ``model_config`` cannot clash with pydantic's own attributes.
    """
    strict = ConfigDict(strict=True, extra="ignore", populate_by_name=False)
    attrs: dict[str, Any] = {
        f"f{i}": (_python_type(spec) | None, Field(None, alias=str(spec["name"]))) for i, spec in enumerate(fields)
    }
    extracted = create_model("Extracted", __config__=strict, **attrs)
    return create_model(
        "PostCallAnswer", __config__=strict,
        summary=(str, Field(min_length=1)), extracted=(extracted, ...),
    )  # fmt: skip


def _errors(exc: ValidationError, limit: int = 5) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors(include_url=False)]
    more = f" (and {len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def parse_answer(fields: Sequence[Mapping[str, Any]], text: str | None) -> Answer:
    """Validate the model's ``text`` against ``fields``.

    Returns:
        The :class:`Answer`, ``extracted`` keyed by every field's name (in spec order).

    Raises:
        InvalidAnswer: not JSON, not an object, no summary, or a value of the wrong type (the
            message names each bad path, e.g. ``extracted.tier: Input should be 'a' or 'b'``).
    """
    if not text or not text.strip():
        raise InvalidAnswer("the answer is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"the answer is not JSON ({exc.msg} at character {exc.pos})") from None
    try:
        answer = answer_model(fields).model_validate(data)
    except ValidationError as exc:
        raise InvalidAnswer(_errors(exc)) from None
    values = answer.extracted.model_dump(by_alias=True)  # type: ignore[attr-defined]
    summary = answer.summary.strip()  # type: ignore[attr-defined]
    if not summary:
        raise InvalidAnswer("summary: the summary is blank")
    if len(summary) > MAX_SUMMARY_CHARS:
        summary = summary[:MAX_SUMMARY_CHARS].rsplit(" ", 1)[0] + " …"
    return Answer(summary=summary, extracted={str(f["name"]): values[str(f["name"])] for f in fields})
