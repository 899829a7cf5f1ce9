"""Schemathesis against the OpenAPI document the gateway serves: for every operation, generated
requests (schema-valid and schema-violating) get no server error, a documented status code,
content type and headers, a body that matches the documented schema, 2xx for valid input and
4xx for invalid input.

Two tests: every operation on its own (schemathesis' coverage and fuzzing phases, both
generation modes), and workflows (its state machine follows the links it infers from the
``Location`` headers: create an agent, then get it or create a call from it; create a call,
then get its record or recording), so responses for real records are validated too.

Bounded for CI (:data:`MAX_EXAMPLES` per operation and workflows, about 10 s in all). For a
longer run: ``GATEWAY_SCHEMATHESIS_EXAMPLES=1000 pytest tests/api/test_schemathesis.py``.

Valid requests are adjusted in one way only, for rules no JSON Schema can state (see
:func:`_satisfy_server_state`): the secrets a ``secretRefs`` entry names must be configured on
this gateway and granted to the key's tenant, a model endpoint name (``…@name``) must be one
the operator configured, tool names must be unique within a request, and a tool URL the
operator's outbound policy refuses (a private or loopback address, http:// to a host not
allow-listed) is swapped for a public one; a carrier account's ``secretRefs`` name the
credentials of its ``kind`` (a rule across two fields), and its caller-ID ``numbers`` are
numbers of a real numbering plan (``phonenumbers`` metadata, which no pattern states). An
outbound call (:func:`_outbound_rules`) calls a valid number from the account's own caller ID,
through the tenant's default account (made on demand) unless one is named, with ``agentId`` or
the inline agent fields (not both), a message to leave when it leaves one, and every ``{{name}}``
it uses among its ``variables`` (rules across fields, or about stored records). Post-call
``fields`` get distinct names and ``values`` only on enum fields, and a ``webhookUrl`` the
outbound policy refuses is swapped for a public one (:func:`_after_call_rules`).
Schema-violating requests are sent as generated.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from gateway.api.outbound_schemas import (
    INLINE_ONLY,
    MAX_VARIABLES_B64,
    OutboundCallCreate,
    unknown_variables,
    variables_b64_size,
)
from gateway.app import create_app
from gateway.config import Settings
from gateway.netpolicy import OutboundPolicy, OutboundRefused
from gateway.store import CREDENTIALS, Store
from gateway.store.models import Base

#: Generated requests per operation (each mode); the CI bound.
MAX_EXAMPLES = int(os.environ.get("GATEWAY_SCHEMATHESIS_EXAMPLES", "40"))
#: The one secret configured on the gateway under test, granted to the API key's tenant
#: (``default`` is granted ``GATEWAY_SECRET_DEFAULT_*``); valid ``secretRefs`` values name it.
SECRET_VAR = "GATEWAY_SECRET_DEFAULT_SCHEMATHESIS"
#: A tool URL the outbound policy accepts (a public name; nothing is called), and the policy.
TOOL_URL = "https://tools.example.com/hook"
_POLICY = OutboundPolicy()
#: Valid caller-ID numbers (distinct, E.164) a carrier account's ``numbers`` are swapped for.
NUMBERS = [f"+1415555{n:04d}" for n in range(2671, 2771)]

_WORKDIR = Path(tempfile.mkdtemp(prefix="gateway-schemathesis-"))


def _served() -> tuple[Any, str]:
    """The app under test on its own SQLite file, and a real API key of it."""
    # outbound calls on (they need a public URL); placed against a closed loopback port, so a
    # generated call fails at once as the carrier's network error and never leaves the machine
    closed = {kind: "http://127.0.0.1:9" for kind in ("twilio", "telnyx", "plivo", "vonage")}
    s = Settings(_env_file=None, database_url=f"sqlite:///{_WORKDIR / 'gw.db'}",
                 recordings_dir=_WORKDIR / "recordings", public_url="http://testserver",
                 carrier_api_urls=closed)  # fmt: skip
    store = Store(s.database_url)
    store.create_all()  # the lifespan does it too, but the key is made before any request
    return create_app(s, store=store, warm_up=False), store.create_api_key("schemathesis")[0]


_APP, _KEY = _served()
#: The schema as the app's ``GET /openapi.json`` serves it; every request carries the key
#: (as configured headers, so schemathesis knows the header is supplied, not generated).
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)
schema.config.update(headers={"X-API-Key": _KEY})


@pytest.fixture(scope="module", autouse=True)
def _configured_secret() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_VAR, "value-of-the-schemathesis-secret")
        yield
    shutil.rmtree(_WORKDIR, ignore_errors=True)


def _outbound_rules(body: dict[str, Any]) -> None:
    """An outbound call body: a valid number to call, the account's own caller ID (its first,
    by omitting ``from``), the tenant's default account present when none is named, agentId
    xor the inline agent fields, a message to leave, and every ``{{name}}`` defined."""
    body["to"] = NUMBERS[1]
    body.pop("from", None)
    if body.get("carrierAccountId") is None:
        store = _APP.state.api.store
        if store.default_carrier_account(tenant="default") is None:
            refs = {name: SECRET_VAR for name in CREDENTIALS["twilio"].required}
            store.create_carrier_account(kind="twilio", name="st", secret_refs=refs, numbers=NUMBERS[:1], default=True)
    if body.get("agentId") is not None:
        for name in INLINE_ONLY:
            body.pop(OutboundCallCreate.model_fields[name].alias or name, None)
    elif body.get("systemPrompt") is None:
        body["systemPrompt"] = "Call."
    voicemail = body.get("voicemail")
    if isinstance(voicemail, dict) and voicemail.get("action") == "leave_message":
        if not str(voicemail.get("message", "")).strip():
            voicemail["message"] = "Please call back."
    variables = body.setdefault("variables", {})
    texts = [body.get(k) for k in ("systemPrompt", "greeting", "firstMessage", "objective", "context")]
    texts.append(voicemail.get("message") if isinstance(voicemail, dict) else None)
    for text in texts:
        for name in unknown_variables(text or "", variables):
            variables[name] = "v"
    if variables_b64_size(variables) > MAX_VARIABLES_B64:
        body["variables"] = {n: "v" for t in texts for n in unknown_variables(t or "", {})}


def _after_call_rules(body: dict[str, Any]) -> None:
    """``fields``: distinct names, ``values`` given for (and only for) an enum field; a
    ``webhookUrl`` the outbound policy refuses is swapped for a public one."""
    fields = body.get("fields")
    if isinstance(fields, list):
        for i, spec in enumerate(fields):
            if isinstance(spec, dict):
                spec["name"] = f"{str(spec.get('name', 'f'))[:58]}_{i}"
                if spec.get("type") == "enum":
                    spec["values"] = list(dict.fromkeys(spec.get("values") or ["yes"]))
                else:
                    spec.pop("values", None)
    if isinstance(body.get("webhookUrl"), str):
        try:
            _POLICY.check_static(body["webhookUrl"])
        except OutboundRefused:
            body["webhookUrl"] = TOOL_URL


def _satisfy_server_state(case: Any) -> None:
    """Make a valid body also meet the rules that depend on the gateway, not the schema."""
    body = case.body
    if case.meta is None or not case.meta.generation.mode.is_positive or not isinstance(body, dict):
        return
    if case.path == "/calls/outbound":
        _outbound_rules(body)
    if case.path == "/webhook-endpoints":  # a URL the policy accepts, events distinct
        try:
            _POLICY.check_static(str(body.get("url")))
        except OutboundRefused:
            body["url"] = TOOL_URL
        if isinstance(body.get("events"), list):
            body["events"] = list(dict.fromkeys(body["events"]))
    if "@" in str(body.get("model", "")):
        body["model"] = "local"  # no endpoints are configured here
    refs = body.get("secretRefs")
    spec = CREDENTIALS.get(body.get("kind")) if isinstance(body.get("kind"), str) else None
    if spec is not None and isinstance(refs, dict):  # a carrier account: its kind's credentials
        refs = {name: None for name in spec.required} | {n: None for n in refs if n in spec.optional}
    if isinstance(refs, dict):
        body["secretRefs"] = {name: SECRET_VAR for name in refs}
    if spec is not None and isinstance(body.get("numbers"), list):
        body["numbers"] = NUMBERS[: len(body["numbers"])]
    _after_call_rules(body)
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            if isinstance(tool, dict):
                tool["name"] = f"{str(tool.get('name', 't'))[:58]}_{i}"
                try:  # the operator's policy (no allow-list here) decides which targets pass
                    _POLICY.check_static(str(tool.get("url")))
                except OutboundRefused:
                    tool["url"] = TOOL_URL


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_each_operation_conforms_to_the_document(case: Any) -> None:
    _satisfy_server_state(case)
    case.call_and_validate()


class Workflows(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls linked by the ids the API returns.

    Each sequence starts from an empty store (but for the API key): a link from a list
    (``GET /agents`` → ``data/*/id``, ``GET /calls`` → ``calls/*/agentId``, ``GET
    /carrier-accounts``) makes schemathesis draw one of the listed values, so a list that grew
    with earlier sequences (or with the test above, in the same store) changes what the same
    choices draw, and hypothesis reports the generation as flaky ("inconsistent data
    generation").
    """

    def setup(self) -> None:
        store = _APP.state.api.store
        for account in store.list_carrier_accounts(tenant="default"):
            store.delete_carrier_account(account.id, tenant="default")
        with store.engine.begin() as conn:  # children first: the foreign keys hold
            for table in reversed(Base.metadata.sorted_tables):
                if table.name != "api_keys":
                    conn.execute(table.delete())

    def before_call(self, case: Any) -> None:
        _satisfy_server_state(case)


def test_workflows_conform_to_the_document() -> None:
    Workflows.run(
        settings=settings(
            max_examples=MAX_EXAMPLES, stateful_step_count=6, deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )  # fmt: skip


def test_each_workflow_starts_from_an_empty_store_but_for_the_key() -> None:
    store = _APP.state.api.store
    agent = store.create_agent(name="a", system_prompt="Help.", voice="v", language="en", greeting="Hi.")
    store.create_call({"system_prompt": "Help."}, "webrtc", agent_id=agent.id)
    Workflows.setup(None)  # type: ignore[arg-type]  # what each sequence's setup does
    assert store.list_agents(tenant="default") == [] and store.list_calls(tenant="default").total == 0
    assert store.list_api_keys()  # the key every request carries is kept
