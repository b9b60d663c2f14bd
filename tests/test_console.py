"""The ``osnet-edge`` console command in this (development) environment: it lists every command,
each command's help is the same text as its scripts/ wrapper's, it imports lazily (help and
``info`` work without torch, commands that need torch say which extra to install in one line),
and ``info`` describes a bundle and checks its files.

The entry point is the installed ``osnet-edge`` script next to this Python when there is one,
else ``python -m osnet_edge`` (the same function); test_wheel.py runs the installed script of a wheel.
"""
from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from osnet_edge.cli import COMMANDS

from .conftest import assert_one_line_error, env_without

REPO = Path(__file__).resolve().parents[1]
# command -> its thin wrapper in scripts/
SCRIPT_OF = {"export": "export.py", "profile": "profile.py", "evaluate": "evaluate.py", "report": "report.py",
             "adapt": "adapt.py", "build-engine": "build_engine.py", "int8-fidelity": "int8_fidelity.py",
             "info": "info.py", "tune": "tune.py", "setup": "setup.py", "track": "track.py"}


def console() -> list[str]:
    script = Path(sys.executable).with_name("osnet-edge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "osnet_edge"]


def run(argv: list, missing: tuple[str, ...] = (), fake_root: Path | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = env_without(missing, fake_root)
    env["COLUMNS"] = "100"  # argparse wraps help to the terminal width: the same for both sides
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd or REPO,
                          timeout=180)


def test_setup_cfg_declares_the_entry_point_and_every_command_has_a_wrapper():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options.entry_points"]["console_scripts"].split() == ["osnet-edge", "=", "osnet_edge.cli:main"]
    assert set(COMMANDS) == set(SCRIPT_OF)
    assert all((REPO / "scripts" / name).is_file() for name in SCRIPT_OF.values())


def test_help_lists_every_command():
    res = run(console() + ["--help"])
    assert res.returncode == 0, res.stderr
    for name in COMMANDS:
        assert re.search(rf"^  {re.escape(name)}\s+\S", res.stdout, re.M), f"{name} missing from:\n{res.stdout}"
    assert run(console()).stdout == res.stdout  # no command: the same overview
    assert run(console() + ["--version"]).stdout.startswith("osnet-edge ")


@pytest.mark.parametrize("command", list(SCRIPT_OF))
def test_command_help_is_the_scripts_help(command):
    res = run(console() + [command, "--help"])
    script = run([sys.executable, REPO / "scripts" / SCRIPT_OF[command], "--help"])
    assert res.returncode == 0 and script.returncode == 0, res.stderr + script.stderr
    assert res.stdout.startswith(f"usage: osnet-edge {command} ") and "--debug" in res.stdout
    assert res.stdout == script.stdout


def test_unknown_command_is_one_line():
    assert_one_line_error(run(console() + ["exprot"]), r"unknown command 'exprot'; did you mean 'export'\?", code=2)
    assert_one_line_error(run(console() + ["export", "--no-such-flag"]),
                          r"unrecognized arguments: --no-such-flag \(see osnet-edge export --help\)$", code=2)


def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path):
    for argv in (["--debug", "info", tmp_path / "nope"], ["info", tmp_path / "nope", "--debug"]):
        res = run(console() + argv)
        assert res.returncode != 0 and "Traceback" in res.stderr and "BundleError" in res.stderr


# ------------------------------------------------------------------------------------ without torch
# (command, args, regex on the error line): each needs torch and must say how to get it
NEEDS_TORCH = [
    ("export", ["--width", "0.25", "--out", "{tmp}/b"], r"needs torch .*pip install .*'osnet_edge\[export\]'"),
    ("adapt", ["--weights", "{ort}/model.onnx", "--data", "{tmp}", "--out", "{tmp}/a.pth"],
     r"needs torch .*pip install 'osnet_edge\[export\]'"),
    ("profile", ["--width", "0.25", "--res", "0.25", "--no-latency"], r"needs torch .*osnet_edge\[export\]"),
    ("evaluate", ["--weights", "{ort}/model.onnx", "--data", "{tmp}/market"],
     r"needs torch .*pip install 'osnet_edge\[export\]'"),
    ("int8-fidelity", [], r"torch.*pip install 'osnet_edge\[export\]'"),
]


def test_overview_and_info_run_without_torch(fake_packages, dummy_bundles, tmp_path):
    res = run(console() + ["--help"], missing=("torch",), fake_root=fake_packages, cwd=tmp_path)
    assert res.returncode == 0 and "info" in res.stdout, res.stderr
    res = run(console() + ["info", dummy_bundles["onnxruntime"]], missing=("torch", "onnxruntime"),
              fake_root=fake_packages, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^  OK +model\.onnx", res.stdout, re.M) and "1 of 1 match their sha256" in res.stdout


@pytest.mark.parametrize("command,args,pattern", NEEDS_TORCH, ids=[c[0] for c in NEEDS_TORCH])
def test_commands_needing_torch_name_the_extra(command, args, pattern, fake_packages, dummy_bundles, tmp_path):
    for split, name in (("query", "0001_c1s1_000001_00.jpg"), ("bounding_box_test", "0001_c2s1_000001_00.jpg")):
        (tmp_path / "market" / split).mkdir(parents=True)
        (tmp_path / "market" / split / name).write_bytes(b"never decoded: the torch import fails first")
    argv = [a.format(tmp=tmp_path, ort=dummy_bundles["onnxruntime"]) for a in args]
    res = run(console() + [command, *argv], missing=("torch",), fake_root=fake_packages, cwd=tmp_path)
    assert_one_line_error(res, pattern, code=1)


# ------------------------------------------------------------------------------------ info
def test_info_describes_the_bundle_and_flags_a_modified_file(dummy_bundles, tmp_path):
    bundle = tmp_path / "ov"
    shutil.copytree(dummy_bundles["openvino"], bundle)
    res = run(console() + ["info", bundle, "--json"])
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["verified"] is True and info["manifest"]["runtime"] == "openvino"
    assert {f["name"]: f["status"] for f in info["files"]} == {"model.xml": "OK", "model.bin": "OK"}

    with open(bundle / "model.bin", "ab") as f:
        f.write(b"tampered")
    res = run(console() + ["info", bundle])
    assert_one_line_error(res, r"1 of 2 file\(s\) do not match the manifest \(model\.bin MISMATCH\).*re-export", 1)
    assert re.search(r"^  MISMATCH +model\.bin", res.stdout, re.M) and re.search(r"^  OK +model\.xml", res.stdout, re.M)
    assert "input 128 x 64 (H x W)" in res.stdout and "osnet x0.25 @ res 0.5" in res.stdout
    assert "RANDOM" in res.stdout  # no weights recorded
    res = run(console() + ["info", bundle, "--json"])
    assert res.returncode == 1 and json.loads(res.stdout)["verified"] is False

    (bundle / "model.xml").unlink()
    res = run(console() + ["info", bundle])
    assert_one_line_error(res, r"model\.bin MISMATCH, model\.xml MISSING", 1)
