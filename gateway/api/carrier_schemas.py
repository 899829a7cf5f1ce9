"""Request and response bodies of ``/carrier-accounts`` (camelCase on the wire).

Credentials are given **by reference**, as agents' ``secretRefs``: the carrier SDK's
credential name (``account_sid``, ``auth_token`` … per kind: :data:`gateway.store.CREDENTIALS`)
→ a ``GATEWAY_SECRET_*`` variable granted to the key's tenant and set on the gateway. Only the
references are stored and returned. Caller-ID numbers are parsed with ``phonenumbers``
(must be a valid number of its country's plan) and stored in E.164.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import phonenumbers
from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from gateway.api.context import scope_of
from gateway.api.schemas import SECRET_VAR, _Request, _Response
from gateway.store import CREDENTIALS, CarrierAccountRecord
from gateway.tenants import UNAVAILABLE

__all__ = ["CarrierKind", "E164", "CarrierAccountCreate", "CarrierAccountOut", "CarrierAccountList", "e164"]

CarrierKind = Literal["twilio", "telnyx", "plivo", "vonage"]
#: The written form of a number field: ``+`` and digits, visual separators allowed.
NUMBER_FORM = r"^\+[0-9][0-9 ().-]{1,30}$"
_ALL_NAMES = sorted({n for spec in CREDENTIALS.values() for n in spec.names})


def e164(number: str) -> str:
    """``number`` (``+`` country code and national number; spaces, dots, dashes and
    parentheses ignored) in E.164, e.g. ``"+1 (415) 555-2671"`` → ``"+14155552671"``.

    Raises:
        ValueError: not parseable, or not a valid number of its country's numbering plan
            (``phonenumbers.is_valid_number``).
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{number!r} is not an E.164 number (+ country code and number): {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{number!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


#: A phone number field: validated and normalised to E.164.
E164 = Annotated[
    str,
    Field(min_length=3, max_length=32, pattern=NUMBER_FORM, description="E.164, e.g. +14155552671."),
    AfterValidator(e164),
]


def _kinds_table() -> str:
    return "; ".join(
        f"{kind}: {', '.join(spec.required)}" + (f" (optional {', '.join(spec.optional)})" if spec.optional else "")
        for kind, spec in CREDENTIALS.items()
    )


class CarrierAccountCreate(_Request):
    """Body of ``POST /carrier-accounts``."""

    kind: CarrierKind = Field(description="The carrier.")
    name: str = Field(min_length=1, max_length=200)
    secret_refs: dict[str, str] = Field(
        max_length=8,
        description="The account's credentials by reference: the SDK's credential name → an "
        "environment variable of the gateway that holds it, starting with GATEWAY_SECRET_ and "
        f"granted to the API key's tenant. Per kind: {_kinds_table()}. The callback signing key "
        "is auth_token (twilio, plivo), public_key (telnyx: Ed25519), signature_secret (vonage: "
        "signed JWT); without it that account's callbacks cannot be verified and are refused.",
        json_schema_extra={
            "propertyNames": {"enum": _ALL_NAMES},
            "additionalProperties": {"type": "string", "pattern": f"^{SECRET_VAR.pattern}$"},
        },
    )
    numbers: list[E164] = Field(
        min_length=1, max_length=100, description="The account's own caller-ID numbers (E.164)."
    )
    default: bool = Field(
        False,
        description="Make this the tenant's default account (one per tenant, whatever the kind): "
        "outbound calls without carrierAccountId use it. The previous default stops being it.",
    )

    @field_validator("secret_refs")
    @classmethod
    def _credentials_of_kind(cls, refs: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """The kind's credential names, each granted to the key's tenant and set; both
        failures read alike (:data:`gateway.tenants.UNAVAILABLE`)."""
        scope = scope_of(info)
        kind = info.data.get("kind")
        spec = CREDENTIALS.get(kind) if isinstance(kind, str) else None
        for name, var in refs.items():
            if spec is not None and name not in spec.names:
                raise ValueError(f"{name!r} is not a {kind} credential ({kind} takes {', '.join(spec.names)})")
            if not SECRET_VAR.fullmatch(var):
                raise ValueError(f"{name}: {var!r} must name an environment variable starting with GATEWAY_SECRET_")
            if not scope.grants.available(scope.tenant, var, scope.environ):
                raise ValueError(f"{name}: {var} {UNAVAILABLE}")
        missing = [n for n in spec.required if n not in refs] if spec is not None else []
        if missing:
            raise ValueError(f"{kind} needs {', '.join(spec.required)}: {', '.join(missing)} missing")
        return refs

    @field_validator("numbers")
    @classmethod
    def _distinct(cls, numbers: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for i, n in enumerate(numbers):
            if n in seen:
                raise ValueError(f"numbers.{i} is the same number as numbers.{seen[n]} ({n})")
            seen[n] = i
        return numbers


class CarrierAccountOut(_Response):
    """A carrier account (credential references, never values)."""

    id: str
    kind: CarrierKind
    name: str
    secret_refs: dict[str, str] = Field(description="Credential references (never values).")
    numbers: list[str] = Field(description="Caller-ID numbers, E.164.")
    default: bool
    callback_signing: str | None = Field(
        description="The credential that verifies this account's status callbacks, or null "
        "when it was not given (callbacks of the account are then refused)."
    )
    created_at: datetime

    @classmethod
    def of(cls, rec: CarrierAccountRecord) -> CarrierAccountOut:
        """The response body of a stored account."""
        return cls(
            id=rec.id, kind=rec.kind, name=rec.name, secret_refs=dict(rec.secret_refs),  # type: ignore[arg-type]
            numbers=list(rec.numbers), default=rec.is_default, callback_signing=rec.signing_credential,
            created_at=rec.created_at,
        )  # fmt: skip


class CarrierAccountList(_Response):
    """``GET /carrier-accounts``: the tenant's accounts, oldest first."""

    data: list[CarrierAccountOut]
