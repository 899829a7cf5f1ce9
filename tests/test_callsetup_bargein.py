"""The barge-in mode a served call runs with: its own, else the operator's; off when not
interruptible."""

from __future__ import annotations

import pytest

from gateway.callsetup import barge_in_mode_of
from gateway.config import Settings
from gateway.store import CallConfig


@pytest.mark.parametrize(("interruptible", "own", "default", "expected"), [
    (True, None, "immediate", "immediate"),
    (True, None, "pause_then_commit", "pause_then_commit"),
    (True, "pause_then_commit", "immediate", "pause_then_commit"),
    (True, "off", "pause_then_commit", "off"),
    (False, "pause_then_commit", "immediate", "off"),
    (False, None, "pause_then_commit", "off"),
])  # fmt: skip
def test_the_call_s_own_mode_else_the_operator_s_and_off_when_not_interruptible(interruptible, own, default,
                                                                                 expected):
    config = CallConfig(interruptible=interruptible, barge_in_mode=own)
    assert barge_in_mode_of(config, default) == expected


def test_the_operator_default_is_immediate_and_checked(monkeypatch):
    assert Settings().barge_in_mode == "immediate" and Settings().barge_in_resume_gap_ms == 400
    monkeypatch.setenv("GATEWAY_BARGE_IN_MODE", "pause_then_commit")
    assert Settings().barge_in_mode == "pause_then_commit"
    monkeypatch.setenv("GATEWAY_BARGE_IN_MODE", "sometimes")
    with pytest.raises(ValueError):
        Settings()


def test_a_stored_config_round_trips_its_barge_in_settings():
    config = CallConfig(interruptible=True, barge_in_mode="pause_then_commit", barge_in_commit_ms=300)
    again = CallConfig.from_json(config.to_json())
    assert (again.barge_in_mode, again.barge_in_commit_ms) == ("pause_then_commit", 300)
    assert CallConfig.from_json({}).barge_in_mode is None  # a snapshot from before: the operator's default
