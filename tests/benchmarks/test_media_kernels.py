"""The batched-kernel rows of ``gateway bench media`` at tiny sizes: they run and are sane.

No timing is asserted (a shared, noisy machine): only that every kernel and call count has a
row with positive figures, and that the table shows them.
"""

from __future__ import annotations

from benchmarks import media_kernels
from benchmarks.media_stages import load_audio


def test_every_kernel_and_call_count_has_a_row():
    rows = media_kernels.measure_kernels((1, 3), pairs=((8000, 16000), (24000, 8000)), seconds=0.06,
                                         rounds=1, audio=load_audio())  # fmt: skip
    kernels = ["decode pcmu", "resample 8->16k", "resample 24->8k"]
    assert [(r["kernel"], r["calls"]) for r in rows] == [(k, n) for k in kernels for n in (1, 3)]
    for r in rows:
        assert r["us_per_call"] > 0 and r["us_batched"] > 0 and r["speedup"] > 0
    table = media_kernels.kernel_table(rows)
    assert table.count("\n| resample 24->8k | 3 |") == 1 and "per call per 20 ms frame" in table
