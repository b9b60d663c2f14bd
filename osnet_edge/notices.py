"""Warning categories of osnet_edge, so applications can filter exactly the ones they expect.

>>> import warnings, osnet_edge
>>> warnings.filterwarnings("ignore", category=osnet_edge.RandomWeightsWarning)  # a pipeline test

Torch-free: the device side (bundle loading, Extractor) warns with these too.
"""
from __future__ import annotations

# torchreid model zoo checkpoints that osnet_edge is measured with (README, "Quick start").
ZOO_CHECKPOINTS = ("osnet_x0_25_market1501.pth", "osnet_x0_25_msmt17.pth")


class OsnetEdgeWarning(UserWarning):
    """Base of every osnet_edge warning: ``category=OsnetEdgeWarning`` filters them all."""


class RandomWeightsWarning(OsnetEdgeWarning):
    """A bundle holds randomly initialised weights: its embeddings cannot re-identify anyone."""


class UnadaptedResolutionWarning(OsnetEdgeWarning):
    """Full-resolution weights exported at a reduced resolution without adaptation: accuracy drops."""


class OddInputSizeWarning(OsnetEdgeWarning):
    """A resolution whose input size is not a multiple of the network's stride (16)."""


class Int8SlowerWarning(OsnetEdgeWarning):
    """INT8 ran slower than FP32 at batch 1 on the exporting machine: prefer fp32/fp16 there."""


def random_weights_advice() -> str:
    """What to do instead of exporting random weights (shared by export, load and the CLI)."""
    return ("its embeddings are meaningless for re-identification (any two people score about the same); "
            "export a trained torchreid checkpoint instead, e.g. osnet-edge export --width 0.25 "
            f"--res 0.5 --weights {ZOO_CHECKPOINTS[1]} (torchreid model zoo: {', '.join(ZOO_CHECKPOINTS)})")


__all__ = ["OsnetEdgeWarning", "RandomWeightsWarning", "UnadaptedResolutionWarning", "OddInputSizeWarning",
           "Int8SlowerWarning", "ZOO_CHECKPOINTS", "random_weights_advice"]
