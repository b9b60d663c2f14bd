"""An osnet_edge bundle as the re-ID model of Ultralytics' trackers: ``use_with_ultralytics(YOLO(...), "bundle/")``.

Ultralytics (8.4) trackers with appearance (BoT-SORT, Deep OC-SORT) call ``tracker.encoder(img, bboxes)``
with the BGR frame and ``bboxes`` (N, 5) cx, cy, w, h, index in pixels, or (N, 6) with an angle before the
index for OBB models, and expect one (D,) array per box. The encoder is built from the tracker YAML when
the tracker is created, so ``use_with_ultralytics`` leaves the YAML's ``with_reid: False`` (no model of
Ultralytics' own is loaded) and, on ``on_predict_batch_start`` (after the trackers exist), sets each
tracker's ``encoder`` to ours, ``args.with_reid = True`` and ``args.model`` to a name other than
``"auto"`` (with ``"auto"`` the tracker would hand over detector features instead of the frame).
Ultralytics is imported only inside ``use_with_ultralytics``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .boxes import XYWH, XYWHR
from .embedding import FrameEmbedder

ENCODER_NAME = "osnet_edge"  # what tracker.args.model says while our encoder is attached
REID_TRACKER_TYPES = ("botsort", "deepocsort")  # Ultralytics trackers calling encoder(img, bboxes)
_ABSENT = object()


class UltralyticsEncoder(FrameEmbedder):
    """``tracker.encoder`` for Ultralytics: ``encoder(img, bboxes) -> list of (D,) float32 unit arrays``."""

    def __call__(self, img: np.ndarray, bboxes: Any) -> list[np.ndarray]:
        b = np.asarray(bboxes) if bboxes is not None else np.zeros((0, 5))
        columns = b.shape[-1] if b.ndim and b.size else 5
        if columns not in (5, 6):
            raise ValueError(f"bboxes: expected Ultralytics' (N, 5) cx, cy, w, h, index or (N, 6) cx, cy, w, h, "
                             f"angle, index, got shape {b.shape}")
        layout = XYWHR if columns == 6 else XYWH
        features = self.embed(img, b[..., :columns - 1], layout)
        return list(features)


def _tracker_type(tracker: str) -> str:
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    cfg = YAML.load(check_yaml(tracker))
    kind = cfg.get("tracker_type")
    if kind not in REID_TRACKER_TYPES:
        raise ValueError(f"tracker {tracker!r} is {kind!r}, which uses no re-ID model; use one of "
                         f"{', '.join(t + '.yaml' for t in REID_TRACKER_TYPES)}")
    if cfg.get("with_reid"):
        raise ValueError(f"tracker {tracker!r} has with_reid: True, which makes Ultralytics build its own re-ID "
                         "model; set with_reid: False (the default): osnet_edge supplies the re-ID model")
    return kind


def _attach(encoder: UltralyticsEncoder):
    """The on_predict_batch_start callback: puts ``encoder`` into every tracker of a tracking predictor."""

    def attach_osnet_edge_encoder(predictor: Any) -> None:
        if getattr(predictor.args, "mode", None) != "track":
            return
        for tracker in getattr(predictor, "trackers", ()):
            current = getattr(tracker, "encoder", _ABSENT)
            if current is encoder:
                continue
            if current is _ABSENT:
                raise ValueError(f"{type(tracker).__name__} uses no re-ID model; track with tracker= one of "
                                 f"{', '.join(t + '.yaml' for t in REID_TRACKER_TYPES)}")
            if current is not None and not isinstance(current, UltralyticsEncoder):
                raise ValueError("the tracker YAML has with_reid: True, so Ultralytics built its own re-ID model; "
                                 "set with_reid: False: osnet_edge supplies the re-ID model")
            tracker.encoder = encoder
            tracker.args.with_reid = True
            tracker.args.model = ENCODER_NAME

    return attach_osnet_edge_encoder


def use_with_ultralytics(model: Any, extractor_or_bundle: Any, tracker: str = "botsort.yaml",
                         **extractor_options: Any) -> UltralyticsEncoder:
    """Make ``model.track(...)`` (an Ultralytics YOLO model) use osnet_edge embeddings; returns the encoder.

    ``tracker`` becomes the model's default tracker YAML (``model.track(tracker=...)`` still overrides it);
    it must be BoT-SORT or Deep OC-SORT with ``with_reid: False``. Calling it again replaces the encoder.
    """
    if not hasattr(model, "add_callback") or not hasattr(model, "callbacks"):
        raise TypeError(f"expected an Ultralytics model (e.g. ultralytics.YOLO), got {type(model).__name__}")
    _tracker_type(tracker)
    encoder = UltralyticsEncoder(extractor_or_bundle, **extractor_options)
    callbacks = model.callbacks["on_predict_batch_start"]
    callbacks[:] = [cb for cb in callbacks if getattr(cb, "__name__", "") != "attach_osnet_edge_encoder"]
    model.add_callback("on_predict_batch_start", _attach(encoder))
    model.overrides["tracker"] = tracker
    return encoder
