"""Crop preprocessing shared by the Extractor, calibration and evaluation (numpy + opencv).

torchreid trains with: PIL RGB image -> Resize((H, W)) bilinear -> ToTensor (/255) ->
Normalize(ImageNet mean, std). Here crops arrive as OpenCV gives them (H x W x 3 uint8 BGR),
or in RGB order when the caller says ``color="rgb"``.
Resizing and normalisation are split so that a bundle with preprocessing fused into its
graph only needs :func:`resize_batch` (uint8 in, uint8 out) on the device.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

try:
    import cv2
except ImportError as exc:  # pragma: no cover - opencv is a base requirement
    raise ImportError("osnet_edge needs opencv for resizing: pip install opencv-python-headless") from exc

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("linear", "pil", "area")
COLORS = ("bgr", "rgb")   # channel order of the crops the caller passes
# Measured with the real torchreid x0.25 MSMT17 checkpoint (README, "Preprocessing"): cv2
# INTER_LINEAR, INTER_AREA and an exact PIL-bilinear (antialiased) resize give the same
# rank-1/mAP within 0.5 point on cuhk03-val and cuhk01-test; INTER_LINEAR is ~10x faster.
DEFAULT_INTERPOLATION = "linear"


@lru_cache(maxsize=256)
def _pil_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of PIL's bilinear resampling (triangle filter, antialiased when shrinking).

    Reproduces Pillow's ImagingResample coefficients: support widens by the scale factor
    when downscaling, which is what torchreid's training pipeline saw.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = (np.arange(lo, hi) - center + 0.5) / filterscale
        w = np.clip(1.0 - np.abs(x), 0.0, None)
        total = w.sum()
        if total > 0:
            weights[i, lo:hi] = w / total
    return weights.astype(np.float32)


def _resize_pil(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    h, w = img.shape[:2]
    oh, ow = out_hw
    # horizontal pass then vertical, rounded to uint8 in between, as Pillow does for 8-bit images
    tmp = np.einsum("ow,hwc->hoc", _pil_weights(w, ow), img.astype(np.float32), optimize=True)
    tmp = np.clip(np.rint(tmp), 0, 255)
    out = np.einsum("oh,hwc->owc", _pil_weights(h, oh), tmp, optimize=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


_CV2_FLAGS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def check_color(color: str) -> str:
    """'bgr' or 'rgb' (any case), else a ValueError saying which library gives which."""
    if isinstance(color, str) and color.lower() in COLORS:
        return color.lower()
    raise ValueError(f"color must be 'bgr' (OpenCV: cv2.imread, cv2.VideoCapture; the default) or 'rgb' "
                     f"(PIL, imageio, most video decoders), got {color!r}")


def to_bgr(batch: np.ndarray, color: str) -> np.ndarray:
    """(N,H,W,3) uint8 in ``color`` order -> contiguous BGR (what a fused-preprocessing graph takes)."""
    return batch if check_color(color) == "bgr" else np.ascontiguousarray(batch[..., ::-1])


def resize(img: np.ndarray, out_hw: tuple[int, int], interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """Resize one HxWx3 uint8 crop to ``out_hw`` = (H, W)."""
    if img.shape[0] == out_hw[0] and img.shape[1] == out_hw[1]:
        return np.ascontiguousarray(img)
    if interpolation == "pil":
        return _resize_pil(img, out_hw)
    try:
        flag = _CV2_FLAGS[interpolation]
    except KeyError:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}") from None
    return cv2.resize(np.ascontiguousarray(img), (out_hw[1], out_hw[0]), interpolation=flag)


def resize_batch(crops: Sequence[np.ndarray], out_hw: tuple[int, int],
                 interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """Resize validated HxWx3 uint8 crops into one (N, H, W, 3) uint8 array."""
    out = np.empty((len(crops), out_hw[0], out_hw[1], 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        out[i] = resize(crop, out_hw, interpolation)
    return out


LAYOUTS = ("NCHW", "NHWC")


class Normalizer:
    """(N,H,W,3) uint8 BGR (or RGB with ``color="rgb"``) -> (N,3,H,W) float32 RGB, scaled and
    ImageNet-normalised; ``layout="NHWC"`` keeps channels last (LiteRT's input).

    One fused multiply-add per channel: x * 1/(255*std) - mean/std, written straight into
    the output (no intermediate float copies of the batch).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 color: str = "bgr", layout: str = "NCHW") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        # output channel c (RGB) comes from input plane 2 - c for BGR input, plane c for RGB input
        self._planes = (2, 1, 0) if check_color(color) == "bgr" else (0, 1, 2)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._scale = np.array([1.0 / (255.0 * s) for s in self.std], dtype=np.float32)
        self._bias = np.array([-m / s for m, s in zip(self.mean, self.std)], dtype=np.float32)

    @lru_cache(maxsize=8)
    def _tiled(self, pixels: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and bias repeated for ``pixels`` RGB pixels (the NHWC path's flat multiply-add)."""
        return np.tile(self._scale, pixels), np.tile(self._bias, pixels)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        if self.layout == "NHWC":
            # channels stay last. Per image: cv2's channel swap, then one flat multiply-add against
            # scale/bias tiled to the image (12 us for 128x64 where a broadcast over a strided
            # (..., ::-1) view took 100 us: numpy's per-pixel 3-element inner loop is the cost)
            out = np.empty((n, h, w, 3), dtype=np.float32)
            scale, bias = self._tiled(h * w)
            flat = out.reshape(n, -1)
            for i in range(n):
                rgb = cv2.cvtColor(batch[i], cv2.COLOR_BGR2RGB) if self._planes[0] == 2 else batch[i]
                np.multiply(rgb.reshape(-1), scale, out=flat[i], dtype=np.float32)
                np.add(flat[i], bias, out=flat[i])
            return out
        out = np.empty((n, 3, h, w), dtype=np.float32)
        for i in range(n):
            # cv2.split gives contiguous planes: ~2x faster than strided channel views
            planes = cv2.split(batch[i])
            for c, plane in enumerate(self._planes):
                np.multiply(planes[plane], self._scale[c], out=out[i, c], dtype=np.float32)
                out[i, c] += self._bias[c]
        return out


def preprocess(crops: Sequence[np.ndarray], out_hw: tuple[int, int],
               interpolation: str = DEFAULT_INTERPOLATION, color: str = "bgr") -> np.ndarray:
    """Crops (uint8, BGR or ``color="rgb"``) -> model input (N,3,H,W) float32, exactly as the Extractor does."""
    return Normalizer(color=color)(resize_batch(crops, out_hw, interpolation))


def read_image(path: str) -> np.ndarray | None:
    """Read an image file as HxWx3 uint8 BGR; None if unreadable or corrupt."""
    data = np.fromfile(path, dtype=np.uint8) if path else None
    if data is None or data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None
