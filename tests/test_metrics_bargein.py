"""Pause-then-commit outcomes on the Prometheus metrics, counted once per finished call."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import generate_latest

from gateway.metrics import GatewayMetrics


def test_pauses_are_counted_by_how_they_ended():
    metrics = GatewayMetrics(lambda: 0)
    outcome = SimpleNamespace(status="completed", end_reason="carrier_stop", duration_ms=1000, metrics={
        "bargeIns": 1, "bargeInPauses": 4, "bargeInResumes": 2, "bargeInCommits": 1})  # fmt: skip
    metrics.call_finished("twilio", outcome)
    metrics.call_finished("twilio", SimpleNamespace(status="completed", end_reason="x", duration_ms=5, metrics={}))
    text = generate_latest(metrics.registry).decode()
    for outcome_label, n in (("resumed", 2), ("committed", 1), ("abandoned", 1)):
        line = f'gateway_barge_in_pauses_total{{carrier="twilio",outcome="{outcome_label}"}} {float(n)}'
        assert line in text, text
    assert 'gateway_barge_ins_total{carrier="twilio"} 1.0' in text
