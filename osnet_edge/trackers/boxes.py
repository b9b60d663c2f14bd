"""Every box a tracker sends becomes a crop: the one sanitising rule both tracker adapters share.

Trackers hand over whatever the detector produced: boxes partly or wholly outside the frame, a few
pixels wide, zero-area or inverted, with NaN/inf coordinates, rotated, or none at all. A tracking loop
must not stop on one of them, so instead of refusing them (as ``Extractor.from_frame`` does for direct
callers) each box is mapped to a crop of the frame by this rule:

1. a box with a NaN or infinite coordinate stands for the whole frame;
2. a rotated box (cx, cy, w, h, angle in radians) becomes its axis-aligned bounding rectangle;
3. corners are put in order (x1 <= x2, y1 <= y2) and clamped into the frame;
4. a crop narrower or lower than ``MIN_CROP_SIDE`` pixels grows about its centre to that size and is
   shifted to lie inside the frame (on frames smaller than that, the whole side is used).

So a box wholly outside the frame embeds the ``MIN_CROP_SIDE``-pixel patch of the frame nearest to it,
and every box, whatever it was, yields a non-empty crop.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..extractor import MIN_CROP_SIDE

# Box layouts the adapters receive (their names are the trackers' own).
XYXY = "xyxy"        # x1, y1, x2, y2 pixels (BoxMOT, axis-aligned)
XYWH = "xywh"        # centre x, centre y, width, height pixels (Ultralytics)
XYWHR = "xywhr"      # centre x, centre y, width, height, angle in radians (BoxMOT OBB, Ultralytics OBB)
LAYOUT_COLUMNS = {XYXY: 4, XYWH: 4, XYWHR: 5}


def as_box_array(boxes: Any, layout: str) -> np.ndarray:
    """Boxes as a float64 (N, columns) array of ``layout``; None or no boxes gives (0, columns)."""
    if layout not in LAYOUT_COLUMNS:
        raise ValueError(f"box layout must be one of {sorted(LAYOUT_COLUMNS)}, got {layout!r}")
    columns = LAYOUT_COLUMNS[layout]
    if boxes is None:
        return np.zeros((0, columns))
    b = np.asarray(boxes)
    if b.dtype.kind not in "iuf" or b.dtype == np.bool_:
        raise TypeError(f"boxes: expected numbers ({layout}), got dtype {b.dtype}")
    if b.size == 0:
        return np.zeros((0, columns))
    if b.ndim == 1 and b.shape[0] == columns:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != columns:
        raise ValueError(f"boxes: expected shape (N, {columns}) {layout}, got {b.shape}")
    return b.astype(np.float64)


def to_xyxy(boxes: np.ndarray, layout: str) -> np.ndarray:
    """(N, columns) boxes of ``layout`` -> (N, 4) float xyxy; non-finite values propagate as NaN."""
    if layout == XYXY:
        return boxes.copy()
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], np.abs(boxes[:, 2]), np.abs(boxes[:, 3])
    if layout == XYWHR:  # half extents of the rotated rectangle's axis-aligned hull
        cos, sin = np.abs(np.cos(boxes[:, 4])), np.abs(np.sin(boxes[:, 4]))
        half_w, half_h = (w * cos + h * sin) / 2, (w * sin + h * cos) / 2
    else:
        half_w, half_h = w / 2, h / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def _fit_span(lo: np.ndarray, hi: np.ndarray, size: int, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer [lo, hi) spans inside [0, size), at least min(min_side, size) long."""
    lo = np.clip(np.floor(lo), 0, size)
    hi = np.clip(np.ceil(hi), 0, size)
    need = min(min_side, size)
    short = (hi - lo) < need
    centre = (lo + hi) / 2
    grown_lo = np.clip(np.floor(centre - need / 2), 0, size - need)
    lo = np.where(short, grown_lo, lo)
    hi = np.where(short, grown_lo + need, hi)
    return lo, hi


def sanitize_boxes(boxes: Any, frame_hw: tuple[int, int], layout: str = XYXY,
                   min_side: int = MIN_CROP_SIDE) -> np.ndarray:
    """Any boxes of ``layout`` -> (N, 4) int64 xyxy crops inside the frame (the module's rule); never raises
    on a box's values, only on a malformed array (wrong shape or non-numeric dtype)."""
    b = as_box_array(boxes, layout)
    h, w = int(frame_hw[0]), int(frame_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"frame: expected a non-empty frame, got height {h} and width {w}")
    if not len(b):
        return np.zeros((0, 4), dtype=np.int64)
    xyxy = to_xyxy(b, layout)
    unknown = ~np.isfinite(xyxy).all(axis=1)
    xyxy[unknown] = (0, 0, w, h)
    x1, x2 = np.minimum(xyxy[:, 0], xyxy[:, 2]), np.maximum(xyxy[:, 0], xyxy[:, 2])
    y1, y2 = np.minimum(xyxy[:, 1], xyxy[:, 3]), np.maximum(xyxy[:, 1], xyxy[:, 3])
    x1, x2 = _fit_span(x1, x2, w, min_side)
    y1, y2 = _fit_span(y1, y2, h, min_side)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)
