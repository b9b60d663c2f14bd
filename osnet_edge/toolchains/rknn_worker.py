"""rknn-toolkit2 worker: runs INSIDE the isolated rknn venv (``osnet-edge setup rknn``), never in ours.

It imports only the toolkit, numpy and the standard library (the toolkit pins numpy <= 1.26.4, onnx <= 1.18,
protobuf <= 4.25.4 and torch <= 2.4, which conflict with the host's packages), so the host drives it as a
subprocess with files and JSON:

    python rknn_worker.py JOB.json            one job: build [+ export .rknn] [+ simulate] [+ accuracy analysis]
    python rknn_worker.py --serve JOB.json    build, then answer simulate requests on stdin until EOF

A job's keys: onnx, input_name, input_size [H, W], platform, precision (int8 | fp16), mean_values /
std_values (0-255 scale, fused into the model: it takes uint8 RGB NHWC), quantized_algorithm, quantized_method,
quantized_dtype, optimization_level, dataset (an .npz whose ``crops`` are the uint8 RGB NHWC calibration crops),
fp16_layers (hybrid: layer names kept in float16), export (.rknn path), simulate {inputs, output} (.npy paths),
accuracy_analysis {inputs (.npy of crops), output_dir, count}, result (JSON path for what happened).

The x86 simulator refuses a model loaded from a .rknn file, so every simulation rebuilds from the ONNX in the
same process; a rebuild with the same dataset and settings gives the same .rknn bytes (the result's sha256).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time

# never import our own toolchains/rknn.py as the toolkit's ``rknn`` package (the host also runs us with -I)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

import numpy as np  # noqa: E402

PROTOCOL_FD = None  # the real stdout while serving; the toolkit's own prints go to stderr


def _fail(step: str, code) -> None:
    raise RuntimeError(f"rknn-toolkit2 {step} failed (returned {code}); its log above says why")


def _write_dataset(npz_path: str, folder: str) -> tuple[str, int]:
    """The toolkit's dataset file: one .npy path per line, each one uint8 RGB crop as (1, 3, H, W)."""
    crops = np.load(npz_path)["crops"]
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"dataset crops must be (N, H, W, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
    lines = []
    for i, crop in enumerate(crops):
        path = os.path.join(folder, f"crop_{i:05d}.npy")
        np.save(path, np.ascontiguousarray(crop.transpose(2, 0, 1)[None]))  # .npy inputs are taken as NCHW
        lines.append(path)
    listing = os.path.join(folder, "dataset.txt")
    with open(listing, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return listing, len(lines)


def _config(rknn, job: dict) -> None:
    options = dict(mean_values=[job["mean_values"]], std_values=[job["std_values"]],
                   target_platform=job["platform"], optimization_level=int(job.get("optimization_level", 3)))
    if job["precision"] == "int8":
        options.update(quantized_dtype=job.get("quantized_dtype", "w8a8"),
                       quantized_algorithm=job.get("quantized_algorithm", "normal"),
                       quantized_method=job.get("quantized_method", "channel"))
    code = rknn.config(**options)
    if code not in (0, None):
        _fail("config", code)


def _hybrid_build(rknn, job: dict, dataset: str, work: str):
    """hybrid_quantization_step1, the named layers set to float16 in its config, then step2 on a fresh RKNN
    object (step2 refuses one that loaded the ONNX); returns (that object, facts)."""
    here = os.getcwd()
    os.chdir(work)  # step1 writes its files into the current directory
    try:
        code = rknn.hybrid_quantization_step1(dataset=dataset, proposal=False)
        if code != 0:
            _fail("hybrid_quantization_step1", code)
        stem = os.path.splitext(os.path.basename(job["onnx"]))[0]
        cfg_path = os.path.join(work, f"{stem}.quantization.cfg")
        with open(cfg_path, encoding="utf-8") as fh:
            text = fh.read()
        known = set(re.findall(r"^    ([^\s:][^:]*):\s*$", text, flags=re.M))
        wanted = list(job["fp16_layers"])
        missing = [name for name in wanted if name not in known]
        if missing:
            raise ValueError(f"fp16_layers not in the model's quantization config: {missing[:5]}")
        entries = "".join(f"    {name}: float16\n" for name in wanted)
        text = re.sub(r"custom_quantize_layers:\s*\{\}\s*\n", f"custom_quantize_layers:\n{entries}", text, count=1)
        with open(cfg_path, "w", encoding="utf-8") as fh:
            fh.write(text)
        from rknn.api import RKNN

        rknn.release()
        rknn = RKNN(verbose=bool(job.get("verbose", False)))
        _config(rknn, job)
        code = rknn.hybrid_quantization_step2(model_input=f"{stem}.model", data_input=f"{stem}.data",
                                              model_quantization_cfg=cfg_path)
        if code != 0:
            _fail("hybrid_quantization_step2", code)
    finally:
        os.chdir(here)
    return rknn, {"fp16_layers": wanted}


def build(job: dict, work: str):
    """config + load_onnx (static batch 1) + build; returns (rknn, facts)."""
    from rknn.api import RKNN

    rknn = RKNN(verbose=bool(job.get("verbose", False)))
    _config(rknn, job)
    h, w = job["input_size"]
    # the toolkit copies and edits the ONNX next to it: give it its own copy in the work folder
    onnx_copy = os.path.join(work, os.path.basename(job["onnx"]))
    with open(job["onnx"], "rb") as src, open(onnx_copy, "wb") as dst:
        dst.write(src.read())
    code = rknn.load_onnx(model=onnx_copy, inputs=[job.get("input_name", "input")], input_size_list=[[1, 3, h, w]])
    if code != 0:
        _fail("load_onnx", code)
    facts: dict = {"toolkit_version": _toolkit_version()}
    start = time.perf_counter()
    if job["precision"] == "int8":
        dataset, facts["num_calibration_images"] = _write_dataset(job["dataset"], work)
        if job.get("fp16_layers"):
            rknn, hybrid = _hybrid_build(rknn, dict(job, onnx=onnx_copy), dataset, work)
            facts.update(hybrid)
        else:
            code = rknn.build(do_quantization=True, dataset=dataset)
            if code != 0:
                _fail("build", code)
    else:
        code = rknn.build(do_quantization=False)
        if code != 0:
            _fail("build", code)
    facts["build_seconds"] = round(time.perf_counter() - start, 1)
    return rknn, facts


def _toolkit_version() -> str:
    try:
        from importlib.metadata import version

        return version("rknn-toolkit2")
    except Exception:
        return "unknown"


def export(rknn, path: str) -> dict:
    code = rknn.export_rknn(path)
    if code != 0:
        _fail("export_rknn", code)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    return {"rknn_sha256": digest, "rknn_bytes": os.path.getsize(path)}


def simulate(rknn, crops: np.ndarray) -> np.ndarray:
    """Raw embeddings of uint8 RGB NHWC crops, one image per call (the model has a static batch of 1)."""
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"crops must be (N, H, W, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
    rows = []
    for crop in crops:
        out = rknn.inference(inputs=[np.ascontiguousarray(crop[None])], data_format="nhwc")
        if out is None:
            raise RuntimeError("rknn-toolkit2 simulator inference returned nothing; its log above says why")
        rows.append(np.asarray(out[0], np.float32).reshape(-1))
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def accuracy_analysis(rknn, spec: dict, work: str) -> dict:
    """Per-layer cosine of the quantized model vs float (the toolkit's simulator snapshot) on a few crops."""
    crops = np.load(spec["inputs"])[: int(spec.get("count", 1))]
    paths = []
    for i, crop in enumerate(crops):
        path = os.path.join(work, f"analysis_{i}.npy")
        np.save(path, np.ascontiguousarray(crop.transpose(2, 0, 1)[None]))  # .npy inputs are taken as NCHW
        paths.append(path)
    out_dir = spec["output_dir"]
    code = rknn.accuracy_analysis(inputs=paths, output_dir=out_dir)
    if code != 0:
        _fail("accuracy_analysis", code)
    return {"layers": parse_error_analysis(os.path.join(out_dir, "error_analysis.txt"))}


def parse_error_analysis(path: str) -> list[dict]:
    """Rows of the toolkit's error_analysis.txt: layer type, name, entire and single cosine / euclidean."""
    rows = []
    if not os.path.isfile(path):
        return rows
    number = r"([-+0-9.eE]+|nan|inf)"
    pattern = re.compile(rf"^\s*\[(\w+)\]\s+(\S+)\s+{number}\s*\|\s*{number}\s+{number}\s*\|\s*{number}")
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = pattern.match(line)
            if match:
                kind, name, cos_all, euc_all, cos_one, euc_one = match.groups()
                rows.append({"type": kind, "name": name, "entire_cosine": float(cos_all),
                             "entire_euclidean": float(euc_all), "single_cosine": float(cos_one),
                             "single_euclidean": float(euc_one)})
    return rows


def run_job(job: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="osnet_edge_rknn_") as work:
        rknn, facts = build(job, work)
        try:
            if job.get("export"):
                facts.update(export(rknn, job["export"]))
            if job.get("simulate") or job.get("accuracy_analysis"):
                code = rknn.init_runtime()
                if code != 0:
                    _fail("init_runtime (simulator)", code)
            if job.get("simulate"):
                spec = job["simulate"]
                start = time.perf_counter()
                emb = simulate(rknn, np.load(spec["inputs"]))
                facts["simulate_seconds"] = round(time.perf_counter() - start, 2)
                np.save(spec["output"], emb)
            if job.get("accuracy_analysis"):
                facts["accuracy_analysis"] = accuracy_analysis(rknn, job["accuracy_analysis"], work)
        finally:
            rknn.release()
    return facts


def serve(job: dict) -> None:
    """Build once, then answer one JSON line per request on stdin: {"inputs": npy, "output": npy}."""
    with tempfile.TemporaryDirectory(prefix="osnet_edge_rknn_sim_") as work:
        rknn, facts = build(job, work)
        if job.get("export"):
            facts.update(export(rknn, job["export"]))
        code = rknn.init_runtime()
        if code != 0:
            _fail("init_runtime (simulator)", code)
        _reply({"ready": True, **facts})
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            try:
                np.save(request["output"], simulate(rknn, np.load(request["inputs"])))
                _reply({"ok": True})
            except Exception as exc:  # a bad request must not kill the simulator
                _reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        rknn.release()


def _reply(message: dict) -> None:
    PROTOCOL_FD.write(json.dumps(message) + "\n")
    PROTOCOL_FD.flush()


def main(argv: list[str]) -> int:
    global PROTOCOL_FD
    serving = argv[:1] == ["--serve"]
    args = argv[1:] if serving else argv
    if len(args) != 1:
        print("usage: rknn_worker.py [--serve] JOB.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        job = json.load(fh)
    # the toolkit prints to stdout: keep the real stdout for our replies, send everything else to stderr
    PROTOCOL_FD = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        if serving:
            serve(job)
            return 0
        facts = run_job(job)
    except Exception as exc:
        message = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if job.get("result"):
            with open(job["result"], "w", encoding="utf-8") as fh:
                json.dump(message, fh)
        _reply(message)
        return 1
    if job.get("result"):
        with open(job["result"], "w", encoding="utf-8") as fh:
            json.dump({"ok": True, **facts}, fh, indent=2)
    _reply({"ok": True, **facts})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
