"""REST API request validation: field-level 422s, malformed JSON, unknown fields, size."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from gateway.api import MAX_BODY_BYTES

AGENT = {
    "name": "Front desk",
    "systemPrompt": "You answer the phone.",
    "voice": "joe",
    "language": "en-US",
    "greeting": "Hello!",
}
INLINE = {k: v for k, v in AGENT.items() if k != "name"}


def _fields(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["message"]
    return {f["field"]: f["message"] for f in err["fields"]}


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("temperature 1.5", {"temperature": 1.5}, "temperature"),
    ("temperature negative", {"temperature": -0.1}, "temperature"),
    ("temperature string", {"temperature": "0.5"}, "temperature"),
    ("maxDuration 30", {"maxDuration": 30}, "maxDuration"),
    ("maxDuration 7201", {"maxDuration": 7201}, "maxDuration"),
    ("inactivityTimeout 5", {"inactivityTimeout": 5}, "inactivityTimeout"),
    ("inactivityTimeout 301", {"inactivityTimeout": 301}, "inactivityTimeout"),
    ("inactivityAction", {"inactivityAction": "shout"}, "inactivityAction"),
    ("firstSpeaker bot", {"firstSpeaker": "bot"}, "firstSpeaker"),
    ("turnMode", {"turnMode": "psychic"}, "turnMode"),
    ("bargeInMode", {"bargeInMode": "sometimes"}, "bargeInMode"),
    ("bargeInCommitMs 10", {"bargeInCommitMs": 10}, "bargeInCommitMs"),
    ("bargeInCommitMs 6000", {"bargeInCommitMs": 6000}, "bargeInCommitMs"),
    ("bargeInCommitMs string", {"bargeInCommitMs": "400"}, "bargeInCommitMs"),
    ("interruptible string", {"interruptible": "yes"}, "interruptible"),
    ("recordingEnabled int", {"recordingEnabled": 1}, "recordingEnabled"),
    ("language", {"language": "english please"}, "language"),
    ("empty systemPrompt", {"systemPrompt": ""}, "systemPrompt"),
    ("unknown field", {"temprature": 0.5}, "temprature"),
    ("snake-case typo of a known field stays strict", {"max_durationx": 60}, "max_durationx"),
    ("tool name", {"tools": [{"name": "bad name", "url": "https://x.example"}]}, "tools.0.name"),
    ("tool without url", {"tools": [{"name": "ok"}]}, "tools.0.url"),
    ("tool unknown field", {"tools": [{"name": "ok", "url": "https://x.example", "x": 1}]}, "tools.0.x"),
    ("tool plain http", {"tools": [{"name": "ok", "url": "http://x.example"}]}, "tools"),
    ("tool url not http(s)", {"tools": [{"name": "ok", "url": "ftp://x.example"}]}, "tools.0.url"),
    ("tool url with a password", {"tools": [{"name": "ok", "url": "https://u:p@x.example/"}]}, "tools.0.url"),
    ("tool url with a space", {"tools": [{"name": "ok", "url": "https://x.example/a b"}]}, "tools.0.url"),
    ("tool declared twice",
     {"tools": [{"name": "ok", "url": "https://x.example"}, {"name": "ok", "url": "https://y.example"}]},
     "tools"),
    ("tools not a list", {"tools": {"name": "ok"}}, "tools"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "patch", "field"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("path", ["/agents", "/calls/inline"])
async def test_field_level_422(client: httpx.AsyncClient, path: str, label: str, patch: dict, field: str) -> None:
    base = AGENT if path == "/agents" else INLINE
    fields = _fields(await client.post(path, json={**base, **patch}))
    assert field in fields, fields
    assert len(fields) == 1, fields


@pytest.mark.parametrize("missing", ["systemPrompt", "voice", "language", "greeting"])
@pytest.mark.parametrize("path", ["/agents", "/calls/inline"])
async def test_missing_required_field(client: httpx.AsyncClient, path: str, missing: str) -> None:
    base = AGENT if path == "/agents" else INLINE
    body = {k: v for k, v in base.items() if k != missing}
    fields = _fields(await client.post(path, json=body))
    assert fields == {missing: "field required"}


async def test_unknown_field_message(client: httpx.AsyncClient) -> None:
    fields = _fields(await client.post("/agents", json={**AGENT, "colour": "blue"}))
    assert fields == {"colour": "unknown field"}


async def test_several_errors_are_all_reported(client: httpx.AsyncClient) -> None:
    r = await client.post("/agents", json={**AGENT, "temperature": 2, "maxDuration": 30, "firstSpeaker": "bot"})
    fields = _fields(r)
    assert set(fields) == {"temperature", "maxDuration", "firstSpeaker"}
    assert "less than or equal to 1" in fields["temperature"]
    assert "greater than or equal to 60" in fields["maxDuration"]
    assert "'agent' or 'user'" in fields["firstSpeaker"]
    assert "3 fields" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "agentId"), ({"agentId": ""}, "agentId"), ({"agentId": "agt_x", "connectionType": "skype"},
     "connectionType"), ({"agentId": "agt_x", "extra": 1}, "extra"), ({"agentId": 5}, "agentId")],
)  # fmt: skip
async def test_create_call_validation(client: httpx.AsyncClient, body: dict, field: str) -> None:
    assert field in _fields(await client.post("/calls/create", json=body))


async def test_inline_connection_type_validated(client: httpx.AsyncClient) -> None:
    assert "connectionType" in _fields(await client.post("/calls/inline", json={**INLINE, "connectionType": "sip"}))


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"name": "x",}', b"\xff\xfe"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post("/agents", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_json" and "not valid JSON" in err["message"]


@pytest.mark.parametrize("raw", [b"[]", b"42", b'"agent"', b"null"])
async def test_non_object_body_is_422(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post("/agents", content=raw, headers={"Content-Type": "application/json"})
    assert _fields(r) == {"body": "must be a JSON object"}


async def test_body_too_large_is_413(client: httpx.AsyncClient) -> None:
    big = {**AGENT, "systemPrompt": "x" * (MAX_BODY_BYTES + 1)}
    r = await client.post("/agents", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


async def test_auth_is_checked_before_the_body(anon: httpx.AsyncClient) -> None:
    r = await anon.post("/agents", content=b"{broken")
    assert r.status_code == 401


async def test_boundaries_are_accepted(client: httpx.AsyncClient) -> None:
    for patch in ({"temperature": 0}, {"temperature": 1}, {"maxDuration": 60}, {"maxDuration": 7200},
                  {"inactivityTimeout": 10}, {"inactivityTimeout": 300}, {"greeting": ""}):  # fmt: skip
        r = await client.post("/agents", json={**AGENT, **patch})
        assert r.status_code == 201, (patch, r.text)


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/jsonx", "application/json-patch+json", "application/json; charset=latin-1", ""],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/agents", "/calls/inline", "/calls/create"])
async def test_a_body_not_sent_as_json_is_415(client: httpx.AsyncClient, path: str, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = await client.post(path, content=orjson.dumps(AGENT), headers=headers)
    assert r.status_code == 415, r.text
    assert r.json() == {"error": {"code": "unsupported_media_type",
                                  "message": "the request body must be JSON: Content-Type: application/json"}}  # fmt: skip


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON", "application/json; charset=UTF-8",
                                          'application/json;charset="utf-8"'])  # fmt: skip
async def test_json_content_types_are_accepted(client: httpx.AsyncClient, content_type: str) -> None:
    r = await client.post("/agents", content=orjson.dumps(AGENT), headers={"Content-Type": content_type})
    assert r.status_code == 201, r.text


async def test_auth_is_checked_before_the_content_type(anon: httpx.AsyncClient) -> None:
    assert (await anon.post("/agents", content=b"x", headers={"Content-Type": "text/plain"})).status_code == 401
