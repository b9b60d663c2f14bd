"""The device check: what a camera does with a bundle, recorded for comparison across machines.

Runs unchanged on the x86 host (the reference) and inside the emulated aarch64 guest (scripts/aarch64.py),
where it imports only the installed osnet_edge wheel, numpy (+ opencv) and one runtime: never torch, never
this checkout. It does not start other programs (an emulated guest cannot exec aarch64 binaries), so
``osnet-edge info`` runs through the wheel's console-script entry point in this process.

  python scripts/aarch64_check.py --crops CROPS.npz --out DIR BUNDLE...

writes DIR/report.json (versions, machine, per bundle: runtime, precision, info text and JSON, the
bad-input errors), DIR/embeddings.npz (one (N, 512) array per bundle folder name) and DIR/inputs.npz
(the preprocessed model input per bundle) and DIR/resized.npz (the crops resized by every interpolation):
preprocessing is compared bit for bit.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import platform
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

# run as a file, this folder would lead sys.path: its scripts (profile.py, info.py) must not shadow modules
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# Inputs the Extractor must refuse with a clear TypeError/ValueError, the same message on every machine.
BAD_CROPS = {
    "float crop in [0, 1]": lambda: np.full((64, 32, 3), 0.5, np.float32),
    "float crop with NaN": lambda: np.full((64, 32, 3), np.nan, np.float64),
    "grayscale 2-D crop": lambda: np.zeros((64, 32), np.uint8),
    "BGRA crop": lambda: np.zeros((64, 32, 4), np.uint8),
    "channels-first crop": lambda: np.zeros((3, 64, 32), np.uint8),
    "empty crop": lambda: np.zeros((0, 32, 3), np.uint8),
    "list with a non-array": lambda: [np.zeros((64, 32, 3), np.uint8), "crop.jpg"],
    "channels-first batch": lambda: np.zeros((2, 3, 64, 32), np.float32),
    "not an image": lambda: {"crop": 1},
}
BAD_BOXES = {
    "normalised boxes": [[0.1, 0.1, 0.5, 0.9]],
    "inverted box": [[50, 10, 20, 90]],
    "box with NaN": [[0, 0, float("nan"), 10]],
    "box outside the frame": [[500, 500, 600, 600]],
    "tiny box": [[10, 10, 12, 12]],
    "boxes of the wrong shape": [[1, 2, 3]],
}
# Preprocessing on its own: every interpolation, up and down, on the check's crops and on varied-size ones.
RESIZE_TARGETS = ((256, 128), (64, 32))
BAD_OPTIONS = {"batch_size 0": {"batch_size": 0}, "unknown runtime": {"runtime": "tflite-gpu"},
               "color 'hsv'": {"color": "hsv"}}


def _error(call) -> dict | None:
    """The exception a call raises, as {type, message}; None where it (wrongly) succeeds."""
    try:
        call()
    except (TypeError, ValueError) as exc:
        return {"type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - recorded, and the comparison fails on it
        return {"type": type(exc).__name__, "message": str(exc), "unexpected": True}
    return None


def bad_input_errors(extractor, bundle: Path) -> dict:
    from osnet_edge import Extractor

    frame = np.zeros((240, 320, 3), np.uint8)
    errors = {name: _error(lambda make=make: extractor(make())) for name, make in BAD_CROPS.items()}
    errors.update({name: _error(lambda boxes=boxes: extractor.from_frame(frame, boxes))
                   for name, boxes in BAD_BOXES.items()})
    errors.update({name: _error(lambda options=options: Extractor(bundle, **options))
                   for name, options in BAD_OPTIONS.items()})
    return errors


def run_info(bundle: Path, *flags: str) -> dict:
    """``osnet-edge info BUNDLE`` through the installed console-script entry point, in this process."""
    (entry,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "osnet-edge"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = entry.load()(["info", str(bundle), *flags])
        except SystemExit as exc:
            code = exc.code
    return {"entry_point": entry.value, "exit_code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def versions() -> dict:
    import osnet_edge

    found = {}
    for dist in ("numpy", "opencv-python-headless", "onnxruntime", "ai-edge-litert", "openvino", "osnet_edge"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    cpu = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "machine": platform.machine(), "libc": " ".join(platform.libc_ver()), "distributions": found,
            "osnet_edge_file": osnet_edge.__file__,
            "cpu": next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                         if line.startswith(("CPU part", "model name"))), "?"),
            "cpu_features": next((line.split(":", 1)[1].split() for line in cpu.splitlines()
                                  if line.startswith(("Features", "flags"))), [])}


def resized_crops(crops: list) -> dict[str, np.ndarray]:
    """``crops`` + 4 synthetic varied-size ones resized to RESIZE_TARGETS by each interpolation (uint8)."""
    from osnet_edge.preprocess import INTERPOLATIONS, resize
    from osnet_edge.samples import synthetic_crops

    sources = list(crops) + synthetic_crops(4, seed=5)
    return {f"{interpolation} {h}x{w}": np.stack([resize(c, (h, w), interpolation) for c in sources])
            for interpolation in INTERPOLATIONS for h, w in RESIZE_TARGETS}


def check_bundle(bundle: Path, crops: list) -> tuple[dict, np.ndarray, np.ndarray]:
    from osnet_edge import Extractor

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weights / unadapted-resolution notices: expected in a check
        with Extractor(bundle, threads=1) as ext:
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            embeddings = ext(crops)
            embed_s = time.perf_counter() - t0
            model_input = ext.model_input(crops)
            single = ext(crops[0])
            facts = {"runtime": ext.runtime, "precision": ext.precision, "input_size": list(ext.input_size),
                     "dim": ext.dim, "threads": ext.threads, "bad_inputs": bad_input_errors(ext, bundle),
                     # one crop alone vs in the batch: kernels may differ by batch size (LiteRT on ARM ~1e-7)
                     "single_vs_batch_max_abs_diff": float(np.max(np.abs(single[0] - embeddings[0])))}
    facts.update(info=run_info(bundle), info_json=run_info(bundle, "--json"), load_s=round(load_s, 2),
                 embed_s=round(embed_s, 2), norms=[float(n) for n in np.linalg.norm(embeddings, axis=1)])
    return facts, embeddings, model_input


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path, help="bundle folders")
    p.add_argument("--crops", type=Path, required=True, help=".npz of HxWx3 uint8 BGR crops (sorted by key)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args(argv)
    with np.load(args.crops) as data:
        crops = [data[k] for k in sorted(data.files)]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"versions": versions(), "crops": len(crops), "bundles": {}}
    embeddings, inputs = {}, {}
    for bundle in args.bundles:
        report["bundles"][bundle.name], embeddings[bundle.name], inputs[bundle.name] = check_bundle(bundle, crops)
    # after the work: anything it imported counts (a runtime that pulled torch in would show here)
    report["torch"] = {"installed": importlib.util.find_spec("torch") is not None, "imported": "torch" in sys.modules}
    np.savez(args.out / "embeddings.npz", **embeddings)
    np.savez(args.out / "inputs.npz", **inputs)
    np.savez(args.out / "resized.npz", **resized_crops(crops))
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"machine": report["versions"]["machine"], "bundles": list(report["bundles"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
