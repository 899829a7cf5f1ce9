"""``/carrier-accounts``: credentials by reference, caller IDs in E.164, one default per
tenant, tenant scoping, and no secret value in any response or log."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.config import Settings
from gateway.store import CREDENTIALS, Store, resolve_account_credentials
from gateway.tenants import SecretGrants

#: Values of the variables set for these tests; none may appear in a response or a log.
VALUES = {
    "GATEWAY_SECRET_DEFAULT_TW_SID": "AC0123456789abcdef0123456789abcdef",
    "GATEWAY_SECRET_DEFAULT_TW_TOKEN": "twilio-token-value-9f8e7d",
    "GATEWAY_SECRET_DEFAULT_TX_KEY": "KEYtelnyx-value-11aa22bb",
    "GATEWAY_SECRET_DEFAULT_TX_PUB": "telnyx-public-key-value-33cc",
    "GATEWAY_SECRET_DEFAULT_TX_CONN": "1494404757140276705",
    "GATEWAY_SECRET_DEFAULT_PL_ID": "MAplivo-auth-id-value",
    "GATEWAY_SECRET_DEFAULT_PL_TOKEN": "plivo-token-value-44dd",
    "GATEWAY_SECRET_DEFAULT_VN_APP": "vonage-app-id-value-55ee",
    "GATEWAY_SECRET_DEFAULT_VN_KEY": "-----BEGIN PRIVATE KEY-----vonage-value",
    "GATEWAY_SECRET_DEFAULT_VN_SIG": "vonage-signature-secret-value-66ff",
    "GATEWAY_SECRET_ACME_TW_SID": "ACacme-sid-value",
    "GATEWAY_SECRET_ACME_TW_TOKEN": "acme-token-value-77gg",
    "GATEWAY_SECRET_GLOBEX_TW_TOKEN": "globex-token-value-88hh",
}
REFS = {
    "twilio": {"account_sid": "GATEWAY_SECRET_DEFAULT_TW_SID", "auth_token": "GATEWAY_SECRET_DEFAULT_TW_TOKEN"},
    "telnyx": {"api_key": "GATEWAY_SECRET_DEFAULT_TX_KEY", "connection_id": "GATEWAY_SECRET_DEFAULT_TX_CONN",
               "public_key": "GATEWAY_SECRET_DEFAULT_TX_PUB"},
    "plivo": {"auth_id": "GATEWAY_SECRET_DEFAULT_PL_ID", "auth_token": "GATEWAY_SECRET_DEFAULT_PL_TOKEN"},
    "vonage": {"application_id": "GATEWAY_SECRET_DEFAULT_VN_APP", "private_key": "GATEWAY_SECRET_DEFAULT_VN_KEY",
               "signature_secret": "GATEWAY_SECRET_DEFAULT_VN_SIG"},
}  # fmt: skip
SIGNING = {"twilio": "auth_token", "telnyx": "public_key", "plivo": "auth_token", "vonage": "signature_secret"}


def account(kind: str = "twilio", **patch) -> dict:
    return {"kind": kind, "name": f"{kind} main", "secretRefs": REFS[kind], "numbers": ["+14155552671"], **patch}


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in VALUES.items():
        monkeypatch.setenv(var, value)


def no_secret_in(text: str) -> None:
    for value in VALUES.values():
        assert value not in text


def fields_of(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    return {f["field"]: f["message"] for f in err["fields"]}


@pytest.fixture
async def tenants(make_client: Callable[..., httpx.AsyncClient], store: Store):
    opened: list[httpx.AsyncClient] = []

    async def open_(tenant: str) -> httpx.AsyncClient:
        key, _ = store.create_api_key(f"key of {tenant}", tenant=tenant)
        c = make_client()
        c.headers["X-API-Key"] = key
        opened.append(c)
        return c

    yield open_
    for c in opened:
        await c.aclose()


@pytest.mark.parametrize("kind", ["twilio", "telnyx", "plivo", "vonage"])
async def test_create_get_list_delete(client: httpx.AsyncClient, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    r = await client.post("/carrier-accounts", json=account(kind, numbers=["+1 (415) 555-2671", "+44 7911 123456"]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("cac_") and r.headers["location"] == f"/carrier-accounts/{body['id']}"
    assert body | {"id": None, "createdAt": None} == {
        "id": None, "createdAt": None, "kind": kind, "name": f"{kind} main", "secretRefs": REFS[kind],
        "numbers": ["+14155552671", "+447911123456"], "default": False, "callbackSigning": SIGNING[kind],
    }  # fmt: skip
    got = await client.get(f"/carrier-accounts/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    listed = await client.get("/carrier-accounts")
    assert listed.status_code == 200 and listed.json() == {"data": [body]}
    deleted = await client.delete(f"/carrier-accounts/{body['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(f"/carrier-accounts/{body['id']}")).status_code == 404
    assert (await client.delete(f"/carrier-accounts/{body['id']}")).status_code == 404
    assert (await client.get("/carrier-accounts")).json() == {"data": []}
    for text in (r.text, got.text, listed.text, caplog.text):
        no_secret_in(text)


async def test_the_signing_key_is_optional_where_the_sdk_makes_it_so(client: httpx.AsyncClient) -> None:
    for kind, optional in (("telnyx", "public_key"), ("vonage", "signature_secret")):
        refs = {k: v for k, v in REFS[kind].items() if k != optional}
        r = await client.post("/carrier-accounts", json=account(kind, secretRefs=refs))
        assert r.status_code == 201, r.text
        assert r.json()["callbackSigning"] is None


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"kind": "sinch"}, "kind", "'twilio', 'telnyx', 'plivo' or 'vonage'"),
        ({"secretRefs": {"account_sid": "GATEWAY_SECRET_DEFAULT_TW_SID"}}, "secretRefs", "auth_token missing"),
        ({"secretRefs": {**REFS["twilio"], "api_key": "GATEWAY_SECRET_DEFAULT_TX_KEY"}}, "secretRefs",
         "'api_key' is not a twilio credential"),
        ({"secretRefs": {**REFS["twilio"], "auth_token": "GATEWAY_TWILIO_AUTH_TOKEN"}}, "secretRefs",
         "must name an environment variable starting with GATEWAY_SECRET_"),
        ({"secretRefs": {**REFS["twilio"], "auth_token": "GATEWAY_SECRET_DEFAULT_UNSET"}}, "secretRefs",
         "is not available to this API key"),
        ({"secretRefs": {**REFS["twilio"], "auth_token": "GATEWAY_SECRET_ACME_TW_TOKEN"}}, "secretRefs",
         "is not available to this API key"),
        ({"numbers": ["+14155552671", "4155552671"]}, "numbers.1", "string should match pattern"),
        ({"numbers": ["+14155552671", "+1555010"]}, "numbers.1", "not a valid phone number"),
        ({"numbers": ["+14155552671", "+1 415 555 2671"]}, "numbers", "numbers.1 is the same number as numbers.0"),
        ({"numbers": []}, "numbers", "at least 1 item"),
        ({"name": ""}, "name", "at least 1 character"),
        ({"default": "yes"}, "default", "valid boolean"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)  # fmt: skip
async def test_field_level_422(client: httpx.AsyncClient, patch: dict, field: str, words: str) -> None:
    r = await client.post("/carrier-accounts", json={**account(), **patch})
    fields = fields_of(r)
    assert list(fields) == [field], fields
    assert words.lower() in fields[field].lower(), fields
    no_secret_in(r.text)


@pytest.mark.parametrize("kind", ["twilio", "telnyx", "plivo", "vonage"])
async def test_every_required_credential_of_each_kind_is_required(client: httpx.AsyncClient, kind: str) -> None:
    for name in CREDENTIALS[kind].required:
        refs = {k: v for k, v in REFS[kind].items() if k != name}
        fields = fields_of(await client.post("/carrier-accounts", json=account(kind, secretRefs=refs)))
        assert f"{name} missing" in fields["secretRefs"]


async def test_key_is_checked_first(anon: httpx.AsyncClient) -> None:
    for method, path in (("POST", "/carrier-accounts"), ("GET", "/carrier-accounts"),
                         ("GET", "/carrier-accounts/cac_x"), ("DELETE", "/carrier-accounts/cac_x")):  # fmt: skip
        r = await anon.request(method, path, content=b"{broken", headers={"Content-Type": "text/plain"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await anon.request(method, path, headers={"X-API-Key": "gw_wrong"})
        assert r.status_code == 401


async def test_non_json_body_is_415(client: httpx.AsyncClient) -> None:
    r = await client.post("/carrier-accounts", content=b"kind=twilio", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


async def test_one_default_per_tenant(client: httpx.AsyncClient, store: Store) -> None:
    first = (await client.post("/carrier-accounts", json=account("twilio", default=True))).json()
    assert first["default"] is True
    second = (await client.post("/carrier-accounts", json=account("telnyx", default=True))).json()
    assert second["default"] is True
    assert (await client.get(f"/carrier-accounts/{first['id']}")).json()["default"] is False
    third = (await client.post("/carrier-accounts", json=account("plivo"))).json()
    defaults = [a["id"] for a in (await client.get("/carrier-accounts")).json()["data"] if a["default"]]
    assert defaults == [second["id"]] and third["default"] is False
    assert store.default_carrier_account(tenant="default").id == second["id"]
    assert (await client.delete(f"/carrier-accounts/{second['id']}")).status_code == 204
    assert store.default_carrier_account(tenant="default") is None


async def test_another_tenants_account_is_not_found(tenants, store: Store) -> None:
    acme, globex = await tenants("acme"), await tenants("globex")
    refs = {"account_sid": "GATEWAY_SECRET_ACME_TW_SID", "auth_token": "GATEWAY_SECRET_ACME_TW_TOKEN"}
    r = await acme.post("/carrier-accounts", json=account(secretRefs=refs, default=True))
    assert r.status_code == 201, r.text
    acct = r.json()
    assert (await acme.get(f"/carrier-accounts/{acct['id']}")).status_code == 200
    r = await globex.get(f"/carrier-accounts/{acct['id']}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await globex.delete(f"/carrier-accounts/{acct['id']}")).status_code == 404
    assert (await globex.get("/carrier-accounts")).json() == {"data": []}
    assert store.default_carrier_account(tenant="globex") is None
    # globex cannot reference acme's secrets either (its own variable works)
    stolen = await globex.post("/carrier-accounts", json=account(secretRefs=refs))
    assert "is not available" in fields_of(stolen)["secretRefs"]
    assert (await acme.get(f"/carrier-accounts/{acct['id']}")).json()["default"] is True


async def test_a_dialer_resolves_the_stored_references(client: httpx.AsyncClient, store: Store, settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import os

    acct = (await client.post("/carrier-accounts", json=account("vonage"))).json()
    rec = store.get_carrier_account(acct["id"], tenant="default")
    creds = resolve_account_credentials(rec, "default", grants=SecretGrants.from_settings(settings), environ=os.environ)
    assert creds == {"application_id": VALUES["GATEWAY_SECRET_DEFAULT_VN_APP"],
                     "private_key": VALUES["GATEWAY_SECRET_DEFAULT_VN_KEY"],
                     "signature_secret": VALUES["GATEWAY_SECRET_DEFAULT_VN_SIG"]}  # fmt: skip
    # the stored row holds references only
    with store.engine.connect() as conn:
        dump = repr(conn.exec_driver_sql("SELECT * FROM carrier_accounts").fetchall())
    no_secret_in(dump)
    assert "GATEWAY_SECRET_DEFAULT_VN_KEY" in dump


async def test_405_names_every_method_of_the_resource(client: httpx.AsyncClient) -> None:
    r = await client.put("/carrier-accounts")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "GET, POST"
    assert (await client.patch("/carrier-accounts/cac_x")).headers["allow"] == "DELETE, GET"
    assert (await client.get("/calls/inline")).status_code == 404  # /calls/{callId}: no such call
    assert (await client.put("/calls/inline")).headers["allow"] == "POST"
