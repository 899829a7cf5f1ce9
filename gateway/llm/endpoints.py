"""Model selectors and the operator's named model endpoints (pure: no I/O).

A request chooses a model, never a network destination. ``AgentConfig.model`` is a selector
``<backend>:<model>[@<endpoint>]``: ``<endpoint>`` is the *name* of an endpoint the operator
configured in ``GATEWAY_MODEL_ENDPOINTS`` (JSON, name → :class:`gateway.config.ModelEndpoint`)::

    GATEWAY_MODEL_ENDPOINTS='{"gpu1": {"backend": "compat", "url": "ws://10.0.0.7:8000/v1",
                              "api_key_env": "GATEWAY_GPU1_KEY", "g711": true}}'

``compat:qwen-omni@gpu1`` then uses that server; ``compat:qwen-omni`` uses
``GATEWAY_COMPAT_REALTIME_URL``; ``openai:gpt-realtime`` uses ``GATEWAY_OPENAI_REALTIME_URL``.
A URL after ``@`` (``compat:m@ws://host/v1``) is refused (:class:`SelectorError`; a 422 at
the API), as is a name the operator did not configure or an endpoint of another backend.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BACKENDS", "Selector", "SelectorError", "parse_selector", "check_selector"]

BACKENDS = ("local", "openai", "azure", "xai", "compat", "gemini")
#: An endpoint name: letters, digits, ``_ . -``; 1–64 characters, starting with a letter or digit.
ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SelectorError(ValueError):
    """A model selector names a URL, an unknown endpoint, or an endpoint of another backend."""


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector: ``backend`` (lower case), ``model`` (may be ``""``), ``endpoint``
    (an endpoint name, or ``""`` for the backend's default endpoint from settings)."""

    backend: str
    model: str
    endpoint: str = ""


def parse_selector(model: str) -> Selector:
    """Split ``<backend>:<model>[@<endpoint>]`` (no check that the endpoint exists).

    Raises:
        SelectorError: the part after ``@`` is not an endpoint name (a URL, a path, empty).
    """
    backend, _, rest = model.strip().partition(":")
    name, at, endpoint = rest.partition("@")
    endpoint = endpoint.strip()
    if at and not ENDPOINT_NAME.fullmatch(endpoint):
        raise SelectorError(
            "the part after @ must be the name of an endpoint the operator configured "
            "(GATEWAY_MODEL_ENDPOINTS), not a URL"
        )
    return Selector(backend.strip().lower(), name.strip(), endpoint)


def check_selector(model: str, endpoints: Mapping[str, Any] | None) -> Selector:
    """:func:`parse_selector`, then check a named endpoint against ``endpoints``.

    Args:
        model: the selector.
        endpoints: the operator's endpoints (name → an object or dict with ``backend``);
            ``None`` skips the existence check (only the selector's form is checked).

    Raises:
        SelectorError: see :func:`parse_selector`; or the name is not configured, or the
            endpoint serves another backend.
    """
    sel = parse_selector(model)
    if sel.endpoint and endpoints is not None:
        ep = endpoints.get(sel.endpoint)
        if ep is None:
            raise SelectorError(f"no model endpoint named {sel.endpoint!r} is configured")
        kind = ep.get("backend") if isinstance(ep, Mapping) else getattr(ep, "backend", None)
        if kind != sel.backend:
            raise SelectorError(f"model endpoint {sel.endpoint!r} serves {kind!r}, not {sel.backend!r}")
    return sel
