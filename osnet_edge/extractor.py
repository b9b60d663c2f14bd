"""Extractor: person crops in, L2-normalised embeddings out, on any runtime, without torch.

Input validation is strict on purpose: camera firmware must get a clear error for a
malformed crop, never an exception from deep inside a runtime nor silently wrong output.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import numpy as np

from .bundle import Bundle, BundleError, load_bundle
from .preprocess import INTERPOLATIONS, Normalizer, check_color, resize, to_bgr
from .runtimes.base import RuntimeFailure

_GRAY_HINT = "convert with cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)"
_BGRA_HINT = "convert with cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)"
_PIL_HINT = ("convert it to a numpy array first: np.asarray(img.convert(\"RGB\")) with Extractor(..., color=\"rgb\"), "
             "or cv2.cvtColor(np.asarray(img.convert(\"RGB\")), cv2.COLOR_RGB2BGR) for the default color=\"bgr\"")
# A crop smaller than this (pixels, either side, after clipping to the frame) carries no identity:
# it is a detector artefact or a box in the wrong units, so from_frame refuses it.
MIN_CROP_SIDE = 4


def _describe(a: np.ndarray) -> str:
    return f"array of shape {a.shape} and dtype {a.dtype}"


def _is_pil_image(x: Any) -> bool:
    """A PIL/Pillow image, recognised without importing PIL (the device side does not need it)."""
    return type(x).__module__.startswith("PIL.")


def _float_hint(a: np.ndarray) -> str:
    """The conversion that keeps the image: [0, 1] floats are scaled, 0-255 floats clipped."""
    finite = a[np.isfinite(a)] if a.size else a
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        return "values are in [0, 1]: convert with (np.clip(x, 0, 1) * 255).round().astype(np.uint8)"
    return "convert explicitly, e.g. np.clip(x, 0, 255).astype(np.uint8)"


def _check_dtype(a: np.ndarray, where: str) -> None:
    if a.dtype != np.uint8:
        extra, hint = "", "convert explicitly, e.g. np.clip(x, 0, 255).astype(np.uint8)"
        if a.dtype.kind == "f":
            if a.size and not np.isfinite(a).all():
                extra = ", containing NaN/inf"
            hint = _float_hint(a)
        raise TypeError(f"{where}: expected dtype uint8 (BGR 0-255, as cv2.imread gives), got "
                        f"{a.dtype}{extra}; {hint}")


def _check_batch(batch: np.ndarray) -> list[np.ndarray]:
    """An (N,H,W,3) array, checked as a whole (its crops share shape and dtype; N may be 0)."""
    where = f"batch of shape {batch.shape}"
    if batch.shape[3] != 3 and batch.shape[1] == 3:
        hint = " (an already preprocessed tensor? pass raw uint8 BGR crops)" if batch.dtype.kind == "f" else ""
        raise ValueError(f"{where}: expected (N,H,W,3) channels-last BGR, got (N,3,H,W) channels-first{hint}; "
                         "use batch.transpose(0, 2, 3, 1)")
    _check_dtype(batch, where)
    if batch.shape[3] != 3:
        hint = _BGRA_HINT if batch.shape[3] == 4 else _GRAY_HINT if batch.shape[3] == 1 else ""
        raise ValueError(f"{where}: expected 3 channels (BGR), got {batch.shape[3]}" + (f"; {hint}" if hint else ""))
    if len(batch) and (batch.shape[1] == 0 or batch.shape[2] == 0):  # no crops at all is an empty input, not an error
        raise ValueError(f"{where}: empty crops (zero height or width)")
    return list(batch)


def _check_crop(crop: Any, index: int | None, what: str = "crop") -> np.ndarray:
    where = what if index is None else f"{what} {index}"
    if _is_pil_image(crop):
        raise TypeError(f"{where}: expected a numpy array HxWx3 uint8, got a PIL image "
                        f"({type(crop).__module__}.{type(crop).__name__}); {_PIL_HINT}")
    if not isinstance(crop, np.ndarray):
        raise TypeError(f"{where}: expected a numpy array HxWx3 uint8 BGR, got {type(crop).__name__}")
    _check_dtype(crop, where)
    if crop.ndim == 2:
        raise ValueError(f"{where}: expected HxWx3 BGR, got a 2-D {crop.shape} grayscale image; {_GRAY_HINT}")
    if crop.ndim != 3:
        raise ValueError(f"{where}: expected HxWx3 BGR, got {_describe(crop)}")
    if crop.shape[2] != 3:
        if crop.shape[0] == 3 and crop.shape[2] not in (1, 4):
            raise ValueError(f"{where}: expected HxWx3 (channels last), got {crop.shape}: looks "
                             "channels-first (3xHxW); use img.transpose(1, 2, 0)")
        hint = _BGRA_HINT if crop.shape[2] == 4 else _GRAY_HINT if crop.shape[2] == 1 else ""
        raise ValueError(f"{where}: expected 3 channels (BGR), got {crop.shape[2]} in shape {crop.shape}"
                         + (f"; {hint}" if hint else ""))
    if crop.shape[0] == 0 or crop.shape[1] == 0:
        raise ValueError(f"{where}: empty crop of shape {crop.shape} (zero height or width)")
    return crop


def as_crop_list(crops: Any) -> list[np.ndarray]:
    """Normalise accepted inputs to a list of validated HxWx3 uint8 crops.

    Accepts one HxWx3 array, an (N,H,W,3) array, or a list/tuple of HxWx3 arrays.
    An empty list gives an empty result (documented: the Extractor returns (0, dim)).
    """
    if isinstance(crops, np.ndarray):
        if crops.ndim == 4:
            return _check_batch(crops)
        return [_check_crop(crops, None)]
    if isinstance(crops, (list, tuple)):
        return [_check_crop(c, i) for i, c in enumerate(crops)]
    if _is_pil_image(crops):
        return [_check_crop(crops, None)]  # raises, with the conversion to use
    raise TypeError(f"expected a HxWx3 uint8 array, an (N,H,W,3) array or a list of crops, "
                    f"got {type(crops).__name__}")


def clip_boxes(boxes: Any, frame_hw: tuple[int, int]) -> np.ndarray:
    """(N,4) xyxy pixel boxes -> integer boxes clipped to the frame; bad boxes name their index.

    Refused, because they would embed garbage silently: normalised boxes (every coordinate <= 1
    on a frame larger than 2x2, e.g. YOLO's), inverted or zero-area boxes, boxes outside the
    frame, and crops under MIN_CROP_SIDE pixels a side after clipping.
    """
    b = np.asarray(boxes)
    if b.dtype.kind not in "iuf" or b.dtype == np.bool_:
        raise TypeError(f"boxes: expected numbers (N,4) xyxy, got dtype {b.dtype}")
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N,4) xyxy, got {b.shape}")
    b = b.astype(np.float64)
    bad = ~np.isfinite(b).all(axis=1)
    if bad.any():
        raise ValueError(f"boxes: box {int(np.argmax(bad))} has NaN/inf coordinates: {b[bad][0].tolist()}")
    h, w = frame_hw
    if h > 2 and w > 2 and (b <= 1).all():
        where = "" if len(b) == 1 else f" in all {len(b)} boxes"
        raise ValueError(f"boxes: box 0 {b[0].tolist()} looks normalised (all coordinates <= 1{where}) but boxes are "
                         f"pixel xyxy: multiply x by the frame width and y by its height, e.g. "
                         f"boxes * [{w}, {h}, {w}, {h}] for this {w}x{h} frame")
    inverted = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if inverted.any():
        i = int(np.argmax(inverted))
        raise ValueError(f"boxes: box {i} {b[i].tolist()} is inverted or has zero area (need x2 > x1, y2 > y1)")
    x1 = np.clip(np.floor(b[:, 0]), 0, w)
    y1 = np.clip(np.floor(b[:, 1]), 0, h)
    x2 = np.clip(np.ceil(b[:, 2]), 0, w)
    y2 = np.clip(np.ceil(b[:, 3]), 0, h)
    empty = (x2 <= x1) | (y2 <= y1)
    if empty.any():
        i = int(np.argmax(empty))
        raise ValueError(f"boxes: box {i} {b[i].tolist()} lies outside the {w}x{h} frame (zero area after clipping)")
    tiny = ((x2 - x1) < MIN_CROP_SIDE) | ((y2 - y1) < MIN_CROP_SIDE)
    if tiny.any():
        i = int(np.argmax(tiny))
        raise ValueError(f"boxes: box {i} {b[i].tolist()} gives a {int(x2[i] - x1[i])}x{int(y2[i] - y1[i])} pixel crop "
                         f"after clipping to the {w}x{h} frame; crops need at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE} "
                         "pixels (boxes are pixel xyxy; drop detections this small)")
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)


class Extractor:
    """Embeds person crops with a bundle on one runtime: (N, dim) float32, rows L2-normalised.

    ``Extractor(bundle_dir, runtime=None, device=None, threads=None, batch_size=32, color="bgr")``;
    ``runtime`` defaults to the runtime the bundle was exported for; ``device=None`` is that
    runtime's natural device (CPU for ONNX Runtime / OpenVINO, the first GPU for TensorRT).
    ``color`` is the channel order of the crops this application passes: "bgr" (OpenCV, the
    default) or "rgb" (PIL, most other libraries); it is the caller's fact, not the bundle's.
    ``variant``: for a bundle carrying several variants (e.g. fp32 + int8), which to load: a name,
    None/"auto" (this machine's choice recorded by ``osnet-edge tune``, else the primary) or "tune"
    (time the variants at first load on this machine and record the choice; see osnet_edge.tuning).

    Thread safety: one Extractor may be shared between threads. Preprocessing runs in the
    caller's thread; the runtime call is serialised by a lock (runtimes' request objects are
    not all re-entrant), so results are identical to serial calls.

    Two input mistakes raise nothing, so check them once when wiring a camera:

    * **Channel order.** RGB crops (PIL, imageio, most decoders other than OpenCV) passed with the
      default ``color="bgr"`` give unit-norm, plausible-looking embeddings of the wrong input: on
      Market-1501 train crops their cosine to the right embeddings averaged 0.56 (x0.25 Market weights)
      and 0.69 / 0.64 (x0.25 / x0.5 MSMT17), and Market-1501 rank-1 fell from 91.5 to 57.8 % (mAP 77.4 to
      30.7 %; x0.25 Market weights, 256x128, ONNX Runtime). Pass ``color="rgb"``. Nothing checks this for you: the
      embeddings carry no reliable sign of it (which order gives the larger raw norm differs between
      checkpoints and crops), and colour statistics of the crops are a scene prior, not a check.
    * **Box format.** :meth:`from_frame` takes ``xyxy`` pixels. ``xywh`` boxes are refused only where
      they are inverted; a box near the top-left corner (x < w and y < h) is a valid ``xyxy`` box of
      the wrong region and embeds silently. Convert first: ``boxes[:, 2:] += boxes[:, :2]``.
    """

    def __init__(self, bundle: str | os.PathLike | Bundle, runtime: str | None = None, device: str | None = None,
                 threads: int | None = None, batch_size: int = 32, verify: bool = True, color: str = "bgr",
                 variant: str | None = None, **runtime_options) -> None:
        from . import runtimes
        from .tuning import choose_variant

        self.color = check_color(color)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if runtime is not None and runtime not in runtimes.names():
            raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(runtimes.names())}")
        loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=verify)
        # a bundle with several variants (e.g. fp32 + int8): this machine's tuned choice, else the primary
        self.variant = choose_variant(loaded, variant, runtime, threads, open_extractor=lambda b, name: Extractor(
            b, runtime=runtime, device=device, threads=threads, batch_size=batch_size, color=color, variant=name,
            **runtime_options))
        self.bundle = loaded.variant(self.variant)
        pre = self.bundle.manifest["preprocess"]
        self.interpolation = pre.get("interpolation", "pil")
        if self.interpolation not in INTERPOLATIONS:
            raise BundleError(f"bundle {self.bundle.path}: preprocess.interpolation must be one of "
                              f"{INTERPOLATIONS}, got {self.interpolation!r}")
        self._runtime = runtimes.create(self.bundle, runtime, device=device, threads=threads, **runtime_options)
        self._runtime_name = self._runtime.name  # still known (repr, messages) after close()
        self._threads = getattr(self._runtime, "threads", None)
        max_batch = self.bundle.max_batch
        self.batch_size = min(batch_size, max_batch) if max_batch else batch_size
        self.fused = self.bundle.fused_preprocess
        self._normalize = None if self.fused else Normalizer(pre["mean"], pre["std"], color=self.color,
                                                             layout="NHWC" if self.bundle.channels_last else "NCHW")
        self._lock = threading.Lock()

    # -- facts -------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        return self.bundle.input_size

    @property
    def dim(self) -> int:
        return self.bundle.embedding_dim

    @property
    def runtime(self) -> str:
        return self._runtime_name

    @property
    def precision(self) -> str:
        return self.bundle.precision

    @property
    def manifest(self) -> dict:
        return self.bundle.manifest

    @property
    def threads(self) -> int | None:
        """Inference threads the runtime actually uses (None where it does not say, e.g. a GPU)."""
        return self._threads

    # -- inference -----------------------------------------------------------------------
    def model_input(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Validated crops -> the runtime's input batch (what ``infer_raw`` takes)."""
        hw = self.input_size
        batch = np.empty((len(crops), hw[0], hw[1], 3), dtype=np.uint8)
        for i, crop in enumerate(crops):
            batch[i] = resize(crop, hw, self.interpolation)
        if self.fused:  # the graph takes BGR
            return to_bgr(batch, self.color)
        return self._normalize(batch)

    def infer_raw(self, batch: np.ndarray) -> np.ndarray:
        """Run the runtime on a prepared batch (no normalisation): for benchmarks and checks."""
        with self._lock:
            if self._runtime is None:
                raise RuntimeError("Extractor is closed")
            try:
                raw = self._runtime.infer(batch)
            except RuntimeFailure:
                raise
            except Exception as exc:  # a runtime's own exception types: one readable error
                detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                raise RuntimeFailure(f"{self.runtime} inference failed on a batch of shape {batch.shape} "
                                     f"{batch.dtype}: {detail or type(exc).__name__} (does manifest.json match "
                                     "the model? re-export the bundle)") from exc
        if raw.shape != (len(batch), self.dim):
            raise RuntimeFailure(f"{self.runtime} returned shape {raw.shape} for a batch of {len(batch)}; the "
                                 f"manifest says embedding_dim {self.dim} (re-export the bundle)")
        return raw

    def __call__(self, crops: Any) -> np.ndarray:
        crops = as_crop_list(crops)
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            raw = self.infer_raw(self.model_input(chunk))
            out[start:start + len(chunk)] = raw
        return l2_normalize(out)

    def from_frame(self, frame: Any, boxes: Any) -> np.ndarray:
        """Embed the ``boxes`` (N,4 **xyxy** pixels, clipped to the frame) of one HxWx3 uint8 frame in the
        Extractor's ``color`` order. xywh boxes with x < w and y < h pass as valid xyxy boxes: convert them."""
        frame = _check_crop(frame, None, what="frame")
        clipped = clip_boxes(boxes, frame.shape[:2])
        return self([frame[y1:y2, x1:x2] for x1, y1, x2, y2 in clipped])

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.bundle.manifest["model"]
        return (f"Extractor({m['variant']} x{m['width']} @ {self.input_size[0]}x{self.input_size[1]}, "
                f"{self.runtime}/{self.precision}, dim={self.dim})")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in place; an all-zero row stays zero (no NaN)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # ~6x faster than np.linalg.norm on small batches
    np.maximum(norms, eps, out=norms)
    x /= norms
    return x
