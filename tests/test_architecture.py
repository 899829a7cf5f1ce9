"""House rules that a test can check: pure layers do no I/O; no PyTorch anywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PURE = ["gateway/codecs", "gateway/carriers", "gateway/audio"]
IO_MODULES = {"asyncio", "starlette", "httpx", "websockets", "uvicorn", "socket", "sqlalchemy", "aiohttp"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", PURE)
def test_pure_layers_import_no_io_library(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & IO_MODULES) for f in files}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_the_gateway_never_imports_torch():
    code = "import sys, gateway.app, gateway.cli, gateway.llm.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
    assert subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode != 0
