"""An osnet_edge bundle as BoxMOT's re-ID model: ``BotSort(reid_model=BoxmotReID("bundle/"))``.

BoxMOT (25.x) calls ``reid_model.get_features(boxes, image)`` once per frame with all detections,
low-confidence ones included: ``boxes`` float32 (N, 4) pixel xyxy, or (N, 5) cx, cy, w, h, angle for
oriented trackers, ``image`` uint8 HxWx3 BGR. It L2-normalises the (N, D) answer and raises on any
non-finite or zero row, which is why every box goes through the shared sanitising rule
(osnet_edge.trackers.boxes). BoxMOT itself is not imported here: the adapter needs only the Extractor.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .boxes import XYWHR, XYXY
from .embedding import FrameEmbedder

# Layout by column count: geometry as BoxMOT 25 passes it, or whole detection rows as older BoxMOT
# and users pass them (x1, y1, x2, y2, conf, cls / cx, cy, w, h, angle, conf, cls).
_LAYOUT_BY_COLUMNS = {4: XYXY, 5: XYWHR, 6: XYXY, 7: XYWHR}


class BoxmotReID(FrameEmbedder):
    """BoxMOT ``reid_model`` backed by an osnet_edge bundle (any runtime, fp32 or INT8).

    ``BoxmotReID(extractor_or_bundle_path, **extractor_options)``; options (runtime, threads, ...)
    go to ``Extractor`` when a path is given.
    """

    def get_features(self, boxes: Any, image: np.ndarray) -> np.ndarray:
        """(N, D) float32 unit rows, one per box, in one batched call; (0, D) when there are no boxes."""
        b = np.asarray(boxes) if boxes is not None else np.zeros((0, 4))
        columns = b.shape[-1] if b.ndim and b.size else 4
        if columns not in _LAYOUT_BY_COLUMNS:
            raise ValueError(f"boxes: expected (N, 4) xyxy or (N, 5) cx, cy, w, h, angle (or detection rows of 6 / "
                             f"7 columns), got shape {b.shape}")
        layout = _LAYOUT_BY_COLUMNS[columns]
        geometry = b[..., :5 if layout == XYWHR else 4]
        return self.embed(image, geometry, layout)


def create_tracker(name: str, reid: Any, **tracker_options: Any) -> Any:
    """A BoxMOT tracker (``botsort``, ``deepocsort``, ``strongsort``, ``boosttrack``, ``hybridsort``...) using ``reid``.

    ``reid`` is a BoxmotReID, an Extractor or a bundle path; None gives motion only (``use_embeddings=False``
    where the tracker has that switch). Imports BoxMOT (the ``trackers`` extra).
    """
    try:
        import boxmot
    except ImportError as exc:
        raise ImportError("BoxMOT is not installed: pip install 'osnet_edge[trackers]'") from exc
    classes = {n.lower(): n for n in boxmot.__all__ if n[0].isupper()}
    if name.lower() not in classes:
        raise ValueError(f"unknown BoxMOT tracker {name!r}; known: {', '.join(sorted(classes))}")
    cls = getattr(boxmot, classes[name.lower()])
    if reid is None:
        return cls(use_embeddings=False, **tracker_options)
    model = reid if isinstance(reid, BoxmotReID) else BoxmotReID(reid)
    return cls(reid_model=model, **tracker_options)
