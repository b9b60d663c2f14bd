"""Activation ranges for INT8: MinMax, and the clipping range that minimises quantization error.

MinMax keeps the rare largest activation exact and spends resolution on it; for post-ReLU
tensors under TensorRT's symmetric int8 (127 positive levels) that costs the most. The MSE
range searches the clip value that minimises the mean squared error of quantize-dequantize on
the calibration activations (as TensorRT's own and NNCF's MSE calibrators do). numpy only: the
same function sets the ranges of the QDQ graph and of the distillation's simulated INT8.
"""
from __future__ import annotations

import numpy as np

RANGE_METHODS = ("minmax", "mse")
_FRACTIONS = np.linspace(0.2, 1.0, 41)
SAMPLES_PER_BATCH = 16384    # values kept per tensor and batch for the search (plus exact min/max)
SAMPLES_PER_TENSOR = 131072  # at most this many enter the search


def fake_quant(values: np.ndarray, lo: float, hi: float, symmetric: bool) -> np.ndarray:
    """Quantize-dequantize ``values`` with the range [lo, hi] (int8 symmetric or uint8 asymmetric)."""
    if symmetric:
        scale = max(abs(lo), abs(hi)) / 127.0 or 1e-12
        return np.clip(np.round(values / scale), -127, 127) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1e-12
    zero_point = np.round(-lo / scale)
    return (np.clip(np.round(values / scale) + zero_point, 0, 255) - zero_point) * scale


def mse_range(values: np.ndarray, lo: float, hi: float, symmetric: bool) -> tuple[float, float]:
    """The range [lo', hi'] (a shrunk copy of the observed [lo, hi]) with the least quantization MSE."""
    values = np.asarray(values, np.float32).ravel()
    lo, hi = float(min(lo, 0.0)), float(max(hi, 0.0))
    if values.size == 0 or hi - lo <= 0:
        return lo, hi
    best, best_err = (lo, hi), np.inf
    for f in _FRACTIONS:
        err = float(np.mean((fake_quant(values, lo * f, hi * f, symmetric) - values) ** 2))
        if err < best_err:
            best, best_err = (float(lo * f), float(hi * f)), err
    return best


class RangeObserver:
    """Running min/max and a bounded random sample of one tensor's values across batches."""

    def __init__(self, seed: int = 0, keep_samples: bool = True) -> None:
        self.lo, self.hi = np.inf, -np.inf
        self.keep_samples = keep_samples
        self._parts: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    def update(self, values: np.ndarray) -> None:
        flat = np.asarray(values, np.float32).ravel()
        if flat.size == 0:
            return
        self.lo, self.hi = min(self.lo, float(flat.min())), max(self.hi, float(flat.max()))
        if not self.keep_samples:
            return
        if flat.size > SAMPLES_PER_BATCH:
            flat = flat[self._rng.integers(0, flat.size, SAMPLES_PER_BATCH)]
        self._parts.append(flat)

    def range(self, method: str, symmetric: bool) -> tuple[float, float]:
        if method not in RANGE_METHODS:
            raise ValueError(f"range method must be one of {RANGE_METHODS}, got {method!r}")
        if method == "minmax" or not self._parts:
            return self.lo, self.hi
        values = np.concatenate(self._parts)
        if values.size > SAMPLES_PER_TENSOR:
            values = values[self._rng.choice(values.size, SAMPLES_PER_TENSOR, replace=False)]
        return mse_range(values, self.lo, self.hi, symmetric)
