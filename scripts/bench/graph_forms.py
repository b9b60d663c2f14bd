#!/usr/bin/env python3
"""Benchmark: plain OSNet vs its stream-merged graph forms (osnet_edge.models.merged), per runtime.

Each form is exported to ONNX with osnet_edge.export.to_onnx (in a temporary directory), run
on ONNX Runtime (CPU, intra_op_num_threads = --threads) and on OpenVINO (the ONNX file compiled
for CPU with f32 precision, INFERENCE_NUM_THREADS = --threads, LATENCY hint and a static batch),
and the torch modules run eagerly. Contenders are timed interleaved, round-robin over --rounds
rounds, so that load from other processes hits all of them alike; the table gives the median
(p50) ms per batch and the speed-up over the plain graph on the same runtime, with the ONNX node
count and what ONNX Runtime's optimiser leaves of it (nodes, of which NCHWc layout reorders).
Every contender's embeddings are first checked against torch's plain model (cosine).

Timings from a shared or virtual machine are rough: compare forms within one run, not across runs.
"""
from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/, for _cli
from _cli import Parser, run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_X025 = os.path.join(REPO, "..", "shared", "data", "weights", "torchreid", "osnet_x0_25_market1501.pth")
RUNTIMES = ("onnxruntime", "openvino", "torch")


def ort_graph_counts(onnx_path: str, threads: int) -> tuple[int, int]:
    """(nodes, reorder nodes) of the graph ONNX Runtime actually runs after its optimisations."""
    import onnx
    import onnxruntime as ort

    opt = onnx_path + ".ort_opt.onnx"
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.optimized_model_filepath = opt
    ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    nodes = onnx.load(opt).graph.node
    os.remove(opt)
    return len(nodes), sum(n.op_type in ("ReorderInput", "ReorderOutput") for n in nodes)


def main(argv=None) -> int:
    p = Parser(description=__doc__)
    p.add_argument("--width", type=float, default=0.25, help="width multiplier (default 0.25)")
    p.add_argument("--res", type=float, default=0.5, help="resolution multiplier on 256x128 (default 0.5)")
    p.add_argument("--variant", default="osnet", choices=["osnet", "ibn", "ain"])
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes to time (default 1), e.g. 1 8")
    p.add_argument("--threads", type=int, default=1, help="threads for every runtime (default 1)")
    p.add_argument("--rounds", type=int, default=5, help="round-robin rounds (default 5)")
    p.add_argument("--seconds", type=float, default=0.4, help="time per contender per round (default 0.4)")
    p.add_argument("--forms", nargs="+", default=None, help="merged forms to compare (default: all)")
    p.add_argument("--absorb-sum", action="store_true",
                   help="merge with absorb_sum=True (conv3 sums the gated streams; 4x conv3 MACs, no Split/Add)")
    p.add_argument("--runtime", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    p.add_argument("--weights", default=None,
                   help="torchreid checkpoint (default: ../shared x0.25 Market-1501 at width 0.25 when present, "
                        "else random weights; weights only matter for speed through denormals)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or min(args.batch) < 1 or args.seconds <= 0:
        p.error("--threads, --rounds and --batch must be >= 1 and --seconds > 0")

    import numpy as np
    import onnx
    import torch

    from osnet_edge.export import to_onnx
    from osnet_edge.machine import machine_summary
    from osnet_edge.models import build_osnet, input_size, load_torchreid_weights
    from osnet_edge.models.merged import FORMS, merge_streams
    from osnet_edge.verify import time_call

    forms = args.forms or list(FORMS)
    bad = [f for f in forms if f not in FORMS]
    if bad:
        p.error(f"unknown form(s) {bad}; known: {', '.join(FORMS)}")
    torch.set_num_threads(args.threads)
    hw = input_size(args.res)
    model = build_osnet(args.width, args.variant)
    weights = args.weights or (DEFAULT_X025 if args.width == 0.25 and args.variant == "osnet"
                               and os.path.isfile(DEFAULT_X025) else None)
    if weights:
        load_torchreid_weights(model, weights)
    model.eval()
    modules = {"plain": model, **{f: merge_streams(model, f, absorb_sum=args.absorb_sum) for f in forms}}
    print(f"machine: {machine_summary()} | {args.threads} thread(s)")
    print(f"OSNet {args.variant} x{args.width} @ {hw[0]}x{hw[1]}, weights: {weights or 'random'}"
          f"{', absorb_sum' if args.absorb_sum else ''}; "
          f"{args.rounds} interleaved rounds of {args.seconds:g} s per contender")

    with tempfile.TemporaryDirectory(prefix="osnet_forms_") as tmp:
        paths, nodes, ort_nodes = {}, {}, {}
        for name, module in modules.items():
            paths[name] = str(to_onnx(module, os.path.join(tmp, f"{name}.onnx"), hw))
            nodes[name] = len(onnx.load(paths[name]).graph.node)
            if "onnxruntime" in args.runtime:
                ort_nodes[name] = ort_graph_counts(paths[name], args.threads)
        for batch in args.batch:
            x = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, 3, *hw)).astype(np.float32))
            with torch.inference_mode():
                ref = model(x).double()
            calls, cosines = {}, {}
            for name in modules:
                for rt in args.runtime:
                    fn = _runner(rt, modules[name], paths[name], x, args.threads)
                    out = torch.as_tensor(np.asarray(fn())).double()
                    cosines[(name, rt)] = float(torch.nn.functional.cosine_similarity(out, ref).min())
                    calls[(name, rt)] = fn
            samples = {k: [] for k in calls}
            for _ in range(args.rounds):
                for key, fn in calls.items():
                    samples[key].append(time_call(fn, warmup=3, min_time=args.seconds, min_iters=5))
            p50 = {k: float(np.median(np.concatenate(v))) for k, v in samples.items()}
            _print_table(batch, modules, args.runtime, nodes, ort_nodes, p50, cosines)
    return 0


def _runner(rt: str, module, onnx_path: str, x, threads: int):
    """A zero-argument callable running one batch on ``rt``; returns the embeddings."""
    import numpy as np
    import torch

    xn = x.numpy()
    if rt == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"input": xn})[0]
    if rt == "openvino":
        import openvino as ov

        core = ov.Core()
        ov_model = core.read_model(onnx_path)
        ov_model.reshape({ov_model.inputs[0].get_any_name(): list(xn.shape)})  # static batch
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                        "INFERENCE_NUM_THREADS": threads,
                                                        "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda: np.array(request.infer({0: xn})[0])

    def eager():
        with torch.inference_mode():
            return module(x)
    return eager


def _print_table(batch, modules, runtimes, nodes, ort_nodes, p50, cosines) -> None:
    head = f"{'form':14s} {'ONNX nodes':>10s} {'ORT nodes (reorders)':>21s}"
    for rt in runtimes:
        head += f" | {rt + ' p50 ms':>17s} {'speed-up':>8s}"
    print(f"\nbatch {batch}\n{head}\n{'-' * len(head)}")
    for name in modules:
        n_ort = f"{ort_nodes[name][0]} ({ort_nodes[name][1]})" if name in ort_nodes else "-"
        line = f"{name:14s} {nodes[name]:>10d} {n_ort:>21s}"
        for rt in runtimes:
            line += f" | {p50[(name, rt)]:>17.3f} {p50[('plain', rt)] / p50[(name, rt)]:>7.2f}x"
        print(line)
    worst = min(cosines.values())
    print(f"min cosine to torch plain over all forms and runtimes: {worst:.9f}"
          + ("" if worst >= 0.999999 else "  <-- WARNING: a form disagrees with the plain model"))


if __name__ == "__main__":
    run(main)
