"""Batched codec kernels for the per-tick media engine: many calls' audio in one numpy pass.

Per call, numpy's fixed cost per operation dominates on 20 ms arrays (160 samples at 8 kHz),
so the engine hands every call's pending audio of a tick to these functions at once:

* :func:`decode_many`: G.711 μ-law / A-law or L16 for many payloads: the bytes are joined once,
  read with one ``np.frombuffer`` and, for G.711, decoded with one lookup in the tables of
  :mod:`gateway.codecs.g711`; each payload's samples are a view of that one array.
* :func:`resample_many`: the next chunk of many :class:`~gateway.codecs.resample.Resampler`
  streams. Streams whose filter design, chunk length, dtype and phase match form a group,
  computed by one matrix product per slab (below); each stream keeps its own state, which
  advances exactly as :meth:`Resampler.process <gateway.codecs.resample.Resampler.process>`
  advances it.

The batched product. A group's work buffers (each stream's ``taps - 1`` samples of history
followed by its chunk, float64) are stacked into ``[N, width]``. Output ``m`` of every stream is
``bank[t % up] @ buf[t // up : t // up + taps]`` at ``t = phase + m * down``, and the pattern
repeats every ``up`` outputs and ``down`` inputs. So ``Q = k * up`` consecutive outputs (a
block) read one window of ``win = (r0 + (Q - 1) * down) // up + taps`` inputs that starts
``k * down`` inputs after the previous block's (``r0 = phase % up``), and are that window times
one block-Toeplitz matrix ``T [win, Q]`` built from the bank (column ``r`` holds phase
``(r0 + r * down) % up``'s coefficients at row offset ``(r0 + r * down) // up``, zeros
elsewhere). Every block of every stream is one row of ``windows [N * blocks, win]`` (one
strided copy of the stacked buffers), and the group's outputs are ``windows @ T``: one GEMM
in exact arithmetic, run over slabs of streams (20 streams at 8→16 kHz, 13 at 8→24 and
24→8 kHz) so that each product stays in a core's L2 cache and below OpenBLAS's threshold for
waking its threads: one product over 400 streams costs up to twice the CPU on one thread, and
3-4 times (its threads spinning on a shared core) when OPENBLAS_NUM_THREADS is not 1.
``k = round(taps / (2 * down))`` trades the zeros multiplied (``win / taps`` ≈ 1.5 times the
per-stream products) against the rows copied (``win / (k * down)`` ≈ 3 per input sample).

Exactness. The bank's coefficients are multiples of 2**-32, so for int16 input every product
and partial sum is exact in float64 (see :mod:`gateway.codecs.resample`): the batched sums,
in BLAS's order and with the Toeplitz zeros, equal the per-stream ones bit for bit, and so do
the rounded int16 outputs. Float input goes through the same arithmetic, but its products
are rounded, so the batched order of the float64 sums changes their last bits: float64 output
agrees with :meth:`Resampler.process` within float64 rounding (measured at most 7e-16 on
full-scale random input), float32 output is identical in practice (its rounding to float32
absorbs that; no sample differed in 960,000 tested). The history written back is the input
itself, so the state after a batched call is the state :meth:`Resampler.process` leaves, for
every dtype.

Not batched (each stream goes through :meth:`Resampler.process`): a stream alone in its group,
equal rates, an empty chunk, a chunk completing no output, and rate pairs whose upsampling
factor exceeds 8 (the 22.05 kHz family: their phase pattern is too long for a cached matrix).

Sources: A. V. Oppenheim & R. W. Schafer, *Discrete-Time Signal Processing*, §4.7 (polyphase
sample-rate conversion); the block (Toeplitz) form of FIR filtering, e.g. R. E. Blahut, *Fast
Algorithms for Digital Signal Processing* (1985), ch. 5; ITU-T G.711; RFC 3551 §4.5.11 (L16).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import accumulate
from typing import Sequence

import numpy as np

from gateway.codecs.g711 import ALAW_DECODE_TABLE, ULAW_DECODE_TABLE
from gateway.codecs.resample import Resampler, _to_dtype
from gateway.codecs.transcode import _DECODERS, _encoding
from gateway.formats import Encoding

__all__ = ["decode_many", "resample_many", "MAX_BATCHED_UP"]

#: Largest upsampling factor (``out_rate / gcd``) a group is batched for; beyond it, per stream.
MAX_BATCHED_UP = 8

#: float64 values one slab's product may touch (history + chunk, windows, outputs): 1 MB,
#: about a core's L2 cache. One product over 400 streams spills it and costs up to twice as much.
_SLAB_DOUBLES = 1 << 17
#: Largest ``m * n * k`` of one GEMM: OpenBLAS runs a GEMM on one thread below
#: ``2 * 65536 * 4`` (``interface/gemm.c``: SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD per
#: thread). Above it, unless OPENBLAS_NUM_THREADS=1, it wakes its threads, which on a shared
#: core spin: measured 4.9-17 instead of 3.1-4.9 CPU µs per call at 400 calls.
_BLAS_SINGLE_THREAD = 2 * 65536 * 4 - 1

_TABLES = {Encoding.PCMU: ULAW_DECODE_TABLE, Encoding.PCMA: ALAW_DECODE_TABLE}
_LE_INT16 = np.dtype("<i2")


def decode_many(payloads: Sequence[bytes], encoding: Encoding | str) -> list[np.ndarray]:
    """Decodes many payloads of one encoding in one pass.

    Args:
        payloads: Encoded audio, one item per call or frame (``bytes``, ``bytearray`` or
            ``memoryview``; lengths in bytes may differ, 0 included).
        encoding: :class:`~gateway.formats.Encoding` or its value (``"pcmu"``, ``"pcma"``,
            ``"l16"``).

    Returns:
        One int16 array per payload, in order, each equal to
        :func:`gateway.codecs.transcode.decode` of that payload: ``[len(p)]`` for G.711,
        ``[len(p) // 2]`` for L16. They are views of one new writable array (disjoint).

    Raises:
        ValueError: Unknown encoding, or an L16 payload of odd length (nothing is decoded;
            among several payloads, its index is named).
    """
    enc = _encoding(encoding)
    if len(payloads) < 2:  # nothing to join
        return [_DECODERS[enc](p) for p in payloads]
    sizes = [len(p) if type(p) is bytes else memoryview(p).nbytes for p in payloads]
    joined = b"".join(payloads)
    if enc is Encoding.L16:
        if any(s & 1 for s in sizes):
            i = next(i for i, s in enumerate(sizes) if s & 1)
            raise ValueError(
                f"L16 payload {i} must hold a whole number of 2-byte samples, got {sizes[i]}"
                " bytes (odd)"
            )
        pcm = np.frombuffer(joined, dtype=_LE_INT16).astype(np.int16)
        ends = [e >> 1 for e in accumulate(sizes)]
    else:
        pcm = _TABLES[enc][np.frombuffer(joined, dtype=np.uint8)]
        ends = list(accumulate(sizes))
    return [pcm[a:b] for a, b in zip([0, *ends], ends)]


def resample_many(resamplers: Sequence[Resampler], xs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Resamples the next chunk of many streams, one block-Toeplitz product per matching group.

    Equivalent to ``[r.process(x) for r, x in zip(resamplers, xs)]``: same outputs (bit for
    bit for int16; float: see the module docstring), same state afterwards. Streams with
    the same filter design (one rate pair and filter settings: designs are cached, so
    resamplers built alike share one), chunk length, dtype and phase are computed together.

    Args:
        resamplers: The streams, each at most once, any mix of rate pairs.
        xs: Per stream its next chunk, ``[n_i]`` int16, float32 or float64 (the stream's
            dtype), any lengths.

    Returns:
        Per stream, in order, what :meth:`Resampler.process` would return: its dtype, about
        ``n_i * out_rate / in_rate`` samples. A batched group's outputs are rows of one new
        array (disjoint views).

    Raises:
        ValueError: ``resamplers`` and ``xs`` differ in length, a resampler appears twice, or a
            chunk is not 1-D.
        TypeError: A chunk's dtype is unsupported or not its stream's.

        Every check runs before any stream's state changes: on an error, no stream advanced.
    """
    if len(resamplers) != len(xs):
        raise ValueError(f"{len(resamplers)} resamplers but {len(xs)} chunks")
    if len(resamplers) < 2:  # nothing to batch
        return [r.process(x) for r, x in zip(resamplers, xs)]
    if len({id(r) for r in resamplers}) != len(resamplers):
        raise ValueError("a resampler appears twice: give each stream one chunk per call")
    checked = [r._checked(x) for r, x in zip(resamplers, xs)]
    keys = [_group_key(r, x) for r, x in zip(resamplers, checked)]
    if keys[0] is not None and keys.count(keys[0]) == len(keys):  # one group (steady state)
        return _process_group(list(resamplers), checked)
    groups: dict[tuple | None, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out: list[np.ndarray] = [None] * len(checked)  # type: ignore[list-item]
    for key, idx in groups.items():
        if key is None or len(idx) < 2:
            for i in idx:
                out[i] = resamplers[i].process(checked[i])
            continue
        ys = _process_group([resamplers[i] for i in idx], [checked[i] for i in idx])
        for i, y in zip(idx, ys):
            out[i] = y
    return out


def _group_key(r: Resampler, x: np.ndarray) -> tuple | None:
    """What streams batched together share, or ``None`` for a stream that runs alone."""
    d = r._design
    n = x.shape[0]
    if d is None or n == 0 or d.up > MAX_BATCHED_UP:
        return None
    return id(d), x.dtype, n, r._phase


def _process_group(rs: list[Resampler], xs: list[np.ndarray]) -> list[np.ndarray]:
    """One group's chunks (same design, length, dtype, phase) by block-Toeplitz GEMMs; commits
    each stream's new state."""
    first = rs[0]
    d, n = first._design, xs[0].shape[0]
    count = first._count(n)
    if count == 0:  # nothing to compute: only the history moves
        return [r.process(x) for r, x in zip(rs, xs)]
    assert d is not None
    i0, r0 = divmod(first._phase, d.up)
    matrix, step = _block_toeplitz(d.up, d.down, d.taps, r0, d.bank.tobytes())
    win, q = matrix.shape
    blocks = -(-count // q)
    width = max(first._keep + n, i0 + (blocks - 1) * step + win)
    plan = _Plan(n, count, i0, step, blocks, width, matrix)
    work = _stacked(rs, xs, plan)
    ys = _to_dtype(_products(work, plan), xs[0].dtype)[:, :count]  # converted contiguous: fastest
    keep, dtype = first._keep, xs[0].dtype
    for r, history in zip(rs, work[:, n : n + keep]):
        r._commit(history, n, count, dtype)
    return list(ys)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The shape of one group's product: ``n`` inputs and ``count`` outputs per stream, first
    window at ``i0``, ``blocks`` windows ``step`` inputs apart, work rows of ``width``."""

    n: int
    count: int
    i0: int
    step: int
    blocks: int
    width: int
    matrix: np.ndarray


def _stacked(rs: list[Resampler], xs: list[np.ndarray], plan: _Plan) -> np.ndarray:
    """float64 ``[N, width]``: each stream's history, then its chunk, then zeros."""
    n, keep, rows = plan.n, rs[0]._keep, len(rs)
    work = np.empty((rows, plan.width))
    work[:, :keep] = np.concatenate([r._history for r in rs]).reshape(rows, keep)
    work[:, keep : keep + n] = np.concatenate(xs).reshape(rows, n)
    work[:, keep + n :] = 0.0  # only read by outputs past ``count``, which are dropped
    return work


def _products(work: np.ndarray, plan: _Plan) -> np.ndarray:
    """float64 ``[N, blocks * q]``: every block of every stream times the matrix, in slabs of
    streams (see ``_SLAB_DOUBLES`` and ``_BLAS_SINGLE_THREAD``)."""
    rows, width, item = work.shape[0], plan.width, work.itemsize
    win, q = plan.matrix.shape
    per_stream = plan.blocks * win * q
    slab = max(1, min(_SLAB_DOUBLES // (width + plan.blocks * (win + q)),
                      _BLAS_SINGLE_THREAD // per_stream))  # fmt: skip
    y = np.empty((rows, plan.blocks * q))
    strides = (width * item, plan.step * item, item)
    for s in range(0, rows, slab):
        e = min(rows, s + slab)
        windows = np.ndarray((e - s, plan.blocks, win), work.dtype, work, (s * width + plan.i0) * item,
                             strides)  # fmt: skip
        np.dot(windows.reshape(-1, win), plan.matrix, out=y[s:e].reshape(-1, q))
    return y


@functools.lru_cache(maxsize=128)
def _block_toeplitz(up: int, down: int, taps: int, r0: int, bank: bytes) -> tuple[np.ndarray, int]:
    """The block-Toeplitz matrix ``T [win, k * up]`` of a bank for block phase ``r0``, and the
    block's step in input samples ``k * down`` (see the module docstring). Read-only, cached
    (the key holds the bank's bytes, so equal banks share one matrix)."""
    coef = np.frombuffer(bank, dtype=np.float64).reshape(up, taps)
    k = max(1, round(taps / (2 * down)))
    r = np.arange(k * up)
    offsets, phases = np.divmod(r0 + r * down, up)
    matrix = np.zeros((int(offsets[-1]) + taps, k * up))
    matrix[offsets[:, None] + np.arange(taps), r[:, None]] = coef[phases]
    matrix.setflags(write=False)
    return matrix, k * down
