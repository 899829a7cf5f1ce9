"""Store: carrier accounts (references only), one default per tenant, soft delete, and
resolving an account's credentials for a dialer within its tenant's grant."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.store import CREDENTIALS, CredentialsUnavailable, Store, resolve_account_credentials
from gateway.tenants import SecretGrants

TWILIO = {"account_sid": "GATEWAY_SECRET_ACME_SID", "auth_token": "GATEWAY_SECRET_ACME_TOKEN"}
ENV = {"GATEWAY_SECRET_ACME_SID": "AC123", "GATEWAY_SECRET_ACME_TOKEN": "tok", "GATEWAY_SECRET_SHARED_X": "x"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'gw.db'}")
    s.create_all()
    yield s
    s.close()


def make(store: Store, **kw):
    args = {"kind": "twilio", "name": "main", "secret_refs": TWILIO, "numbers": ["+14155552671"], "tenant": "acme"}
    return store.create_carrier_account(**{**args, **kw})


def test_round_trip_and_tenant_scope(store: Store) -> None:
    rec = make(store)
    assert rec.id.startswith("cac_") and rec.kind == "twilio" and rec.numbers == ("+14155552671",)
    assert rec.secret_refs == TWILIO and rec.signing_credential == "auth_token" and not rec.is_default
    assert store.get_carrier_account(rec.id, tenant="acme") == rec
    assert store.get_carrier_account(rec.id, tenant="globex") is None
    assert store.get_carrier_account(rec.id) == rec
    assert store.list_carrier_accounts(tenant="acme") == [rec]
    assert store.list_carrier_accounts(tenant="globex") == []
    with pytest.raises(ValueError):
        make(store, kind="sinch")


def test_delete_is_soft_and_scoped(store: Store) -> None:
    rec = make(store, default=True)
    assert not store.delete_carrier_account(rec.id, tenant="globex")
    assert store.delete_carrier_account(rec.id, tenant="acme")
    assert not store.delete_carrier_account(rec.id, tenant="acme")
    assert store.get_carrier_account(rec.id, tenant="acme") is None
    assert store.list_carrier_accounts(tenant="acme") == [] and store.default_carrier_account(tenant="acme") is None
    kept = store.get_carrier_account(rec.id, tenant="acme", include_deleted=True)
    assert kept is not None and kept.deleted_at is not None and not kept.is_default


def test_one_default_per_tenant_even_under_concurrent_creates(store: Store) -> None:
    other = make(store, tenant="globex", default=True)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            for _ in range(5):
                make(store, default=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    accounts = store.list_carrier_accounts(tenant="acme")
    assert len(accounts) == 20 and sum(a.is_default for a in accounts) == 1
    assert store.default_carrier_account(tenant="acme") == next(a for a in accounts if a.is_default)
    assert store.default_carrier_account(tenant="globex") == other


def test_resolve_account_credentials(store: Store) -> None:
    rec = make(store)
    assert resolve_account_credentials(rec, "acme", environ=ENV) == {"account_sid": "AC123", "auth_token": "tok"}
    # a required credential whose variable was unset since: named, with no value in the message
    with pytest.raises(CredentialsUnavailable) as err:
        resolve_account_credentials(rec, "acme", environ={"GATEWAY_SECRET_ACME_SID": "AC123"})
    assert err.value.missing == ("auth_token",) and "AC123" not in str(err.value)
    # another tenant placing a call through it gets nothing
    with pytest.raises(CredentialsUnavailable):
        resolve_account_credentials(rec, "globex", grants=SecretGrants({"globex": ("*",)}), environ=ENV)
    # a grant withdrawn since creation: the shared reference no longer resolves
    shared = make(store, secret_refs={**TWILIO, "auth_token": "GATEWAY_SECRET_SHARED_X"})
    granted = SecretGrants({"acme": ("GATEWAY_SECRET_SHARED_*",)})
    assert resolve_account_credentials(shared, "acme", grants=granted, environ=ENV)["auth_token"] == "x"
    with pytest.raises(CredentialsUnavailable):
        resolve_account_credentials(shared, "acme", environ=ENV)


def test_optional_credentials_resolve_when_given() -> None:
    from gateway.store import CarrierAccountRecord
    from datetime import datetime, timezone

    refs = {"api_key": "GATEWAY_SECRET_ACME_K", "connection_id": "GATEWAY_SECRET_ACME_C"}
    rec = CarrierAccountRecord("cac_1", "acme", "telnyx", "t", refs, ("+14155552671",), False, datetime.now(timezone.utc))
    assert rec.signing_credential is None
    env = {"GATEWAY_SECRET_ACME_K": "KEY", "GATEWAY_SECRET_ACME_C": "CONN", "GATEWAY_SECRET_ACME_P": "PUB"}
    assert resolve_account_credentials(rec, "acme", environ=env) == {"api_key": "KEY", "connection_id": "CONN"}
    rec2 = CarrierAccountRecord("cac_2", "acme", "telnyx", "t", {**refs, "public_key": "GATEWAY_SECRET_ACME_P"},
                                (), False, datetime.now(timezone.utc))  # fmt: skip
    assert rec2.signing_credential == "public_key"
    assert resolve_account_credentials(rec2, "acme", environ=env) == {"api_key": "KEY", "connection_id": "CONN",
                                                                 "public_key": "PUB"}


@pytest.mark.parametrize("kind", list(CREDENTIALS))
def test_credential_names_are_the_sdk_constructors_own(kind: str) -> None:
    """Each name is an argument of the kind's official SDK client (or of its signature check)."""
    import inspect

    import plivo
    import telnyx
    import twilio.rest
    import vonage

    params = {
        # Client(username, password, account_sid): "password: either auth_token or api_secret"
        "twilio": set(inspect.signature(twilio.rest.Client).parameters)
        | ({"auth_token"} if "auth_token" in (inspect.getdoc(twilio.rest.Client.__init__) or "") else set()),
        # connection_id: the Call Control application, an argument of every calls.dial
        "telnyx": set(inspect.signature(telnyx.Telnyx).parameters)
        | (set(inspect.signature(telnyx.Telnyx(api_key="k").calls.dial).parameters) & {"connection_id"}),
        "plivo": set(inspect.signature(plivo.RestClient).parameters),
        "vonage": set(inspect.signature(vonage.Auth).parameters),
    }[kind]
    assert set(CREDENTIALS[kind].names) <= params, (kind, CREDENTIALS[kind].names, params)
    assert CREDENTIALS[kind].signing in CREDENTIALS[kind].names


def test_the_one_default_index_is_partial_on_both_backends() -> None:
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex

    from gateway.store.models import CarrierAccount

    (index,) = [i for i in CarrierAccount.__table__.indexes if i.name == "uq_carrier_accounts_default"]
    assert str(CreateIndex(index).compile(dialect=postgresql.dialect())).endswith("WHERE is_default")
    assert str(CreateIndex(index).compile(dialect=sqlite.dialect())).endswith("WHERE is_default = 1")
