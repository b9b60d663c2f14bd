"""One frame's boxes -> one batched Extractor call -> a finite unit row per box (shared by every adapter)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..extractor import Extractor
from .boxes import XYXY, sanitize_boxes

# A row the model could not give a direction for (all zero, e.g. a ReLU-dead flat patch, or non-finite)
# is replaced by this direction: the mean of non-negative ReLU features, documented and deterministic.
# Trackers divide by the norm and refuse zero or NaN rows, so such a row would stop their loop.
_NORM_FLOOR = 1e-6


def as_extractor(extractor_or_bundle: Any, **extractor_options: Any) -> Extractor:
    """An Extractor as given, or one opened on a bundle directory (``extractor_options`` go to it)."""
    if isinstance(extractor_or_bundle, Extractor):
        if extractor_options:
            raise ValueError(f"options {sorted(extractor_options)} apply only when a bundle path is given, "
                             "not an Extractor")
        return extractor_or_bundle
    if isinstance(extractor_or_bundle, (str, os.PathLike)):
        return Extractor(extractor_or_bundle, **extractor_options)
    raise TypeError(f"expected an osnet_edge.Extractor or a bundle directory path, got "
                    f"{type(extractor_or_bundle).__name__}")


class FrameEmbedder:
    """Embeds all boxes of one frame in one Extractor call; every box gets a finite unit row.

    ``last_boxes`` (the sanitised int xyxy crops) and ``last_features`` keep what the latest frame
    embedded, and ``fallback_rows`` counts rows replaced by the fallback direction: what a tracker
    received can be checked after the fact.
    """

    def __init__(self, extractor_or_bundle: Any, **extractor_options: Any) -> None:
        self.extractor = as_extractor(extractor_or_bundle, **extractor_options)
        self.dim = self.extractor.dim
        self._fallback = np.full(self.dim, 1 / np.sqrt(self.dim), dtype=np.float32)
        self.fallback_rows = 0
        self.last_boxes = np.zeros((0, 4), dtype=np.int64)
        self.last_features = np.zeros((0, self.dim), dtype=np.float32)

    def embed(self, frame: np.ndarray, boxes: Any, layout: str = XYXY) -> np.ndarray:
        """(N, dim) float32 unit rows for ``boxes`` (``layout``) of an HxWx3 uint8 ``frame``; (0, dim) for none."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            what = (f"array of shape {frame.shape} and dtype {frame.dtype}" if isinstance(frame, np.ndarray)
                    else type(frame).__name__)
            raise TypeError(f"frame: expected an HxWx3 uint8 image (BGR unless the Extractor was opened with "
                            f"color='rgb'), got {what}")
        crops_xyxy = sanitize_boxes(boxes, frame.shape[:2], layout)
        if not len(crops_xyxy):
            features = np.zeros((0, self.dim), dtype=np.float32)
        else:
            features = self.extractor([frame[y1:y2, x1:x2] for x1, y1, x2, y2 in crops_xyxy])
            features = self._guard(features)
        self.last_boxes, self.last_features = crops_xyxy, features
        return features

    def _guard(self, features: np.ndarray) -> np.ndarray:
        """Rows without a direction (zero norm or non-finite) take the fallback direction."""
        finite = np.isfinite(features)
        safe = np.where(finite, features, 0)
        bad = ~finite.all(axis=1) | (np.sqrt(np.einsum("ij,ij->i", safe, safe)) < _NORM_FLOOR)
        if bad.any():
            features[bad] = self._fallback
            self.fallback_rows += int(bad.sum())
        return features

    def close(self) -> None:
        self.extractor.close()
