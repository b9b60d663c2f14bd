"""Every script fails with one line on stderr and a non-zero exit: bad flags, missing files,
missing extras, bad checkpoints, an interrupted export. A traceback only with --debug.

Scripts run in subprocesses, as users run them. A missing extra is simulated by putting a
directory first on PYTHONPATH whose ``torch`` (``onnxruntime``, ...) package raises
ModuleNotFoundError on import, exactly what an environment without it does.

To cover a new script: it gets the generic checks (unknown flag, --help without extras, no
arguments without extras) as soon as it exists in scripts/; add its specific bad invocations
to CASES. Scripts still being written elsewhere are skipped with a reason.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import EXTRAS, assert_one_line_error, env_without, load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
# the product's scripts (DESIGN.md) plus whatever else is in scripts/
EXPECTED_SCRIPTS = ["export.py", "profile.py", "evaluate.py", "report.py", "build_engine.py", "soak.py"]
# aarch64_check.py is not a user command: scripts/aarch64.py runs it inside the emulated guest, with only the wheel
GUEST_PROGRAMS = {"aarch64_check.py"}
ALL_SCRIPTS = sorted(set(EXPECTED_SCRIPTS) | {p.name for p in SCRIPTS.glob("*.py")
                                              if not p.name.startswith("_") and p.name not in GUEST_PROGRAMS})


# --------------------------------------------------------------------------- helpers
def script(name: str) -> Path:
    path = SCRIPTS / name
    if not path.exists():
        pytest.skip(f"scripts/{name} does not exist yet (written in another issue)")
    return path


def run_script(name: str, *args, missing: tuple[str, ...] = (), fake_root: Path | None = None,
               cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script(name)), *map(str, args)], capture_output=True, text=True,
                          env=env_without(missing, fake_root), cwd=cwd or REPO, timeout=timeout)


# --------------------------------------------------------------------------- generic: every script
@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_unknown_flag_is_one_line(name):
    res = run_script(name, "--no-such-flag")
    # argparse reports missing required arguments before unknown ones
    assert_one_line_error(res, r"(unrecognized arguments: --no-such-flag|required)"
                               r".* --help\)$", code=2)


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_help_without_extras(name, fake_packages):
    """--help with every optional package missing: the usage (scripts that import their extras
    lazily), or at least one line naming the missing package, never a traceback."""
    res = run_script(name, "--help", missing=EXTRAS, fake_root=fake_packages)
    if res.returncode != 0:
        assert_one_line_error(res, r"No module named|not installed|needs|pip install")
        return
    assert "usage:" in res.stdout and "--debug" in res.stdout  # the shared _cli.Parser


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_no_arguments_without_extras_is_one_line(name, fake_packages, tmp_path):
    """Default invocation with every optional package missing: success, or one line naming what is missing."""
    res = run_script(name, missing=EXTRAS, fake_root=fake_packages, cwd=tmp_path)
    if res.returncode != 0:
        assert_one_line_error(res)


# --------------------------------------------------------------------------- specific bad invocations
# (script, args, missing extras, exit code or None, regex on the error line), run in a subprocess;
# keep these fast (no torch import). Placeholders: {tmp} a fresh temporary directory, {ort}/{ov}
# placeholder bundles. Cases that need torch anyway run in-process below (EXPORT_CASES).
CASES = [
    ("export.py", ["--width", "abc"], (), 2, r"argument --width: invalid float value: 'abc'"),
    ("export.py", ["--target", "tflite"], (), 2, r"argument --target: invalid choice: 'tflite'"),
    ("export.py", ["--precision", "int4"], (), 2, r"invalid choice: 'int4'"),
    ("export.py", ["--width", "0.25", "--out", "{tmp}/b"], ("torch",), 1,
     r"export needs torch and onnx \(torch missing\).*pip install .*osnet_edge\[export\]"),
    ("export.py", ["--width", "0.25", "--out", "{tmp}/b"], ("onnx",), 1,
     r"export needs torch and onnx \(onnx missing\).*pip install .*osnet_edge\[export\]"),
    ("profile.py", ["--width", "0.25", "--res", "0.25", "--no-latency"], ("torch",), 1, r"torch"),
    # --width / --res are checked before torch is needed, and name the valid values
    ("export.py", ["--width", "0.3"], ("torch",), 1,
     r"--width 0.3 is not a valid OSNet width.*torchreid publishes widths 1.0, 0.75, 0.5, 0.25"),
    ("export.py", ["--width", "0.25", "--res", "1.5"], ("torch",), 1, r"--res 1.5 is out of range.*0.5 \(128x64\)"),
    ("profile.py", ["--width", "0.3", "--no-latency"], ("torch",), 1, r"--width 0.3 is not a valid OSNet width"),
    ("soak.py", ["--calls", "0", "--bundle", "{ort}"], (), 1, r"--calls must be >= 1, got 0"),
    ("soak.py", ["--bundle", "{tmp}/nope"], (), 1, r"--bundle .*nope: no such directory"),
    ("soak.py", ["--bundle", "{ort}", "--runtime", "openvino"], (), 1, r"exported for onnxruntime .*runtime 'openvino'"),
    ("soak.py", ["--bundle", "{ort}"], ("onnxruntime",), 1,
     r"onnxruntime is not installed .*pip install 'osnet_edge\[onnxruntime\]'"),
    ("soak.py", ["--bundle", "{ov}"], ("openvino",), 1, r"openvino is not installed .*pip install 'osnet_edge\[openvino\]'"),
    ("soak.py", [], ("torch",), 1, r"needs torch and onnx \(torch missing\).*--bundle DIR"),
]


@pytest.mark.parametrize("name,args,missing,code,pattern", CASES,
                         ids=[f"{c[0]}:{' '.join(c[1]) or '-'}{':no ' + ','.join(c[2]) if c[2] else ''}" for c in CASES])
def test_bad_invocation_is_one_line(name, args, missing, code, pattern, tmp_path, fake_packages, dummy_bundles):
    fill = {"tmp": tmp_path, "ort": dummy_bundles["onnxruntime"], "ov": dummy_bundles["openvino"]}
    res = run_script(name, *[a.format(**fill) for a in args], missing=missing, fake_root=fake_packages, cwd=tmp_path)
    assert_one_line_error(res, pattern, code)


def test_debug_shows_the_traceback(tmp_path):
    res = run_script("soak.py", "--bundle", tmp_path / "nope", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr and "CliError" in res.stderr


# --------------------------------------------------------------------------- export.py errors that need torch
# These run the script's main() in this process through the same _cli.run() that
# ``python scripts/export.py`` uses (stderr captured): torch is imported once, not per case.
def _load_script(name: str):
    return load_script(name)


@pytest.fixture(scope="module")
def export_cli():
    pytest.importorskip("torch", reason="export.py needs torch (osnet_edge[export])")
    return _load_script("export.py")


def run_in_process(module, argv, capsys) -> subprocess.CompletedProcess:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        module.run(module.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, exit_info.value.code, captured.out, captured.err)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    torch = pytest.importorskip("torch", reason="making test checkpoints needs torch")
    import argparse
    import pickle

    from osnet_edge.models import build_osnet

    root = tmp_path_factory.mktemp("ckpt")
    state = build_osnet(0.25).state_dict()
    torch.save(state, root / "good.pth")
    data = (root / "good.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 3])
    # old torchreid checkpoints pickle an argparse.Namespace next to the weights
    torch.save({"state_dict": state, "args": argparse.Namespace(arch="osnet_x0_25")}, root / "legacy.pth",
               pickle_module=pickle)
    marker = root / "payload_ran"

    class Payload:  # a pickle that runs code when loaded
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": state, "x": Payload()}, root / "malicious.pth", pickle_module=pickle)
    with open(root / "notes.pth", "wb") as f:
        pickle.dump(["not", "a", "checkpoint"], f)
    (root / "existing").mkdir()
    return {"truncated": root / "truncated.pth", "legacy": root / "legacy.pth", "malicious": root / "malicious.pth",
            "notes": root / "notes.pth", "marker": marker, "existing": root / "existing"}


# (args, regex on the error line); {name} = a path from the checkpoints fixture, {tmp} = tmp_path
EXPORT_CASES = {
    "missing weights": (["--weights", "{tmp}/missing.pth"], r"--weights .*missing.pth: no such file"),
    "missing calib dir": (["--calib", "{tmp}/nothing"], r"--calib .*nothing: no such directory"),
    "int8 without calib": (["--precision", "int8"], r"--precision int8 needs --calib DIR"),
    "out exists": (["--out", "{existing}"], r"exists; pass --force"),
    "litert dynamic with a placement": (["--target", "litert", "--precision", "int8", "--calib", "{tmp}",
                                         "--calib-method", "dynamic", "--int8-placement", "conv"],
                                        r"--calib-method dynamic \(dynamic-range\) has no --int8-placement"),
    "litert placement auto": (["--target", "litert", "--precision", "int8", "--calib", "{tmp}", "--int8-placement",
                               "auto"], r"--int8-placement for litert is all \(full-integer, default\) or conv"),
    "truncated checkpoint": (["--weights", "{truncated}"], r"truncated.pth is not a readable PyTorch checkpoint \(file truncated\?\)"),
    "code-executing pickle": (["--weights", "{malicious}"],
                              r"torch.load\(weights_only=True\) refuses .*can execute arbitrary code.*--allow-unsafe-pickle"),
    "plain pickle, not a checkpoint": (["--weights", "{notes}", "--allow-unsafe-pickle"],
                                       r"notes.pth is not a readable PyTorch checkpoint: Invalid magic number"),
    # with the flag the legacy pickle loads; it holds x0.25 weights given for x0.5, so the next check fails
    "wrong width (legacy pickle allowed)": (["--width", "0.5", "--weights", "{legacy}", "--allow-unsafe-pickle"],
                                            r"does not fit OSNet variant='osnet' width=0.5 \(wrong architecture or width\?\);"
                                            r" .*mis-shaped keys: conv1.conv.weight: checkpoint \(16, 3, 7, 7\) vs model \(32, 3, 7, 7\)"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the plain pickle
@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_errors_are_one_line(case, export_cli, checkpoints, tmp_path, capsys):
    args, pattern = EXPORT_CASES[case]
    argv = ["--width", "0.25", "--out", tmp_path / "b", *[a.format(tmp=tmp_path, **checkpoints) for a in args]]
    res = run_in_process(export_cli, argv, capsys)
    assert_one_line_error(res, pattern, 1)
    assert not (tmp_path / "b").exists()
    assert not checkpoints["marker"].exists(), "the pickle's code ran"


# --------------------------------------------------------------------------- interrupted export
def _start_export(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script("export.py")), "--width", "0.25", "--res", "0.5", "--out",
                             str(out), "--no-verify"], cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_line(proc: subprocess.Popen, text: str) -> None:
    for line in proc.stdout:
        if text in line:
            return
    proc.wait()
    pytest.fail(f"export ended (rc {proc.returncode}) before printing {text!r}: {proc.stderr.read()[-2000:]}")


def _partials(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial-")]


def test_interrupted_export_leaves_nothing_loadable_and_a_rerun_succeeds(tmp_path):
    pytest.importorskip("torch", reason="export needs torch")
    pytest.importorskip("onnxruntime", reason="loading the bundle needs onnxruntime")
    from osnet_edge.bundle import BundleError, load_bundle
    from osnet_edge.extractor import Extractor

    out = tmp_path / "bundle"
    # killed outright (power cut, OOM killer): no cleanup code runs at all
    proc = _start_export(out)
    _wait_for_line(proc, "exporting ONNX")
    proc.kill()
    proc.wait(timeout=30)
    assert not out.exists(), "a killed export left a directory under the bundle's name"
    with pytest.raises(BundleError, match="not found"):
        load_bundle(out)
    assert len(_partials(out)) == 1  # the hidden staging directory, never under the final name

    # Ctrl-C: the staging directory is removed, the CLI says 'interrupted' and exits 130
    proc = _start_export(out)
    _wait_for_line(proc, "exporting ONNX")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("interrupted") and "Traceback" not in err, err
    assert not out.exists()
    # that run also removed the killed run's staging directory (its pid is gone)
    assert _partials(out) == []

    # the same command again succeeds (in-process: torch is imported once) and the bundle loads verified
    module = _load_script("export.py")
    assert module.main(["--width", "0.25", "--res", "0.5", "--out", str(out), "--no-verify"]) == 0
    assert load_bundle(out).manifest["model"]["input_size"] == [128, 64]
    assert _partials(out) == []
    with Extractor(out) as ext:
        emb = ext([np.zeros((100, 40, 3), np.uint8), np.full((50, 20, 3), 200, np.uint8)])
    assert emb.shape == (2, 512) and np.isfinite(emb).all()
