"""``osnet-edge info``: what a bundle is (model, weights, adaptation, precision, runtime, preprocessing,
INT8 calibration and fidelity, format) and whether every file still matches its sha256. Torch-free:
it runs on the camera, with nothing but numpy installed."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .common import CliError, Parser

EXAMPLES = """\
examples:
  # on the camera: is this the bundle I think it is, and is it intact?
  osnet-edge info bundles/osnet_x0_25_r0_5_onnxruntime_fp32
  # the same as JSON (the manifest plus the file checks), for provisioning scripts
  osnet-edge info /opt/models/reid --json
"""


def build_parser() -> Parser:
    what = ("model (variant, width, resolution, input size, params, mult-adds), weights (checkpoint and sha256, or "
            "RANDOM), adaptation, precision, runtime, preprocessing, INT8 calibration and fidelity, format and creation")
    p = Parser(command="info", description=f"Describe a bundle: {what}; and check every file against the sha256 in its "
               "manifest (OK / MISMATCH / MISSING; exit 1 if one does not match). Needs neither torch nor a runtime.",
               epilog=EXAMPLES)
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (written by osnet-edge export)")
    p.add_argument("--json", action="store_true", help="print JSON: path, verified, files (name, size, sha256, "
                   "status) and the whole manifest")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from osnet_edge.bundle import check_file, read_manifest

    args = build_parser().parse_args(argv)
    manifest = read_manifest(args.bundle)
    checks = [check_file(args.bundle, name, expected) for name, expected in manifest["files"].items()]
    bad = [c for c in checks if c.status != "OK"]
    if args.json:
        print(json.dumps({"path": str(Path(args.bundle)), "verified": not bad,
                          "files": [{"name": c.name, "size": c.size, "sha256": c.sha256, "status": c.status}
                                    for c in checks],
                          "manifest": manifest}, indent=2))
    else:
        print(describe(args.bundle, manifest, checks))
    if bad:
        raise CliError(f"bundle {args.bundle}: {len(bad)} of {len(checks)} file(s) do not match the manifest "
                       f"({', '.join(f'{c.name} {c.status}' for c in bad)}); it will not load: re-export it")
    return 0


def describe(path: str | os.PathLike, manifest: Mapping[str, Any], checks: Sequence[Any]) -> str:
    """The bundle in a few labelled lines, then one line per file with its check."""
    m = manifest
    lines = [f"bundle:        {path}",
             f"model:         {_model_line(m['model'])}",
             f"weights:       {_weights_line(m)}",
             f"adaptation:    {_adaptation_line(m.get('adaptation'))}",
             f"precision:     {m['precision']}",
             f"runtime:       {_runtime_line(m)}",
             f"preprocessing: {_preprocess_line(m['preprocess'])}"]
    if m.get("calibration") or m.get("quantization"):
        lines.append(f"int8:          {_int8_line(m.get('calibration'), m.get('quantization'))}")
    if m.get("variants"):
        lines += _variant_lines(path, m)
    versions = m.get("versions") or {}
    made_with = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    lines.append(f"format:        {m['format']} version {m['format_version']}, created {m.get('created', 'unknown')}"
                 + (f" ({made_with})" if made_with else ""))
    lines.append(f"files:         {sum(c.status == 'OK' for c in checks)} of {len(checks)} match their sha256")
    for c in checks:
        size = f"{c.size / 1e6:.2f} MB" if c.size is not None else "size ?"
        lines.append(f"  {c.status:<8}  {c.name}  ({size}, sha256 {c.sha256[:16]}...)")
    return "\n".join(lines)


def _variant_lines(path: str | os.PathLike, m: Mapping[str, Any]) -> list[str]:
    """The variants a bundle carries with their fidelity, and this machine's tuned choice (osnet-edge tune)."""
    from osnet_edge.bundle import Bundle
    from osnet_edge.tuning import records_here

    parts = [f"{m.get('variant', m['precision'])} (primary)"]
    for name, entry in m["variants"].items():
        fid = ((entry.get("quantization") or {}).get("fidelity")) or {}
        parts.append(f"{name} in {entry['path']}/" + (f" (cosine {fid['cosine_mean']:.4f} / p1 {fid['cosine_p1']:.4f})"
                                                      if fid else ""))
    records = records_here(Bundle(Path(path), dict(m)))
    tuned = "; ".join(f"{r['chosen']} ({r['machine']['runtime']} {r['machine']['runtime_version']}, threads "
                      f"{r['machine']['threads'] or 'auto'}, batch {r['batch']}, {r['created']})" for r in records) \
        or "not yet: run osnet-edge tune on this machine (until then the primary loads)"
    return [f"variants:      {', '.join(parts)}", f"tuned here:    {tuned}"]


def _model_line(model: Mapping[str, Any]) -> str:
    h, w = model["input_size"]
    parts = [f"{model.get('variant', 'osnet')} x{float(model['width']):g} @ res {float(model['res']):g}"
             if "width" in model and "res" in model else str(model.get("variant", "?")),
             f"input {h} x {w} (H x W)", f"{model['embedding_dim']}-d embedding"]
    if model.get("params"):
        parts.append(f"params {model['params'] / 1e6:.3f}M ({model['params']:,})")
    mult_adds = model.get("mult_adds", model.get("macs"))  # format 1 called it macs
    if mult_adds:
        parts.append(f"mult-adds {mult_adds / 1e6:.1f}M")
    return ", ".join(parts)


def _weights_line(m: Mapping[str, Any]) -> str:
    weights = m.get("weights")
    if weights:
        return f"{Path(weights['source']).name} (sha256 {weights['sha256']}; from {weights['source']})"
    if m.get("adaptation"):
        return "adapted (see adaptation)"
    seed = m.get("random_seed")
    return ("RANDOM" + (f" (seed {seed})" if seed is not None else "")
            + ": exported without --weights, its embeddings cannot re-identify anyone")


def _adaptation_line(record: Mapping[str, Any] | None) -> str:
    if not record:
        return "none"
    size = record.get("input_size")
    parts = [f"res {record.get('res')}" + (f" ({size[0]}x{size[1]})" if size else ""),
             f"{record.get('epochs')} epochs", f"{record.get('num_images')} crops"]
    if record.get("labels"):
        parts.append(f"{record.get('num_ids')} identities")
    if record.get("losses"):
        parts.append("losses " + ", ".join(f"{k}={v:g}" for k, v in record["losses"].items()))
    teacher = record.get("teacher") or {}
    if teacher:
        at = f" at res {teacher['res']:g}" if isinstance(teacher.get("res"), (int, float)) else ""
        parts.append(f"teacher {teacher.get('kind', '?')} {Path(str(teacher.get('source', '?'))).name}{at}")
    if record.get("data_sources"):
        parts.append("data " + ", ".join(record["data_sources"]))
    if record.get("data_hash"):
        parts.append(f"data hash {record['data_hash'][:12]}")
    return "; ".join(parts)


def _runtime_line(m: Mapping[str, Any]) -> str:
    build = m.get("build")
    if m["runtime"] == "litert":  # one .tflite, batch resized per call; what XNNPACK took of it
        line = f"litert ({(m.get('model') or {}).get('input_layout', 'NHWC')} input, batch resized per call)"
        xnn = (build or {}).get("xnnpack")
        if xnn:
            left = ", ".join(f"{k} x{v}" for k, v in xnn.get("undelegated_ops", {}).items())
            line += (f"; XNNPACK takes {xnn['delegated']} of {xnn['nodes']} ops in {xnn['partitions']} partition(s)"
                     + (f", left on reference kernels: {left}" if left else ""))
        return line
    if m["runtime"] == "rknn":  # compiled for one Rockchip SoC; verified in the x86 simulator
        from osnet_edge.runtimes.rknn import describe_build

        return describe_build(build or {})
    line = m["runtime"] + (f" (max batch {m['max_batch']})" if m.get("max_batch") else "")
    if build:  # TensorRT: the engine is built on the device from the ONNX
        line += (f"; engine built on the device (osnet-edge build-engine): batch {build.get('min_batch')}.."
                 f"{build.get('max_batch')}, opt {build.get('opt_batch')}"
                 + (", strongly typed" if build.get("strongly_typed") else ""))
    return line


def _preprocess_line(pre: Mapping[str, Any]) -> str:
    colour = pre.get("color", "BGR")
    interpolation = pre.get("interpolation", "linear")
    if pre.get("fused"):
        return (f"fused into the graph: it takes uint8 {colour} NHWC at the input size; the device only resizes "
                f"({interpolation})")
    return (f"on the device: {colour} uint8 crops resized ({interpolation}), to RGB, /255, mean {pre.get('mean')} "
            f"std {pre.get('std')}")


def _int8_line(calibration: Mapping[str, Any] | None, quantization: Mapping[str, Any] | None) -> str:
    parts = []
    if calibration:
        parts.append(f"calibrated on {calibration.get('num_images')} crops of {calibration.get('source')} "
                     f"({calibration.get('method') or 'default'} ranges)")
    fidelity = (quantization or {}).get("fidelity")
    if fidelity:
        parts.append(f"fidelity vs fp32 on {fidelity.get('num_images')} held-out crops: cosine mean "
                     f"{fidelity['cosine_mean']:.4f}, p1 {fidelity['cosine_p1']:.4f}")
    kept = (quantization or {}).get("kept_fp32")
    if kept:
        parts.append(f"{len(kept)} layer(s) kept in fp32")
    latency = (quantization or {}).get("latency")
    if latency and latency.get("speedup"):
        parts.append(f"speed-up at export {latency['speedup']:.2f}x vs fp32 ({latency.get('runtime')})")
    return "; ".join(parts) or "none recorded"
