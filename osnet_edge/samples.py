"""Synthetic person-like crops made by the project itself (no third-party photos).

They exercise the whole pipeline (sizes, aspect ratios, colours) where real data is
absent: a smoke test and latency input, never a measure of accuracy.
"""
from __future__ import annotations

import numpy as np

try:
    import cv2
except ImportError as exc:  # pragma: no cover
    raise ImportError("pip install opencv-python-headless") from exc


def synthetic_crops(n: int, seed: int = 0, min_h: int = 96, max_h: int = 320) -> list[np.ndarray]:
    """``n`` HxWx3 uint8 BGR crops of varied sizes (aspect ~2.5:1) with a figure on a background."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        h = int(rng.integers(min_h, max_h + 1))
        w = max(8, int(h / rng.uniform(2.0, 3.0)))
        bg = rng.integers(40, 200, 3)
        img = np.empty((h, w, 3), np.uint8)
        img[:] = bg
        img = cv2.add(img, rng.integers(0, 25, (h, w, 3), dtype=np.uint8))
        shirt, trousers, skin = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(3))
        cx = w // 2
        cv2.circle(img, (cx, int(0.12 * h)), max(2, int(0.08 * h)), skin, -1)                        # head
        cv2.rectangle(img, (int(cx - 0.3 * w), int(0.2 * h)), (int(cx + 0.3 * w), int(0.55 * h)), shirt, -1)
        cv2.rectangle(img, (int(cx - 0.25 * w), int(0.55 * h)), (int(cx - 0.03 * w), int(0.95 * h)), trousers, -1)
        cv2.rectangle(img, (int(cx + 0.03 * w), int(0.55 * h)), (int(cx + 0.25 * w), int(0.95 * h)), trousers, -1)
        crops.append(img)
    return crops
