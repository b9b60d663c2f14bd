"""Host side: torch OSNet -> LiteRT flatbuffer (.tflite), NHWC input, for XNNPACK on camera CPUs.

Converted straight from the torch model with litert-torch (no TensorFlow, no ONNX round trip,
nothing downloaded at convert time): measured cosine 1.000000 to torch for x0.25 fp32. The
model takes NHWC input, the layout images already have, so crops need no transpose; with
``fuse_preprocess`` it takes the resized uint8 BGR crops themselves: the scale/offset runs in
the graph and the BGR -> RGB swap is folded into the first convolution's weights (exact).

Before conversion BatchNorm is folded into the convolutions here (float64), and folded weights
below 1e-30 are zeroed (the rule of the ONNX export: their products underflow to denormals that
x86 computes in microcode; they change no output). For INT8, each output channel's largest weight
is raised to at least 1e-4 x |its bias| (1e-20 for a zero channel without bias): a zero or tiny
weight scale makes the quantizer divide by zero or overflow TFLite's int32 bias.

Exact rewrites applied before conversion, so that every op stays on XNNPACK:
* 2x2/stride-2 average pools (OSNet's transition layers) -> depthwise 2x2 convolutions with
  weights 1/4: XNNPACK has no int8 average pool, so an INT8 graph would fall back to the
  reference kernels between two delegate partitions.
* the stem's 3x3/stride-2 max pool with padding 1 -> zero padding + unpadded max pool: torch's
  padding converts to PADV2 with -inf, which XNNPACK does not take (it split even the fp32
  graph in two); its input is a ReLU output (>= 0), so padding with 0 gives the same maximum.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..quiet import converter_output_silenced
from .hygiene import NEGLIGIBLE_WEIGHT

MODEL_FILE = "model.tflite"
_NO_CONVERTER = "the litert target converts with litert-torch: pip install 'osnet_edge[litert-export]'"


def _litert_torch():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # absl/XLA start-up chatter of the converter
    try:
        with _quiet():
            import litert_torch
    except ImportError as exc:
        raise ImportError(_NO_CONVERTER) from exc
    return litert_torch


class AvgPoolAsDepthwise(nn.Module):
    """``nn.AvgPool2d(k, stride=k)`` (no padding) as a depthwise k x k convolution with weights
    1/k^2: the same function, and an op XNNPACK delegates at every precision."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = int(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, k = x.shape[1], self.kernel
        weight = torch.full((c, 1, k, k), 1.0 / (k * k), dtype=x.dtype, device=x.device)
        return F.conv2d(x, weight, stride=k, groups=c)


def _pool_kernel(module: nn.AvgPool2d) -> int | None:
    """The kernel of an average pool that is a plain non-overlapping k x k mean, else None."""
    k, s, p = module.kernel_size, module.stride, module.padding
    k = k if isinstance(k, int) else (k[0] if k[0] == k[1] else None)
    s = s if isinstance(s, int) else (s[0] if s[0] == s[1] else None)
    if k is None or s != k or p not in (0, (0, 0)) or module.ceil_mode:
        return None
    return k


class ZeroPaddedMaxPool(nn.Module):
    """``nn.MaxPool2d(k, stride, padding=p)`` for NON-NEGATIVE input as zero padding + an
    unpadded max pool: every window holds at least one real value >= 0, so a padded 0 never
    wins where torch's implicit -inf padding would not."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding if isinstance(self.padding, int) else self.padding[0]
        return F.max_pool2d(F.pad(x, (p, p, p, p)), self.kernel, self.stride)


def rewrite_stem_max_pool(model: nn.Module) -> int:
    """In place: an OSNet's stem max pool (after conv1's ReLU) as :class:`ZeroPaddedMaxPool`."""
    pool, stem = getattr(model, "maxpool", None), getattr(model, "conv1", None)
    if not (isinstance(pool, nn.MaxPool2d) and isinstance(getattr(stem, "relu", None), nn.ReLU)):
        return 0
    padding = pool.padding if isinstance(pool.padding, int) else pool.padding[0]
    if not padding or pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
        return 0
    model.maxpool = ZeroPaddedMaxPool(pool)
    return 1


def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """conv (Conv2d or Linear) followed by eval-mode BatchNorm -> one layer with bias, in float64."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(weight.float(), requires_grad=False)
    folded.bias = nn.Parameter(bias.float(), requires_grad=False)
    return folded


def fold_batchnorm(model: nn.Module) -> int:
    """In place: every ``conv``/``conv2`` + ``bn`` (BatchNorm2d) pair of OSNet's layers and the
    ``fc`` Linear + BatchNorm1d become one layer; returns how many were folded."""
    count = 0
    for module in model.modules():
        bn = getattr(module, "bn", None)
        if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            conv_name = "conv2" if isinstance(getattr(module, "conv2", None), nn.Conv2d) else "conv"
            conv = getattr(module, conv_name, None)
            if isinstance(conv, nn.Conv2d):
                setattr(module, conv_name, _fold(conv, bn))
                module.bn = nn.Identity()
                count += 1
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Sequential):
        layers = list(fc)
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.Linear) and isinstance(layers[i + 1], nn.BatchNorm1d):
                layers[i], layers[i + 1] = _fold(layers[i], layers[i + 1]), nn.Identity()
                count += 1
        model.fc = nn.Sequential(*layers)
    return count


# INT8: a channel's largest |weight| is kept >= this fraction of |its bias|. TFLite stores the bias
# as int32 in units of input scale x weight scale; near-dead channels (BN-folded weights ~1e-11
# next to a bias ~0.1) overflow that and are clipped to garbage: cosine 0.91 vs 0.9989 for the same
# weights quantized with a float bias (x0.25 Market, 128x64). Raising one weight to 1e-4 |b| moves
# the channel's output by ~1e-4 of its value, far inside the int8 step.
INT8_WEIGHT_FLOOR = 1e-4


def condition_weights(model: nn.Module, for_int8: bool, negligible: float = NEGLIGIBLE_WEIGHT) -> dict[str, int]:
    """In place: zero |w| < ``negligible`` (the ONNX export's rule). For INT8, raise the largest weight of each output channel
    to at least INT8_WEIGHT_FLOOR x |bias| (1e-20 for an all-zero channel without bias): a zero or
    tiny weight scale makes the quantizer divide by zero or overflow the int32 bias."""
    flushed = raised = 0
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            w = m.weight
            tiny = (w != 0) & (w.abs() < negligible)
            flushed += int(tiny.sum())
            w[tiny] = 0
            if not for_int8:
                continue
            flat = w.reshape(w.shape[0], -1)
            bias = m.bias.abs() if m.bias is not None else torch.zeros(w.shape[0])
            floor = torch.clamp(INT8_WEIGHT_FLOOR * bias, min=1e-20)
            peak, where = flat.abs().max(1)
            low = peak < floor
            for c in torch.nonzero(low).flatten().tolist():
                sign = 1.0 if flat[c, where[c]] >= 0 else -1.0
                flat[c, where[c]] = sign * floor[c]
            raised += int(low.sum())
    return {"weights_zeroed_below_1e-30": flushed, "int8_channels_weight_raised": raised}


def rewrite_average_pools(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose k x k / stride k average pools are depthwise convolutions; and how many."""
    model = copy.deepcopy(model)
    count = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AvgPool2d) and _pool_kernel(child):
                setattr(parent, name, AvgPoolAsDepthwise(_pool_kernel(child)))
                count += 1
    return model, count


class ChannelsLast(nn.Module):
    """NHWC float32 (normalised RGB) in, embedding out: the layout LiteRT and images share."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


class ChannelsLastUint8(nn.Module):
    """NHWC uint8 BGR crops in: scale/offset in the graph, the BGR -> RGB swap folded into the
    first convolution (its input channels reversed), so no channel shuffle op is left."""

    def __init__(self, model: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        model = copy.deepcopy(model)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        if first.in_channels != 3 or first.groups != 1:
            raise ValueError("the first convolution must take the 3 image channels")
        with torch.no_grad():
            first.weight.copy_(first.weight.flip(1))
        self.model = model
        # BGR order: channel c of the input is RGB channel 2 - c
        scale = torch.tensor([1.0 / (255.0 * s) for s in std][::-1])
        bias = torch.tensor([-m / s for m, s in zip(mean, std)][::-1])
        self.register_buffer("scale", scale.view(1, 1, 1, 3), persistent=False)
        self.register_buffer("bias", bias.view(1, 1, 1, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) * self.scale + self.bias
        return self.model(x.permute(0, 3, 1, 2))


def _quiet():
    """litert-torch logs every conversion stage, absl/TF warn, and its C++ parts write to fd 2."""
    return converter_output_silenced(loggers=("absl", "litert_torch", "torch._export", "torch.export"),
                                     stderr=True, native_stderr=True)


def to_tflite(model: nn.Module, path: str | os.PathLike, input_hw: tuple[int, int],
              fuse_preprocess: bool = False, rewrite_pools: bool = True, for_int8: bool = False) -> dict[str, Any]:
    """Convert an eval-mode OSNet to a float32 .tflite at ``path``: batch-1 NHWC input (float32
    normalised RGB, or uint8 BGR with ``fuse_preprocess``), (1, 512) float32 output. The runtime
    resizes the batch per call. ``for_int8``: the file will be quantized (no all-zero channels).
    Returns what was done (for the manifest)."""
    if importlib.util.find_spec("litert_torch") is None:  # the conversion runs in a child: say it here
        raise ImportError(_NO_CONVERTER)
    model = copy.deepcopy(model).eval()
    folded = fold_batchnorm(model)
    conditioned = condition_weights(model, for_int8)
    pools = max_pools = 0
    if rewrite_pools:
        model, pools = rewrite_average_pools(model)
        max_pools = rewrite_stem_max_pool(model)
    net = (ChannelsLastUint8(model) if fuse_preprocess else ChannelsLast(model)).eval()
    h, w = input_hw
    example = (torch.zeros(1, h, w, 3, dtype=torch.uint8) if fuse_preprocess else torch.zeros(1, h, w, 3))
    convert_in_subprocess(net, example, Path(path))
    return {"converter": "litert-torch", "input_layout": "NHWC uint8" if fuse_preprocess else "NHWC float32",
            "batch": "static 1 in the file, resized by the runtime per call",
            "rewrites": {"batchnorm_folded": folded, **conditioned,
                         "average_pool_as_depthwise_conv": pools, "max_pool_zero_padded": max_pools,
                         "bgr_folded_into_first_conv": bool(fuse_preprocess)}}


_CHILD = """
import sys, torch
sys.path[:0] = [p for p in sys.argv[4:]]
from osnet_edge.export.tflite import _convert_here
net = torch.load(sys.argv[1], weights_only=False)
example = torch.load(sys.argv[2])
_convert_here(net, example, sys.argv[3])
"""


def convert_in_subprocess(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    """litert-torch in a child process. It imports JAX, whose threads make any later ``fork`` of the
    host process (multiprocessing, some exporters) deadlock-prone, and its C++ parts log to fd 2; the
    host never imports it. The prepared module travels as a torch pickle of this package's classes."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="osnet_edge_tflite_") as tmp:
        torch.save(net, os.path.join(tmp, "net.pt"))
        torch.save(example, os.path.join(tmp, "example.pt"))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        root = [p for p in sys.path if p]  # the same osnet_edge (a checkout or an install) in the child
        res = subprocess.run([sys.executable, "-c", _CHILD, os.path.join(tmp, "net.pt"), os.path.join(tmp, "example.pt"),
                              str(path), *root], capture_output=True, text=True, env=env)
    if res.returncode != 0 or not path.is_file():
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "no output")
        raise RuntimeError(f"litert-torch could not convert the model: {reason}")


def _convert_here(net: nn.Module, example: torch.Tensor, path: str) -> None:
    """The conversion itself (run by :func:`convert_in_subprocess`'s child)."""
    litert_torch = _litert_torch()
    with _quiet(), torch.no_grad():
        edge = litert_torch.convert(net.eval(), (example,))
        edge.export(str(path))


def litert_versions() -> dict[str, str]:
    out = {}
    for dist in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            out[dist] = version(dist)
    return out
