"""The OpenAPI 3.1 document FastAPI generates from the routes: structure, references, security,
and agreement with the routes."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute

from gateway.api import ROUTERS, create_api
from gateway.config import Settings
from gateway.store import Store


def _app():
    return create_api(Store("sqlite://"), Settings(_env_file=None), instruction_document=lambda *a, **k: None)


def build_openapi() -> dict:
    """The document the API serves at /openapi.json (generated from its routes)."""
    return _app().openapi()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_document_shape() -> None:
    doc = build_openapi()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    scheme = doc["components"]["securitySchemes"]["ApiKeyAuth"]
    assert {k: scheme[k] for k in ("type", "in", "name")} == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
    }  # fmt: skip
    assert scheme["description"]
    assert doc["security"] == [{"ApiKeyAuth": []}]
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []


def test_every_ref_resolves() -> None:
    doc = build_openapi()
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert _resolve(doc, ref) is not None


def test_request_bodies_use_wire_names() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    body_ref = doc["paths"]["/agents"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    agent = _resolve(doc, body_ref)
    props = agent["properties"]
    assert set(agent["required"]) == {"name", "systemPrompt", "voice", "language", "greeting"}
    assert props["temperature"]["minimum"] == 0 and props["temperature"]["maximum"] == 1
    assert props["maxDuration"]["minimum"] == 60 and props["maxDuration"]["maximum"] == 7200
    assert props["inactivityTimeout"]["minimum"] == 10 and props["inactivityTimeout"]["maximum"] == 300
    assert props["firstSpeaker"]["enum"] == ["agent", "user"]
    assert agent["additionalProperties"] is False
    inline = schemas["InlineCallCreate"]["properties"]
    assert set(inline["connectionType"]["enum"]) == {"twilio", "telnyx", "plivo", "vonage", "exotel", "raw", "webrtc"}
    created = schemas["CallCreated"]["properties"]
    assert {"callId", "streamUrl", "streamUrlExpiresAt", "connectionType", "instructions"} <= set(created)
    assert "from" in schemas["CallOut"]["properties"]
    assert "fields" in schemas["ErrorBody"]["properties"]


def _response(doc: dict, op: dict, status: str) -> dict:
    """An operation's response object (resolved if it is a reference)."""
    resp = op["responses"][status]
    return _resolve(doc, resp["$ref"]) if "$ref" in resp else resp


async def test_the_served_document_is_the_generated_one() -> None:
    import httpx

    app = _app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/openapi.json")
    assert r.status_code == 200 and r.json() == app.openapi()
    assert "/docs" not in app.openapi()["paths"]


def test_every_route_is_documented(tmp_path: Any) -> None:
    routes = [r for router in ROUTERS for r in router.routes]  # the routers have no prefix
    doc = build_openapi()
    documented = {
        (re.sub(r"\{(\w+)\}", "{}", path), method.upper())
        for path, ops in doc["paths"].items()
        for method in ops
    }
    served = {
        (re.sub(r"\{(\w+)\}", "{}", r.path), m)
        for r in routes
        if isinstance(r, APIRoute)
        for m in (r.methods or ())
        if m != "HEAD"
    }
    assert served == documented
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["operationId"] and op["responses"]
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"\{(\w+)\}", path))
            assert {p["in"] for p in op.get("parameters", [])} <= {"path", "query"}, path
            if op.get("security") != []:
                assert "401" in op["responses"]
            for status, resp in op["responses"].items():  # every error is in the API's shape
                if status[0] in "45":
                    schema = _response(doc, op, status)["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_json_body_operations_document_415_and_call_creation_503() -> None:
    doc = build_openapi()
    bodies = {(p, m) for p, ops in doc["paths"].items() for m, op in ops.items() if "requestBody" in op}
    assert bodies == {("/agents", "post"), ("/calls/create", "post"), ("/calls/inline", "post"),
                      ("/calls/outbound", "post"), ("/calls/{callId}/control", "post"),
                      ("/carrier-accounts", "post"), ("/webhook-endpoints", "post")}  # fmt: skip
    for path, method in bodies:
        op = doc["paths"][path][method]
        assert list(op["requestBody"]["content"]) == ["application/json"]
        for status in ("400", "401", "413", "415", "422"):
            assert _response(doc, op, status)["content"]["application/json"]
    for path in ("/calls/create", "/calls/inline"):
        unavailable = _response(doc, doc["paths"][path]["post"], "503")
        assert unavailable["headers"]["Retry-After"]["required"] is True
    outbound = _response(doc, doc["paths"]["/calls/outbound"]["post"], "503")  # also: outbound not enabled
    assert "Retry-After" in outbound["headers"] and not outbound["headers"]["Retry-After"].get("required")
    assert "503" not in doc["paths"]["/agents"]["post"]["responses"]
    assert "503" not in doc["paths"]["/carrier-accounts"]["post"]["responses"]


def test_secret_refs_schema_states_what_the_validator_accepts() -> None:
    from gateway.api.schemas import SECRET_NAME, SECRET_VAR

    schemas = build_openapi()["components"]["schemas"]
    for model in ("AgentCreate", "InlineCallCreate"):
        refs = schemas[model]["properties"]["secretRefs"]
        assert refs["propertyNames"] == {"pattern": f"^{SECRET_NAME.pattern}$"}
        assert refs["additionalProperties"] == {"type": "string", "pattern": f"^{SECRET_VAR.pattern}$"}
        assert refs["maxProperties"] == 32



def test_tool_url_schema_states_the_form_the_validator_accepts() -> None:
    from gateway.api.schemas import TOOL_URL

    url = build_openapi()["components"]["schemas"]["ToolSpec"]["properties"]["url"]
    assert url["pattern"] == f"^{TOOL_URL.pattern}$"
    ecma_like = re.compile(url["pattern"])  # explicit ranges: Python reads it as ECMA-262 does
    for ok in ("https://tools.example.com/book?x=1#y", "HTTP://127.0.0.1:9000", "https://[fd00::1]/a"):
        assert ecma_like.search(ok) and TOOL_URL.fullmatch(ok)
    for bad in ("ftp://x", "https://u:p@x", "https://x/a b", "https://x/\x1c", "https://", "x"):
        assert not ecma_like.search(bad) and not TOOL_URL.fullmatch(bad)


def test_model_selector_schema_states_the_form_the_api_accepts() -> None:
    from gateway.llm.endpoints import SelectorError, parse_selector

    pattern = re.compile(build_openapi()["components"]["schemas"]["AgentCreate"]["properties"]["model"]["pattern"])
    for model in ("local", "openai:gpt-realtime", "compat:qwen@gpu1", "a:b:c", "x:@gpu.1", "compat:m@ws://h/v1",
                  "x:m@", "x:m@g@h", "x:m@/etc"):  # fmt: skip
        try:
            parse_selector(model)
            accepted = True
        except SelectorError:
            accepted = False
        assert bool(pattern.search(model)) == accepted, model


def test_carrier_account_schema_states_kinds_credential_names_and_number_form() -> None:
    from gateway.api.carrier_schemas import NUMBER_FORM
    from gateway.api.schemas import SECRET_VAR
    from gateway.store import CREDENTIALS

    doc = build_openapi()
    create = doc["components"]["schemas"]["CarrierAccountCreate"]
    props = create["properties"]
    assert set(create["required"]) == {"kind", "name", "secretRefs", "numbers"}
    assert props["kind"]["enum"] == ["twilio", "telnyx", "plivo", "vonage"] == list(CREDENTIALS)
    names = set(props["secretRefs"]["propertyNames"]["enum"])
    assert names == {n for spec in CREDENTIALS.values() for n in spec.names}
    assert props["secretRefs"]["additionalProperties"]["pattern"] == f"^{SECRET_VAR.pattern}$"
    for kind, spec in CREDENTIALS.items():
        assert f"{kind}: {', '.join(spec.required)}" in props["secretRefs"]["description"]
    assert props["numbers"]["items"]["pattern"] == NUMBER_FORM and props["numbers"]["minItems"] == 1
    ops = doc["paths"]["/carrier-accounts/{accountId}"]
    assert set(ops) == {"get", "delete"} and set(ops["delete"]["responses"]) == {"204", "401", "404"}
    assert "headers" in doc["paths"]["/carrier-accounts"]["post"]["responses"]["201"]
