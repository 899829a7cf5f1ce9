"""The batched driver behind :func:`gateway.audio.aec.cancel_many`: cuts each call's caller
chunk on its canceller's block grid and runs the :mod:`gateway.audio.mdf` kernels for every
call of a geometry in batches (one 20 ms frame that is exactly one block takes an all-array
path, :func:`whole`: :func:`gateway.audio.mdf.step` predicts and adapts it in one pass and the
outputs stay arrays, :class:`~gateway.audio.mdf.Blocks`; other chunk sizes go piece by piece, a
round of pieces at a time, :func:`~gateway.audio.mdf.predict` then
:func:`~gateway.audio.mdf.adapt`, to the same output). Works on
:class:`~gateway.audio.aec.EchoCanceller` internals; nothing here is public API.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gateway.audio import mdf
from gateway.audio.mdf import AecOut, Blocks

__all__ = ["BATCH_BINS", "pieces", "whole"]


def whole(stages: Sequence, xs: list[np.ndarray], ats: Sequence[int], idx: list[int]) -> Blocks:
    """Stages whose chunk is exactly their next block: predict, subtract, adapt, per batch.
    Returns their outputs as arrays, in the order of ``idx``."""
    m, b = len(idx), stages[idx[0]].block
    x16 = np.stack([xs[i] for i in idx])
    out = Blocks(list(idx), x16.copy(), np.zeros((m, b), np.float32), np.zeros(m), np.zeros(m, bool),
                 np.zeros(m, bool), np.zeros(m))
    go: dict[int, int] = {}  # id(stage) -> its row
    for j, i in enumerate(idx):
        st = stages[i]
        st._t0, st._on = ats[i], False
        if st._active(st._t0):
            go[id(st)] = j
            out.ref_power[j] = st._refp

    def work(group: list) -> None:
        slots, newest, shift = _prepare(group)
        rows = np.array([go[id(st)] for st in group])
        x = x16[rows].astype(np.float64)
        pl = group[0]._pool
        y = mdf.step(pl, slots, newest, shift, x)
        out.residual[rows] = np.minimum(np.maximum(np.rint(x - y), -32768), 32767)  # (np.clip, cheaper)
        out.echo[rows] = y
        out.leak[rows], out.adapted[rows] = pl.V[slots, mdf.LEAK], pl.V[slots, mdf.ADAPTED]  # as the block left them

    rows_on = set(go.values())
    _grouped([stages[idx[j]] for j in go.values()], work)
    out.active[list(go.values())] = True
    for j, i in enumerate(idx if len(rows_on) < m else ()):
        if j not in rows_on:  # passed through: the filter's figures as they were
            st = stages[i]
            out.leak[j], out.adapted[j] = st._pool.V[st._slot, mdf.LEAK], st._pool.V[st._slot, mdf.ADAPTED]
    return out


def pieces(stages: Sequence, xs: list[np.ndarray], ats: Sequence[int], idx: list[int],
            outs: list) -> None:
    """Stages with other chunks: cut on each one's block grid, a round of pieces at a time."""
    res = {i: xs[i].astype(np.float64) for i in idx}
    echo = {i: np.zeros(xs[i].size, np.float32) for i in idx}
    active = dict.fromkeys(idx, False)
    refp = dict.fromkeys(idx, 0.0)
    pos = dict.fromkeys(idx, 0)
    left = [i for i in idx if xs[i].size]
    while left:
        go = []
        for i in left:
            st = stages[i]
            if st._fill == 0:
                st._t0, st._on = ats[i] + pos[i], False
                if st._active(st._t0):
                    go.append(st)
        _grouped(go, _start)
        done = []
        for i in left:
            st, p = stages[i], pos[i]
            k = min(st.block - st._fill, xs[i].size - p)
            pl, slot, f = st._pool, st._slot, st._fill
            if st._on:
                pl.D[slot, f:f + k] = res[i][p:p + k]
                seg = pl.YF[slot, f:f + k]
                res[i][p:p + k] -= seg
                echo[i][p:p + k] = seg
                active[i] = True
                refp[i] = max(refp[i], st._refp)
            st._fill += k
            pos[i] += k
            if st._fill == st.block:
                st._fill = 0
                if st._on:
                    done.append(st)
        _grouped(done, lambda g: mdf.adapt(g[0]._pool, np.array([st._slot for st in g])))
        left = [i for i in left if pos[i] < xs[i].size]
    for i in idx:
        st, r = stages[i], res[i]
        if active[i]:
            r = np.clip(np.rint(r), -32768, 32767).astype(np.int16)
        else:  # passed through: the input itself
            r = xs[i]
        outs[i] = AecOut(residual=r, echo=echo[i], leak=st.leak, adapted=st.adapted, active=active[i],
                         ref_power=refp[i])


#: Filter bins (partitions × bins × stages) per batched kernel call. Larger batches share
#: numpy's per-call overhead, but past a size their temporaries are page-faulted in afresh on
#: every call (glibc hands them back to the system), which on the shared dev box cost more than
#: the arithmetic: at 100 calls of the 60 ms filter (8 kHz: 3 × 161 bins), µs per call per frame
#: for 16 / 32 / 64 / 100 stages per call: 69–71 / 57–59 / 51–55 / 120 (loaded box).
BATCH_BINS = 64 * 3 * 161


def _grouped(stages: list, work) -> None:
    """Calls ``work(group)`` per batch of stages with the same key (:data:`BATCH_BINS`)."""
    groups: dict[tuple, list] = {}
    for st in stages:
        groups.setdefault(st.key, []).append(st)
    for group in groups.values():
        size = max(8, BATCH_BINS // (group[0].partitions * (group[0].block + 1)))
        for i in range(0, len(group), size):
            work(group[i:i + size])


def _history(st) -> np.ndarray:
    """The reference spectra of the ``K`` blocks ending at ``t0 + B``, ``t0``, …, ``[K, B + 1]``."""
    b, k = st.block, st.partitions
    r = st._ref.read(st._t0 - st.bulk - k * b, st._t0 - st.bulk + b)
    idx = np.arange(k)[:, None] * -b + (k - 1) * b + np.arange(2 * b)[None, :]
    return mdf.spectra(r[idx])


def _prepare(group: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each stage of ``group`` starts a block: its slot, its newest reference ``[t0 - B, t0 + B)``
    (float64 ``[m, 2 B]``, bulk delay applied) and whether its spectra history just moves down
    by one block (else it is recomputed from the ring here)."""
    b, pl = group[0].block, group[0]._pool
    newest = np.empty((len(group), 2 * b))
    shift = []
    for row, st in zip(newest, group):
        st._ref.read_into(row, st._t0 - st.bulk - b)
        shift.append(st._xt == st._t0 - b)
        if not shift[-1]:  # after a pass-through, a gap or a new span: the whole history from the ring
            pl.X[st._slot] = _history(st)
        st._xt, st._on = st._t0, True
    return np.array([st._slot for st in group]), newest, np.array(shift)


def _start(group: list) -> None:
    """Starts a block in every stage of ``group``: reference spectra and echo estimate."""
    slots, newest, shift = _prepare(group)
    mdf.predict(group[0]._pool, slots, newest, shift)
