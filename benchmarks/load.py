"""``gateway bench load``: many simulated carrier calls against a running gateway, over real WebSockets.

Without ``--url`` it starts everything on this machine, on loopback:

* the gateway as a **separate process** (``python -m gateway.cli serve``) with ``GATEWAY_*``
  settings: a free port, SQLite and recordings in a temporary directory (calls are created
  with recording on, the default users get), WARNING logs, Silero VAD (``--vad``), and ``GATEWAY_COMPAT_G711=true``
  so μ-law carriers pass G.711 straight through to the model as with OpenAI;
* a fake realtime model (:mod:`benchmarks.fake_realtime`), a separate process speaking the
  OpenAI Realtime wire protocol and answering with pre-recorded speech, so the load measures
  the gateway's own cost rather than a speech model's (calls use ``model = compat:bench``; the
  gateway started here gets ``GATEWAY_COMPAT_REALTIME_URL=ws://127.0.0.1:<port>/v1``);
* the driver (this process, :mod:`gateway.simulator.load`): ``--calls`` simulated callers, the
  carriers of ``--carriers`` mixed, each speaking real recordings with pauses and one barge-in.

On a machine with two or more cores the gateway is pinned to core 0 and the driver and fake
model to the others (``--no-pin`` to turn off), so "calls per gateway core" is what one core
holds while the load generator has its own.

With ``--url`` and ``--api-key`` it drives any gateway (loopback addresses only); ``--model``
picks the calls' backend (``local``, ``openai:…``, ``compat:<model>@<endpoint>``, …; required,
since that gateway's model endpoints come from its own settings),
and ``--gateway-pid`` lets it read that gateway's CPU and memory from ``/proc``.

``--ramp`` runs steps of growing size (doubling from ``--ramp-start``, then bisecting) and
reports the largest number of calls that held p99 pacing lateness under 20 ms with no frame
lost and no failed call *and was not driver-bound* (:func:`gateway.simulator.loadstats.headline`).
A driver-bound step (the driver's loop lag or the callers' send slip p99 > 20 ms: the load
generator, not the gateway, was the limit) is not a result: the ramp never grows past it and
bisects below it instead; when no step qualifies, the result says so (``headline: null``).

Output: a table (or with ``--json`` one JSON document on the last line), a PNG plot and a
Markdown table (``bench-out/load.{png,md,json}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.load_figures import TARGETS, plot_png, table
from benchmarks.load_procs import ROOT, FakeModelProcess, LocalGateway  # noqa: F401 - ROOT re-exported
from gateway.simulator.load import Lines, check_loopback, headline, run_step, summarise, verdict

__all__ = ["main", "run", "next_size", "LocalGateway", "FakeModelProcess", "table", "plot_png", "TARGETS"]

CARRIERS = ("twilio", "telnyx", "plivo", "vonage", "exotel", "raw")


# ----------------------------------------------------------------------------- steps


class _Progress:
    """A rich progress bar (stderr) for the calls of the current step."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._p = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               console=Console(stderr=True))  # fmt: skip
            self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def step(self, label: str, calls: int):
        if self._p is None:
            return lambda event, n: None
        for t in self._tasks.values():
            self._p.remove_task(t)
        self._tasks = {e: self._p.add_task(f"{label}: {e}", total=calls) for e in ("created", "connected", "finished")}

        def advance(event: str, n: int) -> None:
            self._p.update(self._tasks[event], advance=n)

        return advance

    def note(self, text: str) -> None:
        if self._p is not None:
            self._p.console.print(text)
        else:
            print(text, file=sys.stderr)


async def _step(n: int, *, index: int, url: str, api_key: str, carriers: Sequence[str], model: str, lines: Lines,
                pid: int | None, arrival_s: float, fake: FakeModelProcess | None, progress: _Progress,
                carrier_compression: bool, script: str = "full") -> dict[str, Any]:  # fmt: skip
    step = await run_step(
        script=script,
        url=url, api_key=api_key, calls=n, carriers=carriers, model=model, tag_prefix=f"s{index}",
        arrival_s=arrival_s, lines=lines, gateway_pid=pid, model_stats=fake.stats if fake else None,
        model_pid=fake.proc.pid if fake and fake.proc else None, on_progress=progress.step(f"step {index + 1}: {n} calls", n),
        carrier_compression=carrier_compression,
        seed=index,
    )  # fmt: skip
    row = summarise(step, calls=n, carriers=carriers, cores=os.cpu_count())
    progress.note(_line(row))
    return row


def _line(row: dict[str, Any]) -> str:
    lat = row["lateness_ms"]
    return (f"{row['calls']} calls: {verdict(row).replace('_', '-')}; lateness p99 {lat['p99']} ms; "
            f"lost {row['frames_lost_out']}+{row['frames_lost_in']} (in flight at hang-up "
            f"{row['frames_in_flight_at_hangup']}); errors {row['errors']}; "
            f"gateway {row.get('gateway_cores_used', '?')} cores → {row.get('calls_per_core', '?')} calls/core; "
            f"driver lag p99 {row['driver_lag_ms']['p99']} ms, send slip p99 {row['send_slip_ms']['p99']} ms; "
            f"other load {row.get('other_load_cores', '?')} cores")  # fmt: skip


async def run(
    *,
    calls: int = 50,
    carriers: Sequence[str] = CARRIERS,
    url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    gateway_pid: int | None = None,
    vad: str = "silero",
    g711: bool = True,
    ramp: bool = False,
    ramp_start: int = 25,
    ramp_max: int = 800,
    ramp_bisect: int = 2,
    time_budget_s: float = 600.0,
    arrival_s: float | None = None,
    pin: bool = True,
    carrier_compression: bool = False,
    progress: bool = True,
    fake_speed: float = 2.0,
    script: str = "full",
    settle: bool = True,
    media_listener: str = "starlette",
    media_engine: str = "tick",
    gateway_root: Path | None = None,
) -> dict[str, Any]:
    """Run one step of ``calls`` calls (or a ramp) and return the JSON-ready result.

    ``media_listener``: where the gateway started here serves the streams (``starlette`` or
    ``picows``, ``GATEWAY_MEDIA_LISTENER``); the calls use the stream URLs its API hands out.
    ``media_engine``: how it processes caller audio (``tick`` or ``frame``, ``GATEWAY_MEDIA_ENGINE``).
    ``gateway_root``: run the gateway of another checkout (e.g. a worktree of the previous main),
    with this checkout's driver and fake model, to compare the two on the same load."""
    t_start = time.monotonic()
    lines = Lines.load()
    ncpu = os.cpu_count() or 1
    pinned = pin and url is None and ncpu >= 2 and hasattr(os, "sched_setaffinity")
    gw_cpus = {0} if pinned else None
    drv_cpus = set(range(1, ncpu)) if pinned else None
    old_affinity = os.sched_getaffinity(0) if pinned else None
    fake: FakeModelProcess | None = None
    gateway: LocalGateway | None = None
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gw-bench-load-")))
        if model is None and url is not None:
            raise ValueError("--model is required with --url: a gateway's model endpoints are its own "
                             "settings, so calls cannot point it at a fake model started here")
        if model is None:
            fake = FakeModelProcess(cpus=drv_cpus, speed=fake_speed)
            fake.start()
            stack.callback(fake.stop)
            model = fake.model
        if url is None:
            gateway = LocalGateway(tmp, vad=vad, g711=g711, cpus=gw_cpus, env=fake.gateway_env if fake else None,
                                   media_listener=media_listener, media_engine=media_engine, root=gateway_root)
            info["media_listener"] = media_listener
            info["media_engine"] = media_engine
            info["gateway_root"] = str(gateway.root)
            gateway.start()
            stack.callback(gateway.stop)
            if settle:
                info["gateway_startup_quiet_s"] = round(gateway.wait_quiet(), 1)
            url, api_key, gateway_pid = gateway.url, gateway.api_key, gateway.pid
        check_loopback(url)
        if not api_key:
            raise ValueError("--api-key is required with --url")
        if pinned:
            os.sched_setaffinity(0, drv_cpus)
            stack.callback(os.sched_setaffinity, 0, old_affinity)
        with _Progress(progress) as bar:
            if not ramp:
                rows.append(await _step(calls, index=0, url=url, api_key=api_key, carriers=carriers, model=model,
                                        lines=lines, pid=gateway_pid, arrival_s=arrival_s if arrival_s is not None else 5.0,
                                        fake=fake, progress=bar, carrier_compression=carrier_compression,
                                        script=script))  # fmt: skip
            else:
                rows = await _ramp(
                    start=ramp_start, maximum=ramp_max, bisect=ramp_bisect, budget_s=time_budget_s - (time.monotonic() - t_start),
                    url=url, api_key=api_key, carriers=carriers, model=model, lines=lines, pid=gateway_pid,
                    arrival_s=arrival_s, fake=fake, bar=bar, carrier_compression=carrier_compression,
                )  # fmt: skip
        if gateway is not None and gateway.proc is not None and gateway.proc.poll() is not None:
            info["gateway_exit"] = gateway.proc.returncode
    return _result(rows, info, gateway=gateway, fake=fake, url=url, model=model, vad=vad, g711=g711, carriers=carriers,
                   pinned={"gateway": sorted(gw_cpus), "driver_and_model": sorted(drv_cpus)} if pinned else None,
                   carrier_compression=carrier_compression, ramp=ramp, script=script, t_start=t_start)  # fmt: skip


def _result(rows: list[dict[str, Any]], info: dict[str, Any], *, gateway: LocalGateway | None,
            fake: FakeModelProcess | None, url: str, model: str, vad: str, g711: bool, carriers: Sequence[str],
            pinned: dict[str, list[int]] | None, carrier_compression: bool, ramp: bool, script: str,
            t_start: float) -> dict[str, Any]:
    """The JSON-ready result of :func:`run`: the rows, the headline, the configuration and the machine."""
    from benchmarks.media import machine

    best = headline(rows)
    return {
        "benchmark": "load",
        "rows": rows,
        "headline": best["calls"] if best else None,
        "targets": TARGETS,
        "config": {
            "url": "local (started here)" if gateway is not None else url,
            "model": "fake realtime model (benchmarks.fake_realtime)" if fake is not None else model,
            "vad": vad if gateway is not None else "as configured",
            "g711_passthrough": g711 if gateway is not None else None,
            "carriers": list(carriers),
            "pinned": pinned,
            "carrier_compression": carrier_compression,
            "ramp": ramp,
            "script": script,
            **info,
        },
        "machine": machine(),
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


async def _ramp(*, start: int, maximum: int, bisect: int, budget_s: float, url: str, api_key: str,
                carriers: Sequence[str], model: str, lines: Lines, pid: int | None, arrival_s: float | None,
                fake: FakeModelProcess | None, bar: _Progress, carrier_compression: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Double from ``start`` while steps hold, then bisect ``bisect`` times (see :func:`next_size`).

    A step that failed or was driver-bound ends the doubling: a failed step bounds the search
    from above, and so does a driver-bound one (the driver cannot load the gateway further, so
    nothing above it can be measured here); bisection then looks below it. A driver-bound step
    whose driver stalls were mostly spent waiting for a core (other load on a shared machine)
    is run once more, budget permitting; both rows are kept (the first marked ``retried``).
    """
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    last_s = 0.0
    n: int | None = start
    while n is not None:
        remaining = budget_s - (time.monotonic() - t0)
        if rows and remaining < last_s * 1.5:
            bar.note(f"time budget: stopping before {n} calls")
            break
        for attempt in (1, 2):
            s0 = time.monotonic()
            row = await _step(n, index=len(rows), url=url, api_key=api_key, carriers=carriers, model=model,
                              lines=lines, pid=pid, arrival_s=arrival_s if arrival_s is not None else max(5.0, n / 40),
                              fake=fake, progress=bar, carrier_compression=carrier_compression)  # fmt: skip
            last_s = time.monotonic() - s0
            rows.append(row)
            if verdict(row) != "driver_bound":
                break
            if attempt == 1 and _waited_for_a_core(row) and budget_s - (time.monotonic() - t0) > last_s * 2.5:
                row["retried"] = True  # kept in the table, superseded by the retry
                bar.note(f"{n} calls: driver-bound while waiting for a core (other load): once more")
                continue
            bar.note(f"{n} calls: driver-bound (not a result); the ramp goes no higher")
            break
        n = next_size(rows, start=start, maximum=maximum, bisect=bisect)
    return rows


def _waited_for_a_core(row: dict[str, Any]) -> bool:
    """The driver's stalls were mostly spent off-CPU: the machine's other load, not its own work."""
    share = (row.get("driver_stalls") or {}).get("own_cpu_share")
    return share is not None and share < 0.5


def next_size(rows: Sequence[dict[str, Any]], *, start: int, maximum: int, bisect: int) -> int | None:
    """The ramp's next step size after ``rows`` (None: done).

    Doubling from ``start`` while every step held (:func:`~gateway.simulator.loadstats.verdict`
    ``held``), up to ``maximum``; after the first step that did not hold (failed, or
    driver-bound), at most ``bisect`` bisections between the largest held size and the smallest
    size that did not hold, stopping when they are within ``max(2, good // 10)``. A step
    superseded by its retry (``retried``) does not count.
    """
    rows = [r for r in rows if not r.get("retried")]
    if not rows:
        return start
    held = [r["calls"] for r in rows if verdict(r) == "held"]
    not_held = [r["calls"] for r in rows if verdict(r) != "held"]
    good = max(held, default=0)
    if not not_held:
        nxt = good * 2
        return nxt if nxt <= maximum else None
    bad = min(x for x in not_held if x > good) if any(x > good for x in not_held) else None
    first_bad = next(i for i, r in enumerate(rows) if verdict(r) != "held")
    if bad is None or len(rows) - 1 - first_bad >= bisect or bad - good <= max(2, good // 10):
        return None
    mid = (good + bad) // 2
    return mid if mid not in {r["calls"] for r in rows} and mid > 0 else None


def _driver_loop():
    """The driver's event loop factory: uvloop when installed (as the gateway's own loop: less
    loop overhead per message, so the driver becomes the limit later), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(
    calls: int = 50,
    *,
    carriers: Sequence[str] = CARRIERS,
    url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    gateway_pid: int | None = None,
    vad: str = "silero",
    g711: bool = True,
    ramp: bool = False,
    ramp_start: int = 25,
    ramp_max: int = 800,
    time_budget_s: float = 600.0,
    arrival_s: float | None = None,
    pin: bool = True,
    carrier_compression: bool = False,
    json_out: bool = False,
    plot: Path | None = Path("bench-out/load.png"),
    out_dir: Path | None = Path("bench-out"),
    script: str = "full",
    settle: bool = True,
    media_listener: str = "starlette",
    media_engine: str = "tick",
    gateway_root: Path | None = None,
) -> dict[str, Any]:
    """Run the load benchmark, print the table (or one JSON line last), write PNG, Markdown and JSON.

    The driver runs on uvloop when it is installed (:func:`_driver_loop`)."""
    with asyncio.Runner(loop_factory=_driver_loop()) as runner:  # uvloop: a lighter driver, when installed
        result = runner.run(run(
            calls=calls, carriers=carriers, url=url, api_key=api_key, model=model, gateway_pid=gateway_pid, vad=vad,
            g711=g711, ramp=ramp, ramp_start=ramp_start, ramp_max=ramp_max, time_budget_s=time_budget_s,
            arrival_s=arrival_s, pin=pin, carrier_compression=carrier_compression, progress=sys.stderr.isatty(),
            script=script, settle=settle, media_listener=media_listener, media_engine=media_engine,
            gateway_root=gateway_root,
        ))  # fmt: skip
    result["config"]["driver_loop"] = "uvloop" if _driver_loop() is not None else "asyncio"
    if plot is not None:
        written = plot_png(result, Path(plot))
        result["plot"] = str(written) if written else None
    md = table(result)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "load.md").write_text(md + "\n")
        (out_dir / "load.json").write_text(json.dumps(result, indent=1))
    if json_out:
        print(md, file=sys.stderr)
        print(json.dumps(result))
    else:
        print(md)
        best = result.get("headline")
        print(f"\nlargest step that held p99 lateness < 20 ms, barge-in p95 <= 200 ms, no lost frame, no failed call, not driver-bound: "
              f"{f'{best} calls' if best else 'none (no step is a valid result)'}")
        if result.get("plot"):
            print(f"plot: {result['plot']}")
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
