"""The echo stage's cost rows of ``gateway bench media`` (:mod:`benchmarks.media_echo`)."""

from __future__ import annotations

import pytest

from benchmarks import media_echo


@pytest.fixture(scope="module")
def audio():
    return media_echo.load_audio()


def test_talking_rows_run_the_canceller_on_every_frame_and_silent_rows_skip_it(audio):
    talking = media_echo.measure_echo(3, talking=True, seconds=0.4, warm_s=media_echo.STEADY_WARM_S, audio=audio)
    silent = media_echo.measure_echo(3, talking=False, seconds=0.4, warm_s=0.2, audio=audio)
    assert talking["agent"] == "talking" and talking["cancelled_share"] > 0.95
    assert talking["estimates"] >= 1  # the estimator ran on the echo: it found the path
    assert silent["cancelled_share"] == 0.0 and silent["estimates"] == 0
    assert 0 < silent["us_per_frame"] < talking["us_per_frame"]
    assert talking["within_target"] == (talking["us_per_frame"] <= media_echo.ECHO_TARGET_US)


def test_the_table_has_a_row_per_call_count_and_agent_state(audio):
    rows = media_echo.run_echo((1, 2), seconds=0.1, audio=audio)
    assert [(r["agent"], r["calls"]) for r in rows] == [("talking", 1), ("talking", 2), ("first 2 s", 1),
                                                        ("first 2 s", 2), ("silent", 1), ("silent", 2)]
    table = media_echo.echo_table(rows)
    assert table.count("\n") == 7 and "agent silent | 2 |" in table and "agent first 2 s | 1 |" in table
