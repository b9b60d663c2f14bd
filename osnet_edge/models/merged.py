"""Inference-only "stream-merged" OSNet: the same function as :class:`OSNet`, fewer and wider ops.

Why: an OSNet block runs four parallel streams of Lite 3x3 layers (10 pointwise + 10 depthwise
convolutions of ``mid`` channels each), then the shared channel gate four times and a sum.
Small widths (x0.25: ``mid`` = 16..32) make those ops tiny, so per-op overhead could dominate.
Here the streams' same-depth layers run as one op over all live streams' channels, the gate
runs once over the streams' concatenated channels with block-diagonal weights (exact: each
stream is still gated by its own pooled features), and BatchNorm is folded into the
preceding convolutions, in float64, then cast to float32. The math is OSNet's: outputs differ
only by float reassociation (cosine to the original > 0.999999). The ONNX graph has about half
the nodes (x0.25: 390 -> 180..204 for the whole network, 156..180 with ``absorb_sum``).

Measured (scripts/bench/graph_forms.py, x0.25, 1 thread, AVX-512 Xeon VM shared with other work,
so roughly): torch eager runs 1.3-2x faster at batch 1 (about equal at batch 8), but ONNX
Runtime and OpenVINO, which already fold BN, fuse Conv+ReLU and run blocked NCHWc layouts, gain
little or lose: best form 1.05x (ORT) / 1.18x (OpenVINO) at 128x64 batch 1, 0.7-0.9x at batch 8
and at 256x128. The merged graph has 2x fewer nodes and 2-4x fewer layout reorders, but its
tensors are T times wider (the plain graph's per-stream tensors stay in cache) and it adds
Split/Concat copies or pass-through work. Use it for torch inference; benchmark before shipping
a merged ONNX.

Graph forms (``merge_streams(model, form=...)``):

* ``"grouped"``: only live streams are computed. Depth 1: one 1x1 conv ``mid -> T*mid`` and
  one depthwise 3x3; depth d > 1: a grouped 1x1 conv (groups = live streams) and a depthwise
  3x3 over the live streams' channels. A stream that ends is split off (one Split per depth)
  and the ended streams are concatenated once for the gate. Same MACs as OSNet.
* ``"wide"``: no Split/Concat between the stream convolutions: every depth is a plain (dense,
  block-diagonal) 1x1 conv ``T*mid -> T*mid`` plus a depthwise 3x3 over ``T*mid`` channels;
  a stream that has ended passes through its later layers unchanged (an identity block in
  the 1x1 weight, a centre-1 depthwise kernel, zero bias; the ReLU after it is the identity on
  its already non-negative values), so the pass-through is exact. One contiguous tensor that a
  blocked layout never reorders, at 4-5x the stream MACs. The gate's FCs are dense too.
* ``"wide_grouped"``: as ``"wide"``, but the 1x1 convs of depth > 1 are grouped (groups = T):
  ~1.6x the stream MACs, still no Split/Concat between convolutions.

The gated streams are summed by splitting the (N, T*mid, H, W) product into T chunks and
adding them (measured slightly faster on ONNX Runtime and OpenVINO than Reshape + ReduceSum).
``absorb_sum=True`` instead feeds the T*mid channels to conv3 with its weight repeated T times:
no sum and no Split at all, but 4x conv3's MACs; measured slower on ONNX Runtime, faster on
OpenVINO (x0.25 128x64 grouped: 0.81 vs 0.99 ms batch 1), hence the option.

All three OSNet variants merge completely: OSNet-IBN's instance norm follows the residual sum
and OSNet-AIN's follows conv3; neither is inside a stream (the AIN streams are plain Lite 3x3
layers with BatchNorm), so the instance norms are kept as they are, unfolded. The stem keeps
its InstanceNorm in the IBN/AIN variants; every BatchNorm (stem, conv1, streams, conv3,
downsample, transitions, conv5, the embedding's BatchNorm1d) is folded.
"""
from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from .osnet import (ChannelGate, Conv1x1, Conv1x1Linear, ConvLayer, LightConv3x3, OSBlock, OSBlockAIN,
                    OSNet)

FORMS = ("grouped", "wide", "wide_grouped")
F64 = torch.float64


def _bn_scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = x * scale + shift (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} tracks no running statistics: its eval-mode output depends on the batch, "
                         "so it cannot be folded into a convolution")
    scale = 1.0 / torch.sqrt(bn.running_var.to(F64) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(F64)
    shift = -bn.running_mean.to(F64) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(F64)
    return scale, shift


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1, padding: int = 0,
          stride: int = 1, like: torch.Tensor | None = None) -> nn.Conv2d:
    """An nn.Conv2d holding ``weight``/``bias`` (float64 in) as float32 on ``like``'s device."""
    out_ch, in_per_group, kh, kw = weight.shape
    # skip_init: no random initialisation (it would be overwritten, and would consume the global RNG)
    conv = skip_init(nn.Conv2d, in_per_group * groups, out_ch, (kh, kw), stride=stride, padding=padding,
                     groups=groups, bias=bias is not None)
    dev = like.device if like is not None else weight.device
    conv.weight = nn.Parameter(weight.to(device=dev, dtype=torch.float32), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.to(device=dev, dtype=torch.float32), requires_grad=False)
    return conv


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) in float64 of ``bn(conv(x))`` as a single convolution."""
    w = conv.weight.detach().to(F64)
    b = conv.bias.detach().to(F64) if conv.bias is not None else None
    if bn is None:
        return w, b
    scale, shift = _bn_scale_shift(bn)
    w = w * scale.view(-1, 1, 1, 1)
    bias = shift if b is None else b * scale + shift
    return w, bias


class ConvAct(nn.Module):
    """A convolution with BatchNorm folded in, optionally followed by ReLU."""

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        self.conv, self.relu = conv, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


def _fold_unit(module: nn.Module) -> nn.Module:
    """Conv1x1 / Conv1x1Linear / ConvLayer (BatchNorm) -> ConvAct; ConvLayer with IN is copied."""
    if isinstance(module, ConvLayer) and not isinstance(module.bn, nn.BatchNorm2d):
        return copy.deepcopy(module)  # InstanceNorm: depends on the input, nothing to fold
    if isinstance(module, (Conv1x1, ConvLayer, Conv1x1Linear)):
        c = module.conv
        w, b = _fold_conv_bn(c, module.bn)
        conv = _conv(w, b, groups=c.groups, padding=c.padding[0], stride=c.stride[0], like=c.weight)
        return ConvAct(conv, relu=not isinstance(module, Conv1x1Linear))
    raise TypeError(f"cannot fold {type(module).__name__}")


def _block_diag(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Block-diagonal 1x1 conv weight (sum out, sum in, 1, 1) from per-group (out, in, 1, 1) weights."""
    out = sum(b.shape[0] for b in blocks)
    inp = sum(b.shape[1] for b in blocks)
    w = torch.zeros(out, inp, 1, 1, dtype=F64, device=blocks[0].device)
    r = c = 0
    for b in blocks:
        w[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return w


class MergedOSBlock(nn.Module):
    """One OSBlock / OSBlockAIN with its streams run together (see the module docstring).

    ``finish[d]`` is how many streams end after depth d + 1 (streams are ordered by depth, so
    in the grouped form the ones that end are always the first live channels).
    """

    def __init__(self, form: str, mid: int, conv1: ConvAct, pointwise: Iterable[nn.Conv2d],
                 depthwise: Iterable[nn.Conv2d], finish: Sequence[int], fc1: nn.Conv2d, fc2: nn.Conv2d,
                 conv3: ConvAct, downsample: ConvAct | None, in_branch: nn.Module | None,
                 in_out: nn.Module | None, absorb_sum: bool = False) -> None:
        super().__init__()
        self.form, self.mid, self.finish = form, mid, tuple(int(f) for f in finish)
        self.absorb_sum = absorb_sum
        self.conv1 = conv1
        self.pointwise = nn.ModuleList(pointwise)
        self.depthwise = nn.ModuleList(depthwise)
        self.fc1, self.fc2, self.conv3, self.downsample = fc1, fc2, conv3, downsample
        self.in_branch, self.in_out = in_branch, in_out  # AIN: IN after conv3; IBN: IN after the sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        h = self.conv1(x)
        if self.form == "grouped":
            ended = []
            for pw, dw, done in zip(self.pointwise, self.depthwise, self.finish):
                h = F.relu(dw(pw(h)))
                if done and done * self.mid < h.shape[1]:
                    first, h = torch.split(h, [done * self.mid, h.shape[1] - done * self.mid], dim=1)
                    ended.append(first)
                elif done:
                    ended.append(h)
            y = torch.cat(ended, dim=1) if len(ended) > 1 else ended[0]
        else:
            for pw, dw in zip(self.pointwise, self.depthwise):
                h = F.relu(dw(pw(h)))
            y = h
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        y = y * g
        if not self.absorb_sum:  # sum the gated streams: (N, T*mid, H, W) -> (N, mid, H, W)
            parts = torch.split(y, self.mid, dim=1)
            y = parts[0]
            for part in parts[1:]:
                y = y + part
        out = self.conv3(y)
        if self.in_branch is not None:
            out = self.in_branch(out)
        out = out + identity
        if self.in_out is not None:
            out = self.in_out(out)
        return F.relu(out)


def _streams(block: OSBlock | OSBlockAIN) -> list[list[LightConv3x3]]:
    if isinstance(block, OSBlock):
        return [[block.conv2a], list(block.conv2b), list(block.conv2c), list(block.conv2d)]
    return [list(s.layers) for s in block.conv2]


def _merge_block(block: OSBlock | OSBlockAIN, form: str, absorb_sum: bool = False) -> MergedOSBlock:
    """Build the merged equivalent of one block (weights folded in float64)."""
    streams = sorted(_streams(block), key=len)  # the sum over streams does not depend on their order
    n, depth = len(streams), len(streams[-1])
    mid = block.conv1.conv.out_channels
    for s in streams:
        for layer in s:
            if not isinstance(layer, LightConv3x3) or layer.conv1.out_channels != mid:
                raise ValueError(f"unexpected stream layer {layer!r} (mid channels {mid})")
    gate = block.gate
    if not isinstance(gate, ChannelGate):
        raise ValueError(f"unexpected gate {gate!r}")
    like = block.conv1.conv.weight
    dev = like.device
    eye = torch.eye(mid, dtype=F64, device=dev).view(mid, mid, 1, 1)
    centre = torch.zeros(mid, 1, 3, 3, dtype=F64, device=dev)
    centre[:, :, 1, 1] = 1.0

    pointwise, depthwise, finish = [], [], []
    for d in range(depth):
        live = [s for s in streams if len(s) > d]
        finish.append(sum(1 for s in live if len(s) == d + 1))
        pw = [s[d].conv1.weight.detach().to(F64) for s in live]
        dws, dbs = [], []
        for s in live:
            scale, shift = _bn_scale_shift(s[d].bn)
            dws.append(s[d].conv2.weight.detach().to(F64) * scale.view(-1, 1, 1, 1))
            dbs.append(shift)
        if form != "grouped" and d > 0:  # wide forms: ended streams pass through unchanged
            ended = n - len(live)
            pw = [eye] * ended + pw
            dws = [centre] * ended + dws
            dbs = [torch.zeros(mid, dtype=F64, device=dev)] * ended + dbs
        if d == 0:  # every stream reads conv1's output: one dense 1x1 conv, outputs stacked
            pw_conv = _conv(torch.cat(pw, 0), None, like=like)
        elif form == "wide":
            pw_conv = _conv(_block_diag(pw), None, like=like)
        else:
            pw_conv = _conv(torch.cat(pw, 0), None, groups=len(pw), like=like)
        pointwise.append(pw_conv)
        depthwise.append(_conv(torch.cat(dws, 0), torch.cat(dbs, 0), groups=len(dws) * mid, padding=1, like=like))

    w1, b1 = gate.fc1.weight.detach().to(F64), gate.fc1.bias.detach().to(F64)
    w2, b2 = gate.fc2.weight.detach().to(F64), gate.fc2.bias.detach().to(F64)
    if form == "wide":
        fc1 = _conv(_block_diag([w1] * n), b1.repeat(n), like=like)
        fc2 = _conv(_block_diag([w2] * n), b2.repeat(n), like=like)
    else:
        fc1 = _conv(w1.repeat(n, 1, 1, 1), b1.repeat(n), groups=n, like=like)
        fc2 = _conv(w2.repeat(n, 1, 1, 1), b2.repeat(n), groups=n, like=like)
    # absorb_sum: conv3(sum_s y_s) == conv3 over the n concatenated streams with its weight repeated n times
    w3, b3 = _fold_conv_bn(block.conv3.conv, block.conv3.bn)
    conv3 = ConvAct(_conv(w3.repeat(1, n, 1, 1) if absorb_sum else w3, b3, like=like), relu=False)
    downsample = _fold_unit(block.downsample) if block.downsample is not None else None
    IN = copy.deepcopy(block.IN)
    in_branch, in_out = (IN, None) if isinstance(block, OSBlockAIN) else (None, IN)
    return MergedOSBlock(form, mid, _fold_unit(block.conv1), pointwise, depthwise, finish, fc1, fc2, conv3,
                         downsample, in_branch, in_out, absorb_sum)


def _rewrite(module: nn.Module, form: str, absorb_sum: bool = False) -> nn.Module:
    """A merged/folded copy of a stage (Sequential of blocks and transition layers)."""
    if isinstance(module, (OSBlock, OSBlockAIN)):
        return _merge_block(module, form, absorb_sum)
    if isinstance(module, (Conv1x1, Conv1x1Linear, ConvLayer)):
        return _fold_unit(module)
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*[_rewrite(m, form, absorb_sum) for m in module])
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.ReLU, nn.Identity)):
        return copy.deepcopy(module)
    raise ValueError(f"merge_streams does not know how to rewrite {type(module).__name__}")


class MergedOSNet(nn.Module):
    """Inference-only OSNet built by :func:`merge_streams`: (N,3,H,W) -> (N,512) embedding.

    Always in eval mode: its BatchNorms are folded away, so it cannot be trained
    (``train(True)`` raises). ``width``, ``variant``, ``feature_dim`` and ``adaptation`` are
    copied from the source model so that exporters can describe it.
    """

    def __init__(self, features: nn.Sequential, fc: nn.Linear) -> None:
        super().__init__()
        self.features, self.fc = features, fc
        super().train(False)

    def train(self, mode: bool = True) -> "MergedOSNet":
        if mode:
            raise RuntimeError("MergedOSNet is inference-only (BatchNorm is folded): train the OSNet it came from")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return F.relu(self.fc(v))


def merge_streams(model: OSNet, form: str = "grouped", absorb_sum: bool = False) -> MergedOSNet:
    """An inference-only copy of ``model`` with every OS block's streams merged and BatchNorm folded.

    Returns a new :class:`MergedOSNet` (always in eval mode) computing ``model``'s eval-mode
    embedding; ``model`` itself, and its training mode, are left unchanged. A model in training
    mode is accepted: the merged copy is of its eval-mode function (BatchNorm folds use the
    running statistics; the classifier, used only in training, is dropped).
    ``form``: ``"grouped"``, ``"wide"`` or ``"wide_grouped"``; ``absorb_sum``: sum the gated
    streams inside conv3 (see the module docstring). All choices compute the same embedding and
    differ only in speed per runtime. ValueError for an unknown form or a model that is not an
    osnet_edge :class:`OSNet` (e.g. an already merged one).
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if not isinstance(absorb_sum, bool):
        raise ValueError(f"absorb_sum must be a bool, got {absorb_sum!r}")
    if not isinstance(model, OSNet):
        raise ValueError(f"merge_streams needs an osnet_edge OSNet (build_osnet / create_model), got "
                         f"{type(model).__name__}")
    with torch.no_grad():
        # the order of OSNet.featuremaps: stem, maxpool, conv2, [pool2], conv3, [pool3], conv4, conv5
        order = [model.conv1, model.maxpool, model.conv2, model.conv3, model.conv4, model.conv5]
        if model.variant == "ain":
            order[3:3] = [model.pool2]
            order[5:5] = [model.pool3]
        parts = [_rewrite(m, form, absorb_sum) for m in order]
        linear, bn1d, relu = model.fc
        if not (isinstance(linear, nn.Linear) and isinstance(bn1d, nn.BatchNorm1d) and isinstance(relu, nn.ReLU)):
            raise ValueError(f"unexpected embedding head {model.fc!r}")
        scale, shift = _bn_scale_shift(bn1d)
        w = linear.weight.detach().to(F64) * scale.view(-1, 1)
        b = linear.bias.detach().to(F64) * scale + shift if linear.bias is not None else shift
        fc = skip_init(nn.Linear, linear.in_features, linear.out_features)
        fc.weight = nn.Parameter(w.to(device=linear.weight.device, dtype=torch.float32), requires_grad=False)
        fc.bias = nn.Parameter(b.to(device=linear.weight.device, dtype=torch.float32), requires_grad=False)
        merged = MergedOSNet(nn.Sequential(*parts), fc)
    for p in merged.parameters():
        p.requires_grad_(False)
    merged.width, merged.variant, merged.feature_dim = model.width, model.variant, model.feature_dim
    merged.channels, merged.form = model.channels, form
    if getattr(model, "adaptation", None):
        merged.adaptation = copy.deepcopy(model.adaptation)
    return merged


__all__ = ["FORMS", "MergedOSBlock", "MergedOSNet", "merge_streams"]
