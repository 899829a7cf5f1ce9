"""The OpenAPI 3.1 document of the REST API, built from the pydantic models.

Schemas come from :func:`pydantic.json_schema.models_json_schema` (JSON Schema 2020-12, the
dialect OpenAPI 3.1 uses) with wire (camelCase) names; paths, parameters, responses and the
``X-API-Key`` security scheme are written out here. Keep :data:`ROUTES` in
``gateway.api.routes`` and this file in step (a test checks every route is documented).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.api.auth import API_KEY_HEADER
from gateway.api.schemas import (
    AgentCreate,
    AgentOut,
    CallCreate,
    CallCreated,
    CallOut,
    ErrorResponse,
    HealthOut,
    InlineCallCreate,
)

__all__ = ["build_openapi"]

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (AgentCreate, "validation"),
    (CallCreate, "validation"),
    (InlineCallCreate, "validation"),
    (AgentOut, "serialization"),
    (CallCreated, "serialization"),
    (CallOut, "serialization"),
    (ErrorResponse, "serialization"),
    (HealthOut, "serialization"),
]


def _version() -> str:
    try:
        return metadata.version("gateway")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_openapi(*, title: str = "Realtime media gateway", version: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-ready dict)."""
    refs, top = models_json_schema(
        _MODELS, by_alias=True, ref_template="#/components/schemas/{model}"
    )
    schemas = top.get("$defs", {})

    def ref(model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> dict[str, Any]:
        return dict(refs[(model, mode)])

    def json_content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    def ok(description: str, model: type[BaseModel]) -> dict[str, Any]:
        return {"description": description, "content": json_content(ref(model))}

    def err(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/responses/{name}"}

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": json_content(ref(model, "validation"))}

    def path_id(name: str, description: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "description": description,
                "schema": {"type": "string"}}  # fmt: skip

    body_errors = {
        "400": err("InvalidJson"),
        "401": err("Unauthorized"),
        "413": err("PayloadTooLarge"),
        "415": err("UnsupportedMediaType"),
        "422": err("ValidationError"),
    }
    new_call_errors = {**body_errors, "503": err("AtCapacity")}
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness check",
                "tags": ["meta"],
                "security": [],
                "responses": {"200": ok("The gateway is up.", HealthOut)},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": json_content({"type": "object"}),
                    }
                },
            }
        },
        "/agents": {
            "post": {
                "operationId": "createAgent",
                "summary": "Create an agent",
                "tags": ["agents"],
                "requestBody": body(AgentCreate),
                "responses": {
                    "201": {
                        **ok("The agent.", AgentOut),
                        "headers": {
                            "Location": {"description": "/agents/{agentId}",
                                         "schema": {"type": "string"}}  # fmt: skip
                        },
                    },
                    **body_errors,
                },
            }
        },
        "/agents/{agentId}": {
            "get": {
                "operationId": "getAgent",
                "summary": "Get an agent",
                "tags": ["agents"],
                "parameters": [path_id("agentId", "Agent id (agt_…).")],
                "responses": {
                    "200": ok("The agent.", AgentOut),
                    "401": err("Unauthorized"),
                    "404": err("NotFound"),
                },
            }
        },
        "/calls/create": {
            "post": {
                "operationId": "createCall",
                "summary": "Create a call running a stored agent",
                "description": "Returns a one-time stream URL for the carrier and, for carriers "
                "that use one, the instruction document (TwiML …) that points the carrier at it.",
                "tags": ["calls"],
                "requestBody": body(CallCreate),
                "responses": {
                    "201": ok("The call was created (status queued).", CallCreated),
                    **new_call_errors,
                    "404": err("NotFound"),
                },
            }
        },
        "/calls/inline": {
            "post": {
                "operationId": "createInlineCall",
                "summary": "Create a call with its agent configuration inline",
                "tags": ["calls"],
                "requestBody": body(InlineCallCreate),
                "responses": {
                    "201": ok("The call was created (status queued).", CallCreated),
                    **new_call_errors,
                },
            }
        },
        "/calls/{callId}": {
            "get": {
                "operationId": "getCall",
                "summary": "Get a call: status, outcome, transcript, events",
                "tags": ["calls"],
                "parameters": [path_id("callId", "Call id (call_…).")],
                "responses": {
                    "200": ok("The call.", CallOut),
                    "401": err("Unauthorized"),
                    "404": err("NotFound"),
                },
            }
        },
        "/calls/{callId}/recording": {
            "get": {
                "operationId": "getCallRecording",
                "summary": "Download a call's recording",
                "description": "Two-channel 16-bit PCM WAV: left the caller, right the agent. "
                "Served once the call's recording.status is completed: 404 while it is still "
                "recording, when recording failed, or when the call was not recorded.",
                "tags": ["calls"],
                "parameters": [path_id("callId", "Call id (call_…).")],
                "responses": {
                    "200": {
                        "description": "The WAV file.",
                        "content": {
                            "audio/wav": {
                                "schema": {"type": "string", "contentMediaType": "audio/wav"}
                            }
                        },
                    },
                    "401": err("Unauthorized"),
                    "404": err("NotFound"),
                },
            }
        },
    }

    def error_resp(description: str) -> dict[str, Any]:
        return {"description": description, "content": json_content(ref(ErrorResponse))}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version or _version(),
            "description": "Create calls for your own carrier account and read their records. "
            f"Every operation except /health and /openapi.json needs the {API_KEY_HEADER} header.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"ApiKeyAuth": []}],
        "tags": [
            {"name": "agents", "description": "Reusable agent configurations."},
            {"name": "calls", "description": "Calls, their stream URLs and records."},
            {"name": "meta", "description": "Health and this document."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            },
            "responses": {
                "InvalidJson": error_resp("The body is not valid JSON (code invalid_json)."),
                "Unauthorized": error_resp("Missing or invalid API key (code unauthorized)."),
                "NotFound": error_resp("No such resource (code not_found)."),
                "PayloadTooLarge": error_resp("Body over 1 MiB (code payload_too_large)."),
                "UnsupportedMediaType": error_resp(
                    "The body is not sent as Content-Type: application/json (UTF-8) "
                    "(code unsupported_media_type)."
                ),
                "AtCapacity": {
                    **error_resp(
                        "GATEWAY_MAX_CALLS calls are live; retry later (code unavailable)."
                    ),
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before retrying.",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    },
                },
                "ValidationError": error_resp(
                    "The body failed validation (code validation_error); fields lists each "
                    "invalid field by its dotted path."
                ),
            },
        },
    }
