"""What a newcomer hit (House issue, item 6 b/f): ``osnet-edge profile BUNDLE`` on a camera without torch,
help and hints that name the ``osnet-edge`` command, the format error's advice, LiteRT's log line, and
manifests that carry no host paths (while the torch reference still finds the checkpoint)."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="exporting the bundles needs torch (osnet_edge[export])")
pytest.importorskip("onnxruntime", reason="needs onnxruntime (osnet_edge[onnxruntime])")
pytest.importorskip("openvino", reason="the torch-free child imports every device module (osnet_edge[openvino])")

from osnet_edge.bundle import BundleError, load_bundle  # noqa: E402
from osnet_edge.cli.common import CliError  # noqa: E402
from tests.test_torch_free import no_torch_env  # noqa: E402,F401  (the fixture: a child where torch fails)

REPO = Path(__file__).resolve().parents[1]
FAST = ["--budget-s", "0", "--warmup", "1", "--min-iters", "2", "--max-iters", "3", "--threads", "1"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from osnet_edge.export import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(tmp_path_factory.mktemp("newcomer") / "ort", width=0.25, res=0.25,
                             target="onnxruntime").path


def _profile(args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "osnet_edge", "profile", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_profile_times_given_bundles_without_torch(bundle, no_torch_env, tmp_path):
    env, log = no_torch_env
    twin = tmp_path / "twin"  # the same configuration in another folder: its own rows, not a replacement
    shutil.copytree(bundle, twin)
    rows_path = tmp_path / "rows.json"
    log.write_text("")
    res = _profile([str(bundle), str(twin), "--batch", "1", "2", "--json", str(rows_path), *FAST], env, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert log.read_text().count("attempt") == 0, "profiling a bundle tried to import torch"
    rows = json.loads(rows_path.read_text())
    assert len(rows) == 2 * 2 * 2  # bundles x batches x modes
    assert {r["bundle"] for r in rows} == {str(bundle.resolve()), str(twin.resolve())}
    assert {(r["batch"], r["mode"]) for r in rows} == {(b, m) for b in (1, 2) for m in ("extractor", "runtime")}
    assert all(r["runtime"] == "onnxruntime" and r["precision"] == "fp32" and r["latency_ms_p50"] > 0
               and r["width"] == 0.25 and r["res"] == 0.25 for r in rows)
    assert "x0.25@0.25" in res.stdout

    again = _profile([str(bundle), "--batch", "1", "--json", str(rows_path), *FAST], env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(rows_path.read_text())
    assert resumed == rows, "rows already measured for this bundle folder were measured again"


def test_grid_without_torch_points_at_bundle_paths(no_torch_env, tmp_path):
    """The newcomer's dead end: a grid on a torch-free camera cannot export; the error says what to run."""
    env, _ = no_torch_env
    res = _profile(["--width", "0.25", "--res", "0.25", "--weights", "none", "--work", str(tmp_path), *FAST],
                   env, tmp_path)
    assert res.returncode == 1
    assert "osnet-edge profile BUNDLE" in res.stdout + res.stderr
    assert "no configuration could be measured" in res.stderr


def test_profile_reports_what_it_could_not_time(bundle, tmp_path):
    from osnet_edge.profiler import profile_bundles
    from osnet_edge.samples import synthetic_crops

    result = profile_bundles([bundle, tmp_path / "missing"], synthetic_crops(4), threads=1, modes=("runtime",))
    assert [r["bundle"] for r in result.rows] == [str(bundle.resolve())]
    assert len(result.skipped) == 1 and "osnet-edge export" in result.skipped[0]["reason"]
    missing = _profile([str(tmp_path / "missing"), *FAST])
    assert missing.returncode == 1 and "no configuration could be measured" in missing.stderr


@pytest.mark.parametrize("flags, named", [(["--width", "0.5"], "--width"), (["--precision", "int8"], "--precision"),
                                          (["--no-latency"], "--no-latency"),
                                          (["--runtime", "onnxruntime", "openvino"], "one runtime")])
def test_profile_refuses_grid_flags_with_bundles(bundle, flags, named):
    from osnet_edge.cli.profile import main

    with pytest.raises(CliError, match=re.escape(named)):
        main([str(bundle), *flags])


def test_grid_defaults_still_apply_without_bundles():
    from osnet_edge.cli.profile import parse_args

    args = parse_args(["--width", "0.25"])
    assert args.bundles == [] and args.runtime == ["onnxruntime"] and args.precision == ["fp32"]
    assert args.res == [1.0, 0.75, 0.5, 0.25] and args.variant == ["osnet"] and args.work.endswith("profile")


def test_help_names_every_device_runtime():
    from osnet_edge import runtimes
    from osnet_edge.cli import RUNTIME_TITLES, help_text

    text = " ".join(help_text().split())
    assert "LiteRT" in text and "ONNX Runtime" in text
    for name in runtimes.DEVICE_RUNTIMES:
        assert RUNTIME_TITLES.get(name, name) in text, name


# The commands `osnet-edge` has: a message that points a user at one says `osnet-edge NAME`, since cameras
# and pip installs have no scripts/ (checkout-only scripts such as scripts/bench/*.py may still be named).
CONSOLE_SCRIPTS = r"scripts/(export|adapt|evaluate|profile|report|info|build_engine|int8_fidelity)\.py"


def _message_strings(path: Path):
    """String literals of a module that are not docstrings (what users may see)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_messages_name_the_console_command_not_checkout_scripts():
    offenders = []
    for folder in ("osnet_edge", "runtimes", "quantize", "calibration"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for line, text in _message_strings(path):
                if re.search(CONSOLE_SCRIPTS, text):
                    offenders.append(f"{path.relative_to(REPO)}:{line}: {text[:80]!r}")
    assert not offenders, "say `osnet-edge COMMAND` instead:\n" + "\n".join(offenders)


def _with_format_version(bundle: Path, tmp_path: Path, version) -> Path:
    copy = tmp_path / f"v{version}"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = version
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_format_errors_say_where_to_act(bundle, tmp_path):
    with pytest.raises(BundleError, match=r"newer osnet_edge.*upgrade osnet_edge on this device.*on the host"):
        load_bundle(_with_format_version(bundle, tmp_path, 99))
    with pytest.raises(BundleError, match=r"Re-export the bundle on the host with osnet_edge .*osnet-edge export"):
        load_bundle(_with_format_version(bundle, tmp_path, 0))
    with pytest.raises(BundleError, match=r"written by osnet-edge export"):
        load_bundle(tmp_path / "nothing_here")


def test_manifest_records_portable_sources_and_the_reference_still_finds_them(tmp_path):
    """No absolute host path in the manifest; the torch reference finds the checkpoint from the bundle's
    relative path, and from a copy beside the bundle once the two moved together."""
    import torch

    from osnet_edge.export import export_bundle
    from osnet_edge.extractor import Extractor
    from osnet_edge.models import random_model
    from osnet_edge.runtimes.base import RuntimeFailure
    from osnet_edge.runtimes.torch import TorchRuntime
    from osnet_edge.samples import synthetic_crops
    from osnet_edge.verify import reference_check

    checkpoint = tmp_path / "weights" / "osnet_x0_25_test.pth"
    checkpoint.parent.mkdir()
    torch.save(random_model(0.25, "osnet", 7).state_dict(), checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export_bundle(tmp_path / "host" / "bundle", width=0.25, res=0.25, weights=checkpoint).path
    text = (out / "manifest.json").read_text()
    assert str(tmp_path) not in text, "the manifest records a host path"
    weights = json.loads(text)["weights"]
    assert weights["source"] == checkpoint.name and weights["relative_path"] == "../../weights/osnet_x0_25_test.pth"
    crops = synthetic_crops(4, seed=2)
    with Extractor(out, threads=1) as ext:
        assert reference_check(ext, crops)["cosine_min"] > 0.9999

    moved = tmp_path / "camera" / "bundles" / "bundle"  # elsewhere, the relative path no longer leads to the checkpoint
    shutil.copytree(out, moved)
    with pytest.raises(RuntimeFailure, match=r"osnet_x0_25_test\.pth.*not found"):
        TorchRuntime(load_bundle(moved))
    shutil.copy(checkpoint, moved.parent / checkpoint.name)  # ... until it travels beside the bundle
    with Extractor(moved, threads=1) as ext:
        assert reference_check(ext, crops)["cosine_min"] > 0.9999


def test_old_absolute_weights_source_still_loads(tmp_path):
    """Bundles written before sources were portable record the checkpoint's absolute path: still found."""
    from osnet_edge.provenance import locate

    checkpoint = tmp_path / "w.pth"
    checkpoint.write_bytes(b"weights")
    import hashlib

    record = {"source": str(checkpoint), "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert locate(record, tmp_path / "elsewhere") == checkpoint.resolve()
    assert locate({**record, "sha256": "0" * 64}, tmp_path / "elsewhere") is None  # changed since export


LITERT_CHILD = """
import os, sys
from osnet_edge.runtimes.litert import LiteRtRuntime
rt = LiteRtRuntime.from_file(sys.argv[1], threads=1)
os.write(2, b"stderr still works\\n")
"""


def test_litert_load_prints_nothing(tmp_path):
    """TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." stays out of the application's stderr."""
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (osnet_edge[litert])")
    pytest.importorskip("litert_torch", reason="making a .tflite needs litert-torch (osnet_edge[litert-export])")
    import torch

    from osnet_edge.export.tflite import convert_in_subprocess

    model = tmp_path / "tiny.tflite"
    convert_in_subprocess(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval(),
                          torch.zeros(1, 3, 16, 8), model)
    res = subprocess.run([sys.executable, "-c", LITERT_CHILD, str(model)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "XNNPACK" not in res.stderr and "INFO" not in res.stderr
    assert "stderr still works" in res.stderr


@pytest.mark.parametrize("flags, named", [(["--device", "tpu"], "--device"), (["--distill-steps", "-1"], "--distill-steps")])
def test_export_refuses_bad_qad_flags_before_any_work(flags, named):
    """--device / --distill-steps reach quantization-aware distillation; bad values stop at the flags."""
    from osnet_edge.cli.export import main

    with pytest.raises(CliError, match=re.escape(named)):
        main(["--width", "0.25", "--res", "0.5", "--out", "/nonexistent/never_written", *flags])


def test_export_passes_qad_flags_to_the_quantizer(x025_checkpoint, shared_data, tmp_path):
    """A real INT8 export (x0.25 Market weights, 64x32, 12 train crops): --device and --distill-steps
    are what the bundle's distillation record says ran."""
    from osnet_edge.cli.export import main

    calib = tmp_path / "crops"
    calib.mkdir()
    for f in sorted((shared_data / "market1501" / "bounding_box_train").glob("*.jpg"))[:12]:
        shutil.copy(f, calib / f.name)
    out = tmp_path / "b"
    assert main(["--width", "0.25", "--res", "0.25", "--weights", str(x025_checkpoint), "--precision", "int8",
                 "--calib", str(calib), "--calib-size", "12", "--device", "cpu", "--distill-steps", "2",
                 "--no-verify", "--out", str(out)]) == 0
    quantization = json.loads((out / "manifest.json").read_text())["quantization"]
    assert quantization["distillation"]["device"] == "cpu" and quantization["distillation"]["steps"] == 2
    assert "target_cosine_mean" not in quantization["fidelity"]  # not adapted: no default mixed precision
