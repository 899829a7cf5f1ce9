"""``POST /calls/outbound``: validation (numbers, caller ID, agent xor inline fields, variables,
voicemail), account and agent resolution, the stored call, the hook, and ``GET /calls/{id}``."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.api.outbound import OUTBOUND_OFF
from gateway.api.outbound_schemas import (
    MAX_VARIABLES_B64,
    parse_number,
    substitute,
    variables_b64_size,
    with_objective,
)
from gateway.store import CallStatus, Store

TWILIO_REFS = {"account_sid": "GATEWAY_SECRET_DEFAULT_TW_SID", "auth_token": "GATEWAY_SECRET_DEFAULT_TW_TOKEN"}
NUMBERS = ["+14155552671", "+442079460958"]
INLINE = {"systemPrompt": "You call {{name}} about order {{ order }}.", "model": "local"}


class Hook:
    """Records each ``on_outbound_call(call, token, request)`` and checks the token at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[tuple[Any, str]] = []

    async def __call__(self, call: Any, token: str, request: Any) -> None:
        self.calls.append((call, token))
        assert request.url.path == "/calls/outbound"


@pytest.fixture
def hook(store: Store) -> Hook:
    return Hook(store)


@pytest.fixture
def account_id(store: Store) -> str:
    return store.create_carrier_account(kind="twilio", name="main", secret_refs=TWILIO_REFS, numbers=NUMBERS,
                                        default=True).id  # fmt: skip


@pytest.fixture
async def api(make_client: Callable[..., httpx.AsyncClient], api_key: str, hook: Hook) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(on_outbound_call=hook) as c:
        c.headers["X-API-Key"] = api_key
        yield c


def body(**patch: Any) -> dict[str, Any]:
    return {"to": "+1 (415) 555-2672", **INLINE, "variables": {"name": "Ada", "order": "A-17"}, **patch}


def fields_of(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["message"].startswith("invalid request body")
    return {f["field"]: f["message"] for f in err["fields"]}


# -- pure helpers ------------------------------------------------------------------------


def test_parse_number_normalises_and_says_why() -> None:
    assert parse_number("+1 (415) 555-2671", None) == "+14155552671"
    assert parse_number("(415) 555-2671", "US") == "+14155552671"
    assert parse_number("020 7946 0958", "GB") == "+442079460958"
    assert parse_number("+442079460958", "US") == "+442079460958"  # + wins over the region
    with pytest.raises(ValueError, match="national number: give countryCode"):
        parse_number("4155552671", None)
    with pytest.raises(ValueError, match="too short"):
        parse_number("+1415555", None)
    with pytest.raises(ValueError, match="no such country calling code"):
        parse_number("+999123456", None)


def test_substitution_is_one_pass_and_blocks_are_delimited() -> None:
    v = {"a": "{{b}}", "b": "B"}
    assert substitute("x {{a}} {{ b }} {{c}} {{ 9 }}", v) == "x {{b}} B {{c}} {{ 9 }}"
    assert with_objective("Prompt.  ", " Book it. ", "") == "Prompt.\n\n<call_objective>\nBook it.\n</call_objective>"
    assert with_objective("P", "", "ctx") == "P\n\n<call_context>\nctx\n</call_context>"
    raw = json.dumps({"k": "é"}, separators=(",", ":"), ensure_ascii=False).encode()
    assert variables_b64_size({"k": "é"}) == len(base64.b64encode(raw))


# -- the route -------------------------------------------------------------------------


async def test_places_an_inline_call(api: httpx.AsyncClient, hook: Hook, store: Store, account_id: str) -> None:
    r = await api.post("/calls/outbound", json=body(objective="Confirm {{order}}.", context="VIP: {{name}}",
                                                   firstMessage="Hi {{name}}!", ringTimeout=45))  # fmt: skip
    assert r.status_code == 201, r.text
    out = r.json()
    assert r.headers["location"] == f"/calls/{out['callId']}"
    assert out == {
        "callId": out["callId"], "status": "queued", "to": "+14155552672", "from": NUMBERS[0],
        "carrierAccountId": account_id, "language": "en-US", "languageSource": "default", "voice": "joe",
    }  # fmt: skip
    [(call, token)] = hook.calls
    assert call.id == out["callId"] and call.status is CallStatus.QUEUED
    assert store.check_stream_token(call.id, token).id == call.id  # a working stream token
    rec = store.get_call(call.id)
    assert (rec.direction, rec.connection_type, rec.to_number, rec.from_number) == (
        "outbound", "twilio", "+14155552672", NUMBERS[0],
    )  # fmt: skip
    assert rec.carrier_account_id == account_id
    cfg = rec.call_config()
    assert cfg.system_prompt == ("You call Ada about order A-17.\n\n<call_objective>\nConfirm A-17.\n"
                                 "</call_objective>\n\n<call_context>\nVIP: Ada\n</call_context>")  # fmt: skip
    assert (cfg.greeting, cfg.first_speaker, cfg.max_duration_s) == ("Hi Ada!", "agent", 3000)
    assert cfg.voicemail == {"detect": True, "action": "hangup", "message": "", "hold_greeting_ms": 2000}
    assert rec.outbound == {
        "objective": "Confirm {{order}}.", "context": "VIP: {{name}}", "ringTimeout": 45,
        "voicemail": {"detect": True, "action": "hangup", "message": "", "holdGreetingMs": 2000},
        "variables": ["name", "order"],
    }  # fmt: skip
    ttl = (rec.stream_token_expires_at - rec.created_at).total_seconds()
    assert ttl >= 45 + 120


async def test_national_number_with_country_code_and_chosen_caller_id(api: httpx.AsyncClient, account_id: str) -> None:
    r = await api.post("/calls/outbound", json=body(to="020 7946 0959", countryCode="GB", **{"from": "020 7946 0958"},
                                                   carrierAccountId=account_id, language="en-GB", voice="kim"))  # fmt: skip
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["to"], out["from"], out["language"], out["languageSource"], out["voice"]) == (
        "+442079460959", "+442079460958", "en-GB", "request", "kim",
    )  # fmt: skip


async def test_stored_agent_resolution_and_backend_voice(api: httpx.AsyncClient, store: Store, account_id: str) -> None:
    agent = store.create_agent(name="a", system_prompt="Sell to {{name}}.", voice="ALLOY", language="fr-FR",
                               greeting="Bonjour {{name}}", model="openai:gpt-realtime")  # fmt: skip
    r = await api.post("/calls/outbound", json={"to": "+14155552672", "agentId": agent.id, "variables": {"name": "Zoé"},
                                                "maxDuration": 120})  # fmt: skip
    assert r.status_code == 201, r.text
    out = r.json()
    assert (out["language"], out["languageSource"], out["voice"]) == ("fr-FR", "agent", "alloy")
    cfg = store.get_call(out["callId"]).call_config()
    assert (cfg.system_prompt, cfg.greeting, cfg.max_duration_s, cfg.model) == (
        "Sell to Zoé.", "Bonjour Zoé", 120, "openai:gpt-realtime",
    )  # fmt: skip
    inline = await api.post("/calls/outbound", json=body(model="gemini:live", voice=None))
    assert inline.status_code == 201 and inline.json()["voice"] == "Puck"
    unknown = await api.post("/calls/outbound", json=body(model="xai:grok", voice="joe"))  # not an xAI voice
    assert unknown.status_code == 201 and unknown.json()["voice"] == "Eve"
    assert store.get_call(unknown.json()["callId"]).call_config().voice == "Eve"


@pytest.mark.parametrize(
    ("patch", "field", "says"),
    [
        ({"to": "4155552672"}, "to", "give countryCode"),
        ({"to": "+1415555"}, "to", "too short"),
        ({"to": "+1 415 555 26", "countryCode": "US"}, "to", "numbering plan"),
        ({"countryCode": "XX"}, "countryCode", "Input should be"),
        ({"variables": {"name": 7, "order": "x"}}, "variables.name", "valid string"),
        ({"variables": {"name": "Ada", "order": "x", "bad-name": "y"}}, "variables.bad-name", "[A-Za-z_]"),
        ({"firstMessage": "Hi {{nick}}"}, "firstMessage", "{{nick}}, not defined in variables"),
        ({"objective": "{{a}} {{ b }}"}, "objective", "{{a}}, {{b}}"),
        ({"voicemail": {"action": "leave_message", "message": "  "}}, "voicemail.message", "non-empty message"),
        ({"voicemail": {"action": "leave_message", "message": "call {{zz}}"}}, "voicemail.message", "{{zz}}"),
        ({"voicemail": {"holdGreetingMs": 4001}}, "voicemail.holdGreetingMs", "less than or equal to 4000"),
        ({"ringTimeout": 4}, "ringTimeout", "greater than or equal to 5"),
        ({"maxDuration": 7201}, "maxDuration", "less than or equal to 7200"),
        ({"agentId": "agt_x"}, "systemPrompt", "not allowed with agentId"),
    ],
)
async def test_field_errors(api: httpx.AsyncClient, account_id: str, patch: dict, field: str, says: str) -> None:
    fields = fields_of(await api.post("/calls/outbound", json=body(**patch)))
    assert field in fields and says in fields[field], fields


async def test_agent_and_inline_fields_together_or_neither(api: httpx.AsyncClient, account_id: str) -> None:
    both = fields_of(await api.post("/calls/outbound", json=body(agentId="agt_x", greeting="hi")))
    assert set(both) == {"systemPrompt", "model", "greeting", "agentId"}
    assert "not both (systemPrompt, greeting, model)" in both["agentId"]
    neither = fields_of(await api.post("/calls/outbound", json={"to": "+14155552672"}))
    assert set(neither) == {"agentId", "systemPrompt"}


async def test_oversize_variables(api: httpx.AsyncClient, account_id: str) -> None:
    big = {"name": "Ada", "order": "x", "blob": "x" * 20_000}
    size = variables_b64_size(big)
    assert size > MAX_VARIABLES_B64
    fields = fields_of(await api.post("/calls/outbound", json=body(variables=big)))
    assert fields["variables"] == f"too large: base64 of the JSON is {size} bytes, at most {MAX_VARIABLES_B64}"
    fits = {"name": "Ada", "order": "x", "blob": "x" * 19_000}
    assert variables_b64_size(fits) <= MAX_VARIABLES_B64
    assert (await api.post("/calls/outbound", json=body(variables=fits))).status_code == 201


async def test_caller_id_must_be_the_accounts(api: httpx.AsyncClient, account_id: str) -> None:
    fields = fields_of(await api.post("/calls/outbound", json=body(**{"from": "+14155552699"})))
    assert fields["from"].startswith(f"+14155552699 is not a number of carrier account {account_id}")


async def test_unknown_agent_template_in_stored_agent(api: httpx.AsyncClient, store: Store, account_id: str) -> None:
    agent = store.create_agent(name="a", system_prompt="Hi {{who}}", voice="joe", language="en-US", greeting="")
    fields = fields_of(await api.post("/calls/outbound", json={"to": "+14155552672", "agentId": agent.id}))
    assert fields == {"agentId": "the agent's systemPrompt uses {{who}}, not defined in variables"}


async def test_unknown_agent_or_account_is_404(api: httpx.AsyncClient, store: Store, account_id: str) -> None:
    r = await api.post("/calls/outbound", json={"to": "+14155552672", "agentId": "agt_nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.post("/calls/outbound", json=body(carrierAccountId="cac_nope"))
    assert r.status_code == 404 and "cac_nope" in r.json()["error"]["message"]
    other = store.create_carrier_account(kind="twilio", name="x", secret_refs=TWILIO_REFS, numbers=NUMBERS,
                                         tenant="acme").id  # fmt: skip
    assert (await api.post("/calls/outbound", json=body(carrierAccountId=other))).status_code == 404
    store.delete_carrier_account(account_id, tenant="default")
    assert (await api.post("/calls/outbound", json=body(carrierAccountId=account_id))).status_code == 404
    fields = fields_of(await api.post("/calls/outbound", json=body()))  # deleted: no default left
    assert fields == {"carrierAccountId": "required: the tenant has no default carrier account"}


async def test_needs_a_key(anon: httpx.AsyncClient, account_id: str) -> None:
    r = await anon.post("/calls/outbound", json=body())
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_no_hook_is_503_and_stores_nothing(client: httpx.AsyncClient, store: Store, account_id: str) -> None:
    r = await client.post("/calls/outbound", json=body())
    assert r.status_code == 503
    assert r.json()["error"] == {"code": "unavailable", "message": OUTBOUND_OFF}
    assert "retry-after" not in r.headers
    with store.engine.connect() as conn:  # nothing was stored for a call nobody places
        assert conn.exec_driver_sql("SELECT count(*) FROM calls").scalar() == 0


async def test_at_capacity_is_503_with_retry_after(make_client: Callable[..., httpx.AsyncClient], api_key: str,
                                                   hook: Hook, account_id: str) -> None:  # fmt: skip
    async with make_client(on_outbound_call=hook, live_calls=lambda: 10**6) as c:
        r = await c.post("/calls/outbound", json=body(), headers={"X-API-Key": api_key})
    assert r.status_code == 503 and r.headers["retry-after"] and not hook.calls


async def test_call_record_view(api: httpx.AsyncClient, store: Store, account_id: str) -> None:
    created = (await api.post("/calls/outbound", json=body(voicemail={"action": "leave_message",
                                                                      "message": "Call {{name}} back"}))).json()  # fmt: skip
    call_id = created["callId"]
    store.mark_call_placed(call_id, "CA123")
    assert store.apply_carrier_status(call_id, "ringing", raw_status="ringing") == "applied"
    assert store.apply_carrier_status(call_id, "busy", raw_status="busy") == "applied"
    out = (await api.get(f"/calls/{call_id}")).json()
    assert out["status"] == "busy" and out["carrierAccountId"] == account_id and out["answeredAt"] is None
    assert [(t["from"], t["to"], t["source"]) for t in out["transitions"]] == [
        (None, "queued", "gateway"), ("queued", "initiated", "gateway"), ("initiated", "ringing", "carrier"),
        ("ringing", "busy", "carrier"),
    ]  # fmt: skip
    assert out["transitions"][1]["detail"] == {"carrierCallId": "CA123"}
    assert out["transitions"][3]["detail"]["rawStatus"] == "busy"
    assert out["config"]["voicemail"] == {"detect": True, "action": "leave_message", "message": "Call Ada back",
                                          "holdGreetingMs": 2000}  # fmt: skip
    assert out["voicemail"] is None and out["carrierStatus"] is None and out["direction"] == "outbound"


def test_the_document_describes_the_route() -> None:
    from gateway.api import create_api
    from gateway.api.outbound_schemas import VAR_NAME
    from gateway.config import Settings

    doc = create_api(Store("sqlite://"), Settings(_env_file=None)).openapi()
    op = doc["paths"]["/calls/outbound"]["post"]
    assert op["operationId"] == "placeOutboundCall"
    assert {"201", "400", "401", "404", "413", "415", "422", "503"} <= set(op["responses"])
    assert "Location" in op["responses"]["201"]["headers"]
    schemas = doc["components"]["schemas"]
    req = schemas["OutboundCallCreate"]
    assert req["required"] == ["to"] and req["additionalProperties"] is False
    props = req["properties"]
    assert props["variables"]["propertyNames"] == {"pattern": f"^{VAR_NAME.pattern}$"}
    assert props["variables"]["additionalProperties"] == {"type": "string"}
    assert "US" in props["countryCode"]["anyOf"][0]["enum"]
    assert (props["ringTimeout"]["minimum"], props["ringTimeout"]["maximum"], props["ringTimeout"]["default"]) == (5, 120, 30)
    vm = schemas["VoicemailIn"]["properties"]
    assert vm["action"]["enum"] == ["hangup", "leave_message"]
    assert (vm["holdGreetingMs"]["minimum"], vm["holdGreetingMs"]["maximum"]) == (0, 4000)
    created = schemas["OutboundCallCreated"]
    assert set(created["required"]) == {"callId", "status", "to", "from", "carrierAccountId", "language",
                                        "languageSource", "voice"}  # fmt: skip
    call = schemas["CallOut"]["properties"]
    assert {"transitions", "voicemail", "carrierAccountId", "answeredAt", "carrierStatus"} <= set(call)
    statuses = set(schemas["CallOut"]["properties"]["status"]["enum"])
    assert {"initiated", "busy", "declined", "voicemail", "canceled"} <= statuses
