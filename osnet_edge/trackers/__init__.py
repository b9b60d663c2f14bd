"""osnet_edge as the re-ID model inside multi-object trackers (BoxMOT, Ultralytics).

``BoxmotReID(bundle_or_extractor)`` is BoxMOT's ``reid_model=``; ``use_with_ultralytics(yolo, bundle)`` makes
``YOLO.track`` use our embeddings. Both embed all boxes of a frame in one batched Extractor call and give
every box a finite unit row (the rule is in :mod:`osnet_edge.trackers.boxes`). Neither BoxMOT nor
Ultralytics is imported until used, and nothing here imports torch (the ``trackers`` extra installs them).
"""
from .boxes import sanitize_boxes
from .boxmot_reid import BoxmotReID, create_tracker
from .embedding import FrameEmbedder
from .ultralytics_reid import UltralyticsEncoder, use_with_ultralytics

__all__ = ["BoxmotReID", "FrameEmbedder", "UltralyticsEncoder", "create_tracker", "sanitize_boxes",
           "use_with_ultralytics"]
