"""Each entry module imports on its own, as in a fresh interpreter (no import cycle bites).

An import cycle only fails when a particular module of it is imported first: the suite, which
imports ``gateway.app`` early, hides it. One subprocess imports each module below with every
``gateway`` module dropped from ``sys.modules`` beforehand (third-party modules stay loaded, so
each import costs only the gateway's own modules). ``gateway.dialer.service`` → ``gateway.api``
→ its routers → ``gateway.dialer.service`` once failed for the first three.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Modules a process may import first: the gateway's entry points and the modules that once led
#: into a cycle (``python -c "import gateway.callsetup"`` failed).
ENTRY_MODULES = (
    "gateway.dialer.service", "gateway.callsetup", "gateway.streams", "gateway.dialer", "gateway.api",
    "gateway.webrtc.offer", "gateway.carriers.webrtc", "gateway.app",
)  # fmt: skip

PROBE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for key in [k for k in sys.modules if k == "gateway" or k.startswith("gateway.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_each_entry_module_imports_first():
    proc = subprocess.run([sys.executable, "-c", PROBE, *ENTRY_MODULES], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
