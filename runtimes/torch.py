"""PyTorch reference runtime (host only): the model the bundle was exported from.

Used to check every device runtime against the source of truth. Rebuilds the model from
the bundle's manifest and reloads its weights (checksum verified).
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from .base import RuntimeFailure, missing_package, resolve_threads

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle


class TorchRuntime:
    name = "torch"

    @staticmethod
    def is_available() -> bool:
        return importlib.util.find_spec("torch") is not None

    @staticmethod
    def version() -> str:
        import torch
        return torch.__version__

    def __init__(self, bundle: "Bundle | None" = None, device: str = "cpu", threads: int | None = None,
                 model=None, fused_preprocess: bool | None = None) -> None:
        try:
            import torch
        except ImportError as exc:
            raise missing_package("torch", "export", exc) from None
        threads = resolve_threads(threads)
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads() if device == "cpu" else None
        if model is None:
            if bundle is None:
                raise ValueError("TorchRuntime needs a bundle or a model")
            model = self._model_from_bundle(bundle)
        self.model = model.eval().to(device)
        self.device = device
        self.fused = bundle.fused_preprocess if fused_preprocess is None and bundle is not None else bool(fused_preprocess)
        # LiteRT bundles take normalised NHWC float32: the same input, channels last
        self.channels_last = not self.fused and bundle is not None and bundle.channels_last

    @staticmethod
    def _model_from_bundle(bundle: "Bundle"):
        from osnet_edge.models import build_osnet, load_torchreid_weights

        m = bundle.manifest["model"]
        model = build_osnet(m["width"], m["variant"])
        weights = bundle.manifest.get("weights")
        if weights:  # found from the bundle's portable record (osnet_edge.provenance), sha256 checked
            from osnet_edge.provenance import candidates, checkpoint_dirs, locate

            src = locate(weights, bundle.path, checkpoint_dirs())
            if src is None:
                tried = ", ".join(str(p) for p in candidates(weights, bundle.path, checkpoint_dirs()))
                raise RuntimeFailure(f"torch reference needs the bundle's weights {weights['source']} (sha256 "
                                     f"{weights['sha256'][:12]}...): not found or changed since export (looked at {tried})")
            load_torchreid_weights(model, src)
        elif bundle.manifest.get("random_seed") is not None:  # seeded random weights: rebuilt exactly
            from osnet_edge.models import random_model
            model = random_model(m["width"], m["variant"], int(bundle.manifest["random_seed"]))
        else:
            raise RuntimeFailure("bundle was exported from unseeded random weights; no torch reference exists")
        return model

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.fused:
                from osnet_edge.export.onnx import FusedPreprocess
                x = FusedPreprocess()(x)
            elif self.channels_last:
                x = x.permute(0, 3, 1, 2)
            return self.model(x).float().cpu().numpy()

    def close(self) -> None:
        self.model = None
