"""``POST /calls/outbound``: its request and response bodies, and the pure helpers the route
uses (number parsing, variables, ``{{name}}`` substitution, the objective/context prompt
block, language and voice resolution).

The agent is **either** ``agentId`` (a stored agent) **or** the inline agent fields of
``/calls/inline`` (``systemPrompt`` required then); ``voice``, ``language`` and
``maxDuration`` are per-call settings allowed with either. Resolution (reported in the 201):

* ``language``: the request's, else the agent's, else :data:`DEFAULT_LANGUAGE`
  (``languageSource`` ``request`` | ``agent`` | ``default``);
* ``voice``: the request's, else the agent's, else the model backend's default
  (:data:`BACKEND_VOICES`); a backend with a closed voice list gets the name in its own
  spelling, and a name it does not have becomes its default (what its bridge would use);
* ``greeting``: ``firstMessage`` (then ``firstSpeaker`` is ``agent``), else the request's or
  agent's greeting, else ``""`` (the agent waits for the callee to speak).

Variables: ``{{name}}`` (spaces allowed inside the braces; names
``[A-Za-z_][A-Za-z0-9_]{0,63}``) in the system prompt, greeting / ``firstMessage``,
``objective``, ``context`` and the voicemail ``message`` is replaced by the variable's value,
in one pass (a value is never itself substituted). Anything else between braces is left as is.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from gateway.api.after_call_schemas import AfterCallFields
from gateway.api.schemas import WholeNumber, _AgentFields, _integral, _Request, _Response
from gateway.llm.base import AgentConfig
from gateway.llm.endpoints import parse_selector
from gateway.llm.gemini_protocol import DEFAULT_VOICE as GEMINI_DEFAULT_VOICE
from gateway.llm.gemini_protocol import GEMINI_VOICES
from gateway.llm.openai_backends import azure_backend, compat_backend, openai_backend, xai_backend

__all__ = [
    "OutboundCallCreate",
    "OutboundCallCreated",
    "VoicemailIn",
    "Resolved",
    "BACKEND_VOICES",
    "DEFAULT_LANGUAGE",
    "MAX_VARIABLES_B64",
    "INLINE_ONLY",
    "parse_number",
    "variables_b64_size",
    "substitute",
    "unknown_variables",
    "with_objective",
    "request_errors",
    "template_errors",
    "resolve",
]

#: Largest base64 of the variables' compact JSON (bytes).
MAX_VARIABLES_B64 = 26 * 1024
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: ``{{ name }}``: the only placeholder form (``{{ 9x }}`` or ``{{a.b}}`` is plain text).
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
#: The written form of ``to`` / ``from``: E.164 (``+``) or a national number; separators allowed.
NUMBER_INPUT = r"^\+?[(]?[0-9][0-9 ().-]{1,30}$"
DEFAULT_LANGUAGE = AgentConfig().language

#: Model backend → ``(default voice, the voices it accepts or None for any)``, read from the
#: bridges' own definitions: local has one voice (``AgentConfig.voice``); OpenAI and Azure
#: ``RealtimeBackend.default_voice`` over ``OPENAI_VOICES``; xAI ``Eve`` over ``XAI_VOICES``;
#: compat passes any name through (default ``marin`` when empty); Gemini ``Puck`` over
#: ``GEMINI_VOICES``. An unknown backend is treated as local.
BACKEND_VOICES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "local": (AgentConfig().voice, None),
    "openai": (openai_backend("m").default_voice, openai_backend("m").voices),
    "azure": (azure_backend("d", endpoint="https://r.openai.azure.com").default_voice,
              azure_backend("d", endpoint="https://r.openai.azure.com").voices),
    "xai": (xai_backend().default_voice, xai_backend().voices),
    "compat": (compat_backend("m", base_url="ws://h/v1").default_voice, None),
    "gemini": (GEMINI_DEFAULT_VOICE, GEMINI_VOICES),
}  # fmt: skip

#: Agent fields that only make sense for an inline agent: given with ``agentId`` they are a 422.
INLINE_ONLY: tuple[str, ...] = tuple(
    n for n in _AgentFields.model_fields if n not in ("voice", "language", "max_duration")
)
_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "no such country calling code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}
_LENGTH_ERRORS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "of a length the plan does not use",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "only dialable locally (area code missing)",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "of an unknown country calling code",
}


def parse_number(number: str, country: str | None) -> str:
    """``number`` in E.164: ``+`` and country code, or a national number of ``country``.

    Args:
        number: e.g. ``"+1 (415) 555-2671"``, or ``"(415) 555-2671"`` with ``country`` ``"US"``.
        country: ISO 3166-1 alpha-2 region of a national number (ignored when ``number``
            starts with ``+``).

    Raises:
        ValueError: unparseable, or not a valid number of its numbering plan
            (``phonenumbers.is_valid_number``); the message says why.
    """
    if not number.lstrip().startswith("+") and country is None:
        raise ValueError(
            f"{number!r} is a national number: give countryCode (ISO 3166-1 alpha-2), or write it "
            "in E.164 (+ and country code)"
        )
    try:
        parsed = phonenumbers.parse(number, country)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{number!r} cannot be parsed: {_PARSE_ERRORS.get(exc.error_type, str(exc))}") from None
    if not phonenumbers.is_valid_number(parsed):
        region = phonenumbers.region_code_for_number(parsed) or country or "its country"
        reason = phonenumbers.is_possible_number_with_reason(parsed)
        why = _LENGTH_ERRORS.get(reason, "not in a range the plan assigns")
        raise ValueError(f"{number!r} is not a valid number of {region}'s numbering plan: {why}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def variables_b64_size(variables: Mapping[str, str]) -> int:
    """Bytes of the base64 of ``variables`` as compact UTF-8 JSON (``{"a":"b"}``)."""
    raw = json.dumps(dict(variables), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return len(base64.b64encode(raw))


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with each ``{{name}}`` of ``variables`` replaced (one pass; unknown names kept)."""
    return PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def unknown_variables(text: str, variables: Mapping[str, str]) -> list[str]:
    """The ``{{name}}`` names ``text`` uses that ``variables`` lacks, first use first."""
    return list(dict.fromkeys(n for n in PLACEHOLDER.findall(text) if n not in variables))


def with_objective(prompt: str, objective: str, context: str) -> str:
    """``prompt`` with the call's objective and context appended, each in its own block::

        <prompt>

        <call_objective>
        <objective>
        </call_objective>

        <call_context>
        <context>
        </call_context>

    An empty objective or context adds no block; surrounding whitespace is stripped.
    """
    out = prompt.rstrip()
    for tag, text in (("call_objective", objective.strip()), ("call_context", context.strip())):
        if text:
            out += f"\n\n<{tag}>\n{text}\n</{tag}>"
    return out


#: ``maxDuration`` (s) when given: the constraint sits under the ``float`` → ``int`` step so the
#: schema of the optional field states it (``minimum`` / ``maximum``).
_MaxDuration = Annotated[int, Field(ge=60, le=7200), BeforeValidator(_integral)]


class VoicemailIn(_Request):
    """What to do when a machine answers (``voicemail``)."""

    detect: bool = Field(True, description="Run answering-machine detection on the callee's first seconds.")
    action: Literal["hangup", "leave_message"] = Field(
        "hangup", description="On a machine: hang up, or wait for the beep / end of greeting and say message."
    )
    message: str = Field("", max_length=2_000, description="What to leave (leave_message; {{variables}} allowed).")
    hold_greeting_ms: WholeNumber = Field(
        2000, ge=0, le=4000, description="How long the agent's first words wait for the verdict (ms)."
    )

    def policy(self, variables: Mapping[str, str]) -> dict[str, Any]:
        """``CallConfig.voicemail`` (snake_case, message substituted)."""
        return {"detect": self.detect, "action": self.action, "message": substitute(self.message, variables),
                "hold_greeting_ms": self.hold_greeting_ms}  # fmt: skip


class OutboundCallCreate(_AgentFields, AfterCallFields):
    """Body of ``POST /calls/outbound``: place a call through the tenant's carrier account."""

    country_code: Literal[tuple(sorted(phonenumbers.SUPPORTED_REGIONS))] | None = Field(  # type: ignore[valid-type]
        None, description="ISO 3166-1 alpha-2 region of a national to / from number, e.g. US."
    )
    to: str = Field(
        pattern=NUMBER_INPUT, description="Who to call: E.164 (+14155552671), or a national number with countryCode."
    )
    from_: str | None = Field(
        None, alias="from", pattern=NUMBER_INPUT,
        description="Caller ID: one of the account's numbers (default: its first).",
    )  # fmt: skip
    carrier_account_id: str | None = Field(
        None, min_length=1, max_length=64, description="The carrier account (default: the tenant's default account)."
    )
    agent_id: str | None = Field(
        None, min_length=1, max_length=64, description="A stored agent (or give systemPrompt …)."
    )
    system_prompt: str | None = Field(  # type: ignore[assignment]
        None, min_length=1, max_length=50_000, description="Inline agent: instructions."
    )
    voice: str | None = Field(  # type: ignore[assignment]
        None, min_length=1, max_length=100, description="Voice (default: the agent's, else the backend's)."
    )
    language: str | None = Field(  # type: ignore[assignment]
        None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", max_length=35,
        description=f"BCP-47 tag (default: the agent's, else {DEFAULT_LANGUAGE}).",
    )  # fmt: skip
    greeting: str | None = Field(  # type: ignore[assignment]
        None, max_length=2_000, description="Inline agent: greeting (firstMessage wins)."
    )
    max_duration: _MaxDuration | None = Field(  # type: ignore[assignment]
        None, description="Maximum call length (s); default the agent's, else 3000."
    )
    objective: str = Field(
        "", max_length=4_000, description="What the call should achieve (appended to the prompt)."
    )
    first_message: str | None = Field(
        None, min_length=1, max_length=2_000, description="The agent speaks first, saying this (replaces the greeting)."
    )
    context: str = Field("", max_length=20_000, description="Facts for the call (appended to the prompt).")
    variables: dict[str, str] = Field(
        default_factory=dict,
        description=f"{{{{name}}}} values (strings); base64 of their compact JSON at most {MAX_VARIABLES_B64} bytes.",
        json_schema_extra={"propertyNames": {"pattern": f"^{VAR_NAME.pattern}$"}},
    )
    voicemail: VoicemailIn = Field(default_factory=VoicemailIn)
    ring_timeout: WholeNumber = Field(30, ge=5, le=120, description="Seconds to ring before no_answer.")

    @field_validator("to", "from_")
    @classmethod
    def _number(cls, number: str | None, info: ValidationInfo) -> str | None:
        if number is None or "country_code" not in info.data:  # an invalid countryCode is its own error
            return number
        return parse_number(number, info.data["country_code"])


class OutboundCallCreated(_Response):
    """Response of ``POST /calls/outbound``."""

    call_id: str
    status: Literal["queued"]
    to: str = Field(description="E.164.")
    from_: str = Field(alias="from", description="E.164 caller ID.")
    carrier_account_id: str
    language: str
    language_source: Literal["request", "agent", "default"]
    voice: str


def _field(name: str) -> str:
    return OutboundCallCreate.model_fields[name].alias or name


def request_errors(body: OutboundCallCreate) -> list[dict[str, str]]:
    """Rules across fields of the body alone: agent xor inline fields, leave_message with a
    message, variable names and size, and every ``{{name}}`` of the body defined.

    Returns:
        ``[{"field": "<wire path>", "message": …}]`` (empty: valid).
    """
    errors: list[dict[str, str]] = []
    inline = [n for n in INLINE_ONLY if n in body.model_fields_set]
    if body.agent_id is not None and inline:
        names = ", ".join(_field(n) for n in inline)
        errors += [{"field": _field(n), "message": "not allowed with agentId (inline agent field)"} for n in inline]
        errors.append({"field": "agentId", "message": f"give agentId or the inline agent fields, not both ({names})"})
    elif body.agent_id is None and body.system_prompt is None:
        errors.append({"field": "agentId", "message": "give agentId or the inline agent fields (systemPrompt …)"})
        errors.append({"field": "systemPrompt", "message": "field required without agentId"})
    if body.voicemail.action == "leave_message" and not body.voicemail.message.strip():
        errors.append({"field": "voicemail.message", "message": "leave_message needs a non-empty message"})
    bad = [n for n in body.variables if not VAR_NAME.fullmatch(n)]
    errors += [{"field": f"variables.{n}", "message": "variable names are [A-Za-z_][A-Za-z0-9_]{0,63}"} for n in bad]
    size = variables_b64_size(body.variables)
    if size > MAX_VARIABLES_B64:
        message = f"too large: base64 of the JSON is {size} bytes, at most {MAX_VARIABLES_B64}"
        errors.append({"field": "variables", "message": message})
    texts = {
        "systemPrompt": body.system_prompt, "greeting": body.greeting, "firstMessage": body.first_message,
        "objective": body.objective, "context": body.context, "voicemail.message": body.voicemail.message,
    }  # fmt: skip
    errors += template_errors({k: v for k, v in texts.items() if v}, body.variables)
    return errors


def template_errors(texts: Mapping[str, str], variables: Mapping[str, str]) -> list[dict[str, str]]:
    """One error per field of ``texts`` (wire path → text) using an undefined ``{{name}}``."""
    out = []
    for where, text in texts.items():
        names = unknown_variables(text, variables)
        if names:
            listed = ", ".join("{{" + n + "}}" for n in names)
            out.append({"field": where, "message": f"uses {listed}, not defined in variables"})
    return out


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the call runs with besides the agent's fields."""

    language: str
    language_source: Literal["request", "agent", "default"]
    voice: str
    greeting: str
    first_speaker: Literal["agent", "user"]


def _backend_voice(model: str, wanted: str | None) -> str:
    default, known = BACKEND_VOICES.get(parse_selector(model).backend, BACKEND_VOICES["local"])
    if not wanted:
        return default
    if known is None:
        return wanted
    return {v.lower(): v for v in known}.get(wanted.strip().lower(), default)


def resolve(body: OutboundCallCreate, agent: Any | None) -> Resolved:
    """Language, voice, greeting and first speaker of the call (``agent``: an
    ``AgentRecord`` when ``agentId`` was given; variables not yet substituted)."""
    if body.language is not None:
        language, source = body.language, "request"
    elif agent is not None:
        language, source = agent.language, "agent"
    else:
        language, source = DEFAULT_LANGUAGE, "default"
    model = agent.model if agent is not None else body.model
    voice = _backend_voice(model, body.voice or (agent.voice if agent is not None else None))
    first_speaker = agent.first_speaker if agent is not None else body.first_speaker
    greeting = agent.greeting if agent is not None else (body.greeting or "")
    if body.first_message is not None:
        greeting, first_speaker = body.first_message, "agent"
    return Resolved(language, source, voice, greeting, first_speaker)  # type: ignore[arg-type]
