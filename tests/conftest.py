"""Shared test fixtures: paths to the real recordings in ``../shared/audio``."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = ROOT.parent / "shared" / "audio"


def load_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Read a mono PCM16 WAV: (int16 samples, sample rate in Hz)."""
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    """``../shared/audio``; tests that need it skip loudly only if it is truly absent, and
    fail in CI (``CI`` set), where a missing folder would quietly turn them into no tests."""
    if not SHARED_AUDIO.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real recordings not found at {SHARED_AUDIO} (CI must have ../shared)")
        pytest.skip(f"real recordings not found at {SHARED_AUDIO}")
    return SHARED_AUDIO


@pytest.fixture(scope="session")
def local_engines():
    """The local agent's speech engines: one worker process (pocketsphinx, Piper), loaded and
    calibrated once per test session and shared by every test that needs them."""
    from gateway.llm.local.remote import LocalEngines

    engines = LocalEngines(workers=1, max_decoders=4)
    engines.warm_up()
    yield engines
    engines.close()


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (``make test`` runs two workers, ``--dist loadgroup``): the end-to-end
    tests (``tests/e2e`` and ``tests/browser``: real calls, the local agent's speech engines,
    timings on a real clock)
    run one at a time on one worker, while the other worker takes the rest, so two of them never
    compete for the machine's cores."""
    here = Path(__file__).parent
    groups = (here / "e2e", here / "browser")  # the browser tests: a real call in Chromium
    # Also on that worker: the engine-worker pool's timing tests (deadlines of about a second).
    timed = {here / "llm" / "test_workers.py"}
    for item in items:
        path = Path(str(item.fspath))
        if any(g in path.parents for g in groups) or path in timed:
            item.add_marker(pytest.mark.xdist_group("e2e"))
