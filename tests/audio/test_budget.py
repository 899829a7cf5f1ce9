"""AudioBudget: caller audio per message and per second is bounded (a token bucket in ms)."""

from __future__ import annotations

import pytest

from gateway.audio.budget import AudioBudget


def test_real_time_audio_is_always_admitted():
    b = AudioBudget()
    assert all(b.admit(20.0, t * 20.0) is None for t in range(30_000))  # 10 minutes of 20 ms frames


def test_a_recorded_utterance_may_arrive_at_once_but_not_a_stream_far_faster_than_real_time():
    b = AudioBudget(rate=2.0, burst_ms=10_000)
    assert all(b.admit(20.0, 0.0) is None for _ in range(500))  # 10 s in one instant: the burst
    assert b.admit(20.0, 0.0) == "audio_too_fast"
    # Then 5x real time for 10 s of clock: only 2x real time (plus nothing of the spent burst).
    admitted = sum(b.admit(20.0, i * 4.0) is None for i in range(1, 2501))
    assert admitted * 20.0 == pytest.approx(20_000, abs=40)


def test_one_message_may_carry_at_most_max_message_ms():
    b = AudioBudget(max_message_ms=2_000)
    assert b.admit(32_000.0, 0.0) == "audio_oversize"
    assert b.admit(2_000.0, 0.0) is None


def test_refused_audio_takes_no_credit_and_the_clock_may_not_run_backwards():
    b = AudioBudget(rate=1.0, burst_ms=100)
    assert b.admit(100.0, 1000.0) is None
    assert b.admit(50.0, 1000.0) == "audio_too_fast"
    assert b.admit(50.0, 900.0) == "audio_too_fast"  # an earlier time adds no credit
    assert b.admit(50.0, 1050.0) is None


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        AudioBudget(rate=0)
