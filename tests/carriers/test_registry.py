"""The registry, the adapter contract, and the sans-I/O rule for ``gateway/carriers``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway.carriers as carriers_pkg
from gateway.carriers.registry import CARRIERS, UnknownCarrier, make_adapter

FORBIDDEN_IMPORTS = {"asyncio", "socket", "starlette", "websockets", "httpx", "uvicorn", "pydantic", "trio", "anyio"}


def test_carrier_names() -> None:
    assert CARRIERS == ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw", "webrtc")


@pytest.mark.parametrize("name", CARRIERS)
def test_make_adapter_fulfils_the_contract(name: str) -> None:
    adapter = make_adapter(name)
    assert adapter.name == name
    assert adapter.audio_format is None
    assert isinstance(adapter.frame_ms, int) and adapter.frame_ms > 0
    for method in ("receive", "media", "mark", "clear"):
        assert callable(getattr(adapter, method))
    assert make_adapter(name) is not adapter  # one instance per call


def test_unknown_carrier() -> None:
    with pytest.raises(UnknownCarrier):
        make_adapter("skype")
    assert issubclass(UnknownCarrier, ValueError)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(Path(carriers_pkg.__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_carriers_do_no_io(path: Path) -> None:
    assert not _imported_modules(path) & FORBIDDEN_IMPORTS
