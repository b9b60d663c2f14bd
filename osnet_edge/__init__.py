"""osnet_edge: OSNet person re-identification on cameras.

The device side (``Extractor``, ``osnet_edge.runtimes``, bundle loading, preprocessing)
imports with numpy + a runtime only; host-side tools (models, export, quantize) need torch
and are imported lazily so that ``import osnet_edge`` never pulls torch in.
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# Source checkout without installation: quantize/, runtimes/ and calibration/ sit next to
# this package and install as its subpackages (setup.cfg package_dir). Make them
# importable the same way when running from the repository itself.
_repo = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_repo, "setup.cfg")) and _os.path.isdir(_os.path.join(_repo, "runtimes")):
    __path__.append(_repo)  # type: ignore[name-defined]  # noqa: F821

# Warning categories: imported eagerly (no dependencies) so ``category=osnet_edge.RandomWeightsWarning``
# works in a filter before anything else is loaded.
from .notices import (OddInputSizeWarning, OsnetEdgeWarning, RandomWeightsWarning,  # noqa: E402
                      UnadaptedResolutionWarning)

_LAZY = {
    "Extractor": ("osnet_edge.extractor", "Extractor"),
    "load_bundle": ("osnet_edge.bundle", "load_bundle"),
    "Bundle": ("osnet_edge.bundle", "Bundle"),
    "build_osnet": ("osnet_edge.models", "build_osnet"),
    "create_model": ("osnet_edge.models", "create_model"),
    "list_models": ("osnet_edge.models", "list_models"),
    "load_torchreid_weights": ("osnet_edge.models", "load_torchreid_weights"),
    "export_bundle": ("osnet_edge.export", "export_bundle"),
    "evaluate_rank": ("osnet_edge.metrics", "evaluate_rank"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'osnet_edge' has no attribute {name!r}")


__all__ = ["__version__", "OsnetEdgeWarning", "RandomWeightsWarning", "UnadaptedResolutionWarning",
           "OddInputSizeWarning", *_LAZY]
