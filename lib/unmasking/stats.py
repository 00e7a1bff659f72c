"""Seeded bootstrap confidence intervals over images: for every headline number, and for paired differences.

The study's numbers are means over test images (a rate is the mean of 0/1 values). ``bootstrap_ci`` resamples the
images with replacement ``n_boot`` times and takes the 2.5th and 97.5th percentiles of the resampled means (the
percentile bootstrap). ``paired_difference`` does the same for the per-image difference of two methods on the same
images: a change is called a gain only when that paired interval lies above zero. Images whose value is NaN (no face
embedding, an empty region) are left out, and for a pair, an image missing on either side.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_BOOT = 1000
LEVEL = 0.95


def bootstrap_ci(values, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
                 ) -> tuple[float | None, float | None]:
    """The ``level`` percentile-bootstrap interval of the mean of ``values`` (NaNs dropped); (None, None) if empty."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return None, None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference(a, b, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """Mean of ``a - b`` over the images both have, its bootstrap interval, and whether it is a gain (interval above
    zero) or a loss (below zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    lo, hi = bootstrap_ci(d, n_boot, seed, level)
    return {"difference": float(d.mean()) if len(d) else None, "ci95": [lo, hi], "n": int(ok.sum()),
            "gain": lo is not None and lo > 0, "loss": hi is not None and hi < 0}
