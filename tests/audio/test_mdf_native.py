"""The C kernel (:mod:`gateway.audio.mdf_native`) against the numpy one (:mod:`gateway.audio.mdf_step`'s
``*_numpy``, the reference) on the same inputs.

From the same state, one block: the outputs and the new state agree to float32 rounding (the
C kernel's inverse transforms and complex sums are float32, where numpy's are float64 on
complex64 inputs: relative differences of about 1e-7 of each array's scale; bounded here at
2e-5, the two-path flags and counters exactly). Free running, the differences grow only as
float32 noise does: the ERLE over seconds of realistic echo agrees within 0.1 dB.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gateway.audio import mdf, mdf_native, mdf_step
from gateway.audio.aec import EchoCanceller
from tests.audio.test_aec import RATE, erle, mix, path, run, talk, voices  # noqa: F401 (a fixture)

needs_native = pytest.mark.skipif(not mdf_native.AVAILABLE, reason="gateway.audio._mdf not built")
RTOL = 2e-5  # of each array's largest magnitude
STATE = ("W", "F", "X", "S", "P", "V", "H")


def test_the_native_kernel_is_built():
    """pip install -e . (make) builds gateway.audio._mdf; without it the numpy kernel runs."""
    assert mdf_native.AVAILABLE
    assert mdf_step.NATIVE == (os.environ.get("GATEWAY_MDF_KERNEL", "auto") != "numpy")


def test_the_kernel_setting():
    code = "from gateway.audio import mdf_step; print(mdf_step.NATIVE)"
    env = dict(os.environ, GATEWAY_MDF_KERNEL="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    env["GATEWAY_MDF_KERNEL"] = "bogus"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode != 0
    with pytest.raises(ValueError):
        mdf_step.use("bogus")


@pytest.fixture
def kernel():
    """Sets the kernel for a test (``kernel(name)``), restored after."""
    before = mdf_step.NATIVE
    yield mdf_step.use
    mdf_step.use("native" if before else "numpy")


def close(a: np.ndarray, b: np.ndarray, what: str, rtol: float = RTOL) -> None:
    scale = max(float(np.abs(a).max()), 1e-30)
    err = float(np.abs(a - b).max()) / scale
    assert err <= rtol, f"{what}: {err:.2e} of {scale:.3g}"


def pools(rows: int, k: int = 3, block: int = 160, rate: int = 8000):
    """Two equal pools (numpy's, native's) and ``rows`` slots taken out of order, not contiguous."""
    p, q = mdf.Pool(rate, block, k), mdf.Pool(rate, block, k)
    for pl in (p, q):
        for _ in range(3 * rows):
            pl.take()
    slots = np.random.default_rng(rows).permutation(3 * rows)[:rows]
    return p, q, slots


def sync(p: mdf.Pool, q: mdf.Pool) -> None:
    """q's state := p's, in place (the native kernel's view of q stays valid)."""
    for name in STATE + ("D", "Y", "YF"):
        getattr(q, name)[...] = getattr(p, name)


def same_state(p: mdf.Pool, q: mdf.Pool, slots: np.ndarray) -> None:
    for name in ("W", "F", "X", "S", "P"):
        close(getattr(p, name)[slots], getattr(q, name)[slots], name)
    v, w = p.V[slots], q.V[slots]
    for col in range(v.shape[1]):
        close(v[:, col], w[:, col], f"V[{col}]", 1e-4 if col >= mdf.DAVG1 else RTOL)
    assert np.array_equal(v[:, [mdf.ADAPTED, mdf.COUNT]], w[:, [mdf.ADAPTED, mdf.COUNT]])
    assert np.array_equal(p.H[slots], q.H[slots])


def streams(m: int, blocks: int, seed: int = 0, block: int = 160):
    """Per row its own reference (white, then speech-like bursts) and a caller leg: the
    reference through a row's echo path 40–200 samples late, 10–30 dB down, with noise, and a
    burst of loud near-end talk in the middle (double talk)."""
    rng = np.random.default_rng(seed)
    n = (blocks + 2) * block
    ref = rng.standard_normal((m, n)) * 3000 * (1 + np.sin(np.arange(n) / 900.0)[None, :] ** 2)
    legs = np.empty_like(ref)
    for j in range(m):
        h = np.zeros(260)
        h[rng.integers(40, 200) + np.arange(3)] = np.array([1.0, -0.4, 0.2]) * 10 ** (-rng.uniform(10, 30) / 20)
        legs[j] = np.convolve(ref[j], h)[:n] + rng.standard_normal(n) * 10
    legs[:, n // 2:n // 2 + 6 * block] += rng.standard_normal((m, 6 * block)) * 2000
    return ref, legs


def blocks_of(ref, legs, f: int, block: int = 160):
    """The kernels' inputs for block ``f``: each row's reference [t0 - B, t0 + B) and its leg."""
    t0 = (f + 1) * block
    return np.ascontiguousarray(ref[:, t0 - block:t0 + block]), np.ascontiguousarray(legs[:, t0:t0 + block])


@needs_native
@pytest.mark.parametrize(("k", "block", "rate"), [(3, 160, 8000), (13, 160, 8000), (3, 320, 16000), (1, 160, 8000)])
def test_step_from_the_same_state(k, block, rate):
    """Random streams, 24 slots out of order; every block both kernels start from numpy's state."""
    m, nblocks = 24, 160
    p, q, slots = pools(m, k, block, rate)
    ref, legs = streams(m, nblocks, k, block)
    shift = np.ones(m, bool)
    for f in range(nblocks):
        newest, d = blocks_of(ref, legs, f, block)
        sync(p, q)
        shift[:] = True
        if f % 37 == 5:  # some rows' histories recomputed whole (no shift)
            for s in slots[::5]:
                h = mdf.spectra(np.random.default_rng(f).standard_normal((k, 2 * block)) * 1000).astype(mdf.SPECTRUM)
                p.set_history(int(s), h)
                q.set_history(int(s), h)
            shift[::5] = False
        y0 = mdf_step.step_numpy(p, slots, newest, shift, d)
        y1 = mdf_native.step(q, slots, newest, shift, d)
        close(y0, y1, f"yf, block {f}")
        same_state(p, q, slots)
    assert p.V[slots, mdf.ADAPTED].all()  # (the test reached the adapted rates)


@needs_native
def test_predict_and_adapt_from_the_same_state():
    m, nblocks = 20, 120
    p, q, slots = pools(m)
    ref, legs = streams(m, nblocks, 7)
    shift = np.ones(m, bool)
    for f in range(nblocks):
        newest, d = blocks_of(ref, legs, f)
        sync(p, q)
        mdf_step.predict_numpy(p, slots, newest, shift)
        mdf_native.predict(q, slots, newest, shift)
        close(p.Y[slots], q.Y[slots], "Y")
        close(p.YF[slots], q.YF[slots], "YF")
        p.D[slots] = q.D[slots] = d
        half = slots[: m // 2]  # the blocks complete in two batches, in another order
        for part in (slots[m // 2:], half):
            mdf_step.adapt_numpy(p, part)
            mdf_native.adapt(q, part)
        same_state(p, q, slots)


@needs_native
def test_step_equals_predict_then_adapt():
    """The native step and its predict + adapt give the same output and state to the bit."""
    m, nblocks = 16, 80
    _, q, slots = pools(m)
    r = mdf.Pool(8000, 160, 3)
    for _ in range(3 * m):
        r.take()
    ref, legs = streams(m, nblocks, 3)
    shift = np.ones(m, bool)
    for f in range(nblocks):
        newest, d = blocks_of(ref, legs, f)
        y = mdf_native.step(q, slots, newest, shift, d)
        mdf_native.predict(r, slots, newest, shift)
        assert np.array_equal(y, r.YF[slots])
        r.D[slots] = d
        mdf_native.adapt(r, slots)
    for name in STATE:
        assert np.array_equal(getattr(q, name), getattr(r, name)), name


@needs_native
@pytest.mark.parametrize("case", ["back", "up"])
def test_two_path(case):
    """A background filter far off (case back: restarted from the foreground) or a foreground
    filter still at zero beside a good background (up: takes it), in both kernels alike."""
    m = 12
    p, q, slots = pools(m)
    ref, legs = streams(m, 200, 11)
    shift = np.ones(m, bool)
    for f in range(150):  # converge first (numpy)
        mdf_step.step_numpy(p, slots, *blocks_of(ref, legs, f)[:1], shift, blocks_of(ref, legs, f)[1])
    good = p.W[slots].copy()
    if case == "back":
        p.W[slots] = good * 8  # the background went far off
        p.F[slots] = good
    else:
        p.F[slots] = 0
    p.V[slots, mdf.DAVG1:] = 0
    sync(p, q)
    newest, d = blocks_of(ref, legs, 150)
    y0 = mdf_step.step_numpy(p, slots, newest, shift, d)
    y1 = mdf_native.step(q, slots, newest, shift, d)
    close(y0, y1, "yf")
    same_state(p, q, slots)
    if case == "back":  # restarted: W is the foreground plus one step, not 8 times it
        assert np.abs(q.W[slots] - good).max() < 0.5 * np.abs(good).max()
    else:  # the foreground took the background's weights
        close(q.F[slots], good, "F", 1e-6)
    assert not q.V[slots, mdf.DAVG1:].any()


@needs_native
def test_a_non_finite_input_resets_its_slot():
    m = 10
    p, q, slots = pools(m)
    ref, legs = streams(m, 60, 5)
    shift = np.ones(m, bool)
    for f in range(50):
        newest, d = blocks_of(ref, legs, f)
        mdf_step.step_numpy(p, slots, newest, shift, d)
    sync(p, q)
    newest, d = blocks_of(ref, legs, 50)
    d = d.copy()
    d[3, 17] = np.nan
    d[6, 5] = np.inf
    with np.errstate(invalid="ignore"):
        mdf_step.step_numpy(p, slots, newest, shift, d)
        mdf_native.step(q, slots, newest, shift, d)
    fresh = mdf.Pool(8000, 160, 3)
    fresh.take()
    for name in STATE:
        for j in (3, 6):
            assert np.array_equal(getattr(q, name)[slots[j]], getattr(fresh, name)[0]), name
    ok = np.delete(slots, [3, 6])
    same_state(p, q, ok)
    assert q.V[ok, mdf.COUNT].min() == 51


@pytest.mark.parametrize("chunk", [160, 80, 230])
def test_erle_and_output_match_numpy(voices, kernel, chunk):
    """Realistic echo (speech through a dispersive path, μ-law, line noise), 6 s through the
    whole canceller (whole blocks: step; 80 and 230: predict + adapt on pieces): the ERLE of
    both kernels within 0.1 dB, the residuals within a few LSB."""
    ref = talk(voices, 1, 6.0, -20)
    over = np.zeros(ref.size)
    over[3 * RATE:4 * RATE] = talk(voices, 5, 1.0, -22)[:RATE]  # a second of double talk
    leg, echo, _ = mix(ref, path(120, 15, True), -55, over=over)
    outs = {}
    for name in ("numpy", "native"):
        if name == "native" and not mdf_native.AVAILABLE:
            pytest.skip("gateway.audio._mdf not built")
        kernel(name)
        aec = EchoCanceller(RATE)
        aec.set_delay(120)
        outs[name] = run(aec, ref, leg, chunk)[0]
    e = {name: (erle(o, leg, echo, 1.5, 3), erle(o, leg, echo, 4.5, 6)) for name, o in outs.items()}
    assert e["numpy"][1] > 15  # (the echo was cancelled)
    assert np.abs(np.subtract(e["numpy"], e["native"])).max() < 0.1, e
    diff = np.abs(outs["numpy"] - outs["native"])
    assert diff.max() <= 4 and np.mean(diff > 0) < 0.05, (diff.max(), np.mean(diff > 0))


@needs_native
@pytest.mark.parametrize("n", [160, 320, 80, 44, 15, 1])
def test_the_c_fft_is_numpys_to_float32_rounding(n):
    """mdf_rfft / mdf_irfft (radices 4, 2, 3, 5 and a generic one; 7 rows: a partial group of
    lanes) against numpy's rfft / irfft, which ignores the imaginary parts of bins 0 and n."""
    rng = np.random.default_rng(n)
    plan = mdf_native._plan(n)
    x = rng.standard_normal((7, 2 * n)) * 1000
    got = np.empty((7, n + 1), complex)
    mdf_native._rfft(plan, 7, mdf_native._addr(x), 0, mdf_native._addr(got), 0.5 / n)
    close(np.fft.rfft(x, axis=1, norm="forward"), got, "rfft", 1e-6)
    spec = (rng.standard_normal((7, n + 1)) + 1j * rng.standard_normal((7, n + 1))).astype(np.complex64)
    back = np.empty((7, 2 * n), np.float32)
    mdf_native._irfft(plan, 7, mdf_native._addr(spec), mdf_native._addr(back))
    close(np.fft.irfft(spec.astype(complex), n=2 * n, axis=1), back, "irfft", 1e-6)


@needs_native
def test_numpys_transforms_in_the_native_kernel(monkeypatch):
    """The native kernel with numpy's transforms (C_FFT off) agrees too."""
    monkeypatch.setattr(mdf_native, "C_FFT", False)
    test_step_from_the_same_state(3, 160, 8000)
