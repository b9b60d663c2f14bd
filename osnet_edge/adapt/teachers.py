"""Teachers for adaptation: anything that embeds person crops better than the student.

Every teacher takes a (N, H, W, 3) uint8 BGR batch already rendered at its own
``input_size`` and returns (N, dim) float32 L2-normalised embeddings:

* a torchreid / osnet_edge checkpoint (.pth, .pt, .tar): OSNet of the checkpoint's width
  and variant at ``res`` (default 1.0 = 256x128), run by OpenVINO when installed (several
  times faster than eager torch on CPU; converted in memory, no files), else torch;
* an osnet_edge bundle directory: the Extractor on the bundle's runtime;
* a foreign .onnx / OpenVINO .xml embedding model (e.g. Open Model Zoo
  person-reidentification-retail-0287: 256-d, BGR 0-255 input): :class:`ForeignModel`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol

import numpy as np

from ..extractor import l2_normalize
from ..preprocess import Normalizer

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar")


class Teacher(Protocol):
    name: str
    input_size: tuple[int, int]
    dim: int

    def __call__(self, views: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict: ...


def _sha256_files(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def osnet_config_of(state: Mapping[str, Any]) -> tuple[float, str]:
    """(width, variant) of an OSNet state_dict, read off its keys and the stem's channels."""
    if "conv1.conv.weight" not in state:
        raise ValueError("not an OSNet state_dict: no conv1.conv.weight")
    width = int(state["conv1.conv.weight"].shape[0]) / 64.0
    if any(k.startswith("pool2.") for k in state):
        variant = "ain"
    elif "conv1.bn.running_mean" not in state:  # OSNet-IBN: affine InstanceNorm in conv1, no running stats
        variant = "ibn"
    else:
        variant = "osnet"
    return width, variant


def _EmbeddingAndMaps(model):
    """OSNet -> (embedding, conv5 feature maps): one pass for the ``fmap`` distillation loss."""
    from torch import nn

    class EmbeddingAndMaps(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            f = self.net.featuremaps(x)
            return self.net.fc(self.net.global_avgpool(f).flatten(1)), f

    return EmbeddingAndMaps(model).eval()


class CheckpointTeacher:
    """OSNet from a checkpoint at resolution ``res``; OpenVINO (in memory) or torch inference."""

    def __init__(self, path: str | os.PathLike, res: float = 1.0, backend: str = "auto",
                 batch_size: int = 64, threads: Optional[int] = None, allow_unsafe_pickle: bool = False,
                 device: str = "cpu") -> None:
        import torch

        from ..models import build_osnet, input_size, load_torchreid_weights, read_checkpoint

        if backend not in ("auto", "openvino", "torch"):
            raise ValueError(f"backend must be 'auto', 'openvino' or 'torch', got {backend!r}")
        self.path = Path(path)
        state = read_checkpoint(self.path, allow_unsafe_pickle=allow_unsafe_pickle)
        width, variant = osnet_config_of(state)
        # the checkpoint's own classifier (torchreid keeps it): its logits are the ``logit`` loss's targets
        weight, bias = state.get("classifier.weight"), state.get("classifier.bias")
        self.classifier = None if weight is None else (
            weight.detach().float().numpy(), (bias if bias is not None else weight.new_zeros(len(weight))).float().numpy())
        self.device = str(device)
        self.model = build_osnet(width, variant)
        info = load_torchreid_weights(self.model, self.path, allow_unsafe_pickle=allow_unsafe_pickle)
        self.model.eval()
        self.width, self.variant, self.res = width, variant, float(res)
        self.sha256 = info["sha256"]
        self.input_size = input_size(res)
        self.dim = int(self.model.feature_dim)
        self.name = f"{self.path.name}@{self.input_size[0]}x{self.input_size[1]}"
        self.batch_size = batch_size
        self._normalize = Normalizer()
        self._compiled = None
        if backend == "auto" and self.device != "cpu":
            backend = "torch"  # on a GPU: torch on the device
        if backend in ("auto", "openvino"):
            try:
                import openvino as ov
            except ImportError:
                if backend == "openvino":
                    raise ImportError("the openvino teacher backend needs: pip install openvino") from None
            else:
                example = torch.zeros(1, 3, *self.input_size)
                ov_model = ov.convert_model(_EmbeddingAndMaps(self.model), example_input=example,
                                            input=[(-1, 3, *self.input_size)])
                config: dict = {"INFERENCE_PRECISION_HINT": "f32"}
                if threads:
                    config["INFERENCE_NUM_THREADS"] = int(threads)
                self._compiled = ov.Core().compile_model(ov_model, "CPU", config)
        self.backend = "openvino" if self._compiled is not None else "torch"
        if self._compiled is None:
            self.model = self.model.to(self.device, memory_format=torch.channels_last)

    @property
    def num_classes(self) -> int:
        """Rows of the checkpoint's classifier (0 without one)."""
        return 0 if self.classifier is None else int(self.classifier[0].shape[0])

    @property
    def map_channels(self) -> int:
        """Channels of the final feature map (conv5): what the ``fmap`` loss compares."""
        return int(self.model.channels[3])

    def __call__(self, views: np.ndarray) -> np.ndarray:
        return self.embed_with_maps(views, None)[0]

    def embed_with_maps(self, views: np.ndarray, map_hw: Optional[tuple[int, int]]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Embeddings (L2-normalised) and, when ``map_hw`` is given, the conv5 feature maps
        average-pooled to ``map_hw`` (the student's map size), float16 to keep the cache small."""
        emb, _, maps = self.outputs(views, map_hw, logits=False)
        return emb, maps

    def outputs(self, views: np.ndarray, map_hw: Optional[tuple[int, int]] = None,
                logits: bool = False) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """(L2-normalised embeddings, the classifier's logits on the raw embeddings or None,
        conv5 maps pooled to ``map_hw`` or None): everything a distillation target needs, one pass."""
        import torch
        import torch.nn.functional as F

        if logits and self.classifier is None:
            raise ValueError(f"teacher {self.path.name} has no classifier: the logit loss needs one")
        out = np.empty((len(views), self.dim), dtype=np.float32)
        maps = None if map_hw is None else np.empty((len(views), self.map_channels, *map_hw), dtype=np.float16)
        for s in range(0, len(views), self.batch_size):
            x = self._normalize(views[s:s + self.batch_size])
            if self._compiled is not None:
                result = self._compiled(x)
                emb, fmap = result[0], result[1]
            else:
                with torch.no_grad():
                    t = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
                    e, f = _EmbeddingAndMaps(self.model)(t)
                    emb, fmap = e.cpu().numpy(), f
            out[s:s + len(x)] = emb
            if maps is not None:
                f = torch.as_tensor(np.asarray(fmap)) if not isinstance(fmap, torch.Tensor) else fmap
                maps[s:s + len(x)] = F.adaptive_avg_pool2d(f.float(), map_hw).cpu().numpy().astype(np.float16)
        scores = None
        if logits:
            weight, bias = self.classifier
            scores = (out @ weight.T + bias).astype(np.float32)
        return l2_normalize(out), scores, maps

    def describe(self) -> dict:
        return {"kind": "checkpoint", "source": str(self.path.resolve()), "sha256": self.sha256,
                "width": self.width, "variant": self.variant, "res": self.res,
                "input_size": list(self.input_size), "dim": self.dim, "backend": self.backend,
                "classes": self.num_classes}


class BundleTeacher:
    """An osnet_edge bundle (any precision/runtime) through the torch-free Extractor."""

    def __init__(self, path: str | os.PathLike, runtime: Optional[str] = None, threads: Optional[int] = None) -> None:
        from ..extractor import Extractor

        self.path = Path(path)
        self.extractor = Extractor(self.path, runtime=runtime, threads=threads)
        self.input_size = tuple(self.extractor.input_size)
        self.dim = int(self.extractor.dim)
        self.name = f"bundle:{self.path.name}"
        self.sha256 = _sha256_files(self.path / "manifest.json")

    def __call__(self, views: np.ndarray) -> np.ndarray:
        return self.extractor(views)

    def describe(self) -> dict:
        m = self.extractor.manifest.get("model", {})
        return {"kind": "bundle", "source": str(self.path.resolve()), "sha256": self.sha256,
                "width": m.get("width"), "variant": m.get("variant"), "res": m.get("res"),
                "precision": self.extractor.precision, "runtime": self.extractor.runtime,
                "input_size": list(self.input_size), "dim": self.dim}


class ForeignTeacher:
    """A foreign ONNX / OpenVINO IR embedding model (e.g. Open Model Zoo re-ID, 256-d)."""

    def __init__(self, path: str | os.PathLike, input_format: Optional[str] = None,
                 threads: Optional[int] = None) -> None:
        from ..foreign import ForeignModel

        self.path = Path(path)
        if input_format is None:
            # OMZ IRs take BGR 0-255 (mean/scale inside); OSNet ONNX exports take RGB ImageNet-normalised
            input_format = "bgr255" if self.path.suffix == ".xml" else "rgb_imagenet"
        self.model = ForeignModel(self.path, input_format=input_format, threads=threads)
        self.input_format = input_format
        self.input_size = tuple(self.model.input_size)
        self.dim = int(self.model.dim)
        self.name = self.path.stem
        files = [self.path] + ([self.path.with_suffix(".bin")] if self.path.suffix == ".xml"
                               and self.path.with_suffix(".bin").is_file() else [])
        self.sha256 = _sha256_files(*files)

    def __call__(self, views: np.ndarray) -> np.ndarray:
        return self.model(views, batch_size=64)

    def describe(self) -> dict:
        return {"kind": "foreign", "source": str(self.path.resolve()), "sha256": self.sha256,
                "input_format": self.input_format, "input_size": list(self.input_size), "dim": self.dim,
                "runtime": self.model.runtime}


def load_teacher(spec: str | os.PathLike, res: float = 1.0, input_format: Optional[str] = None,
                 backend: str = "auto", threads: Optional[int] = None, allow_unsafe_pickle: bool = False,
                 device: str = "cpu") -> Teacher:
    """A teacher from a checkpoint file, a bundle directory, or a foreign .onnx / .xml model.

    ``res`` applies to checkpoints only (bundles and foreign models have a fixed input size);
    ``input_format`` to foreign models only ('bgr255' default for .xml, 'rgb_imagenet' for .onnx).
    """
    path = Path(spec)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise ValueError(f"teacher {path} is a folder without manifest.json: not an osnet_edge bundle")
        return BundleTeacher(path, threads=threads)
    if not path.is_file():
        raise FileNotFoundError(f"teacher not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".xml"):
        return ForeignTeacher(path, input_format=input_format, threads=threads)
    if suffix in CHECKPOINT_SUFFIXES:
        return CheckpointTeacher(path, res=res, backend=backend, threads=threads,
                                 allow_unsafe_pickle=allow_unsafe_pickle, device=device)
    raise ValueError(f"teacher {path}: expected a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), a bundle "
                     "folder, an .onnx model or an OpenVINO .xml")
