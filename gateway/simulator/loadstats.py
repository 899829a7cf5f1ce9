"""What a load step measured, as one JSON-ready row, and which steps are results.

Pure functions over :class:`CallResult` / :class:`StepResult` (filled in by
:func:`gateway.simulator.load.run_step`), so every figure can be unit-tested with synthetic
calls. The figures are described in :mod:`gateway.simulator.load`; the rules for a step:

* **ok**: no call failed, no frame was lost (either way), p99 pacing lateness < 20 ms and
  barge-in reaction p95 <= 200 ms (a gateway saturated by the step still paces what it sends,
  but callers wait seconds for it to stop talking: that is not a load it holds);
* **driver-bound**: the driver's event-loop lag or the callers' send slip has a p99 above
  :data:`DRIVER_BOUND_MS`: the caller-side timings then include the driver's own delay, so the
  step is *not a result*, held or not (:func:`verdict` ``"driver_bound"``);
* the **headline** (:func:`headline`) is the largest step that held and was not driver-bound,
  or ``None`` when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CallResult", "StepResult", "percentiles", "summarise", "verdict", "headline", "DRIVER_BOUND_MS",
           "LATENESS_P99_MS", "BARGE_IN_P95_MS"]

#: A step whose driver loop lag or caller send slip has a p99 above this (ms) is driver-bound.
DRIVER_BOUND_MS = 20.0
#: Pacing target: p99 lateness below this (ms).
LATENESS_P99_MS = 20.0
#: Barge-in target: caller speech onset to the carrier's clear, p95 at most this (ms).
BARGE_IN_P95_MS = 200.0


@dataclass
class CallResult:
    """One call of a step: the caller's report, the gateway's record, timings."""

    index: int
    carrier: str
    call_id: str = ""
    tag: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    lateness_ms: list[float] = field(default_factory=list)
    turn_latency_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    media_arrivals: list[float] = field(default_factory=list)
    connected_at: float | None = None
    ended_at: float | None = None
    frames_sent: int = 0
    frames_received: int = 0
    frames_after_hangup: int = 0
    send_slip_ms: list[float] = field(default_factory=list)
    turn_pauses: int = 0
    recording: str = ""
    gateway_frames_out: int | None = None
    gateway_frames_in: int | None = None
    status: str = ""
    end_reason: str = ""
    error: str = ""


@dataclass
class StepResult:
    """A step's calls and the gateway process samples taken while it ran."""

    calls: list[CallResult]
    started_at: float
    ended_at: float
    samples: list[tuple[float, float, int, int]] = field(default_factory=list)  # t, cpu_s, rss, live calls
    machine: list[tuple[float, float]] = field(default_factory=list)  # t, machine-wide busy CPU s
    rss_baseline: int | None = None
    lag_ms: list[float] = field(default_factory=list)
    driver_cpu_s: float = 0.0
    model_samples: list[tuple[float, float]] = field(default_factory=list)  # t, fake model CPU s
    driver_samples: list[tuple[float, float]] = field(default_factory=list)  # t, the driver's own CPU s
    driver_info: dict[str, Any] = field(default_factory=dict)  # how the callers were driven (link, send clock)
    stalls: list[tuple[float, float]] = field(default_factory=list)  # driver loop lag > 20 ms: lag ms, CPU ms
    model_stats: dict[str, Any] | None = None


def percentiles(values: Sequence[float], ps: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": …, "p95": …, "p99": …, "max": …, "n": …}`` in the values' unit (None when empty)."""
    out: dict[str, float | None] = {}
    arr = np.asarray(values, dtype=np.float64)
    for p in ps:
        out[f"p{p}"] = round(float(np.percentile(arr, p)), 2) if arr.size else None
    out["max"] = round(float(arr.max()), 2) if arr.size else None
    out["n"] = int(arr.size)
    return out


def _model_to_carrier(results: Sequence[CallResult], stats: dict[str, Any] | None) -> list[float]:
    """ms from the model sending a reply's first audio to the caller receiving its first frame."""
    return [x for r in results for x in _call_model_to_carrier(r, stats)]


def _call_model_to_carrier(res: CallResult, stats: dict[str, Any] | None) -> list[float]:
    """One call's model → carrier delays, paired by the model's schedule (what it sent when).

    Each reply's first audio (``first_delta``, sent at ``s``) is paired with the first agent
    frame the caller received at or after ``s`` (``a``), when that frame starts a burst (no
    frame in the 150 ms before it: the gateway's pacer sends at least every 40 ms inside a
    reply, so a frame right after another is the previous reply's tail, not this one's start)
    and arrived before the model began its next reply (else it belongs to a later reply: this
    one's audio never reached the caller). Every such delay counts, however long.
    """
    if not stats or not res.media_arrivals:
        return []
    out: list[float] = []
    arr = np.asarray(res.media_arrivals)
    sends = [r.get("first_delta") for r in (stats.get("responses") or {}).get(res.tag, [])]
    starts = sorted(x for x in sends if x is not None)
    for k, sent in enumerate(starts):
        i = int(np.searchsorted(arr, sent))
        if i >= arr.size:
            continue
        gap_before = arr[i] - arr[i - 1] if i > 0 else float("inf")
        next_start = starts[k + 1] if k + 1 < len(starts) else float("inf")
        if gap_before > 0.15 and arr[i] < next_start:
            out.append((arr[i] - sent) * 1000)
    return out


def _frames(results: Sequence[CallResult]) -> dict[str, int]:
    """Frames lost either way, and agent frames delivered after the caller hung up."""
    lost_out = lost_in = counted = in_flight = 0
    for r in results:
        if r.gateway_frames_out is not None and not r.error:
            lost_out += max(0, r.gateway_frames_out - r.frames_received)
            lost_in += max(0, r.frames_sent - (r.gateway_frames_in or 0))
            in_flight += r.frames_after_hangup
            counted += 1
    return {"frames_lost_out": lost_out, "frames_lost_in": lost_in, "frames_in_flight_at_hangup": in_flight,
            "frames_out": sum(r.gateway_frames_out or 0 for r in results),
            "frames_received": sum(r.frames_received for r in results), "calls_counted_for_frames": counted}


def _rate(samples: Sequence[tuple], w0: float, w1: float) -> float | None:
    """CPU cores used between ``w0`` and ``w1`` from ``(t, cpu_s, …)`` samples, or None."""
    inside = [s for s in samples if w0 <= s[0] <= w1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def _gateway(step: StepResult, calls: int) -> dict[str, Any]:
    """Gateway CPU and RSS over the steady window (every call up; else the whole step), and
    the machine's other load over the same window."""
    results = step.calls
    connects = [r.connected_at for r in results if r.connected_at]
    ends = [r.ended_at for r in results if r.ended_at]
    w0 = max(connects) if connects else step.started_at
    w1 = min(ends) if ends else step.ended_at
    window = "all calls up"
    if w1 - w0 < 2.0:
        w0, w1 = (min(connects) if connects else step.started_at), (max(ends) if ends else step.ended_at)
        window = "whole step (calls never all up together for 2 s)"
    gw: dict[str, Any] = {}
    samples = [s for s in step.samples if w0 <= s[0] <= w1]
    cores_used = _rate(samples, w0, w1)
    if cores_used is not None:
        mean_live = float(np.mean([s[3] for s in samples]))
        gw = {
            "gateway_cores_used": round(cores_used, 3),
            "mean_live_calls": round(mean_live, 1),
            "calls_per_core": round(mean_live / cores_used, 1) if cores_used > 0 else None,
            "cpu_ms_per_call_second": round(cores_used * 1000 / mean_live, 3) if mean_live else None,
            "window_s": round(samples[-1][0] - samples[0][0], 1),
            "window": window,
        }
    if step.samples and step.rss_baseline:
        peak = max(s[2] for s in step.samples)
        gw["rss_baseline_mb"] = round(step.rss_baseline / 2**20, 1)
        gw["rss_peak_mb"] = round(peak / 2**20, 1)
        gw["rss_per_call_mb"] = round((peak - step.rss_baseline) / 2**20 / max(1, calls), 3)
    busy = _rate(step.machine, w0, w1)
    if busy is not None:
        gw["machine_busy_cores"] = round(busy, 2)
        duration = step.ended_at - step.started_at
        driver = step.driver_cpu_s / duration if duration > 0 else 0.0
        model = _rate(step.model_samples, w0, w1) or 0.0
        gw["model_cores"] = round(model, 3)
        gw["other_load_cores"] = round(max(0.0, busy - (cores_used or 0.0) - driver - model), 2)
    if cores_used is not None and gw.get("mean_live_calls"):
        mean_live = gw["mean_live_calls"]  # the driver's and the model's cost per call, same window
        for key, got in (("driver", _rate(step.driver_samples, w0, w1)), ("model", _rate(step.model_samples, w0, w1))):
            if got is not None:
                gw[f"{key}_window_cores"] = round(got, 3)
                gw[f"{key}_cpu_ms_per_call_second"] = round(got * 1000 / mean_live, 3)
    return gw


def _stalls(stalls: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Driver stalls (> 20 ms): how many, how long in all, and the share of that time the driver
    itself was on a CPU (low: it was waiting for a core, i.e. other load on the machine)."""
    total = sum(lag for lag, _ in stalls)
    own = sum(min(cpu, lag) for lag, cpu in stalls)
    return {"n": len(stalls), "total_ms": round(total, 1), "own_cpu_share": round(own / total, 2) if total else None}


def _by_carrier(step: StepResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    results = step.calls
    for carrier in dict.fromkeys(r.carrier for r in results):
        mine = [r for r in results if r.carrier == carrier]
        out[carrier] = {
            "calls": len(mine),
            "errors": sum(1 for r in mine if r.error),
            "lateness_p99_ms": percentiles([x for r in mine for x in r.lateness_ms])["p99"],
            "barge_in_p95_ms": percentiles([x for r in mine for x in r.barge_in_ms])["p95"],
            "turn_latency_p95_ms": percentiles([x for r in mine for x in r.turn_latency_ms])["p95"],
            "model_to_carrier_ms": percentiles([x for r in mine for x in _call_model_to_carrier(r, step.model_stats)]),
        }
    return out


def summarise(step: StepResult, *, calls: int, carriers: Sequence[str], cores: int | None = None) -> dict[str, Any]:
    """One JSON-ready row from a step (see :mod:`gateway.simulator.load` for each figure).

    ``ok`` and ``driver_bound`` follow the module doc's rules; ``lateness_ms`` counts every gap
    inside a reply (``n`` is the number of frames that followed playing audio) and
    ``turn_pauses`` the gaps the caller's own schedule explains.
    """
    results = step.calls
    lat = percentiles([x for r in results for x in r.lateness_ms])
    frames = _frames(results)
    errors = [r.error for r in results if r.error]
    duration = step.ended_at - step.started_at
    row: dict[str, Any] = {
        "calls": calls,
        "carriers": list(carriers),
        "completed": sum(1 for r in results if r.status == "completed" and not r.error),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "recordings_linked": sum(1 for r in results if r.recording == "linked"),
        "lateness_ms": lat,
        "turn_pauses": sum(r.turn_pauses for r in results),
        **frames,
        "turn_latency_ms": percentiles([x for r in results for x in r.turn_latency_ms]),
        "barge_in_ms": percentiles([x for r in results for x in r.barge_in_ms]),
        "model_to_carrier_ms": percentiles(_model_to_carrier(results, step.model_stats)),
        "driver_lag_ms": percentiles(step.lag_ms),
        "driver_stalls": _stalls(step.stalls),
        "send_slip_ms": percentiles([x for r in results for x in r.send_slip_ms]),
        "driver_cpu_cores": round(step.driver_cpu_s / duration, 3) if duration > 0 else None,
        "step_s": round(duration, 1),
        "driver": dict(step.driver_info),
        **_gateway(step, calls),
    }
    row["by_carrier"] = _by_carrier(step)
    barge_p95 = row["barge_in_ms"]["p95"]
    row["ok"] = bool(row["errors"] == 0 and frames["frames_lost_out"] == 0 and frames["frames_lost_in"] == 0
                     and (lat["p99"] is None or lat["p99"] < LATENESS_P99_MS)
                     and (barge_p95 is None or barge_p95 <= BARGE_IN_P95_MS))  # fmt: skip
    row["driver_bound"] = bool((row["driver_lag_ms"]["p99"] or 0) > DRIVER_BOUND_MS
                               or (row["send_slip_ms"]["p99"] or 0) > DRIVER_BOUND_MS)  # fmt: skip
    if cores:
        row["machine_cores"] = cores
    return row


def verdict(row: dict[str, Any]) -> str:
    """``"held"``, ``"failed"`` or ``"driver_bound"`` (not a result, whatever it measured)."""
    if row.get("driver_bound"):
        return "driver_bound"
    return "held" if row.get("ok") else "failed"


def headline(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The step to report: the most calls among the steps that held and were not driver-bound
    (None when no step qualifies)."""
    valid = [r for r in rows if verdict(r) == "held"]
    return max(valid, key=lambda r: r["calls"]) if valid else None
