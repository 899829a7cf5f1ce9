"""The README's raw-protocol client example runs, unmodified, against a real gateway."""

from __future__ import annotations

import asyncio
import re
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def readme_client() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "async def main(url" in b]
    assert len(block.strip().splitlines()) <= 21  # a 20-line example, as promised
    return block


async def test_readme_raw_client_talks_to_the_gateway(gateway, shared_audio, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(readme_client())
    gw = await gateway()
    call = await gw.create_inline_call(connectionType="raw")
    out = tmp_path / "heard.raw"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), call["streamUrl"], str(shared_audio / "caller" / "hello.wav"), str(out))
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    heard = np.frombuffer(out.read_bytes(), "<i2")  # PCM16 at the client's 16 kHz
    assert heard.size > 16000 and np.abs(heard).max() > 1000  # the greeting, at least
    rec = await gw.call_record(call["callId"])
    assert rec["status"] == "completed" and rec["metrics"]["marksAcked"] > 0
