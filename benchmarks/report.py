"""``gateway bench report``: run both benchmarks and rewrite the figures in ``benchmarks/README.md``.

Runs ``bench media`` at its default sizes, ``bench load`` at its default size and (unless
``ramp=False``) a load ramp, saves the JSON in ``benchmarks/results/`` and the plots in
``benchmarks/figures/``, and replaces the block between ``<!-- figures:start -->`` and
``<!-- figures:end -->`` of the README with fresh tables. ``from_results=True`` only rebuilds
the block from the saved JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import load as load_bench
from benchmarks import media as media_bench
from benchmarks.media_engine import ENGINE_CALLS, engine_table
from gateway.simulator.loadstats import headline, verdict

__all__ = ["main", "render"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURES = HERE / "figures"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _media_target(media: dict[str, Any]) -> str:
    """The media path's cost as the sessions run it: the per-tick engine's inbound rows (when
    measured) plus the per-frame rows' outbound cost of the same carrier and call count."""
    silero = [r for r in media["rows"] if r["carrier"] == "twilio" and r["vad"].startswith("silero") and r["calls"] >= 100]
    if not silero:
        return ""
    out_us = {r["calls"]: r["us_per_out_frame"] for r in silero}
    engine = [r for r in media.get("engine", []) if r["carrier"] == "twilio" and r["calls"] in out_us]
    if engine:
        costs = {r["calls"]: (r["us_per_in_frame"] + out_us[r["calls"]]) * 50 / 1000 for r in engine}
        how = "per-tick engine inbound + outbound, the path the sessions run"
    else:
        costs = {r["calls"]: r["cpu_ms_per_call_second"] for r in silero}
        how = "the per-frame path"
    worst = max(costs.values())
    return (f"| media path with Silero ≤ 1.5 CPU ms per call-second at 100+ calls | {worst:.2f} ms "
            f"(Twilio, {silero[0]['vad']}, {how}; worst of {', '.join(str(n) for n in sorted(costs))} calls) | "
            f"{'yes' if worst <= 1.5 else 'no'} |")


def _targets(media: dict[str, Any] | None, load: dict[str, Any] | None, ramp: dict[str, Any] | None) -> str:
    """The targets table. Load figures come only from steps that held and were not driver-bound;
    the density headline is :func:`~gateway.simulator.loadstats.headline` of all load steps."""
    rows = ["| target (issue #4) | measured | met |", "|---|---|---|"]
    if media:
        rows.append(_media_target(media))
    every = (load or {}).get("rows", []) + (ramp or {}).get("rows", [])
    valid = [r for r in every if verdict(r) == "held"]
    best = headline(every)
    if every and best is None:
        bound = sum(1 for r in every if verdict(r) == "driver_bound")
        rows.append(f"| ≥ 400 concurrent calls per gateway core, p99 lateness < 20 ms, barge-in p95 ≤ 200 ms, no lost frames | no valid "
                    f"step: none held the targets without being driver-bound ({bound} of {len(every)} steps "
                    f"driver-bound) | no |")  # fmt: skip
    if best is not None:
        cpc = best.get("calls_per_core")
        rows.append(f"| ≥ 400 concurrent calls per gateway core, p99 lateness < 20 ms, barge-in p95 ≤ 200 ms, no lost frames | "
                    f"{_fmt(cpc)} calls per core at **{best['calls']} calls**, the largest step that held the "
                    f"targets and was not driver-bound (mean live calls ÷ gateway cores) | "
                    f"{'yes' if cpc and cpc >= 400 else 'no'} |")  # fmt: skip
    rss = [r.get("rss_per_call_mb") for r in valid if r.get("rss_per_call_mb") is not None and r["calls"] >= 20]
    if rss:
        rows.append(f"| RSS ≤ 2 MB per call beyond baseline | {max(rss):.2f} MB (worst valid step ≥ 20 calls) | "
                    f"{'yes' if max(rss) <= 2 else 'no'} |")  # fmt: skip
    p95 = [r["barge_in_ms"]["p95"] for r in valid if r["barge_in_ms"]["p95"] is not None]
    if p95:
        rows.append(f"| barge-in reaction p95 ≤ 200 ms from the caller's speech onset | {min(p95):.0f}–{max(p95):.0f} ms "
                    f"(valid steps) | {'yes' if max(p95) <= 200 else 'no'} |")  # fmt: skip
    rows.append(_m2c_target(valid))
    return "\n".join(r for r in rows if r)


def _m2c_target(valid: list[dict[str, Any]]) -> str:
    g711 = []
    for r in valid:
        for c in ("twilio", "telnyx", "plivo"):
            v = (r.get("by_carrier", {}).get(c) or {}).get("model_to_carrier_ms", {}).get("p99")
            if v is not None:
                g711.append(v)
    allp = [r["model_to_carrier_ms"]["p99"] for r in valid if r["model_to_carrier_ms"]["p99"] is not None]
    if not (allp and g711):
        return ""
    return (f"| gateway adds ≤ 5 ms p99, model audio chunk → first frame to the carrier | "
            f"{min(allp):.1f}–{max(allp):.1f} ms all carriers; {min(g711):.1f}–{max(g711):.1f} ms "
            f"Twilio/Telnyx/Plivo (incl. two loopback hops; valid steps) | {'yes' if max(allp) <= 5 else 'no'} |")


def _carrier_table(row: dict[str, Any]) -> str:
    lines = ["| carrier | calls | errors | lateness p99 ms | barge-in p95 ms | turn latency p95 ms | model→carrier p50 / p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c, v in (row.get("by_carrier") or {}).items():
        m = v["model_to_carrier_ms"]
        lines.append(f"| {c} | {v['calls']} | {v['errors']} | {_fmt(v['lateness_p99_ms'])} | {_fmt(v['barge_in_p95_ms'])} | "
                     f"{_fmt(v['turn_latency_p95_ms'])} | {_fmt(m['p50'])} / {_fmt(m['p99'])} |")  # fmt: skip
    return "\n".join(lines)


def render(media: dict[str, Any] | None, load: dict[str, Any] | None, ramp: dict[str, Any] | None) -> str:
    """The README's figures block (Markdown) from the three results."""
    any_result = media or load or ramp or {}
    m = any_result.get("machine", {})
    out = [START, "", f"_Generated by `gateway bench report` on {any_result.get('when', '?')}: "
           f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}, "
           f"onnxruntime {m.get('onnxruntime', '?')}. Other processes' load during each load step is in its "
           f"`other load cores` column: treat ±15 % as noise; a step whose load generator fell behind is "
           f"marked driver-bound and is not a result._", ""]  # fmt: skip
    out += ["### Against the targets", "", _targets(media, load, ramp), ""]
    if media:
        out += ["### Media path (`gateway bench media`)", "", "![media](figures/media.png)", "",
                media_bench.table(media), "", media_bench.stage_table(media), ""]  # fmt: skip
        if media.get("engine"):
            out += ["Per-tick media engine (`GATEWAY_MEDIA_ENGINE=tick`, the default), inbound only, CPU µs per "
                    "call per 20 ms frame by stage, beside the per-frame path on the same calls in the same run "
                    "(`ratio` = per-frame ÷ engine; line noise at −55 dBFS under the caller):", "",
                    engine_table(media["engine"]), ""]  # fmt: skip
    if load:
        cfg = load["config"]
        out += ["### Load (`gateway bench load`)", "",
                f"Model: {cfg['model']}; VAD {cfg['vad']}; G.711 passthrough {cfg['g711_passthrough']}; carriers "
                f"{', '.join(cfg['carriers'])}; pinning {cfg['pinned']}; recording on; callers send line noise "
                f"between and under their lines.", "", load_bench.table(load), ""]  # fmt: skip
        if load["rows"]:
            out += ["Per carrier:", "", _carrier_table(load["rows"][-1]), ""]
    if ramp:
        out += ["### Ramp (`gateway bench load --ramp`)", "", "![load ramp](figures/load-ramp.png)", "",
                load_bench.table(ramp), "",
                _ramp_verdict(ramp), ""]  # fmt: skip
    out.append(END)
    return "\n".join(out)


def _ramp_verdict(ramp: dict[str, Any]) -> str:
    best = headline(ramp["rows"])
    bound = [r["calls"] for r in ramp["rows"] if verdict(r) == "driver_bound"]
    note = (f" Driver-bound steps ({', '.join(map(str, bound))} calls) are not results: the load generator, "
            f"not the gateway, was the limit there." if bound else "")  # fmt: skip
    if best is None:
        return f"**No valid step**: no step held p99 lateness < 20 ms and barge-in p95 ≤ 200 ms with no lost frame or failed call without being driver-bound.{note}"
    return (f"Largest step that held p99 lateness < 20 ms and barge-in p95 ≤ 200 ms with no lost frame or failed call and was not "
            f"driver-bound: **{best['calls']} calls**, {_fmt(best.get('calls_per_core'))} calls per gateway core.{note}")


def write_readme(readme: Path, block: str) -> None:
    text = readme.read_text() if readme.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Latest figures\n\n" + block + "\n"
    readme.write_text(text)


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main(*, ramp: bool = True, time_budget_s: float = 420.0, readme: Path = HERE / "README.md",
         from_results: bool = False) -> None:
    """Run (unless ``from_results``), save results and figures, rewrite the README's figures block."""
    RESULTS.mkdir(exist_ok=True)
    FIGURES.mkdir(exist_ok=True)
    if from_results:
        media, load, ramp_result = _load("media"), _load("load"), _load("load-ramp")
    else:
        print("bench media (default sizes)…", file=sys.stderr)
        media = media_bench.main(plot=FIGURES / "media.png", out=RESULTS / "media.json", engine_calls=ENGINE_CALLS)
        print("bench load (default size)…", file=sys.stderr)
        load = load_bench.main(plot=FIGURES / "load.png", out_dir=None)
        (RESULTS / "load.json").write_text(json.dumps(load, indent=1))
        ramp_result = None
        if ramp:
            print("bench load --ramp…", file=sys.stderr)
            ramp_result = load_bench.main(ramp=True, time_budget_s=time_budget_s, plot=FIGURES / "load-ramp.png",
                                          out_dir=None)  # fmt: skip
            (RESULTS / "load-ramp.json").write_text(json.dumps(ramp_result, indent=1))
    write_readme(Path(readme), render(media, load, ramp_result))
    print(f"rewrote {readme}", file=sys.stderr)


if __name__ == "__main__":
    main(ramp="--no-ramp" not in sys.argv, from_results="--from-results" in sys.argv)
