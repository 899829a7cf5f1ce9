"""Golden fixtures: carriers' documented example messages, stored in ``golden/*.json``."""

from __future__ import annotations

import base64
import copy
import json
from functools import cache
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"


@cache
def _load(name: str) -> dict:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))


def golden(name: str) -> dict:
    """A fresh deep copy of ``golden/<name>.json`` (tests may mutate it)."""
    return copy.deepcopy(_load(name))


def text(message: object) -> str:
    """A message as the carrier would send it: one JSON text frame."""
    return json.dumps(message)


def compact(message: object) -> str:
    """The compact JSON our builders emit (no spaces), keys in the given order."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def with_payload(message: dict, payload: bytes, *path: str) -> dict:
    """A copy of ``message`` whose field at ``path`` (default ``media.payload``) is ``payload`` in base64."""
    path = path or ("media", "payload")
    out = copy.deepcopy(message)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = base64.b64encode(payload).decode()
    return out


def key_order(message: object) -> object:
    """The nested key order of a JSON value (to compare shapes including order)."""
    if isinstance(message, dict):
        return [(k, key_order(v)) for k, v in message.items()]
    if isinstance(message, list):
        return [key_order(v) for v in message]
    return None
