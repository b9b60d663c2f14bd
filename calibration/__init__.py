"""Calibration sets: person crops for INT8 calibration, prepared exactly as the Extractor does.

A :class:`CalibrationSet` is a reproducible, stratified sample of crops (many identities and
cameras when file names carry them), read once, resized with the Extractor's own
preprocessing (``osnet_edge.preprocess``) and cached on disk. It also hands out a disjoint
*held-out* sample from the same source (:meth:`CalibrationSet.holdout`) so that INT8
fidelity is never measured on the images the ranges were fitted on.

numpy + opencv only: no torch, so it runs wherever the Extractor runs.
"""
from .crops import DEFAULT_CACHE_DIR, CalibrationSet
from .images import IMAGE_EXTENSIONS, find_images

__all__ = ["CalibrationSet", "DEFAULT_CACHE_DIR", "IMAGE_EXTENSIONS", "find_images"]
