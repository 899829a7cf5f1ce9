"""Function tools for realtime models: declarations and their wire shapes (pure).

An agent declares tools in :attr:`gateway.llm.base.AgentConfig.tools`, one dict each::

    {"name": "book_slot",                      # required, [A-Za-z0-9_-]{1,64}
     "description": "Book an appointment slot",
     "parameters": {"type": "object", "properties": {...}},   # JSON schema
     "url": "https://tools.example.com/book",  # required: where the arguments are POSTed
     "timeout_s": 8,                           # optional, default 10, at most 30
     "secret": "booking_token"}                # optional: name of a key in AgentConfig.secrets,
                                               # sent as ``Authorization: Bearer <value>``

The OpenAI shapes ``{"type": "function", "name": …}`` and ``{"type": "function", "function":
{…}, "url": …}`` are accepted too. When the model calls a tool,
:class:`gateway.llm.tool_runner.ToolRunner` (the only part that does I/O) POSTs the call's
arguments (a JSON object) to ``url`` with headers ``X-Tool-Name`` and ``X-Tool-Call-Id``
and returns the response body (JSON re-serialised compactly, or text) as the output the model
reads. Any failure (timeout, connection error, HTTP status ≥ 400, bad arguments) becomes an
``{"error": …}`` JSON output, so the model can tell the caller; a tool never ends the call.

Tool URLs must not reach the gateway's own network: :class:`gateway.netpolicy.OutboundPolicy`
refuses private, loopback, link-local and reserved targets unless the operator's allow-list
(``GATEWAY_OUTBOUND_ALLOW``) names them, and requires ``https://`` (``http://`` only to an
allow-listed target). :func:`parse_tools` applies the static part of that check when given a
policy (agent creation: a 422); the runner's HTTP client
(:func:`gateway.outbound.outbound_client`) re-checks every resolved address at call time.
Without a policy :func:`parse_tools` checks only the URL's shape (``http(s)://host``). Tool
secrets never appear in ``repr``, logs or outputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.netpolicy import OutboundPolicy, OutboundRefused

__all__ = [
    "ToolSpec",
    "ToolCall",
    "ToolConfigError",
    "parse_tools",
    "openai_tool",
    "gemini_function_declaration",
    "parse_arguments",
]

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 30.0
MAX_OUTPUT_CHARS = 16_000
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolConfigError(ValueError):
    """A tool declaration is malformed (missing name or URL, bad scheme, unknown secret)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One declared tool.

    Attributes:
        name: function name the model calls.
        description: what the tool does (shown to the model).
        parameters: JSON schema of the arguments object.
        url: endpoint the arguments are POSTed to.
        timeout_s: whole-request time limit (s).
        bearer: resolved secret sent as a bearer token, or ``""``; never in ``repr``.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    bearer: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call requested by the model.

    Attributes:
        call_id: the model's id for this call (OpenAI ``call_id``, Gemini ``id``).
        name: function name.
        arguments: the arguments as the model produced them (JSON text or an object).
    """

    call_id: str
    name: str
    arguments: str | dict[str, Any]


def _check_url(url: str, name: str, policy: OutboundPolicy | None) -> str:
    if policy is not None:
        try:
            policy.check_static(url)
        except OutboundRefused as exc:
            raise ToolConfigError(f"tool {name!r}: {exc}") from None
        return url
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("https", "http") and bool(parts.hostname)
    except ValueError:
        ok = False
    if ok:
        return url
    raise ToolConfigError(f"tool {name!r}: url must be https://")


def parse_tools(
    tools: Iterable[Mapping[str, Any]],
    secrets: Mapping[str, str] | None = None,
    *,
    policy: OutboundPolicy | None = None,
) -> list[ToolSpec]:
    """Normalise tool declarations into :class:`ToolSpec` objects.

    Args:
        tools: declarations as described in the module docstring.
        secrets: the call's secrets, for ``secret`` references.
        policy: the operator's outbound policy; when given, each URL must pass
            :meth:`~gateway.netpolicy.OutboundPolicy.check_static` (scheme, literal addresses).

    Returns:
        One spec per declaration, in order.

    Raises:
        ToolConfigError: a declaration lacks a valid name or URL, its URL is refused by
            ``policy``, or it names an unknown secret.
    """
    secrets = secrets or {}
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for raw in tools:
        decl: Mapping[str, Any] = raw
        if isinstance(raw.get("function"), Mapping):  # chat-completions shape
            decl = {**raw["function"], **{k: v for k, v in raw.items() if k != "function"}}
        name = str(decl.get("name", ""))
        if not _NAME.match(name):
            raise ToolConfigError(f"tool name {name!r} must match [A-Za-z0-9_-]{{1,64}}")
        if name in seen:
            raise ToolConfigError(f"tool {name!r} is declared twice")
        seen.add(name)
        url = decl.get("url")
        if not isinstance(url, str) or not url:
            raise ToolConfigError(f"tool {name!r} has no url to forward calls to")
        params = decl.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise ToolConfigError(f"tool {name!r}: parameters must be a JSON schema object")
        try:
            timeout = float(decl.get("timeout_s", DEFAULT_TIMEOUT_S))
        except (TypeError, ValueError):
            raise ToolConfigError(f"tool {name!r}: timeout_s must be a number") from None
        timeout = min(max(timeout, 0.1), MAX_TIMEOUT_S)
        bearer = ""
        ref = decl.get("secret")
        if ref:
            if ref not in secrets:
                raise ToolConfigError(f"tool {name!r}: secret {ref!r} is not among the secrets")
            bearer = secrets[ref]
        specs.append(
            ToolSpec(
                name=name,
                description=str(decl.get("description", "")),
                parameters=dict(params),
                url=_check_url(url, name, policy),
                timeout_s=timeout,
                bearer=bearer,
            )
        )
    return specs


def openai_tool(spec: ToolSpec) -> dict[str, Any]:
    """The OpenAI Realtime ``session.tools[]`` entry for ``spec`` (type ``function``)."""
    return {
        "type": "function",
        "name": spec.name,
        "description": spec.description,
        "parameters": spec.parameters,
    }


def gemini_function_declaration(spec: ToolSpec) -> dict[str, Any]:
    """The Gemini ``functionDeclarations[]`` entry (JSON schema in ``parametersJsonSchema``)."""
    return {
        "name": spec.name,
        "description": spec.description,
        "parametersJsonSchema": spec.parameters,
    }


def parse_arguments(arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """The arguments object of a call.

    Raises:
        ValueError: the arguments are not a JSON object.
    """
    if isinstance(arguments, Mapping):
        return dict(arguments)
    value = json.loads(arguments or "{}")
    if not isinstance(value, dict):
        raise ValueError("arguments are not a JSON object")
    return value
