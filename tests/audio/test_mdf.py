"""The MDF pool's reference spectra history: a ring (one entry written per block) read newest first."""

import numpy as np

from gateway.audio import mdf, mdf_step


def test_history_ring_reads_newest_first():
    p = mdf.Pool(8000, 160, 3)
    slot = p.take()
    rng = np.random.default_rng(0)
    spectra = (rng.standard_normal((3, 161)) + 1j * rng.standard_normal((3, 161))).astype(mdf.SPECTRUM)
    p.set_history(slot, spectra)
    assert np.array_equal(p.history(slot), spectra)
    newest = (rng.standard_normal((1, 161)) + 1j).astype(mdf.SPECTRUM)
    mdf_step._push(p, np.array([slot]), newest, np.array([True]))
    assert np.array_equal(p.history(slot), np.concatenate((newest, spectra[:2])))
    ws = mdf_step._work(p, 1)
    _, _, X = mdf_step._gather(p, ws, np.array([slot]))
    assert np.array_equal(X[0], p.history(slot))
    p.clear(slot)
    assert not p.history(slot).any() and p.H[slot] == 0
