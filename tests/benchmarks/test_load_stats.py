"""What the load benchmark reports: lateness from a schedule, which steps are results, the ramp.

Pure functions over synthetic calls and step rows; no timing is measured here.
"""

from __future__ import annotations

import pytest

from benchmarks.load import next_size
from benchmarks.report import render
from gateway.simulator.caller import pacing_lateness
from gateway.simulator.loadstats import CallResult, StepResult, _call_model_to_carrier, headline, summarise, verdict

# ----------------------------------------------------------------------------- lateness


def frames(start_ms: float, n: int, every_ms: float = 20.0) -> list[float]:
    return [start_ms + i * every_ms for i in range(n)]


def test_a_long_stall_inside_a_reply_is_counted_in_full():
    # A reply of 10 frames, a 700 ms stall (no caller turn in it), 5 more frames.
    arrivals = frames(0, 10) + frames(200 + 700, 5)
    late, pauses = pacing_lateness(arrivals, [20.0] * len(arrivals))
    assert pauses == []
    assert late.count(0.0) == len(arrivals) - 2  # every frame after the first followed audio
    assert max(late) == pytest.approx(700.0)  # ≥ 500 ms: what the user hears, not dropped


def test_stalls_of_every_size_are_counted():
    for stall in (5.0, 499.0, 500.0, 2500.0, 30_000.0):
        arrivals = frames(0, 3) + [60 + stall]
        late, _ = pacing_lateness(arrivals, [20.0] * 4)
        assert late[-1] == pytest.approx(stall)


def test_a_gap_in_which_the_caller_ended_a_line_is_a_turn_pause_not_lateness():
    # Greeting (0–200 ms), the caller speaks and ends its line at 1500 ms, the answer at 2200 ms.
    arrivals = frames(0, 10) + frames(2200, 10)
    late, pauses = pacing_lateness(arrivals, [20.0] * 20, turn_ends_ms=[1500.0])
    assert pauses == [pytest.approx(2000.0)]
    assert late == [0.0] * 18
    # The same gap with the caller's line ending *after* the agent resumed is a stall.
    late, pauses = pacing_lateness(arrivals, [20.0] * 20, turn_ends_ms=[2300.0])
    assert pauses == [] and max(late) == pytest.approx(2000.0)


def test_the_first_frame_after_a_clear_starts_afresh():
    arrivals = frames(0, 10) + frames(900, 5)  # barge-in: clear at 250 ms, a new reply at 900
    late, pauses = pacing_lateness(arrivals, [20.0] * 15, resets_ms=[250.0])
    assert late == [0.0] * 13 and pauses == []


def test_frames_arriving_in_bursts_ahead_of_time_are_not_late():
    arrivals = [0.0, 0.0, 0.0, 0.0, 80.0, 80.0, 80.0, 80.0, 150.0]  # 4 frames every 80 ms, then one early
    late, _ = pacing_lateness(arrivals, [20.0] * 9)
    assert late == [0.0] * 8


def test_lateness_needs_one_duration_per_frame():
    with pytest.raises(ValueError):
        pacing_lateness([0.0, 20.0], [20.0])


# ----------------------------------------------------------------------------- model → carrier


def test_model_to_carrier_counts_long_delays_and_pairs_by_the_schedule():
    res = CallResult(0, "twilio", tag="s0c0")
    # Reply 1 sent at 10.0 s reaches the caller 1.8 s later; reply 2 sent at 20.0 s, 3 ms later.
    res.media_arrivals = [11.8, 11.82, 11.84, 20.003, 20.023]
    stats = {"responses": {"s0c0": [{"first_delta": 10.0}, {"first_delta": 20.0}]}}
    assert [round(x, 1) for x in _call_model_to_carrier(res, stats)] == [1800.0, 3.0]
    # A reply whose audio never reached the caller (sent at 15 s, then the next reply at 20 s)
    # is not paired with the next reply's frames.
    stats = {"responses": {"s0c0": [{"first_delta": 10.0}, {"first_delta": 15.0}, {"first_delta": 20.0}]}}
    assert [round(x, 1) for x in _call_model_to_carrier(res, stats)] == [1800.0, 3.0]


# ----------------------------------------------------------------------------- a step's row


def call(i: int, **kw) -> CallResult:
    base = dict(call_id=f"c{i}", tag=f"s0c{i}", connected_at=1.0 + i, ended_at=30.0 + i, frames_sent=1000,
                frames_received=400, gateway_frames_out=400, gateway_frames_in=1000, status="completed",
                recording="linked", lateness_ms=[0.0] * 100, send_slip_ms=[1.0] * 100)  # fmt: skip
    base.update(kw)
    return CallResult(i, "twilio", **base)


def step(calls: list[CallResult], lag_ms: list[float] | None = None) -> StepResult:
    return StepResult(calls, 0.0, 35.0, samples=[(3.0, 10.0, 100 << 20, 2), (29.0, 12.0, 101 << 20, 2)],
                      rss_baseline=100 << 20, lag_ms=lag_ms or [0.5] * 100)  # fmt: skip


def test_frames_in_flight_at_hang_up_are_reported_apart_from_lost_frames():
    a = call(0, frames_received=410, gateway_frames_out=410, frames_after_hangup=10)  # delivered after hang-up
    b = call(1, frames_received=398, gateway_frames_out=400)  # two never arrived
    row = summarise(step([a, b]), calls=2, carriers=["twilio"])
    assert row["frames_in_flight_at_hangup"] == 10
    assert row["frames_lost_out"] == 2 and row["frames_lost_in"] == 0
    assert not row["ok"]
    assert row["recordings_linked"] == 2


def test_a_stalled_frame_fails_the_step():
    a = call(0, lateness_ms=[0.0] * 98 + [600.0, 900.0])
    row = summarise(step([a]), calls=1, carriers=["twilio"])
    assert row["lateness_ms"]["max"] == 900.0 and row["lateness_ms"]["p99"] > 20
    assert verdict(row) == "failed"


def test_a_saturated_gateway_that_still_paces_does_not_hold_when_barge_in_takes_seconds():
    """Pacing can stay perfect while a saturated gateway takes seconds to stop talking."""
    slow = [call(i, barge_in_ms=[150.0, 3400.0]) for i in range(10)]
    row = summarise(step(slow), calls=10, carriers=["twilio"])
    assert row["lateness_ms"]["p99"] == 0.0 and row["barge_in_ms"]["p95"] > 200
    assert verdict(row) == "failed"
    quick = [call(i, barge_in_ms=[150.0, 170.0]) for i in range(10)]
    assert verdict(summarise(step(quick), calls=10, carriers=["twilio"])) == "held"


def test_a_lagging_driver_or_late_send_ticks_make_a_step_driver_bound():
    row = summarise(step([call(0)], lag_ms=[0.5] * 90 + [45.0] * 10), calls=1, carriers=["twilio"])
    assert row["ok"] and row["driver_bound"] and verdict(row) == "driver_bound"
    row = summarise(step([call(0, send_slip_ms=[1.0] * 90 + [30.0] * 10)]), calls=1, carriers=["twilio"])
    assert row["ok"] and row["driver_bound"]
    row = summarise(step([call(0)]), calls=1, carriers=["twilio"])
    assert verdict(row) == "held"


# ----------------------------------------------------------------------------- which step is the result


def row(calls: int, *, ok: bool = True, driver_bound: bool = False, cpc: float | None = None) -> dict:
    empty = {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    return {"calls": calls, "ok": ok, "driver_bound": driver_bound, "calls_per_core": cpc or calls * 1.2,
            "lateness_ms": dict(empty, p99=0.0), "barge_in_ms": dict(empty, p95=150.0), "turn_latency_ms": empty,
            "model_to_carrier_ms": empty, "driver_lag_ms": dict(empty, p99=30.0 if driver_bound else 2.0),
            "send_slip_ms": dict(empty, p99=1.0), "frames_lost_out": 0, "frames_lost_in": 0,
            "frames_in_flight_at_hangup": 0, "errors": 0, "rss_per_call_mb": 0.1}  # fmt: skip


def test_a_driver_bound_step_is_never_the_headline():
    rows = [row(25), row(50), row(100, ok=False), row(75), row(87, driver_bound=True, cpc=103.3)]
    assert headline(rows)["calls"] == 75
    assert headline([row(25, driver_bound=True), row(12, ok=False)]) is None
    assert headline([]) is None


def test_the_report_never_headlines_a_driver_bound_step():
    ramp = {"rows": [row(25), row(50), row(100, ok=False), row(75), row(87, driver_bound=True, cpc=103.3)],
            "config": {}, "machine": {}}  # fmt: skip
    text = render(None, None, ramp)
    assert "**75 calls**" in text and "**87 calls**" not in text and "103.3 calls per core" not in text
    assert "driver-bound" in text
    text = render(None, None, {"rows": [row(25, driver_bound=True)], "config": {}, "machine": {}})
    assert "No valid step" in text and "no valid step" in text


def test_the_ramp_goes_no_higher_than_a_driver_bound_step():
    kw = dict(start=25, maximum=800, bisect=2)
    assert next_size([], **kw) == 25
    assert next_size([row(25), row(50)], **kw) == 100
    assert next_size([row(25), row(50, driver_bound=True)], **kw) == 37  # bisect below, never 100
    assert next_size([row(25), row(50, driver_bound=True), row(37, driver_bound=True)], **kw) == 31
    assert next_size([row(25), row(50, driver_bound=True), row(37), row(43)], **kw) is None  # two bisections done
    assert next_size([row(25, driver_bound=True)], **kw) == 12  # nothing valid yet: look below
    assert next_size([row(25), row(50), row(100, ok=False)], **kw) == 75
    assert next_size([row(400), row(800)], start=400, maximum=800, bisect=2) is None


def test_driver_stalls_say_whether_the_driver_was_working_or_waiting_for_a_core():
    s = step([call(0)])
    s.stalls = [(100.0, 5.0), (50.0, 45.0)]  # one stall mostly off-CPU, one the driver's own work
    stalls = summarise(s, calls=1, carriers=["twilio"])["driver_stalls"]
    assert stalls == {"n": 2, "total_ms": 150.0, "own_cpu_share": pytest.approx(50 / 150, abs=0.01)}


def test_a_step_superseded_by_its_retry_does_not_steer_the_ramp():
    kw = dict(start=25, maximum=800, bisect=2)
    first = dict(row(50, driver_bound=True), retried=True)
    assert next_size([row(25), first], **kw) == 50  # only the retry's verdict counts
    assert next_size([row(25), first, row(50)], **kw) == 100
    assert headline([row(25), first, row(50)])["calls"] == 50
