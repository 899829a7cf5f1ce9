"""Prometheus metrics for the gateway, updated once per call (nothing on the per-frame path).

``GET /metrics`` serves them in the Prometheus text format. Each app has its own registry (no
module-level state), so several apps in one process (tests) do not mix their figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class GatewayMetrics:
    """The gateway's counters, gauges and histograms on a registry of its own.

    Args:
        live_calls: returns the number of calls streaming now (read at scrape time).
    """

    def __init__(self, live_calls: Callable[[], int]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        Gauge("gateway_calls_live", "Calls streaming now.", registry=r).set_function(live_calls)
        self.calls = Counter("gateway_calls_total", "Calls that ended, by carrier, status and reason.",
                             ["carrier", "status", "end_reason"], registry=r)
        self.frames = Counter("gateway_media_frames_total", "Media frames, by carrier and direction.",
                              ["carrier", "direction"], registry=r)
        self.protocol_errors = Counter("gateway_protocol_errors_total",
                                       "Carrier messages counted and skipped, by kind.", ["carrier", "kind"], registry=r)
        self.barge_ins = Counter("gateway_barge_ins_total", "Barge-ins (agent audio cleared).", ["carrier"], registry=r)
        self.barge_in_pauses = Counter("gateway_barge_in_pauses_total",
                                       "Pause-then-commit barge-in candidates (agent audio paused), by how they "
                                       "ended: resumed, committed, or neither (a stop, the call's end).",
                                       ["carrier", "outcome"], registry=r)  # fmt: skip
        self.call_seconds = Counter("gateway_call_seconds_total", "Call time streamed (s).", ["carrier"], registry=r)
        self.turn_latency = Histogram("gateway_turn_latency_seconds",
                                      "Caller's end of turn (VAD) to the first agent audio queued (s).",
                                      ["carrier"], buckets=_LATENCY_BUCKETS, registry=r)
        self.barge_in_reaction = Histogram("gateway_barge_in_reaction_seconds",
                                           "Caller speech onset to the carrier clear being sent (s).",
                                           ["carrier"], buckets=_LATENCY_BUCKETS, registry=r)

    def watch_engine(self, engine) -> None:
        """Gauges read from the :class:`~gateway.engine.MediaEngine` at scrape time."""
        r = self.registry
        for name, doc, read in (
            ("gateway_media_engine_lanes", "Calls attached to the media engine now.", lambda: engine.lanes),
            ("gateway_media_engine_ticks", "Media engine passes run since start.", lambda: engine.ticks),
            ("gateway_media_engine_busy_seconds", "Time spent in media engine passes since start (s).",
             lambda: engine.busy_s),
            ("gateway_media_engine_vad_fallbacks", "Silero runs that failed (their calls were scored by "
             "WebRTC VAD for that round) since start.", lambda: engine.fallback_ticks),
        ):  # fmt: skip
            Gauge(name, doc, registry=r).set_function(read)

    def watch_webhooks(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """``gateway_webhook_attempts_total{outcome}``: webhook delivery attempts by outcome
        (``delivered``, ``retry``, ``failed``, ``disabled``), read from the delivery worker's
        ``counts`` at scrape time."""

        class _Attempts(Collector):
            def collect(self) -> Iterator[CounterMetricFamily]:
                family = CounterMetricFamily("gateway_webhook_attempts", "Webhook delivery attempts, by outcome.",
                                             labels=["outcome"])  # fmt: skip
                for outcome, n in sorted(counts().items()):
                    family.add_metric([outcome], n)
                yield family

        self.registry.register(_Attempts())

    def call_finished(self, carrier: str, outcome) -> None:
        """Count one finished call (a :class:`gateway.session.CallOutcome`)."""
        m = outcome.metrics
        self.calls.labels(carrier, outcome.status, outcome.end_reason).inc()
        self.call_seconds.labels(carrier).inc(outcome.duration_ms / 1000.0)
        self.frames.labels(carrier, "in").inc(m.get("framesIn", 0))
        self.frames.labels(carrier, "out").inc(m.get("framesOut", 0))
        self.barge_ins.labels(carrier).inc(m.get("bargeIns", 0))
        pauses, resumes, commits = m.get("bargeInPauses", 0), m.get("bargeInResumes", 0), m.get("bargeInCommits", 0)
        if pauses:
            self.barge_in_pauses.labels(carrier, "resumed").inc(resumes)
            self.barge_in_pauses.labels(carrier, "committed").inc(commits)
            self.barge_in_pauses.labels(carrier, "abandoned").inc(max(0, pauses - resumes - commits))
        for kind, n in m.get("protocolErrors", {}).items():
            self.protocol_errors.labels(carrier, kind).inc(n)
        for ms in m.get("turnLatencyMs", []):
            self.turn_latency.labels(carrier).observe(ms / 1000.0)
        for ms in m.get("bargeInReactionMs", []):
            self.barge_in_reaction.labels(carrier).observe(ms / 1000.0)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``: the Prometheus text exposition format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
