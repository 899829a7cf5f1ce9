"""What request validation needs to know about the caller and the operator's settings.

The request schemas (:mod:`gateway.api.schemas`) check secret references against the key's
tenant grant, tool URLs against the outbound policy, and model selectors against the named
endpoints. Routes pass a :class:`RequestScope` as pydantic's validation ``context``
(``Model.model_validate_json(raw, context=scope.context())``), or set it for the request's
task with :func:`use_scope` (FastAPI validates request bodies without a context: the API's
route class sets the scope around each request). Validation without either uses
:meth:`RequestScope.strict`: tenant ``default``, built-in grants only, no outbound
allow-list, endpoint names unchecked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationInfo

from gateway.netpolicy import OutboundPolicy
from gateway.tenants import DEFAULT_TENANT, SecretGrants

__all__ = ["RequestScope", "scope_of", "use_scope"]

_KEY = "gateway.scope"
#: The scope of the request being served in this task (set by :func:`use_scope`).
_CURRENT: ContextVar[RequestScope | None] = ContextVar("gateway_request_scope", default=None)


@dataclass(frozen=True, slots=True)
class RequestScope:
    """The caller's tenant and the operator's policies for one request.

    Attributes:
        tenant: the API key's tenant.
        grants: secrets each tenant may reference.
        outbound: where tool URLs may point.
        endpoints: the operator's named model endpoints; ``None``: not checked.
        environ: where secret references are looked up (the process environment).
    """

    tenant: str = DEFAULT_TENANT
    grants: SecretGrants = field(default_factory=SecretGrants)
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    endpoints: Mapping[str, Any] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)

    @classmethod
    def strict(cls) -> RequestScope:
        """The scope of validation without a context (the most restrictive)."""
        return cls()

    @classmethod
    def from_settings(cls, settings: Any, tenant: str) -> RequestScope:
        """The scope of a request by a key of ``tenant`` under ``settings``."""
        return cls(
            tenant=tenant,
            grants=SecretGrants.from_settings(settings),
            outbound=OutboundPolicy.from_settings(settings),
            endpoints=dict(getattr(settings, "model_endpoints", None) or {}),
        )

    def context(self) -> dict[str, Any]:
        """The pydantic validation ``context`` carrying this scope."""
        return {_KEY: self}


@contextlib.contextmanager
def use_scope(scope: RequestScope) -> Iterator[RequestScope]:
    """Validate with ``scope`` inside the ``with`` block (this task and what it awaits only)."""
    token = _CURRENT.set(scope)
    try:
        yield scope
    finally:
        _CURRENT.reset(token)


def scope_of(info: ValidationInfo) -> RequestScope:
    """The :class:`RequestScope` of a validator: ``info``'s context, else the one set by
    :func:`use_scope`, else :meth:`RequestScope.strict`."""
    ctx = info.context
    scope = ctx.get(_KEY) if isinstance(ctx, Mapping) else None
    if not isinstance(scope, RequestScope):
        scope = _CURRENT.get()
    return scope if isinstance(scope, RequestScope) else RequestScope.strict()
