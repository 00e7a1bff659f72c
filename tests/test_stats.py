"""The bootstrap confidence intervals (lib/unmasking/stats.py) on distributions whose answer is known."""

import numpy as np
import pytest

from unmasking import stats


def test_the_interval_of_a_mean_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for k in range(200):
        x = rng.normal(1.0, 2.0, 300)
        lo, hi = stats.bootstrap_ci(x, n_boot=400, seed=k)
        hits += lo <= 1.0 <= hi
    assert 0.90 <= hits / 200 <= 0.99


def test_the_width_matches_the_normal_approximation():
    x = np.random.default_rng(1).normal(0.0, 2.0, 400)
    lo, hi = stats.bootstrap_ci(x, n_boot=2000, seed=0)
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(len(x)), rel=0.1)


def test_seeded_and_nan_aware():
    x = np.r_[np.random.default_rng(2).random(50), np.nan]
    assert stats.bootstrap_ci(x, seed=5) == stats.bootstrap_ci(x, seed=5)
    assert stats.bootstrap_ci(x, seed=5) == stats.bootstrap_ci(x[:-1], seed=5)
    assert stats.bootstrap_ci(np.array([np.nan]), seed=0) == (None, None)


def test_a_paired_gain_is_called_a_gain_only_when_its_interval_excludes_zero():
    rng = np.random.default_rng(3)
    base = rng.normal(20, 3, 500)  # per-image scores with large spread between images
    better = base + 0.1 + rng.normal(0, 0.2, 500)  # a small, consistent gain on every image
    same = base + rng.normal(0, 0.2, 500)
    g = stats.paired_difference(better, base, seed=0)
    assert g["gain"] and g["ci95"][0] > 0 and g["difference"] == pytest.approx(0.1, abs=0.03)
    assert not stats.paired_difference(same, base, seed=0)["gain"]
    # the unpaired intervals overlap although the paired one excludes zero: pairing is what finds the gain
    assert stats.bootstrap_ci(better, seed=0)[0] < stats.bootstrap_ci(base, seed=0)[1]


def test_paired_difference_drops_images_missing_on_either_side():
    a, b = np.array([1.0, 2.0, np.nan, 4.0]), np.array([0.0, np.nan, 1.0, 3.0])
    assert stats.paired_difference(a, b, seed=0)["n"] == 2
