"""Augmented views for adaptation, rendered consistently at any resolution (numpy + opencv).

A view is a geometric transform (horizontal flip, a crop rectangle in normalised source
coordinates) plus an optional erased rectangle in normalised output coordinates. The same
view is rendered *from the original crop* at the teacher's input size (e.g. 256x128) and at
the student's (e.g. 128x64), so both networks see exactly the same content and the student
sees what the Extractor would feed it on the device (one bilinear resize from the original,
no intermediate high-resolution copy). Views are a pure function of (seed, view-set index),
so teacher embeddings can be computed once per view and re-used, and a resumed run sees the
same views as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..preprocess import IMAGENET_MEAN, resize

try:
    import cv2
except ImportError as exc:  # pragma: no cover - opencv is a base requirement
    raise ImportError("osnet_edge needs opencv: pip install opencv-python-headless") from exc

# Erased pixels get the ImageNet mean colour (BGR uint8): zero after normalisation.
ERASE_FILL_BGR = tuple(int(round(255 * m)) for m in reversed(IMAGENET_MEAN))


@dataclass(frozen=True)
class Augmentation:
    """The paper's training augmentation (torchreid defaults), as probabilities and ranges.

    ``crop_scale``: a cropped view shows 1/s of the width and height, s ~ U(1, crop_scale),
    at a uniform random offset (torchreid: enlarge by 1.125, crop back to size).
    ``erase_area`` / ``erase_aspect``: random erasing's area fraction and aspect ranges.
    """
    flip_p: float = 0.5
    crop_p: float = 0.5
    crop_scale: float = 1.125
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_aspect: tuple[float, float] = (0.3, 3.33)

    def __post_init__(self) -> None:
        for name in ("flip_p", "crop_p", "erase_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if self.crop_scale < 1.0:
            raise ValueError(f"crop_scale must be >= 1, got {self.crop_scale}")
        lo, hi = self.erase_area
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"erase_area must satisfy 0 < lo <= hi < 1, got {self.erase_area}")
        lo, hi = self.erase_aspect
        if not 0.0 < lo <= hi:
            raise ValueError(f"erase_aspect must satisfy 0 < lo <= hi, got {self.erase_aspect}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


NO_AUGMENTATION = Augmentation(flip_p=0.0, crop_p=0.0, erase_p=0.0)


@dataclass(frozen=True)
class ViewSet:
    """One view per image: ``flip`` (N,), ``rect`` (N,4) source x0,y0,x1,y1 in [0,1],
    ``erase`` (N,4) output x0,y0,x1,y1 in [0,1] or NaN for no erasing."""
    flip: np.ndarray
    rect: np.ndarray
    erase: np.ndarray

    def __len__(self) -> int:
        return len(self.flip)


def sample_views(n: int, aug: Augmentation, seed: Sequence[int] | int) -> ViewSet:
    """``n`` random views drawn from ``np.random.default_rng(seed)`` (reproducible)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    flip = rng.random(n) < aug.flip_p
    rect = np.tile(np.array([0.0, 0.0, 1.0, 1.0]), (n, 1))
    crop = rng.random(n) < aug.crop_p
    scale = rng.uniform(1.0, aug.crop_scale, n)
    offset = rng.random((n, 2))
    frac = 1.0 / scale
    x0 = offset[:, 0] * (1.0 - frac)
    y0 = offset[:, 1] * (1.0 - frac)
    rect[crop] = np.stack([x0, y0, x0 + frac, y0 + frac], axis=1)[crop]
    erase = np.full((n, 4), np.nan)
    do_erase = rng.random(n) < aug.erase_p
    area = rng.uniform(*aug.erase_area, n)
    aspect = np.exp(rng.uniform(np.log(aug.erase_aspect[0]), np.log(aug.erase_aspect[1]), n))
    # area and aspect are relative to the output; torchreid retries until the box fits, here it is clipped
    eh = np.clip(np.sqrt(area * aspect), 0.0, 1.0)
    ew = np.clip(np.sqrt(area / aspect), 0.0, 1.0)
    pos = rng.random((n, 2))
    ex0 = pos[:, 0] * (1.0 - ew)
    ey0 = pos[:, 1] * (1.0 - eh)
    erase[do_erase] = np.stack([ex0, ey0, ex0 + ew, ey0 + eh], axis=1)[do_erase]
    return ViewSet(flip, rect, erase)


def clean_views(n: int) -> ViewSet:
    """``n`` identity views: what the Extractor sees on the device."""
    return ViewSet(np.zeros(n, bool), np.tile(np.array([0.0, 0.0, 1.0, 1.0]), (n, 1)), np.full((n, 4), np.nan))


def render(img: np.ndarray, flip: bool, rect: np.ndarray, erase: np.ndarray,
           out_hw: tuple[int, int]) -> np.ndarray:
    """Render one view of ``img`` (HxWx3 uint8 BGR) at ``out_hw`` = (H, W).

    The full-image rectangle uses the Extractor's own resize (cv2 INTER_LINEAR), so clean
    views are bit-identical to deployment input; crops use the same bilinear mapping through
    ``cv2.warpAffine`` (half-pixel centres, 1/32-pixel sub-sample precision).
    """
    oh, ow = out_hw
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in rect)
    if x0 == 0.0 and y0 == 0.0 and x1 == 1.0 and y1 == 1.0:
        out = resize(img, out_hw)
        if flip:
            out = out[:, ::-1]
    else:
        sx = (x1 - x0) * w / ow
        sy = (y1 - y0) * h / oh
        # output pixel centre (x + 0.5) -> source pixel centre, minus 0.5 for pixel indices
        tx = x0 * w + 0.5 * sx - 0.5
        ty = y0 * h + 0.5 * sy - 0.5
        if flip:  # output column x takes the source column of ow - 1 - x
            m = np.array([[-sx, 0.0, tx + (ow - 1) * sx], [0.0, sy, ty]])
        else:
            m = np.array([[sx, 0.0, tx], [0.0, sy, ty]])
        out = cv2.warpAffine(np.ascontiguousarray(img), m, (ow, oh),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    if not np.isnan(erase[0]):
        out = np.array(out)  # writable copy
        out[_erased_pixels(erase, oh, ow)] = ERASE_FILL_BGR
    return np.ascontiguousarray(out)


def _erased_pixels(erase: np.ndarray, oh: int, ow: int) -> tuple[slice, slice]:
    """Rows and columns of an (oh, ow) image that the normalised rectangle ``erase`` covers (>= 1 pixel)."""
    ex0, ey0, ex1, ey1 = (float(v) for v in erase)
    c0, c1 = int(round(ex0 * ow)), max(int(round(ex1 * ow)), int(round(ex0 * ow)) + 1)
    r0, r1 = int(round(ey0 * oh)), max(int(round(ey1 * oh)), int(round(ey0 * oh)) + 1)
    return slice(r0, r1), slice(c0, c1)


def render_batch(images: Sequence[np.ndarray], views: ViewSet, indices: Sequence[int],
                 out_hw: tuple[int, int]) -> np.ndarray:
    """Views ``indices`` of ``images`` at ``out_hw`` -> (N, H, W, 3) uint8 BGR."""
    out = np.empty((len(indices), out_hw[0], out_hw[1], 3), dtype=np.uint8)
    for j, i in enumerate(indices):
        out[j] = render(images[i], bool(views.flip[i]), views.rect[i], views.erase[i], out_hw)
    return out


def erase_batch(batch: np.ndarray, erase: np.ndarray) -> np.ndarray:
    """A copy of ``batch`` (N, H, W, 3) uint8 with row i's rectangle ``erase[i]`` (normalised x0, y0,
    x1, y1; NaN = none) filled like :func:`render` fills it: random erasing on cached student views."""
    if len(erase) != len(batch):
        raise ValueError(f"{len(erase)} erase rectangles for {len(batch)} images")
    out = np.array(batch)
    oh, ow = batch.shape[1:3]
    for i in np.nonzero(~np.isnan(erase[:, 0]))[0]:
        rows, cols = _erased_pixels(erase[i], oh, ow)
        out[i, rows, cols] = ERASE_FILL_BGR
    return out
