"""Simulated carrier accounts, and the ``GATEWAY_SECRET_*`` references a gateway is given for them.

:func:`new_account` makes fresh credentials of one carrier kind (what the simulator checks and
signs with); :func:`secret_refs` names the environment variables that hold them for a tenant
(the gateway reads credentials only by reference, :mod:`gateway.store.carrier_accounts`) and
returns those variables' values, for the process that runs the gateway to set.
"""

from __future__ import annotations

import secrets
import uuid

from gateway.store.carrier_accounts import CREDENTIALS

__all__ = ["new_account", "secret_refs"]


def new_account(kind: str) -> dict[str, str]:
    """Fresh credentials of a simulated ``kind`` account (the dialer's names, plus what the
    simulator signs with: Telnyx's Ed25519 ``private_key``, Vonage's RSA ``public_key``).

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "twilio":
        return {"account_sid": "AC" + uuid.uuid4().hex, "auth_token": secrets.token_hex(16)}
    if kind == "plivo":
        return {"auth_id": "MA" + secrets.token_hex(9).upper(), "auth_token": secrets.token_urlsafe(30)}
    if kind == "telnyx":
        from gateway.simulator.carrier_api.telnyx import new_account as telnyx_account

        return telnyx_account()
    if kind == "vonage":
        from gateway.simulator.carrier_api.vonage import new_account as vonage_account

        return vonage_account()
    raise ValueError(f"no simulated {kind!r} account")


def secret_refs(kind: str, creds: dict[str, str], *, tenant: str = "default",
                prefix: str = "SIM") -> tuple[dict[str, str], dict[str, str]]:
    """``(secretRefs, environment)`` for a carrier account of ``tenant`` holding ``creds``.

    ``secretRefs`` maps each credential the account kind takes to
    ``GATEWAY_SECRET_<TENANT>_<PREFIX>_<KIND>_<NAME>`` (granted to ``tenant`` by the built-in
    rule); ``environment`` maps those variables to the values.
    """
    spec = CREDENTIALS[kind]
    refs, env = {}, {}
    for name in spec.names:
        if name in creds:
            var = f"GATEWAY_SECRET_{tenant.upper()}_{prefix}_{kind.upper()}_{name.upper()}"
            refs[name] = var
            env[var] = creds[name]
    return refs, env
