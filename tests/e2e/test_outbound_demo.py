"""``gateway demo --outbound`` end to end: both calls end as they should and the report says so."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gateway.simulator.outbound_demo import run_outbound_demo

pytestmark = pytest.mark.slow


async def test_the_outbound_demo_reports_a_person_and_a_voicemail(tmp_path, local_engines, monkeypatch):
    out = io.StringIO()
    code = await run_outbound_demo(Console(file=out, width=200), engines=local_engines, workdir=tmp_path)
    text = out.getvalue()
    assert code == 0, text
    assert "person: status completed" in text and "verdict human" in text, text
    assert "voicemail: status voicemail (voicemail_message_left); verdict machine_end_beep" in text, text
    assert "action: message_left" in text and "call us back" in text, text
    assert text.count("queued (gateway) → initiated (gateway) → ringing (carrier)") == 2, text
