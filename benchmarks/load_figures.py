"""The load benchmark's Markdown table and PNG plot (:mod:`benchmarks.load` results)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gateway.simulator.loadstats import verdict

__all__ = ["TARGETS", "table", "plot_png"]

#: Issue #4 targets. Reported next to the measurements, never asserted.
TARGETS = {
    "calls_per_core": 400,
    "lateness_p99_ms": 20.0,
    "rss_per_call_mb": 2.0,
    "barge_in_p95_ms": 200.0,
    "model_to_carrier_p99_ms": 5.0,
}


def _p(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    return "—" if v is None else f"{v:.1f}"


def table(result: dict[str, Any]) -> str:
    """The steps as a Markdown table; a driver-bound step is marked so and is not a result."""
    head = ("| calls | step | gateway cores | calls / core | CPU ms / call-s | RSS MB / call | lateness p50 / p99 / max ms "
            "| frames lost (out+in) | in flight at hang-up | turn latency p50 / p95 / p99 ms | barge-in p50 / p95 / p99 ms "
            "| model→carrier p50 / p95 / p99 ms | errors | driver lag / send slip p99 ms | other load cores |")
    lines = [head, "|" + "---:|" * 15]
    for r in result["rows"]:
        lat, turn, barge, m2c = r["lateness_ms"], r["turn_latency_ms"], r["barge_in_ms"], r["model_to_carrier_ms"]
        lines.append(
            f"| {r['calls']} | {_VERDICT[verdict(r)]}{' (retried)' if r.get('retried') else ''} | {r.get('gateway_cores_used', '—')} | {r.get('calls_per_core', '—')} | "
            f"{r.get('cpu_ms_per_call_second', '—')} | {r.get('rss_per_call_mb', '—')} | "
            f"{_p(lat, 'p50')} / {_p(lat, 'p99')} / {_p(lat, 'max')} | {r['frames_lost_out']}+{r['frames_lost_in']} | "
            f"{r.get('frames_in_flight_at_hangup', '—')} | "
            f"{_p(turn, 'p50')} / {_p(turn, 'p95')} / {_p(turn, 'p99')} | "
            f"{_p(barge, 'p50')} / {_p(barge, 'p95')} / {_p(barge, 'p99')} | "
            f"{_p(m2c, 'p50')} / {_p(m2c, 'p95')} / {_p(m2c, 'p99')} | {r['errors']} | "
            f"{_p(r['driver_lag_ms'], 'p99')} / {_p(r.get('send_slip_ms', {}), 'p99')} | {r.get('other_load_cores', '—')} |"
        )
    if any(verdict(r) == "driver_bound" for r in result["rows"]):
        lines.append("")
        lines.append("**driver-bound**: the load generator's own loop lag or its callers' send slip had a p99 "
                     "above 20 ms, so the caller-side timings include the driver's delay: not a result, "
                     "whatever it measured.")  # fmt: skip
    return "\n".join(lines)


_VERDICT = {"held": "held", "failed": "failed", "driver_bound": "**driver-bound**"}


def plot_png(result: dict[str, Any], path: Path) -> Path | None:
    """Three panels against calls: gateway CPU per call, p99 lateness, latencies."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    rows = sorted(result["rows"], key=lambda r: r["calls"])
    if not rows:
        return None
    xs = [r["calls"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(xs, [r.get("calls_per_core") or 0 for r in rows], marker="o", label="calls per gateway core")
    ax.axhline(TARGETS["calls_per_core"], color="red", linestyle="--", linewidth=1, label="target 400")
    bound = [r for r in rows if verdict(r) == "driver_bound"]
    if bound:
        ax.scatter([r["calls"] for r in bound], [r.get("calls_per_core") or 0 for r in bound], marker="x", s=80,
                   color="black", zorder=5, label="driver-bound: not a result")  # fmt: skip
    ax.set_xlabel("simultaneous calls")
    ax.set_ylabel("calls per core")
    ax.set_title("Gateway CPU")
    ax2 = ax.twinx()
    ax2.plot(xs, [r.get("rss_per_call_mb") or 0 for r in rows], marker="s", color="gray", label="RSS MB / call")
    ax2.set_ylabel("RSS MB per call")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    for key, style in (("p50", "-"), ("p99", "-o"), ("max", ":")):
        ax.plot(xs, [r["lateness_ms"][key] or 0 for r in rows], style, label=f"lateness {key}")
    ax.axhline(TARGETS["lateness_p99_ms"], color="red", linestyle="--", linewidth=1, label="p99 target 20 ms")
    ax.set_xlabel("simultaneous calls")
    ax.set_ylabel("ms")
    ax.set_title("Outbound pacing lateness at the caller")
    ax.legend(fontsize=8)
    ax = axes[2]
    for key, label in (("turn_latency_ms", "turn latency p95"), ("barge_in_ms", "barge-in p95"),
                       ("model_to_carrier_ms", "model→carrier p95")):  # fmt: skip
        ax.plot(xs, [r[key]["p95"] if r[key]["p95"] else float("nan") for r in rows], marker="o", label=label)
    ax.axhline(TARGETS["barge_in_p95_ms"], color="red", linestyle="--", linewidth=1, label="barge-in target 200 ms")
    ax.set_xlabel("simultaneous calls")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title("Heard by the caller")
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(True, alpha=0.3)
    m = result["machine"]
    fig.suptitle(f"gateway bench load — {result['config']['model']} — {m['cpu']} ({m['cores']} cores)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
