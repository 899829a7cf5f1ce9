"""The model bridges' protocol layer does no I/O; the bridge modules keep their public names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

IO_MODULES = {"asyncio", "starlette", "httpx", "websockets", "uvicorn", "socket", "sqlalchemy", "aiohttp"}

#: Sans-I/O: message building and parsing, backends, tool declarations, shared helpers.
PURE = [
    "gateway.llm.base",
    "gateway.llm.common",
    "gateway.llm.openai_backends",
    "gateway.llm.openai_protocol",
    "gateway.llm.openai_commands",
    "gateway.llm.openai_events",
    "gateway.llm.openai_history",
    "gateway.llm.gemini_protocol",
    "gateway.llm.tools",
]




def imported_roots(path: Path) -> set[str]:
    """Top-level packages a module imports (absolute imports, anywhere in the file)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE)
def test_protocol_modules_import_no_io_library(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    assert not imported_roots(path) & IO_MODULES


def test_protocol_modules_pull_in_no_io_library_indirectly():
    code = (
        "import sys\n"
        f"for m in {PURE!r}: __import__(m)\n"
        f"print(sorted(m for m in {sorted(IO_MODULES)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_bridge_modules_re_export_the_protocol_names():
    from gateway.llm import gemini_live, gemini_protocol, openai_backends, openai_protocol, openai_realtime

    assert openai_realtime.RealtimeProtocol is openai_protocol.RealtimeProtocol
    for name in ("RealtimeBackend", "openai_backend", "azure_backend", "xai_backend", "compat_backend", "choose_formats"):
        assert getattr(openai_realtime, name) is getattr(openai_backends, name)
    assert gemini_live.LiveProtocol is gemini_protocol.LiveProtocol
    for mod in (openai_realtime, gemini_live):
        assert all(hasattr(mod, n) for n in mod.__all__)
