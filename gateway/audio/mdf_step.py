"""The batched MDF kernels of :mod:`gateway.audio.mdf` (the update rules are described there):
:func:`predict`, :func:`adapt` and :func:`step` (both at once, for a block that arrives whole)
over a batch of one :class:`~gateway.audio.mdf.Pool`'s slots.

A batch gathers its slots' state into the pool's scratch arrays (:class:`_Work`, reused: a
batch allocates no large temporaries, which were page-faulted in afresh on every call), works
on contiguous arrays with ``out=`` arguments, and scatters the state back (the same arithmetic,
operation for operation, as the kernels that allocated their temporaries: the same output to
the bit, before the spectra became complex64, :data:`~gateway.audio.mdf.SPECTRUM`). Per row the
work is nine ``2 B``-point real transforms and a few dozen array operations; per batch about 120
numpy calls, about 190 µs of fixed cost, which is most of what a lone call pays. A batch of 46
rows of the 60 ms filter, called back to back (warm caches): about 21 µs per row (2026-12-02,
loaded box); inside the echo stage, between other work, about 28.

:func:`step`, :func:`predict` and :func:`adapt` run the C kernel of
:mod:`gateway.audio.mdf_native` (the same arithmetic in C on the pool's arrays in place, with
float32 transforms: the same ERLE to 0.1 dB; a third of the numpy kernel's time per row) where it
is built (``pip install -e .``) and chosen, else the numpy kernels here (:func:`step_numpy`, :func:`predict_numpy`, :func:`adapt_numpy`: the reference).
The choice: the environment variable ``GATEWAY_MDF_KERNEL`` at import (``auto``, the default:
native if built; ``native``: an error if not built; ``numpy``), or :func:`use`; :data:`NATIVE`
says which runs.
"""

from __future__ import annotations

import os

import numpy as np

from gateway.audio import mdf_native as _native
from gateway.audio.mdf import (ADAPTED, COUNT, DAVG1, DVAR2, LEAK, MIN_LEAK, PEY, PYY, RER_Y, SUM_ADAPT, SXX,
                               SPECTRUM, VAR1_UPDATE, VAR2_UPDATE, VAR_BACKTRACK, Pool, proportions, spectra)

__all__ = ["NATIVE", "adapt", "adapt_numpy", "predict", "predict_numpy", "step", "step_numpy", "use"]


class _Work:
    """One pool's scratch arrays for a batch of up to ``rows`` slots, reused so that a batch
    allocates no large temporaries (fresh ones were page-faulted in on every call). Every
    array a batch of ``m`` works on is a contiguous leading slice.

    ``W``, ``F``, ``X``: the gathered state ``[rows, K, B + 1]``; ``T``: a product of their size;
    ``N``: the newest reference spectrum ``[rows, B + 1]``; ``Z`` ``[2 rows, B + 1]`` complex:
    the two filters' summed spectra, then those of the error and the echo estimate; ``R``
    ``[2 rows, 2 B]``: inverse transforms; ``Q`` ``[5 rows, B]``: ``e``, ``y``, ``yf``, ``ef``,
    ``yf - y`` (``m`` rows each: the background and foreground filters' echo estimates ``y``,
    ``yf``, and ``e = d - y``, ``ef = d - yf``); ``E0`` ``[2 rows, 2 B]``: ``e`` and ``y``
    behind ``B`` zeros (the first halves stay zero); ``A``, ``D`` ``[2 rows, B + 1]`` and ``C``,
    ``C2`` ``[rows, B + 1]`` float64, ``G`` ``[rows, B + 1]`` complex.
    """

    def __init__(self, rows: int, k: int, b: int) -> None:
        f, n = b + 1, 2 * b
        self.rows = rows
        self.W, self.F, self.X, self.T = (np.empty((rows, k, f), SPECTRUM) for _ in range(4))
        self.N, self.G = np.empty((rows, f), complex), np.empty((rows, f), complex)
        self.Z = np.empty((2 * rows, f), complex)
        self.R, self.E0 = np.empty((2 * rows, n)), np.zeros((2 * rows, n))
        self.Q = np.empty((5 * rows, b))
        self.A, self.D = np.empty((2 * rows, f)), np.empty((2 * rows, f))
        self.C, self.C2 = np.empty((rows, f)), np.empty((rows, f))
        self.ks = np.arange(k)  # partition indices


def _work(p: Pool, m: int) -> _Work:
    """The pool's scratch arrays for a batch of ``m`` slots."""
    w = p._work
    if w is None or w.rows < m:
        w = p._work = _Work(max(m, 2 * w.rows if w is not None else m), p.partitions, p.block)
    return w


def predict_numpy(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray) -> None:
    """Starts a block in each slot: pushes the newest reference spectrum (rows where
    ``shift``; other rows' histories were already filled) and writes the echo estimate to
    ``p.Y``.

    Args:
        p: the pool.
        slots: int ``[m]`` distinct slots.
        newest: float64 ``[m, 2B]``, each slot's reference ``[t0 - B, t0 + B)`` (bulk delay
            applied).
        shift: bool ``[m]``, whose history moves down by one block.
    """
    b, m = p.block, slots.size
    ws = _work(p, m)
    spec = spectra(newest)
    p.V[slots, SXX] = np.einsum("mn,mn->m", newest[:, b:], newest[:, b:])
    _push(p, slots, spec, shift)
    W, F, X = _gather(p, ws, slots)
    _estimate(W, F, X, ws, b)
    p.Y[slots], p.YF[slots] = ws.Q[m:2 * m], ws.Q[2 * m:3 * m]


def _push(p: Pool, slots: np.ndarray, spec: np.ndarray, shift: np.ndarray) -> None:
    """The newest reference spectrum ``spec`` ``[m, B + 1]`` into the history ring of each slot
    where ``shift`` (the others' histories were recomputed whole)."""
    k = p.partitions
    if shift.all():  # the usual block
        h = p.H[slots] + 1
        h[h == k] = 0
        p.H[slots] = h
        p.X[slots, h] = spec
    elif shift.any():
        s = slots[shift]
        p.H[s] = (p.H[s] + 1) % k
        p.X[s, p.H[s]] = spec[shift]


def _gather(p: Pool, ws: _Work, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slots' ``W``, ``F`` and ``X`` (newest first) into the scratch arrays (views
    ``[m, K, B + 1]``)."""
    m, k = slots.size, p.partitions
    W, F, X = ws.W[:m], ws.F[:m], ws.X[:m]
    np.take(p.W, slots, axis=0, out=W, mode="clip")  # (slots are valid: "clip" only skips a check)
    np.take(p.F, slots, axis=0, out=F, mode="clip")
    at = p.H[slots][:, None] - ws.ks  # the ring in order: slot * K + (H - j) % K
    at[at < 0] += k
    at += (slots * k)[:, None]
    np.take(p.X.reshape(-1, p.block + 1), at.reshape(-1), axis=0, out=X.reshape(m * k, -1), mode="clip")
    return W, F, X


def _estimate(W: np.ndarray, F: np.ndarray, X: np.ndarray, ws: _Work, b: int) -> None:
    """The background and foreground filters' echo estimates from the spectra history, into
    ``ws.Q``'s ``y`` and ``yf`` rows (see :class:`_Work`)."""
    m = W.shape[0]
    T, Z, R = ws.T[:m], ws.Z[:2 * m], ws.R[:2 * m]
    np.multiply(W, X, out=T)
    np.sum(T, axis=1, out=Z[:m])  # partition by partition in order (not the fast axis: no pairwise sum)
    np.multiply(F, X, out=T)
    np.sum(T, axis=1, out=Z[m:])
    np.fft.irfft(Z, n=2 * b, axis=1, out=R)
    np.multiply(R[:, b:], 2 * b, out=ws.Q[m:3 * m])


def step_numpy(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray, d: np.ndarray) -> np.ndarray:
    """:func:`predict` then :func:`adapt` on a block that is complete at once (``d``, float64
    ``[m, B]``: the usual 20 ms frame), with one gather and one scatter of each slot's state;
    returns the foreground filter's echo estimate ``[m, B]`` (what is subtracted). The pool ends
    as after ``predict``, writing ``d`` to ``p.D`` and ``adapt``, except ``p.D``, ``p.Y`` and
    ``p.YF``, which only a block in progress needs."""
    b, m = p.block, slots.size
    ws = _work(p, m)
    spec = ws.N[:m]
    np.fft.rfft(newest, axis=-1, out=spec, norm="forward")  # (the same as rfft / 2B, to the bit)
    _push(p, slots, spec, shift)
    W, F, X = _gather(p, ws, slots)
    v = p.V[slots]
    v[:, SXX] = np.einsum("mn,mn->m", newest[:, b:], newest[:, b:])
    _estimate(W, F, X, ws, b)
    yf = ws.Q[2 * m:3 * m].copy()
    _adapt(p, ws, slots, d, v, W, F, X, p.S[slots])
    return yf


def adapt_numpy(p: Pool, slots: np.ndarray) -> None:
    """Adapts each slot's filter on its completed block ``p.D`` (echo estimate ``p.Y``)."""
    m = slots.size
    ws = _work(p, m)
    W, F, X = _gather(p, ws, slots)
    ws.Q[m:2 * m], ws.Q[2 * m:3 * m] = p.Y[slots], p.YF[slots]
    _adapt(p, ws, slots, p.D[slots], p.V[slots], W, F, X, p.S[slots])


def _adapt(p: Pool, ws: _Work, slots: np.ndarray, d: np.ndarray, v: np.ndarray, W: np.ndarray,
           F: np.ndarray, X: np.ndarray, S: np.ndarray) -> None:
    """:func:`adapt` on gathered rows (the two filters' estimates in ``ws.Q``, see
    :class:`_Work`), scattered back to the pool."""
    b, m = p.block, slots.size
    n = 2 * b
    Q = ws.Q[:5 * m]
    e, y, yf, ef = Q[:m], Q[m:2 * m], Q[2 * m:3 * m], Q[3 * m:4 * m]
    np.subtract(d, y, out=e)
    np.subtract(d, yf, out=ef)
    np.subtract(yf, y, out=Q[4 * m:])
    sums = np.einsum("mn,mn->m", Q, Q).reshape(5, m)  # See, Syy, Syy of yf, Sff, Dbf - 10
    back = _two_path(p, slots, v, W, F, sums)
    see, syy = sums[0], sums[1]
    if back.any():  # the background filter went worse: restarted from the foreground's
        y[back], e[back] = yf[back], ef[back]
        see[back], syy[back] = sums[3, back], sums[2, back]
    see = np.maximum(see, n * 100 / 64)
    sey = np.einsum("mn,mn->m", e, y) if RER_Y else None  # (only the dropped RER floor reads it)
    Z, E0 = ws.Z[:2 * m], ws.E0[:2 * m]
    E0[:, b:] = Q[:2 * m]  # e, y behind B zeros
    np.fft.rfft(E0, axis=-1, out=Z, norm="forward")
    pw, tmp = ws.A[:2 * m], ws.D[:2 * m]  # |E|^2 (Rf), |Y|^2 (Yf)
    np.multiply(Z.real, Z.real, out=pw)
    np.multiply(Z.imag, Z.imag, out=tmp)
    pw += tmp
    mu = _rates(p, ws, v, X, S, pw, see, syy, sey)
    adapted = v[:, ADAPTED] > 0
    prop = p.P[slots]
    if adapted.any():
        prop = np.where(adapted[:, None], proportions(W), prop)
    G, U = ws.G[:m], ws.T[:m]
    np.multiply(mu, Z[:m], out=G)
    np.conjugate(X, out=U)  # each partition's step, as mdf.c: prop conj(X) mu E
    U *= prop[:, :, None]
    U *= G[:, None, :]
    W += U
    _constrain(W, v[:, COUNT].astype(int), b, ws)
    bad = None if np.isfinite(W.view(W.real.dtype)).all() else ~np.isfinite(W).all(axis=(1, 2))
    v[:, COUNT] += 1
    p.W[slots], p.S[slots], p.P[slots], p.V[slots] = W, S, prop, v
    if bad is not None:
        for slot in slots[bad]:  # never seen; Speex resets a filter that went bad, so do we
            p.clear(int(slot))


def _rates(p: Pool, ws: _Work, v: np.ndarray, X: np.ndarray, S: np.ndarray, pw: np.ndarray, see: np.ndarray,
           syy: np.ndarray, sey: np.ndarray | None) -> np.ndarray:
    """Each bin's step ``mu`` (``[m, B + 1]``, in ``ws``) from the block's power spectra ``pw``
    (``[2 m, B + 1]``: the error's ``Rf``, then the echo estimate's ``Yf``): the leak estimate,
    ``RER`` and the adaptation state go to ``v``, the smoothed spectra to ``S``."""
    b, k, m = p.block, p.partitions, v.shape[0]
    n = 2 * b
    rf, yf = pw[:m], pw[m:]
    sxx = v[:, SXX]
    ss = 0.35 / k
    power, tmp = ws.C[:m], ws.C2[:m]
    x0 = X[:, 0]
    np.multiply(x0.real, x0.real, out=power)
    np.multiply(x0.imag, x0.imag, out=tmp)
    power += tmp
    power *= ss
    np.multiply(S[:, 0], 1 - ss, out=tmp)
    tmp += 1.0
    np.add(tmp, power, out=power)
    D = ws.D[:2 * m]  # Rf - S1, Yf - S2
    de, dy = D[:m], D[m:]
    np.subtract(rf, S[:, 1], out=de)
    np.subtract(yf, S[:, 2], out=dy)
    pyy_new = np.sqrt(np.einsum("mf,mf->m", dy, dy))
    pey_new = np.einsum("mf,mf->m", de, dy) / np.maximum(pyy_new, 1e-12)
    S[:, 0] = power
    D *= b / p.rate
    S[:, 1] += de
    S[:, 2] += dy
    alpha = np.minimum(2.0 * b / p.rate * syy, 0.5 * b / p.rate * see) / see
    pyy = np.maximum(v[:, PYY] * (1 - alpha) + alpha * pyy_new, 1.0)
    pey = np.minimum(np.maximum(v[:, PEY] * (1 - alpha) + alpha * pey_new, MIN_LEAK * pyy), pyy)  # (np.clip)
    leak = pey / pyy
    rer_floor = RER_Y * sey * sey / (1 + see * syy) if RER_Y else 0.0  # (0 * a finite sum: exactly 0)
    rer = np.minimum(np.maximum((1e-4 * sxx + 3.0 * leak * syy) / see, rer_floor), 0.5)
    adapted = (v[:, ADAPTED] > 0) | ((v[:, SUM_ADAPT] > k) & (leak > 0.03))
    rate0 = np.where(sxx > n * 1000 / 64, np.minimum(0.25 * sxx, 0.25 * see) / see, 0.0)
    rf += 1.0  # Rf + 1
    r, t = de, dy  # (free again)
    np.multiply(leak[:, None], yf, out=r)
    np.multiply(0.5, rf, out=t)
    np.minimum(r, t, out=r)
    r *= 0.7
    np.multiply((0.3 * rer)[:, None], rf, out=t)
    r += t
    np.divide(r, rf, out=r)
    mu = r if adapted.all() else np.where(adapted[:, None], r, rate0[:, None])
    np.add(power, 10.0, out=t)
    np.divide(mu, t, out=tmp)
    v[:, PEY], v[:, PYY], v[:, LEAK] = pey, pyy, np.where(adapted, leak, 1.0)
    v[:, SUM_ADAPT] = np.where(adapted, v[:, SUM_ADAPT], v[:, SUM_ADAPT] + rate0)
    v[:, ADAPTED] = adapted
    return tmp


def _two_path(p: Pool, slots: np.ndarray, v: np.ndarray, W: np.ndarray, F: np.ndarray,
              sums: np.ndarray) -> np.ndarray:
    """mdf.c's two-path logic on the block just completed: the foreground filter takes the
    background's weights when the background's error is significantly lower (over one block
    or two smoothed windows); the background restarts from the foreground when it is
    significantly worse (double talk made it diverge). ``sums`` ``[5, m]``: See, Syy, the
    foreground estimate's power, Sff and Dbf - 10. Updates ``v``, ``W`` and ``p.F``; returns the
    rows whose background was restarted."""
    see, sff = sums[0], sums[3]
    dbf = 10.0 + sums[4]
    delta = sff - see
    c = v[:, DAVG1:DVAR2 + 1]  # DAVG1, DAVG2, DVAR1, DVAR2: each smoothed as mdf.c does, all at once
    new = np.empty_like(c)
    new[:, :2], new[:, 2:] = delta[:, None], sff[:, None]
    new *= _TP_IN
    new[:, 2:] *= dbf[:, None]  # (0.16 sff) dbf, (0.0225 sff) dbf
    c *= _TP_KEEP
    c += new
    dd, aa, var = delta * np.abs(delta), c[:, :2] * np.abs(c[:, :2]), c[:, 2:]
    up = (dd > sff * dbf) | (aa > var * _TP_UPDATE).any(axis=1)
    back = ~up & ((-dd > VAR_BACKTRACK * sff * dbf) | (-aa > VAR_BACKTRACK * var).any(axis=1))
    if up.any():
        p.F[slots[up]] = W[up]
    if back.any():
        W[back] = F[back]
    c[up | back] = 0.0
    return back


# _two_path's smoothing (mdf.c): DAVG1, DAVG2 = 0.6, 0.85 of the old + 0.4, 0.15 of Sff - See;
# DVAR1, DVAR2 = 0.36, 0.7225 of the old + 0.16, 0.0225 of Sff Dbf; and the update thresholds
_TP_KEEP = np.array([0.6, 0.85, 0.36, 0.7225])
_TP_IN = np.array([0.4, 0.15, 0.16, 0.0225])
_TP_UPDATE = np.array([VAR1_UPDATE, VAR2_UPDATE])


def _constrain(W: np.ndarray, counts: np.ndarray, b: int, ws: _Work) -> None:
    """:func:`constrain` in the scratch arrays of ``ws``."""
    m, k, _ = W.shape
    j = 2 * m if k > 1 else m
    C, R = ws.Z[:j], ws.R[:j]
    C[:m] = W[:, 0]
    if k > 1:
        rows, parts = np.arange(m), 1 + counts % (k - 1)
        C[m:] = W[rows, parts]
    np.fft.irfft(C, n=2 * b, axis=1, out=R)
    R[:, b:] = 0.0
    np.fft.rfft(R, axis=1, out=C)
    W[:, 0] = C[:m]
    if k > 1:
        W[rows, parts] = C[m:]


#: The C kernel (:mod:`gateway.audio.mdf_native`) runs, not the numpy one (see :func:`use`).
NATIVE = False


def use(kernel: str = "auto") -> bool:
    """Chooses the kernel: ``native`` (the C one; ``RuntimeError`` if it is not built),
    ``numpy`` or ``auto`` (native if built). Returns :data:`NATIVE`."""
    global NATIVE
    if kernel not in ("auto", "native", "numpy"):
        raise ValueError(f"GATEWAY_MDF_KERNEL: {kernel!r}, not auto, native or numpy")
    if kernel == "native" and not _native.AVAILABLE:
        raise RuntimeError("GATEWAY_MDF_KERNEL=native: gateway.audio._mdf is not built (pip install -e .)")
    NATIVE = kernel != "numpy" and _native.AVAILABLE
    return NATIVE


def step(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray, d: np.ndarray) -> np.ndarray:
    """:func:`predict` then :func:`adapt` on a whole block (:func:`step_numpy`), by the chosen kernel."""
    if NATIVE:
        return _native.step(p, slots, newest, shift, d)
    return step_numpy(p, slots, newest, shift, d)


def predict(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray) -> None:
    """Starts a block in each slot (:func:`predict_numpy`), by the chosen kernel."""
    if NATIVE:
        return _native.predict(p, slots, newest, shift)
    return predict_numpy(p, slots, newest, shift)


def adapt(p: Pool, slots: np.ndarray) -> None:
    """Adapts each slot's filter on its completed block (:func:`adapt_numpy`), by the chosen kernel."""
    if NATIVE:
        return _native.adapt(p, slots)
    return adapt_numpy(p, slots)


use(os.environ.get("GATEWAY_MDF_KERNEL", "auto").strip().lower() or "auto")
