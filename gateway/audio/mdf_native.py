"""The MDF kernels of :mod:`gateway.audio.mdf_step` in C (``gateway/audio/_mdf.c`` and its
FFT, ``_mdf_fft.h``, built as the extension module ``gateway.audio._mdf`` and called through
:mod:`ctypes`), on a :class:`~gateway.audio.mdf.Pool`'s arrays in place, by slot index: no
gather or scatter. Per batch of ``m`` slots about ten C calls (:func:`step`), each over all rows:
the newest reference spectra, the two filters' sums and their inverse transforms, the errors and
the two-path logic, their spectra, the update, the constraint's transforms, the write-back.

The arithmetic is that of the numpy kernels (Speex ``libspeexdsp/mdf.c``, float build, two-path;
Valin 2007), operation for operation, except for precision:

- the transforms are float32 (:data:`C_FFT`: the C FFT, four rows at a time in the lanes of a
  float32 vector; else numpy's, float32 for the inverse ones): the spectra they produce or invert
  are complex64 already where they are kept (:data:`~gateway.audio.mdf.SPECTRUM`: the filters,
  the reference history), so the echo estimates, the error spectra and the sums carry float32
  rounding (about ``1e-7`` of each one's scale) where numpy's carry float64 rounding of
  complex64 inputs;
- ``Σ_k W_k X_k`` and the filter step are in complex64 (numpy computes the products' sums and
  ``prop conj(X) mu E`` in complex128 before rounding to complex64); ``r / (Rf + 1) / (P + 10)``
  is one division;
- sums (``Sxx``, ``See`` …, the power regressions, the partitions' magnitudes) are float64 in
  four partial sums, where numpy sums pairwise (the magnitudes in float32).

Outputs from the same state agree with numpy's to about ``1e-6`` relative; free running, the
ERLE agrees within 0.1 dB (``tests/audio/test_mdf_native.py``; ``benchmarks/aec_choice.py
--quick``: every figure the same to 0.1 dB). A batch of 50 rows of the 60 ms filter, inputs
ready: about 9–10 µs per row, numpy's 30 (2026-12-02, a loaded 2-core box).

:data:`AVAILABLE` says whether the compiled module loaded (else :mod:`gateway.audio.mdf_step`
keeps its numpy kernels).
"""

from __future__ import annotations

import ctypes
from ctypes import c_int64, c_void_p

import numpy as np

from gateway.audio.mdf import SPECTRUM, Pool

__all__ = ["AVAILABLE", "adapt", "predict", "step"]

try:
    from gateway.audio import _mdf

    _LIB = ctypes.CDLL(_mdf.__file__)
except (ImportError, OSError):  # not built (a source checkout without pip install -e .)
    _LIB = None

#: The compiled kernel loaded.
AVAILABLE = _LIB is not None


class _PoolC(ctypes.Structure):
    """``mdf_pool`` of ``_mdf.c``: the pool's arrays' addresses and its geometry."""

    _fields_ = [(name, c_void_p) for name in ("W", "F", "X", "S", "P", "V", "D", "Y", "YF", "H")] + [
        ("K", c_int64), ("B", c_int64), ("rate", c_int64)]


def _fn(name: str, *args, res=None):
    f = getattr(_LIB, name)
    f.argtypes, f.restype = list(args), res
    return f


if AVAILABLE:
    _P, _I, _A = c_void_p, c_int64, c_void_p  # the pool struct, a count, an array
    _push_estimate = _fn("mdf_push_estimate", _P, _I, _A, _A, _A, _A, _A)
    _store_estimate = _fn("mdf_store_estimate", _P, _I, _A, _A)
    _errors = _fn("mdf_errors", _P, _I, _A, _A, _A, _A, _A, _A)
    _update = _fn("mdf_update", _P, _I, _A, _A, _A, _A)
    _finish = _fn("mdf_finish", _P, _I, _A, _A, _A, res=c_int64)
    _fft_new = _fn("mdf_fft_new", _I, res=c_void_p)
    _rfft = _fn("mdf_rfft", _P, _I, _A, ctypes.c_int, _A, ctypes.c_double)
    _irfft = _fn("mdf_irfft", _P, _I, _A, _A)

#: The transforms by the C kernel's own FFT (``_mdf_fft.h``: four rows at a time in float32
#: vector lanes), not numpy's (False: numpy's; for comparison).
C_FFT = True
_PLANS: dict[int, int] = {}  # B -> the C plan for real transforms of 2 B points (kept for the process)


def _plan(b: int) -> int:
    if b not in _PLANS:
        _PLANS[b] = _fft_new(b)
        if not _PLANS[b]:
            raise MemoryError("mdf_fft_new")
    return _PLANS[b]


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class _Native:
    """A pool's C view (its arrays' addresses, valid until the pool grows) and scratch arrays
    for a batch of up to ``rows`` slots (C order; a batch of ``m`` uses leading rows):

    ``spec`` ``[rows, B + 1]`` complex128, the newest reference spectra; ``Z`` ``[2 rows, B + 1]``
    complex64, both filters' ``Σ_k W_k X_k``; ``R`` ``[2 rows, 2 B]`` float32, their inverse
    transforms (then the constraint's); ``E0`` ``[2 rows, 2 B]`` float64, ``e`` and ``y``
    behind ``B`` zeros (the first halves stay zero); ``Z2`` ``[2 rows, B + 1]`` complex128, their
    spectra; ``sums`` ``[rows, 2]`` (See, Syy); ``C`` ``[2 rows, B + 1]`` complex64, the rows to
    constrain, ``C2`` complex128 the same constrained; ``bad`` ``[rows]`` uint8.
    """

    def __init__(self, p: Pool, rows: int) -> None:
        b, f = p.block, p.block + 1
        for name, dtype in (("W", SPECTRUM), ("F", SPECTRUM), ("X", SPECTRUM), ("S", np.float64),
                            ("P", np.float64), ("V", np.float64), ("D", np.float64), ("Y", np.float64),
                            ("YF", np.float64), ("H", np.int64)):
            a = getattr(p, name)
            if a.dtype != dtype or not a.flags.c_contiguous:
                raise TypeError(f"pool array {name}: {a.dtype}, contiguous {a.flags.c_contiguous}")
        self.pool_w = p.W  # (the pool grew when its W is another array)
        self.c = _PoolC(*(_addr(getattr(p, n)) for n in ("W", "F", "X", "S", "P", "V", "D", "Y", "YF", "H")),
                        p.partitions, b, p.rate)
        self.ptr = ctypes.addressof(self.c)
        self.plan = _plan(b)
        self.rows = rows
        self.spec = np.empty((rows, f), complex)
        self.Z, self.C = np.empty((2 * rows, f), np.complex64), np.empty((2 * rows, f), np.complex64)
        self.R = np.empty((2 * rows, 2 * b), np.float32)
        self.E0 = np.zeros((2 * rows, 2 * b))
        self.Z2, self.C2 = np.empty((2 * rows, f), complex), np.empty((2 * rows, f), complex)
        self.sums = np.empty((rows, 2))
        self.bad = np.zeros(rows, np.uint8)
        self.a = {n: _addr(getattr(self, n)) for n in ("spec", "Z", "C", "R", "E0", "Z2", "C2", "sums", "bad")}


def _native(p: Pool, m: int) -> _Native:
    """The pool's C view and scratch arrays for a batch of ``m`` slots."""
    nat = getattr(p, "_native", None)
    if nat is None or nat.rows < m or nat.pool_w is not p.W:
        rows = m if nat is None else max(m, nat.rows if nat.rows >= m else 2 * nat.rows)
        nat = p._native = _Native(p, rows)
    return nat


def _inputs(slots, shift=None):
    slots = np.ascontiguousarray(slots, np.int64)
    return slots, None if shift is None else np.ascontiguousarray(shift, np.bool_)


def _estimate(p: Pool, nat: _Native, m: int, sa: int, newest: np.ndarray, shift: np.ndarray) -> None:
    """Phase 1 and the inverse transforms: ``nat.R`` holds both filters' estimates (times 2 B)."""
    a = nat.a
    if C_FFT:
        _rfft(nat.plan, m, _addr(newest), 0, a["spec"], 0.5 / p.block)
    else:
        np.fft.rfft(newest, axis=1, out=nat.spec[:m], norm="forward")
    _push_estimate(nat.ptr, m, sa, a["spec"], _addr(shift), _addr(newest), a["Z"])
    if C_FFT:
        _irfft(nat.plan, 2 * m, a["Z"], a["R"])
    else:
        np.fft.irfft(nat.Z[:2 * m], n=2 * p.block, axis=1, out=nat.R[:2 * m])


def _adapt(p: Pool, nat: _Native, slots: np.ndarray, sa: int, r: int | None, d: int | None,
           yf: int | None) -> None:
    """The update of a completed block (``r``, ``d``, ``yf``: the addresses :func:`mdf_errors`
    takes, ``None`` for NULL), the constraint, the write-back; resets slots that went bad."""
    m, b = slots.size, p.block
    a = nat.a
    _errors(nat.ptr, m, sa, r, d, yf, a["E0"], a["sums"])
    if C_FFT:
        _rfft(nat.plan, 2 * m, a["E0"], 0, a["Z2"], 0.5 / b)
    else:
        np.fft.rfft(nat.E0[:2 * m], axis=1, out=nat.Z2[:2 * m], norm="forward")
    _update(nat.ptr, m, sa, a["Z2"], a["sums"], a["C"])
    j = 2 * m if p.partitions > 1 else m
    R = nat.R[:j]
    if C_FFT:
        _irfft(nat.plan, j, a["C"], a["R"])
        R[:, b:] = 0.0
        _rfft(nat.plan, j, a["R"], 1, a["C2"], 1.0)
    else:
        np.fft.irfft(nat.C[:j], n=2 * b, axis=1, out=R)
        R[:, b:] = 0.0
        np.fft.rfft(R, axis=1, out=nat.C2[:j])  # (into complex128: numpy's float32 forward transform is slower)
    if _finish(nat.ptr, m, sa, a["C2"], a["bad"]):
        for slot in slots[nat.bad[:m].astype(bool)]:  # never seen; Speex resets a filter that went bad
            p.clear(int(slot))


def step(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray, d: np.ndarray) -> np.ndarray:
    """:func:`gateway.audio.mdf_step.step` (the same arguments and result)."""
    slots, shift = _inputs(slots, shift)
    m = slots.size
    nat = _native(p, m)
    newest, d = np.ascontiguousarray(newest, np.float64), np.ascontiguousarray(d, np.float64)
    sa = _addr(slots)
    _estimate(p, nat, m, sa, newest, shift)
    yf = np.empty((m, p.block))
    _adapt(p, nat, slots, sa, nat.a["R"], _addr(d), _addr(yf))
    return yf


def predict(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray) -> None:
    """:func:`gateway.audio.mdf_step.predict` (the same arguments)."""
    slots, shift = _inputs(slots, shift)
    m = slots.size
    nat = _native(p, m)
    newest = np.ascontiguousarray(newest, np.float64)
    sa = _addr(slots)
    _estimate(p, nat, m, sa, newest, shift)
    _store_estimate(nat.ptr, m, sa, nat.a["R"])


def adapt(p: Pool, slots: np.ndarray) -> None:
    """:func:`gateway.audio.mdf_step.adapt` (the same arguments)."""
    slots, _ = _inputs(slots)
    nat = _native(p, slots.size)
    _adapt(p, nat, slots, _addr(slots), None, None, None)
