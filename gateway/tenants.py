"""Tenants and the secrets granted to them (pure: reads only the mapping it is given).

Every API key belongs to a tenant (``gateway keys create --tenant acme``; ``default`` if not
given). What a key creates (agents, calls) belongs to its tenant, and other tenants' keys get a
404 for it. A key may reference (``secretRefs``) only the ``GATEWAY_SECRET_*`` environment
variables granted to its tenant, and a call's references resolve only within that grant:

* built in, every tenant ``t`` is granted ``GATEWAY_SECRET_<T>_*`` (``t`` upper-cased): the
  ``default`` tenant gets ``GATEWAY_SECRET_DEFAULT_*``, tenant ``acme`` gets
  ``GATEWAY_SECRET_ACME_*``. Tenant names are lower-case letters and digits only, so no
  tenant's prefix is another's (``acme`` cannot reach ``GATEWAY_SECRET_ACME2_*``);
* ``GATEWAY_TENANT_SECRETS`` (JSON, tenant → list) grants more: exact names
  (``GATEWAY_SECRET_SHARED_TTS``), prefixes ending in ``*`` (``GATEWAY_SECRET_TEAM_A_*``), or
  ``"*"`` for every ``GATEWAY_SECRET_*`` variable. A single-tenant gateway that keeps its old
  variable names sets ``GATEWAY_TENANT_SECRETS='{"default": ["*"]}'``.

Nothing outside ``GATEWAY_SECRET_*`` is ever reachable, whatever the grant. A reference that is
not granted and one whose variable is not set get the same answer (:data:`UNAVAILABLE`), so
a key cannot probe which variables exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_TENANT",
    "TENANT_NAME",
    "SECRET_VAR",
    "UNAVAILABLE",
    "SecretGrants",
    "check_tenant_name",
]

DEFAULT_TENANT = "default"
#: A tenant name: lower-case ASCII letters and digits, 1–32 characters.
TENANT_NAME = re.compile(r"[a-z0-9]{1,32}")
#: Environment variables a secret reference may name at all.
SECRET_VAR = re.compile(r"GATEWAY_SECRET_[A-Z0-9_]{1,100}")
#: The one message for a reference that is not granted or not set (reveals neither).
UNAVAILABLE = "is not available to this API key (not granted to its tenant, or not set on the gateway)"


def check_tenant_name(tenant: str) -> str:
    """Return ``tenant`` if it is a valid tenant name.

    Raises:
        ValueError: not 1–32 lower-case letters and digits.
    """
    if not isinstance(tenant, str) or not TENANT_NAME.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r} must be 1-32 lower-case letters and digits")
    return tenant


@dataclass(frozen=True, slots=True)
class SecretGrants:
    """Which ``GATEWAY_SECRET_*`` variables each tenant may reference.

    Args:
        extra: tenant → patterns granted on top of the built-in ``GATEWAY_SECRET_<T>_*``
            (from ``Settings.tenant_secrets``).

    Raises:
        ValueError: a pattern is neither ``"*"``, a ``GATEWAY_SECRET_`` name, nor such a
            prefix ending in ``*``; or a tenant name is invalid.
    """

    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked: dict[str, tuple[str, ...]] = {}
        for tenant, patterns in self.extra.items():
            check_tenant_name(tenant)
            for p in patterns:
                stem = p[:-1] if p.endswith("*") else p
                if p != "*" and not (stem.startswith("GATEWAY_SECRET_") and re.fullmatch(r"[A-Z0-9_]*", stem)):
                    raise ValueError(f"tenant {tenant}: grant {p!r} must be '*', a GATEWAY_SECRET_ name or prefix*")
            checked[tenant] = tuple(patterns)
        object.__setattr__(self, "extra", checked)

    @classmethod
    def from_settings(cls, settings: Any) -> SecretGrants:
        """The grants of ``settings.tenant_secrets`` (missing: built-in grants only)."""
        raw: Mapping[str, Iterable[str]] = getattr(settings, "tenant_secrets", None) or {}
        return cls({t: tuple(p) for t, p in raw.items()})

    def patterns(self, tenant: str) -> tuple[str, ...]:
        """Every pattern granted to ``tenant``, the built-in prefix first."""
        return (f"GATEWAY_SECRET_{tenant.upper()}_*", *self.extra.get(tenant, ()))

    def granted(self, tenant: str, var: str) -> bool:
        """Whether ``tenant`` may reference the environment variable ``var``."""
        if not TENANT_NAME.fullmatch(tenant) or not SECRET_VAR.fullmatch(var):
            return False
        for p in self.patterns(tenant):
            if p == "*" or (var.startswith(p[:-1]) if p.endswith("*") else var == p):
                return True
        return False

    def available(self, tenant: str, var: str, environ: Mapping[str, str]) -> bool:
        """Granted to ``tenant`` and set (non-empty) in ``environ``."""
        return self.granted(tenant, var) and bool(environ.get(var))

    def resolve(self, tenant: str, refs: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
        """The values of ``refs`` (credential name → variable) that ``tenant`` may use; the
        others (not granted, or not set) are left out."""
        return {name: environ[var] for name, var in refs.items() if self.available(tenant, var, environ)}
