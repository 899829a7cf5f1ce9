"""Carrier accounts: a tenant's own Twilio / Telnyx / Plivo / Vonage accounts.

An account holds its credentials **by reference** (credential name → ``GATEWAY_SECRET_*``
variable, granted to the tenant as for agents' ``secretRefs``, :mod:`gateway.tenants`) and its
caller-ID numbers (E.164). :data:`CREDENTIALS` names, per kind, the credentials the carrier's
official SDK client takes (by the constructor's own argument names) and the one that checks the
carrier's status-callback signatures. A dialer gets the values with
:func:`resolve_account_credentials`, at call time, within the tenant's grant; nothing here
stores, logs or returns a value.

Default: at most one live account **per tenant** is its default (``POST /calls/outbound``
without ``carrierAccountId`` uses it, whatever its kind); making an account the default
clears the previous one, in one transaction, and a partial unique index
(``uq_carrier_accounts_default``) keeps racing writers from leaving two.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.base import StoreBase
from gateway.store.errors import StoreError
from gateway.store.helpers import _record, _rowcount, new_id
from gateway.store.models import CarrierAccount
from gateway.tenants import DEFAULT_TENANT, SecretGrants

__all__ = [
    "CARRIER_KINDS",
    "CarrierCredentials",
    "CREDENTIALS",
    "CarrierAccountRecord",
    "CarrierAccountsMixin",
    "CredentialsUnavailable",
    "resolve_account_credentials",
]


@dataclass(frozen=True, slots=True)
class CarrierCredentials:
    """The credentials an account of one kind is given.

    Attributes:
        required: names the SDK client needs to place and control calls.
        optional: names it may also take.
        signing: the credential that verifies the carrier's callback signatures (``None``:
            the kind has none); callbacks of an account without it cannot be verified.
        source: the SDK calls these names come from.
    """

    required: tuple[str, ...]
    optional: tuple[str, ...]
    signing: str | None
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        """Every credential name this kind accepts."""
        return self.required + self.optional


#: Per kind, from the SDKs' own constructors and signature validators.
CREDENTIALS: dict[str, CarrierCredentials] = {
    "twilio": CarrierCredentials(
        ("account_sid", "auth_token"), (), "auth_token",
        "twilio.rest.Client(account_sid, auth_token); callbacks: "
        "twilio.request_validator.RequestValidator(auth_token)",
    ),
    "telnyx": CarrierCredentials(
        ("api_key", "connection_id"), ("public_key",), "public_key",
        "telnyx.Telnyx(api_key=, public_key=), calls.dial(connection_id=) (the Call Control "
        "application); callbacks: Ed25519, client.webhooks.unwrap(key=public_key)",
    ),
    "plivo": CarrierCredentials(
        ("auth_id", "auth_token"), (), "auth_token",
        "plivo.RestClient(auth_id, auth_token); callbacks: "
        "plivo.utils.signature_v3.validate_v3_signature(…, auth_token, …)",
    ),
    "vonage": CarrierCredentials(
        ("application_id", "private_key"), ("signature_secret",), "signature_secret",
        "vonage.Auth(application_id=, private_key=, signature_secret=); callbacks: signed JWT, "
        "vonage_jwt.verify_jwt.verify_signature(token, signature_secret)",
    ),
}  # fmt: skip
#: The carrier kinds an account can be.
CARRIER_KINDS: tuple[str, ...] = tuple(CREDENTIALS)


@dataclass(frozen=True, slots=True)
class CarrierAccountRecord:
    """A stored carrier account (references only, never secret values)."""

    id: str
    tenant: str
    kind: str
    name: str
    secret_refs: dict[str, str]
    numbers: tuple[str, ...]
    is_default: bool
    created_at: datetime
    deleted_at: datetime | None = None

    @property
    def signing_credential(self) -> str | None:
        """The credential name that verifies this account's callbacks, if it was given."""
        name = CREDENTIALS[self.kind].signing
        return name if name in self.secret_refs else None


class CredentialsUnavailable(StoreError):
    """A required credential of an account does not resolve (no longer granted, or unset).

    Attributes:
        account_id: the account.
        missing: the credential names (never values, never variable contents).
    """

    code = "credentials_unavailable"

    def __init__(self, account_id: str, missing: Iterable[str]) -> None:
        self.account_id = account_id
        self.missing = tuple(missing)
        super().__init__(f"carrier account {account_id}: credentials {', '.join(self.missing)} are unavailable")


def resolve_account_credentials(
    account: CarrierAccountRecord,
    tenant: str,
    *,
    grants: SecretGrants | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The account's credential values, for a dialer (credential name → value).

    Resolved now, within ``tenant``'s grant (:meth:`SecretGrants.resolve`): a reference whose
    grant was withdrawn or whose variable was unset since the account was made is left out.

    Args:
        account: the account (of ``tenant``).
        tenant: the tenant placing the call.
        grants: the operator's grants (``SecretGrants.from_settings(settings)``; default: the
            built-in ``GATEWAY_SECRET_<T>_*`` only).
        environ: where variables are read (default ``os.environ``).

    Returns:
        Every credential that resolves, required and optional, e.g. ``{"account_sid": "AC…",
        "auth_token": "…"}`` for Twilio.

    Raises:
        CredentialsUnavailable: a required credential does not resolve, or the account is not
            ``tenant``'s (then every required name is reported).
    """
    spec = CREDENTIALS[account.kind]
    if account.tenant != tenant:
        raise CredentialsUnavailable(account.id, spec.required)
    env = os.environ if environ is None else environ
    values = (grants or SecretGrants()).resolve(tenant, account.secret_refs, env)
    missing = [name for name in spec.required if name not in values]
    if missing:
        raise CredentialsUnavailable(account.id, missing)
    return values


def _account_record(row: CarrierAccount) -> CarrierAccountRecord:
    return _record(
        CarrierAccountRecord, row, secret_refs=dict(row.secret_refs or {}), numbers=tuple(row.numbers or ())
    )


class CarrierAccountsMixin(StoreBase):
    """Create, read, list and delete carrier accounts (values are validated by the API)."""

    def create_carrier_account(
        self,
        *,
        kind: str,
        name: str,
        secret_refs: Mapping[str, str],
        numbers: Iterable[str] = (),
        default: bool = False,
        tenant: str = DEFAULT_TENANT,
    ) -> CarrierAccountRecord:
        """Store a new account of ``tenant``; ``default=True`` makes it the tenant's default
        (the previous default, if any, stops being it).

        Raises:
            ValueError: ``kind`` is not one of :data:`CARRIER_KINDS`.
        """
        if kind not in CREDENTIALS:
            raise ValueError(f"unknown carrier kind {kind!r}")
        for attempt in range(3):  # a racing default of the same tenant: clear it and retry
            row = CarrierAccount(
                id=new_id("cac"), tenant=tenant, kind=kind, name=name, secret_refs=dict(secret_refs),
                numbers=list(numbers), is_default=bool(default), created_at=self.now(),
            )  # fmt: skip
            try:
                with self._session() as s, s.begin():
                    if default:
                        s.execute(
                            update(CarrierAccount)
                            .where(CarrierAccount.tenant == tenant, CarrierAccount.is_default.is_(True))
                            .values(is_default=False)
                        )
                    s.add(row)
            except IntegrityError:
                if not default or attempt == 2:
                    raise
                continue
            return _account_record(row)
        raise AssertionError("unreachable")

    def get_carrier_account(
        self, account_id: str, *, tenant: str | None = None, include_deleted: bool = False
    ) -> CarrierAccountRecord | None:
        """The account, or ``None`` (unknown, another tenant's when ``tenant`` is given, or
        deleted unless ``include_deleted``: a dialer hanging up a call placed before the
        delete still finds it)."""
        with self._session() as s:
            row = s.get(CarrierAccount, account_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                return None
            if row.deleted_at is not None and not include_deleted:
                return None
            return _account_record(row)

    def list_carrier_accounts(self, *, tenant: str) -> list[CarrierAccountRecord]:
        """The tenant's live accounts, oldest first."""
        with self._session() as s:
            rows = s.scalars(
                select(CarrierAccount)
                .where(CarrierAccount.tenant == tenant, CarrierAccount.deleted_at.is_(None))
                .order_by(CarrierAccount.created_at, CarrierAccount.id)
            ).all()
            return [_account_record(r) for r in rows]

    def default_carrier_account(self, *, tenant: str) -> CarrierAccountRecord | None:
        """The tenant's default account, or ``None`` if it has none."""
        with self._session() as s:
            row = s.scalars(
                select(CarrierAccount).where(
                    CarrierAccount.tenant == tenant,
                    CarrierAccount.is_default.is_(True),
                    CarrierAccount.deleted_at.is_(None),
                )
            ).one_or_none()
            return None if row is None else _account_record(row)

    def delete_carrier_account(self, account_id: str, *, tenant: str) -> bool:
        """Delete the tenant's account (it stops being the default). ``False``: no live
        account of ``tenant`` has that id."""
        with self._session() as s, s.begin():
            res = s.execute(
                update(CarrierAccount)
                .where(
                    CarrierAccount.id == account_id,
                    CarrierAccount.tenant == tenant,
                    CarrierAccount.deleted_at.is_(None),
                )
                .values(deleted_at=self.now(), is_default=False)
            )
            return _rowcount(res) == 1
