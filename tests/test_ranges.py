"""Activation range choice (quantize/ranges.py): MinMax and the MSE-optimal clip."""
from __future__ import annotations

import numpy as np
import pytest

from osnet_edge.quantize.ranges import RangeObserver, fake_quant, mse_range


def _err(v, lo, hi, sym):
    return float(np.mean((fake_quant(v, lo, hi, sym) - v) ** 2))


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_range_clips_heavy_tails_with_less_error(symmetric):
    v = np.abs(np.random.default_rng(0).standard_t(3, 50000)).astype(np.float32)  # post-ReLU, heavy tail
    lo, hi = mse_range(v, 0.0, float(v.max()), symmetric)
    assert lo == 0.0 and 0 < hi < v.max()
    assert _err(v, lo, hi, symmetric) < _err(v, 0.0, float(v.max()), symmetric)


def test_mse_range_keeps_minmax_for_uniform_data():
    v = np.random.default_rng(1).uniform(-1, 1, 50000).astype(np.float32)
    lo, hi = mse_range(v, float(v.min()), float(v.max()), True)
    assert hi == pytest.approx(float(v.max()), rel=0.03)  # nothing to clip: the full range stays


def test_fake_quant_grid():
    v = np.linspace(-1, 1, 1001, dtype=np.float32)
    q = fake_quant(v, -1.0, 1.0, True)
    assert len(np.unique(q)) == 255 and np.abs(q - v).max() <= 0.5 / 127 + 1e-6
    q = fake_quant(np.clip(v, 0, None), 0.0, 1.0, False)
    assert len(np.unique(q)) == 256


def test_observer_tracks_exact_extremes_and_bounded_samples():
    obs = RangeObserver(seed=0)
    rng = np.random.default_rng(2)
    for _ in range(20):
        obs.update(rng.normal(size=100000))
    obs.update(np.array([50.0]))
    assert obs.range("minmax", True)[1] == 50.0
    assert sum(p.size for p in obs._parts) <= 20 * 16384 + 1
    assert obs.range("mse", True)[1] < 50.0
    with pytest.raises(ValueError, match="range method"):
        obs.range("kl", True)
    empty = RangeObserver(keep_samples=False)
    empty.update(np.array([-2.0, 3.0]))
    assert empty.range("mse", False) == (-2.0, 3.0)  # no samples kept: falls back to min/max
