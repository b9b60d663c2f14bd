"""The rknn-toolkit2 environment: create and check its isolated venv, run the worker in it.

rknn-toolkit2 2.5.0 pins numpy <= 1.26.4, onnx <= 1.18, protobuf <= 4.25.4 and torch <= 2.4, which conflict
with ours, so it lives in its own venv (default ``~/.cache/osnet_edge/rknn-toolkit2-2.5.0-pyXY``, override with
``OSNET_EDGE_RKNN_VENV`` or ``--venv``). The toolkit imports torch only to derive one class from
``torch.nn.Module`` and to decorate one function with ``@torch.no_grad()``; PyPI's torch <= 2.4 for x86-64 is the
multi-GB CUDA build and PyTorch's CPU index is not always reachable. So the venv gets either the real CPU torch
2.4.0 (``torch_index``, e.g. https://download.pytorch.org/whl/cpu) or a documented stand-in module that provides
exactly those two names and refuses any real use (version ``2.4.0+osnet.edge.standin``, recorded in the venv's
marker and in every bundle the toolkit builds).

Host side only: this module imports the standard library; the worker (``rknn_worker.py``) runs in the venv.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

TOOLKIT = "rknn-toolkit2"
TOOLKIT_VERSION = "2.5.0"
# The toolkit's own requirements, at the versions it was measured with; opencv headless (no libGL on servers).
DEPENDENCIES = ("numpy==1.26.4", "onnx==1.18.0", "protobuf==4.25.4", "onnxruntime>=1.17", "scipy>=1.9.3",
                "psutil>=5.9.0", "ruamel.yaml>=0.17.21", "tqdm>=4.64.1", "fast-histogram>=0.11",
                "opencv-python-headless>=4.5.5.64")
REAL_TORCH = "torch==2.4.0"
STANDIN_VERSION = "2.4.0+osnet.edge.standin"
MARKER = "osnet_edge_rknn.json"
SUPPORTED_PYTHONS = ((3, 6), (3, 12))  # the toolkit's wheels: cp36 .. cp312
WORKER = Path(__file__).with_name("rknn_worker.py")


class RknnToolchainError(RuntimeError):
    """The rknn venv is missing or broken, or the toolkit failed (the message says what to do)."""


def default_venv_dir() -> Path:
    """Where the rknn venv lives: $OSNET_EDGE_RKNN_VENV, else under the osnet_edge cache."""
    if os.environ.get("OSNET_EDGE_RKNN_VENV"):
        return Path(os.environ["OSNET_EDGE_RKNN_VENV"]).expanduser()
    cache = Path(os.environ.get("OSNET_EDGE_CACHE", Path.home() / ".cache" / "osnet_edge"))
    return cache / f"{TOOLKIT}-{TOOLKIT_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"


def venv_python(venv: str | os.PathLike) -> Path:
    return Path(venv) / "bin" / "python"


STANDIN_INIT = '''"""osnet_edge's stand-in for torch inside the rknn-toolkit2 venv (NOT PyTorch).

rknn-toolkit2 2.5.0 imports torch at import time only to derive one class from torch.nn.Module and to decorate
one function with @torch.no_grad(); nothing on the ONNX build / simulate / export path calls torch. This module
provides exactly those two names. Anything else raises, naming the fix (osnet-edge setup rknn --torch-index URL
installs the real CPU torch 2.4.0 instead).
"""
__version__ = "{version}"
STANDIN = True
from . import nn  # noqa: E402


class no_grad:
    """Decorator / context manager that does nothing: the stand-in never computes gradients."""

    def __call__(self, fn):
        return fn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def __getattr__(name):
    raise AttributeError(f"torch.{{name}} is not available: this venv has osnet_edge's torch stand-in (only "
                         "torch.nn.Module and torch.no_grad); run 'osnet-edge setup rknn --torch-index "
                         "https://download.pytorch.org/whl/cpu --force' for the real CPU torch 2.4.0")
'''
STANDIN_NN = '''"""Stand-in torch.nn: only Module, which refuses to be instantiated (no real torch here)."""


class Module:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} needs the real torch; this venv has osnet_edge's stand-in. "
                           "Run 'osnet-edge setup rknn --torch-index https://download.pytorch.org/whl/cpu --force'")
'''


def install_standin(site_packages: Path) -> None:
    """Write the stand-in torch package and a dist-info (so pip knows what is there, and can replace it)."""
    pkg = site_packages / "torch"
    (pkg / "nn").mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(STANDIN_INIT.format(version=STANDIN_VERSION), encoding="utf-8")
    (pkg / "nn" / "__init__.py").write_text(STANDIN_NN, encoding="utf-8")
    info = site_packages / f"torch-{STANDIN_VERSION}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {STANDIN_VERSION}\nSummary: "
                                   "osnet_edge stand-in for rknn-toolkit2's import of torch (not PyTorch)\n",
                                   encoding="utf-8")
    (info / "INSTALLER").write_text("osnet_edge\n", encoding="utf-8")
    files = ["torch/__init__.py", "torch/nn/__init__.py"] + [f"{info.name}/{n}" for n in
                                                              ("METADATA", "INSTALLER", "RECORD")]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files), encoding="utf-8")


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _pip(python: Path, args: list[str], log: Callable[[str], None], what: str) -> None:
    log(f"  pip install {what} ...")
    start = time.perf_counter()
    proc = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise RknnToolchainError(f"pip could not install {what} into the rknn venv (is PyPI reachable? a proxy "
                                 f"needs PIP_INDEX_URL / HTTPS_PROXY):\n{tail}")
    log(f"    done in {time.perf_counter() - start:.0f} s")


def _check_python(python: str) -> None:
    out = subprocess.run([python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RknnToolchainError(f"cannot run {python!r} to make the rknn venv")
    version = tuple(int(v) for v in out.stdout.split())
    if not SUPPORTED_PYTHONS[0] <= version <= SUPPORTED_PYTHONS[1]:
        raise RknnToolchainError(f"{TOOLKIT} {TOOLKIT_VERSION} has wheels for Python 3.6-3.12 only; {python} is "
                                 f"{version[0]}.{version[1]}: pass --python /path/to/python3.12 (or older)")


def create_venv(venv: str | os.PathLike | None = None, python: str | None = None, torch_index: str | None = None,
                force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Make the rknn venv (staged next to it, renamed into place when complete); returns its marker."""
    venv = Path(venv) if venv else default_venv_dir()
    python = python or sys.executable
    if venv.exists() and not force:
        log(f"rknn venv exists: {venv} (checking it; --force rebuilds)")
        return check_venv(venv)
    _check_python(python)
    venv.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{venv.name}.partial-", dir=venv.parent))
    try:
        log(f"creating the rknn venv at {venv} with {python}")
        subprocess.run([python, "-m", "venv", str(staging)], check=True, capture_output=True)
        py = venv_python(staging)
        _pip(py, list(DEPENDENCIES), log, "the toolkit's dependencies (numpy 1.26.4, onnx 1.18.0, protobuf 4.25.4)")
        if torch_index:
            _pip(py, ["--index-url", torch_index, REAL_TORCH], log, f"{REAL_TORCH} (CPU) from {torch_index}")
            torch_kind = "real"
        else:
            log("  torch: installing osnet_edge's stand-in (torch.nn.Module + torch.no_grad only; the toolkit "
                "touches nothing else; --torch-index URL installs the real CPU torch 2.4.0)")
            install_standin(_site_packages(py))
            torch_kind = "standin"
        _pip(py, ["--no-deps", f"{TOOLKIT}=={TOOLKIT_VERSION}"], log, f"{TOOLKIT}=={TOOLKIT_VERSION}")
        marker = {"toolkit": TOOLKIT, "toolkit_version": TOOLKIT_VERSION, "torch": torch_kind,
                  "torch_index": torch_index, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (staging / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if venv.exists():
            import shutil

            shutil.rmtree(venv)
        os.replace(staging, venv)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    facts = check_venv(venv)
    log(f"rknn venv ready: {TOOLKIT} {facts['toolkit_version']}, torch {facts['torch_version']}, "
        f"numpy {facts['numpy']}, onnx {facts['onnx']}")
    return facts


_PROBE = ("import json, sys, numpy, onnx, torch\nfrom importlib.metadata import version\nfrom rknn.api import RKNN\n"
          "print(json.dumps({'toolkit_version': version('rknn-toolkit2'), 'numpy': numpy.__version__, "
          "'onnx': onnx.__version__, 'torch_version': torch.__version__, "
          "'torch_standin': bool(getattr(torch, 'STANDIN', False)), 'python': sys.version.split()[0]}))")


def check_venv(venv: str | os.PathLike | None = None) -> dict:
    """Import the toolkit in the venv; its versions (raises RknnToolchainError naming the fix)."""
    venv = Path(venv) if venv else default_venv_dir()
    python = venv_python(venv)
    if not python.exists():
        raise RknnToolchainError(f"no rknn-toolkit2 venv at {venv}: run 'osnet-edge setup rknn' first "
                                 "(or set OSNET_EDGE_RKNN_VENV to one)")
    proc = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-4:])
        raise RknnToolchainError(f"the rknn venv at {venv} is broken ({tail}); rebuild it: "
                                 "osnet-edge setup rknn --force")
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    marker = venv / MARKER
    facts["marker"] = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
    facts["venv"] = str(venv)
    return facts


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def run_worker(job: dict, venv: str | os.PathLike | None = None, timeout: float | None = None,
               log_path: str | os.PathLike | None = None) -> dict:
    """Run one worker job (build / export / simulate / analysis) in the venv; its facts, or an error."""
    python = venv_python(venv or default_venv_dir())
    if not python.exists():
        check_venv(venv)  # raises with the fix
    with tempfile.TemporaryDirectory(prefix="osnet_edge_rknn_job_") as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        log = Path(log_path) if log_path else Path(tmp) / "worker.log"
        with open(log, "w", encoding="utf-8") as err:
            proc = subprocess.run([str(python), "-I", str(WORKER), str(job_path)], stdout=subprocess.PIPE, stderr=err,
                                  text=True, timeout=timeout, cwd=tmp)
        reply = _last_json_line(proc.stdout)
        if proc.returncode != 0 or not reply or not reply.get("ok"):
            detail = (reply or {}).get("error") or "\n".join(log.read_text(errors="replace").splitlines()[-8:])
            raise RknnToolchainError(f"{TOOLKIT} worker failed: {detail.strip().splitlines()[-1] if detail else '?'}"
                                     f" (log: {log_path or 'pass log_path to keep it'})")
        return reply


class SimulatorProcess:
    """A long-lived worker that rebuilt the model once and answers simulate requests (uint8 RGB NHWC in)."""

    def __init__(self, job: dict, venv: str | os.PathLike | None = None, timeout: float = 3600) -> None:
        python = venv_python(venv or default_venv_dir())
        if not python.exists():
            check_venv(venv)
        self._tmp = tempfile.TemporaryDirectory(prefix="osnet_edge_rknn_sim_")
        tmp = Path(self._tmp.name)
        (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
        self.log_path = tmp / "worker.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self._proc = subprocess.Popen([str(python), "-I", str(WORKER), "--serve", str(tmp / "job.json")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                      cwd=tmp)
        self.facts = self._read_reply(timeout, "rebuild the model in the simulator")
        self._count = 0

    def _read_reply(self, timeout: float, what: str) -> dict:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        reply = _last_json_line(line) if line else None
        if not reply or reply.get("ok") is False:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-6:])
            self.close()
            raise RknnToolchainError(f"{TOOLKIT} simulator could not {what}: "
                                     f"{(reply or {}).get('error') or tail}")
        return reply

    def infer(self, crops_rgb: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._proc is None:
                raise RknnToolchainError("the rknn simulator process is closed")
            self._count += 1
            tmp = Path(self._tmp.name)
            inputs, output = tmp / f"in_{self._count}.npy", tmp / f"out_{self._count}.npy"
            np.save(inputs, np.ascontiguousarray(crops_rgb))
            self._proc.stdin.write(json.dumps({"inputs": str(inputs), "output": str(output)}) + "\n")
            self._proc.stdin.flush()
            self._read_reply(600, f"run a batch of shape {crops_rgb.shape}")
            out = np.load(output)
            inputs.unlink(missing_ok=True)
            output.unlink(missing_ok=True)
            return out

    def close(self) -> None:
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
                proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


__all__ = ["TOOLKIT", "TOOLKIT_VERSION", "RknnToolchainError", "SimulatorProcess", "check_venv", "create_venv",
           "default_venv_dir", "install_standin", "run_worker", "venv_python"]
