"""The batched driver behind :func:`gateway.audio.aec.cancel_many`: cuts each call's caller
chunk on its canceller's block grid and runs the :mod:`gateway.audio.mdf` kernels for every
call of a geometry in batches (one 20 ms frame that is exactly one block takes an all-array
path, :func:`whole`: :func:`gateway.audio.mdf_step.step` predicts and adapts it in one pass and the
outputs stay arrays, :class:`~gateway.audio.mdf.Blocks`; other chunk sizes go piece by piece, a
round of pieces at a time, :func:`~gateway.audio.mdf_step.predict` then
:func:`~gateway.audio.mdf_step.adapt`, to the same output). Works on
:class:`~gateway.audio.aec.EchoCanceller` internals; nothing here is public API.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gateway.audio import mdf, mdf_step
from gateway.audio.mdf import AecOut, Blocks

__all__ = ["BATCH_BINS", "pieces", "whole"]


def whole(stages: Sequence, xs: list[np.ndarray], ats: Sequence[int], idx: list[int]) -> Blocks:
    """Stages whose chunk is exactly their next block: predict, subtract, adapt, per batch.
    Returns their outputs as arrays, in the order of ``idx``."""
    m = len(idx)
    x16 = np.stack([xs[i] for i in idx])
    b = x16.shape[1]
    out = Blocks(list(idx), x16.copy(), np.zeros(x16.shape, np.float32), np.empty(m), np.empty(m, bool),
                 np.zeros(m, bool), np.zeros(m))
    newest = np.empty((m, 2 * b))  # each row's reference [t0 - B, t0 + B) (bulk delay applied)
    groups: dict[int, list] = {}  # id(pool) -> [(row, slot, shift)] of the stages near agent audio
    refp, leak, adapted = out.ref_power, out.leak, out.adapted
    for j, i in enumerate(idx):  # each stage starts its block (what _prepare does, in the same pass)
        st, t0 = stages[i], ats[i]
        st._t0 = t0
        pl = st._pool
        if not st._active(t0):  # passed through: the filter's figures as they were
            st._on = False
            v = pl.V[st._slot]
            leak[j], adapted[j] = v[mdf.LEAK], v[mdf.ADAPTED]
            continue
        refp[j] = st._refp
        st._ref.read_into(newest[j], t0 - st.bulk - b)
        shift = st._xt == t0 - b
        if not shift:  # after a pass-through, a gap or a new span: the whole history from the ring
            pl.set_history(st._slot, _history(st))
        st._xt, st._on = t0, True
        groups.setdefault(id(pl), [pl]).append((j, st._slot, shift))
    for pl, *group in groups.values():
        size = _even(len(group), pl)
        for g in range(0, len(group), size):
            _whole_batch(pl, group[g:g + size], newest, x16, out)
    return out


def _whole_batch(pl: mdf.Pool, batch: list, newest: np.ndarray, x16: np.ndarray, out: Blocks) -> None:
    """One batch of :func:`whole`: ``(row, slot, shift)`` of stages of pool ``pl``, each a whole
    block near agent audio whose reference is ``newest[row]``."""
    rows, slots, shift = (np.array(c) for c in zip(*batch))
    x = x16[rows].astype(np.float64)
    y = mdf_step.step(pl, slots, newest[rows], shift, x)
    x -= y
    np.rint(x, out=x)
    out.residual[rows] = np.minimum(np.maximum(x, -32768), 32767)  # (np.clip, cheaper)
    out.echo[rows] = y
    v = pl.V[slots]  # as the block left them
    out.leak[rows], out.adapted[rows], out.active[rows] = v[:, mdf.LEAK], v[:, mdf.ADAPTED], True


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
        _grouped(done, lambda g: mdf_step.adapt(g[0]._pool, np.array([st._slot for st in g])))
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
#: numpy's per-call overhead (about 190 µs of a batch's kernel call is fixed), but a batch's
#: state and scratch arrays should stay within a core's 2 MB L2 (about 40 kB per stage of the
#: 60 ms filter). Measured before the kernels reused scratch arrays (their temporaries were
#: page-faulted in afresh on every call): at 100 calls of the 60 ms filter (8 kHz: 3 × 161
#: bins), µs per call per frame for 16 / 32 / 64 / 100 stages per call: 69–71 / 57–59 / 51–55 /
#: 120 (loaded box); with the scratch arrays, 400 calls at 64 / 100 / 200 stages per batch
#: (batches of 50 / 100 / 200) measured 53–55 / 52–59 / 57–59 (box loaded to 4–5, 2026-12-02):
#: no clear difference, so the size stays.
BATCH_BINS = 64 * 3 * 161


def _even(n: int, st) -> int:
    """The batch size for ``n`` stages like ``st`` (a stage or its pool): at most :data:`BATCH_BINS` bins (at least 8
    stages), the batches as even as can be (200 stages of 64 at most: 4 of 50, not 64, 64, 64
    and 8, whose fixed cost per numpy call is shared by only 8)."""
    size = max(8, BATCH_BINS // (st.partitions * (st.block + 1)))
    return -(-n // -(-n // size))


def _grouped(stages: list, work) -> None:
    """Calls ``work(group)`` per batch of stages with the same key (:data:`BATCH_BINS`)."""
    groups: dict[tuple, list] = {}
    for st in stages:
        groups.setdefault(st.key, []).append(st)
    for group in groups.values():
        size = _even(len(group), group[0])
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
    shift, slots = [], []
    for row, st in zip(newest, group):
        t0 = st._t0
        st._ref.read_into(row, t0 - st.bulk - b)
        slots.append(st._slot)
        if st._xt == t0 - b:
            shift.append(True)
        else:  # after a pass-through, a gap or a new span: the whole history from the ring
            shift.append(False)
            pl.set_history(st._slot, _history(st))
        st._xt, st._on = t0, True
    return np.array(slots), newest, np.array(shift)


def _start(group: list) -> None:
    """Starts a block in every stage of ``group``: reference spectra and echo estimate."""
    slots, newest, shift = _prepare(group)
    mdf_step.predict(group[0]._pool, slots, newest, shift)
