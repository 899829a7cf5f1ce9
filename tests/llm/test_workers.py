"""The engine worker pool: real worker processes, real recordings, real crashes (SIGKILL).

Recognition feeds 16 kHz recordings from ``../shared/audio`` in 320 ms pieces as the bridge
does; every wait here is bounded (``Future.result(timeout=…)``), so a broken pool fails, not hangs.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from gateway.llm.local.pool import EngineError, WorkerCrashed, WorkerPool, WorkerTimeout
from tests.conftest import load_wav

pytestmark = pytest.mark.slow

_PIECE = 16000 * 2 * 320 // 1000


def _feed(pool: WorkerPool, handle, pcm: np.ndarray) -> None:
    data = pcm.astype("<i2").tobytes()
    for i in range(0, len(data), _PIECE):
        pool.feed(handle, data[i:i + _PIECE])


def _until(cond, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(size=2, max_decoders=2)
    p.wait_ready(120)
    yield p
    p.close()


def test_utterances_spread_over_workers_and_each_sticks_to_its_own(pool, shared_audio):
    a, _ = load_wav(shared_audio / "speech/goforward.wav")
    b, _ = load_wav(shared_audio / "speech/cards-003.wav")
    ha, hb = pool.begin("wide"), pool.begin("wide")
    assert ha.worker is not hb.worker  # least loaded first: one per worker
    _feed(pool, ha, a)
    _feed(pool, hb, b)
    text_a, text_b = pool.finish(ha).result(30), pool.finish(hb).result(30)
    assert "forward" in text_a and "meters" in text_a
    assert "clubs" in text_b
    pcm = pool.synthesize("Seven of clubs.").result(30)
    assert isinstance(pcm, bytes) and len(pcm) % 2 == 0 and len(pcm) > 22050  # > 0.5 s of int16
    assert pool._config["cmn_priors"].keys() == {"wide", "narrow"}  # for any replacement


def test_a_killed_worker_fails_what_it_held_and_is_replaced_with_the_priors(pool, shared_audio):
    speech, _ = load_wav(shared_audio / "speech/librivox-0870.wav")
    handle = pool.begin("narrow")
    victim = handle.worker.pid
    _feed(pool, handle, speech)
    before = pool.restarts
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerCrashed, match=f"pid {victim}"):
        pool.finish(handle).result(10)
    # A request routed to the dead worker after the crash fails at once, with the reason.
    with pytest.raises(WorkerCrashed):
        pool._request(handle.worker, lambda rid: ("tts", rid, "x"), "synthesis").result(1)
    _until(lambda: pool.restarts == before + 1 and len(pool.pids()) == 2)
    assert victim not in pool.pids()
    fresh = next(w for w in pool._workers if w.index == handle.worker.index)
    _until(lambda: fresh.ready_at is not None)
    # The replacement recognises at once: it was handed the calibrated priors.
    a, _ = load_wav(shared_audio / "speech/goforward.wav")
    h = pool.begin("wide")
    _feed(pool, h, a)
    assert "forward" in pool.finish(h).result(30)


def test_an_aborted_utterance_is_not_decoded(pool, shared_audio):
    """60 s of queued audio, then abort: the worker drops it unread and answers at once."""
    speech, _ = load_wav(shared_audio / "speech/silero-test.wav")  # 60 s
    handle = pool.begin("wide")
    _feed(pool, handle, speech)
    pool.abort(handle)
    t = time.monotonic()
    pool._request(handle.worker, lambda rid: ("tts", rid, "Ready."), "synthesis").result(30)
    assert time.monotonic() - t < 3.0  # decoding 60 s would take several seconds


def test_deadlines_and_busy_decoders_fail_fast_instead_of_hanging(shared_audio):
    p = WorkerPool(size=1, max_decoders=1, request_timeout_s=0.3)
    try:
        p.wait_ready(120)
        # Every decoder busy: the next utterance fails at its finish, it does not wait.
        first, second = p.begin("wide"), p.begin("wide")
        with pytest.raises(EngineError, match="busy"):
            p.finish(second).result(10)
        p.abort(first)
        # A request that outlives its deadline gets its worker killed and replaced.
        victim = p.pids()[0]
        long_text = " ".join(["This sentence keeps the voice busy for a good while."] * 40)
        with pytest.raises(WorkerTimeout, match="longer than"):
            p.synthesize(long_text).result(30)
        _until(lambda: p.restarts == 1 and p.pids() and p.pids()[0] != victim)
    finally:
        p.close()
    assert p.pids() == []
    with pytest.raises(EngineError):
        p.synthesize("closed").result(5)


async def test_the_app_sizes_starts_and_stops_its_own_pool(tmp_path):
    """``GATEWAY_LOCAL_WORKERS`` sizes the app's pool; its lifespan starts it and kills it."""
    import asyncio

    from gateway.app import create_app
    from gateway.config import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path}/gw.db", recordings_dir=tmp_path / "rec",
                        local_workers=1, warm_up=True)
    app = create_app(settings)
    pool = app.state.services.engines.pool
    assert pool.size == 1 and pool.pids() == []  # nothing starts before the lifespan
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.services.warm, 120)  # loaded off the event loop
        (pid,) = pool.pids()
        processes = [w.process for w in pool._workers]
    assert pool.pids() == [] and not any(p.is_alive() for p in processes)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
