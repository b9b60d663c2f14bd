"""Quantization-aware distillation (host side, torch): make the weights robust to INT8 before PTQ.

Thin networks such as OSNet x0.25 (16-32 channel streams, depthwise 3x3, gate products) lose too
much with plain post-training quantization: the error is spread over ~190 layers (issue 13).
Here a copy of the FP32 network (the *student*) runs with simulated INT8 — weights fake-quantized
per output channel, symmetric (what every backend deploys; BN folding scales a channel and
per-channel symmetric rounding is invariant to that, so quantizing the unfolded weight is
exact), activations fake-quantized per tensor at every layer input, gate product and residual
branch with ranges calibrated on the calibration crops in the backend's scheme (uint8 asymmetric
or int8 symmetric) — and is trained with the straight-through estimator to reproduce the FP32
network's embeddings (the *teacher*) on augmented calibration crops. The weights are left on the
int8 grid, so the backend's PTQ reproduces them exactly; fidelity is always measured against the
original FP32 model on held-out crops.
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from osnet_edge.progress import progress_bar

from .ranges import RANGE_METHODS, RangeObserver

# Measured: at 256x128, 400 steps gave no better held-out fidelity than 150; on the adapted 128x64 (issue 27,
# Market-1501 ORT INT8) 150 and 600 steps gave the same cosine (0.9983 / 0.9984) and rank-1 drop (0.39 / 0.42).
DEFAULT_STEPS = 150
DEFAULT_BATCH = 16
DEFAULT_LR = 3e-5
SIMULATION_VERSION = 3  # part of the distillation cache key: bump when the simulated INT8 changes


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("quantization-aware distillation needs torch: pip install 'osnet_edge[export]'") from exc
    return torch


def _weight_fq_module(bits: int = 8):
    torch = _torch()

    class WeightFakeQuant(torch.nn.Module):
        """Per-output-channel symmetric fake quantization with a straight-through gradient."""

        qmax = 2 ** (bits - 1) - 1

        def forward(self, w):
            flat = w.detach().reshape(w.shape[0], -1)
            scale = (flat.abs().amax(1).clamp_min(1e-12) / self.qmax).view(-1, *([1] * (w.dim() - 1)))
            wq = torch.clamp(torch.round(w / scale), -self.qmax, self.qmax) * scale
            return w + (wq - w).detach()

    return WeightFakeQuant()


class ActivationFakeQuant:
    """Per-tensor activation fake quantization keyed by (layer, call index).

    A module called several times in one forward (OSNet's shared channel gate) gets one range
    per call, as the exported graph has one tensor per call. ``range_method`` "minmax" or "mse"
    (quantize/ranges.py: the same search the QDQ graph's ranges come from).
    """

    def __init__(self, symmetric: bool, range_method: str = "minmax", shift_nonnegative: bool = False) -> None:
        if range_method not in RANGE_METHODS:
            raise ValueError(f"range_method must be one of {RANGE_METHODS}, got {range_method!r}")
        self.symmetric = symmetric
        self.range_method = range_method
        self.shift_nonnegative = shift_nonnegative
        self.ranges: dict[tuple[str, int], list[float]] = {}
        self.observers: dict = {}
        self.calibrating = True
        self._calls: dict[str, int] = {}

    def reset(self) -> None:
        self._calls.clear()

    def start_calibration(self) -> None:
        self.ranges.clear()
        self.observers.clear()
        self.calibrating = True

    def finish_calibration(self) -> None:
        for k, obs in self.observers.items():
            full_grid = self.shift_nonnegative and obs.lo >= 0
            self.ranges[k] = list(obs.range(self.range_method, self.symmetric and not full_grid))
        self.calibrating = False

    def __call__(self, key: str, x):
        torch = _torch()
        i = self._calls.get(key, 0)
        self._calls[key] = i + 1
        k = (key, i)
        if self.calibrating:
            self.observers.setdefault(k, RangeObserver(
                seed=len(self.observers), keep_samples=self.range_method == "mse")).update(
                x.detach().float().cpu().numpy())
            return x
        lo, hi = self.ranges[k]
        if self.symmetric and self.shift_nonnegative and lo >= 0:
            # TensorRT bundles shift non-negative tensors by c = hi/2 onto the whole int8 grid
            c = hi / 2.0
            scale = c / 127.0 or 1e-8
            q = torch.clamp(torch.round((x - c) / scale), -127, 127) * scale + c
        elif self.symmetric:
            scale = max(abs(lo), abs(hi)) / 127.0 or 1e-8
            q = torch.clamp(torch.round(x / scale), -127, 127) * scale
        else:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            scale = (hi - lo) / 255.0 or 1e-8
            zp = round(-lo / scale)
            q = (torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp) * scale
        return x + (q - x).detach()


def _fixed_grid_hook(levels: int = 256):
    """Sigmoid outputs on TFLite's fixed int8 grid (scale 1/256, zero point -128: k/256), straight-through."""
    def hook(module, args, out):
        q = _torch().clamp(_torch().round(out * levels), 0, levels - 1) / levels
        return out + (q - out).detach()
    return hook


def _attach(model, symmetric: bool, placement: str = "conv", range_method: str = "minmax",
            shift_nonnegative: bool = False, quantize_outputs: bool = True, fixed_sigmoid_grid: bool = False):
    """Fake-quantize ``model`` where the backend's QDQ graph has Q/DQ pairs (see
    ``quantize.onnxruntime.fp32_placement_nodes``): weights of the spatial convolutions, their
    inputs, and their outputs after BN(+ReLU). With ``placement="conv"`` the gate MLP, gate
    products, sums and the final fc stay fp32, as in the deployed graph; ``"all"`` mirrors ONNX
    Runtime's default placement (everything quantized)."""
    torch = _torch()
    from torch.nn.utils import parametrize

    from osnet_edge.models.osnet import ChannelGate, Conv1x1, Conv1x1Linear, ConvLayer, LightConv3x3

    fq = ActivationFakeQuant(symmetric, range_method, shift_nonnegative)
    handles = [model.register_forward_pre_hook(lambda mod, args: fq.reset())]
    gate_convs = {id(c) for g in model.modules() if isinstance(g, ChannelGate) for c in (g.fc1, g.fc2)}
    everything = placement == "all"
    out_types = (Conv1x1Linear, ConvLayer, Conv1x1, LightConv3x3)
    if everything:
        out_types += (ChannelGate,) if fixed_sigmoid_grid else (ChannelGate, torch.nn.Sigmoid)
    if fixed_sigmoid_grid:
        handles += [m.register_forward_hook(_fixed_grid_hook()) for m in model.modules()
                    if isinstance(m, torch.nn.Sigmoid)]
    for name, m in model.named_modules():
        kept_fp32 = id(m) in gate_convs or isinstance(m, torch.nn.Linear)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and (everything or not kept_fp32):
            parametrize.register_parametrization(m, "weight", _weight_fq_module())
            handles.append(m.register_forward_pre_hook(lambda mod, args, n=name: (fq(n + ":in", args[0]),)))
        if quantize_outputs and (isinstance(m, out_types) or (everything and id(m) in gate_convs)):
            handles.append(m.register_forward_hook(lambda mod, args, out, n=name: fq(n + ":out", out)))
    return fq, handles


def _detach_fake_quant(model, handles) -> None:
    torch = _torch()
    from torch.nn.utils import parametrize

    for h in handles:
        h.remove()
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)  # weights on the int8 grid


def _augment(x, gen, jitter: float = 0.0):
    """Horizontal flips (+ optional contrast/brightness jitter in normalised space).

    Jitter is off by default: it pushes activations outside the calibrated ranges, and the
    student then learns to rely on clipping that the backend's own calibration will not do.
    """
    torch = _torch()
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if jitter:
        n = x.shape[0]
        x = x * (1 + jitter * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)) \
            + jitter * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return x


def distill(teacher, calib: np.ndarray, scheme: str, steps: int | None = None, batch_size: int = DEFAULT_BATCH,
            lr: float = DEFAULT_LR, seed: int = 0, progress: bool = True, recalibrate_every: int = 20,
            jitter: float = 0.0, placement: str = "conv", range_method: str = "minmax",
            shift_nonnegative: bool = False, quantize_outputs: bool = True, fixed_sigmoid_grid: bool = False,
            device: str = "cpu"):
    """A copy of ``teacher`` trained to match it under simulated INT8; returns (student, info). ``device``:
    cpu, cuda[:N] or auto (float32 simulation there; the student comes back on the CPU, ready for export)."""
    torch = _torch()
    import torch.nn.functional as F

    from osnet_edge.adapt.device import resolve_device
    device = resolve_device(device)

    if scheme not in ("uint8 asymmetric", "int8 symmetric"):
        raise ValueError(f"unknown activation scheme {scheme!r}")
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"distill_steps must be >= 0, got {steps}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    teacher_device = next(teacher.parameters()).device
    teacher = teacher.eval().to(device)
    student = copy.deepcopy(teacher).eval()  # BN stays in inference mode: its folded form is what deploys
    for p in teacher.parameters():
        p.requires_grad_(False)
    for p in student.parameters():
        p.requires_grad_(True)
    fq, handles = _attach(student, symmetric=scheme == "int8 symmetric", placement=placement,
                          range_method=range_method, shift_nonnegative=shift_nonnegative,
                          quantize_outputs=quantize_outputs, fixed_sigmoid_grid=fixed_sigmoid_grid)
    data = torch.from_numpy(np.ascontiguousarray(calib, dtype=np.float32))

    def calibrate() -> None:
        """Ranges of every quantized tensor over the clean calibration crops: exactly what the
        backend's calibration (MinMax, or the MSE search) will compute on the trained weights."""
        fq.start_calibration()
        with torch.no_grad():
            for i in range(0, len(data), 32):
                student(data[i:i + 32].to(device))
        fq.finish_calibration()

    calibrate()
    t0 = time.perf_counter()
    first = last = None
    if steps:
        opt = torch.optim.Adam(student.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        bar = progress_bar(total=steps, desc="quantization-aware distillation", unit="step", leave=False,
                           enabled=progress)
        for step in range(steps):
            if step and step % recalibrate_every == 0:
                calibrate()
            idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=gen)
            x = _augment(data[idx], gen, jitter).to(device)
            with torch.no_grad():
                target = F.normalize(teacher(x), dim=1)
            cos = (F.normalize(student(x), dim=1) * target).sum(1)
            loss = (1 - cos).mean() + 0.1 * (1 - cos).max()  # the max term lifts the worst crops (p1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            c = float(cos.detach().mean())
            first = c if first is None else first
            last = c if last is None else 0.9 * last + 0.1 * c
            bar.set_postfix(cos=f"{last:.4f}")
            bar.update(1)
        bar.close()
    _detach_fake_quant(student, handles)
    student, teacher = student.cpu(), teacher.to(teacher_device)
    for p in student.parameters():
        p.requires_grad_(False)
    info = {"steps": steps, "recalibrate_every": recalibrate_every, "jitter": jitter, "placement": placement, "range_method": range_method, "shift_nonnegative": shift_nonnegative,
            "quantize_outputs": quantize_outputs, "fixed_sigmoid_grid": fixed_sigmoid_grid, "batch_size": batch_size, "lr": lr, "seed": seed, "scheme": scheme,
            "train_images": int(len(data)), "device": device, "simulated_cosine_first": first, "simulated_cosine_last": last,
            "seconds": round(time.perf_counter() - t0, 1),
            "what": "quantization-aware distillation: weights fine-tuned under simulated INT8 to match the FP32 "
                    "model on the calibration crops (teacher = the FP32 model); weights left on the int8 grid"}
    return student.eval(), info


def distill_on_training_threads(teacher, calib: np.ndarray, scheme: str, **kw: Any):
    """:func:`distill` with torch on :func:`training_threads` (the caller's count restored after)."""
    torch = _torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(training_threads())
    try:
        return distill(teacher, calib, scheme, **kw)
    finally:
        torch.set_num_threads(threads)


def distill_to_onnx(torch_model, calibration_set, fp32_onnx: str | os.PathLike, out_onnx: str | os.PathLike,
                    scheme: str, steps: int | None = None, seed: int = 0, progress: bool = True,
                    **kw: Any) -> tuple[Path, dict]:
    """Distill and export the student like ``fp32_onnx`` (same input size, layout, opset)."""
    _torch()  # fail early, naming the extra, when torch is absent
    import onnx

    from osnet_edge.export.onnx import to_onnx

    import hashlib
    import json
    import shutil

    from osnet_edge.bundle import sha256_file

    if "device" in kw:  # the key names the device that trains: CUDA and CPU students differ in the last bits
        from osnet_edge.adapt.device import resolve_device
        kw["device"] = resolve_device(kw["device"])
        if kw["device"] == "cpu":
            del kw["device"]  # the key of every CPU student cached before the option existed
    proto = onnx.load(str(fp32_onnx), load_external_data=False)
    fused = proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 18)
    # cache: same fp32 network (its ONNX hash covers weights, input size, layout), same crops, same
    # settings -> same student (ORT and OpenVINO share the uint8 scheme; re-exports are instant)
    key = hashlib.sha256(json.dumps([SIMULATION_VERSION, sha256_file(fp32_onnx), calibration_set.file_list_sha256(), scheme,
                                     DEFAULT_STEPS if steps is None else int(steps),
                                     seed, sorted(kw.items())]).encode()).hexdigest()[:32]
    cache_dir = getattr(calibration_set, "cache_dir", None)
    cached = Path(cache_dir) / "distill" / f"{key}.onnx" if cache_dir else None
    if cached is not None and cached.is_file() and cached.with_suffix(".json").is_file():
        shutil.copy2(cached, out_onnx)
        info = json.loads(cached.with_suffix(".json").read_text())
        info["cache"] = "hit"
        return Path(out_onnx), info
    student, info = distill_on_training_threads(torch_model, calibration_set.float32(), scheme, steps=steps,
                                                seed=seed, progress=progress, **kw)
    to_onnx(student, out_onnx, calibration_set.input_size, opset=opset, fuse_preprocess=fused)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out_onnx, cached)
            cached.with_suffix(".json").write_text(json.dumps(info))
        except OSError:
            pass
    return Path(out_onnx), info


def training_threads() -> int:
    """Threads for the small-tensor training loop: 1 on a busy machine (spinning threads of a
    contended pool made each step 10x slower here), up to 4 when cores are idle."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    idle = cores - load
    return max(1, min(4, int(idle)))

