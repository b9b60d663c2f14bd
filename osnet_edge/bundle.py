"""Bundle: a directory with the model files for one runtime and a verified manifest.

Written atomically: everything is built in a hidden staging directory next to the
destination and renamed into place only when complete, so an interrupted export never
leaves a directory that loads. Loading verifies every file's sha256.

A bundle is often written by one account (root, a provisioning script) and read by another (a
camera service account, a non-root container): its directories are made 0755 and its files 0644,
less what the process umask removes (umask 077 keeps it private).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "osnet-edge-bundle"
# 2: model.mult_adds (was macs), model.input_size_order "HW", model.input_layout describes the tensor
# only (the colour is preprocess.color), preprocess.description, random_seed. Version 1 still loads.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
TARGETS = ("onnxruntime", "openvino", "tensorrt", "litert", "rknn")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Which runtimes may execute a bundle made for a target. A tensorrt bundle's ONNX already
# carries its final precision (fp16 / explicit Q/DQ), so ONNX Runtime runs the very network
# TensorRT builds; other cross-runtime uses would silently change precision, so they fail.
COMPATIBLE_RUNTIMES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",),
                       "tensorrt": ("tensorrt", "onnxruntime"), "litert": ("litert",),
                       "rknn": ("rknn", "rknn-sim")}  # rknn-sim: the x86 simulator rebuilds the same model
REQUIRED_KEYS = ("format", "format_version", "model", "preprocess", "runtime", "precision", "files")
# Seed of the random initialisation when a bundle is exported without weights: every runtime and
# precision of such a configuration then holds the same network (fidelity compares like with like).
RANDOM_WEIGHTS_SEED = 0
DIR_MODE, FILE_MODE = 0o755, 0o644   # readable by other accounts, before the umask is applied


class BundleError(ValueError):
    """A bundle directory is missing, incomplete, tampered with or for another runtime."""


def default_bundle_name(variant: str, width: float, res: float, target: str, precision: str) -> str:
    """The one naming scheme for bundles, e.g. ``osnet_x0_25_r0_5_onnxruntime_fp32``: what
    scripts/export.py writes under bundles/ by default and what the profiler looks for there."""
    def number(x: float) -> str:
        return str(float(x)).replace(".", "_")

    return f"{variant}_x{number(width)}_r{number(res)}_{target}_{precision}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    """A loaded (and verified) bundle: its directory and manifest."""

    path: Path
    manifest: dict[str, Any] = field(repr=False)

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise BundleError(f"bundle {self.path} has no {name!r} (files: {sorted(self.manifest['files'])})")
        return self.path / name

    @property
    def runtime(self) -> str:
        return self.manifest["runtime"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.manifest["model"]["input_size"]
        return int(h), int(w)

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["model"]["embedding_dim"])

    @property
    def fused_preprocess(self) -> bool:
        return bool(self.manifest["preprocess"].get("fused", False))

    @property
    def channels_last(self) -> bool:
        """The model input is NHWC (LiteRT bundles; fused uint8 crops), else NCHW."""
        return str(self.manifest["model"].get("input_layout", "")).startswith("NHWC")

    @property
    def max_batch(self) -> int | None:
        return self.manifest.get("max_batch")

    @property
    def mult_adds(self) -> int | None:
        """Mult-adds of one image's forward (format 1 called the field ``macs``)."""
        model = self.manifest["model"]
        return model.get("mult_adds", model.get("macs"))

    @property
    def random_weights(self) -> bool:
        """True when the network was randomly initialised (no checkpoint, no adaptation)."""
        m = self.manifest
        if "random_weights" in m:
            return bool(m["random_weights"])
        return m.get("weights") is None and not m.get("adaptation")

    @property
    def variant_names(self) -> list[str]:
        """The variants this bundle carries: its primary model (named by its precision) first, then those
        under ``variants/`` (e.g. ``["fp32", "int8"]``). The device picks one (:mod:`osnet_edge.tuning`)."""
        return [self.manifest.get("variant", self.precision), *self.manifest.get("variants", {})]

    def variant(self, name: str | None) -> "Bundle":
        """The bundle as one of its variants: the primary (``name`` None or the primary's name) is this bundle
        itself; another is a view rooted at its folder, with its precision, files and INT8 record."""
        primary = self.manifest.get("variant", self.precision)
        if name is None or name == primary:
            return self
        variants = self.manifest.get("variants", {})
        if name not in variants:
            raise BundleError(f"bundle {self.path} has no variant {name!r} (variants: {', '.join(self.variant_names)})")
        entry = variants[name]
        prefix = entry["path"].rstrip("/") + "/"
        files = {k[len(prefix):]: v for k, v in self.manifest["files"].items() if k.startswith(prefix)}
        manifest = {k: v for k, v in self.manifest.items() if k not in ("variants", "files")}
        manifest.update({k: v for k, v in entry.items() if k != "path"}, variant=name, files=files,
                        variant_of=str(self.path))
        return Bundle(path=self.path / entry["path"], manifest=manifest)

    def check_runtime(self, runtime: str) -> None:
        allowed = COMPATIBLE_RUNTIMES.get(self.runtime, (self.runtime,))
        if runtime not in allowed:
            raise BundleError(
                f"bundle {self.path} was exported for {self.runtime} ({self.precision}); runtime "
                f"{runtime!r} cannot run it without changing its precision or format. Use "
                f"runtime={allowed[0]!r} or re-export with --target {runtime}")


def _own_version() -> str:
    from . import __version__

    return __version__


def _format_advice(version: Any) -> str:
    """What to do with a bundle of another format: bundles are exported on the host, cameras only load them."""
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        return ("A newer osnet_edge wrote it: upgrade osnet_edge on this device (pip install -U osnet_edge), or "
                f"re-export the bundle on the host with osnet_edge {_own_version()} (osnet-edge export)")
    return f"Re-export the bundle on the host with osnet_edge {_own_version()} (osnet-edge export)"


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path} is not an osnet_edge bundle: {MANIFEST} is missing "
                          "(an interrupted export? re-run osnet-edge export on the host)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({exc}); the bundle is corrupt, re-export it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not an osnet_edge manifest (format must be {FORMAT!r})")
    version = manifest.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS or isinstance(version, bool):
        raise BundleError(f"{mpath} has format_version {version!r}; this osnet_edge reads versions "
                          f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))} (osnet_edge {_own_version()}). "
                          + _format_advice(version))
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{mpath} lacks required fields: {', '.join(missing)}")
    if not isinstance(manifest["files"], dict) or not manifest["files"]:
        raise BundleError(f"{mpath}: 'files' must map file names to sha256 checksums")
    _check_fields(manifest, mpath)
    return manifest


def _is_pos_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _check_fields(manifest: dict[str, Any], mpath: Path) -> None:
    """The fields the device reads, checked once here so that a hand-edited or damaged
    manifest fails at load with its field named, not later as a KeyError or a shape error."""
    def bad(field: str, expected: str) -> BundleError:
        return BundleError(f"{mpath}: {field} must be {expected}, got {value!r}; the manifest is damaged "
                           "or hand-edited, re-export the bundle")

    model = value = manifest["model"]
    if not isinstance(model, dict):
        raise bad("'model'", "an object")
    value = model.get("input_size")
    if not (isinstance(value, list) and len(value) == 2 and all(_is_pos_int(v) for v in value)):
        raise bad("model.input_size", "[H, W] (two positive integers)")
    value = model.get("embedding_dim")
    if not _is_pos_int(value):
        raise bad("model.embedding_dim", "a positive integer")
    pre = value = manifest["preprocess"]
    if not isinstance(pre, dict):
        raise bad("'preprocess'", "an object")
    for key in ("mean", "std"):
        value = pre.get(key)
        if not (isinstance(value, list) and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                and (key == "mean" or all(v > 0 for v in value))):
            raise bad(f"preprocess.{key}", "three numbers" + (" > 0" if key == "std" else ""))
    value = manifest["runtime"]
    if value not in TARGETS:
        raise bad("runtime", f"one of {TARGETS}")
    value = manifest["precision"]
    if value not in PRECISIONS:
        raise bad("precision", f"one of {PRECISIONS}")
    value = manifest.get("max_batch")
    if value is not None and not _is_pos_int(value):
        raise bad("max_batch", "a positive integer or null")
    for name, value in manifest["files"].items():
        digest = value.get("sha256") if isinstance(value, dict) else value
        if not (isinstance(digest, str) and len(digest) == 64):
            raise bad(f"files[{name!r}]", "a sha256 hex digest or {\"sha256\": ..., \"size\": ...}")


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read a bundle's manifest; with ``verify`` check every listed file's size and sha256.

    A bundle with random weights warns once per bundle path and process
    (:class:`osnet_edge.RandomWeightsWarning`): it loads and runs, but cannot re-identify anyone.
    """
    bundle = _load_verified(path, verify)
    if bundle.random_weights:
        _warn_random_weights_once(bundle.path)
    return bundle


_warned_random: set[str] = set()
_warned_random_lock = threading.Lock()


def _warn_random_weights_once(path: Path) -> None:
    from .notices import RandomWeightsWarning, random_weights_advice

    key = str(path.resolve())
    with _warned_random_lock:
        if key in _warned_random:
            return
        _warned_random.add(key)
    warnings.warn(f"bundle {path} holds RANDOMLY INITIALISED weights (exported without --weights): "
                  f"{random_weights_advice()}", RandomWeightsWarning, stacklevel=3)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A bundle's manifest, its fields checked, its files not (:func:`check_file` does that)."""
    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "not found"
        raise BundleError(f"bundle {path}: {what} (a bundle is a directory written by osnet-edge export)")
    return _read_manifest(path)


@dataclass(frozen=True)
class FileCheck:
    """One listed file against the manifest: ``status`` OK, MISSING or MISMATCH (``problem`` says how)."""

    name: str
    sha256: str
    size: int | None
    status: str
    problem: str | None = None


def check_file(path: str | os.PathLike, name: str, expected: Any, verify: bool = True) -> FileCheck:
    """Check one file listed in the manifest of the bundle at ``path``: present, and with ``verify``
    of the recorded size and sha256. An unsafe name (absolute, '..') raises BundleError."""
    path = Path(path)
    entry = expected if isinstance(expected, dict) else {"sha256": expected}
    size = entry.get("size")
    fpath = path / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise BundleError(f"{path / MANIFEST} lists an unsafe file name {name!r}")

    def result(status: str, problem: str | None = None) -> FileCheck:
        return FileCheck(name, entry["sha256"], size, status, problem)

    if not fpath.is_file():
        return result("MISSING", f"bundle {path} is incomplete: {name} is missing")
    if verify:
        if size is not None and fpath.stat().st_size != size:
            return result("MISMATCH", f"bundle {path}: {name} is {fpath.stat().st_size} bytes, manifest says "
                                      f"{size} (truncated or replaced); re-export the bundle")
        if sha256_file(fpath) != entry["sha256"]:
            return result("MISMATCH", f"bundle {path}: checksum mismatch for {name} (file modified or "
                                      "corrupted); re-export the bundle")
    return result("OK")


def _load_verified(path: str | os.PathLike, verify: bool) -> Bundle:
    path = Path(path)
    manifest = read_manifest(path)
    for name, expected in manifest["files"].items():
        check = check_file(path, name, expected, verify)
        if check.problem is not None:
            raise BundleError(check.problem)
    return Bundle(path=path, manifest=manifest)


class BundleWriter:
    """Build a bundle in a staging directory, then move it into place atomically.

    >>> with BundleWriter("bundles/x0_25") as w:
    ...     save_model(w.path / "model.onnx"); w.manifest.update(model=..., runtime=...)
    >>> w.bundle  # loaded and verified
    """

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = True) -> None:
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        self.manifest: dict[str, Any] = {}
        self.bundle: Bundle | None = None
        self.path: Path = Path()

    def __enter__(self) -> "BundleWriter":
        if self.out_dir.exists() and not self.overwrite:
            raise FileExistsError(f"{self.out_dir} exists (pass overwrite=True / --force to replace it)")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_partials()
        # the writer's pid in the name lets a later run recognise (and remove) a killed run's leftovers
        self.path = Path(tempfile.mkdtemp(prefix=f"{self._partial_prefix}{os.getpid()}-", dir=self.out_dir.parent))
        return self

    @property
    def _partial_prefix(self) -> str:
        return f".{self.out_dir.name}.partial-"

    def _remove_stale_partials(self) -> None:
        """Delete staging directories left by writers of this bundle that were killed (their pid is gone)."""
        for entry in self.out_dir.parent.iterdir():
            if not (entry.is_dir() and entry.name.startswith(self._partial_prefix)):
                continue
            pid = entry.name[len(self._partial_prefix):].split("-", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            self._commit()
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def _commit(self) -> None:
        files = {}
        for f in sorted(p for p in self.path.rglob("*") if p.is_file() and p.name != MANIFEST):
            files[f.relative_to(self.path).as_posix()] = {"sha256": sha256_file(f), "size": f.stat().st_size}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.manifest, "files": files,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        missing = [k for k in REQUIRED_KEYS if k not in manifest]
        if missing:
            raise BundleError(f"internal: manifest lacks {missing}")
        tmp = self.path / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / MANIFEST)
        make_readable(self.path)  # mkdtemp made it 0700: a service account could not read the bundle
        old = None
        if self.out_dir.exists():
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out_dir, old)
        os.replace(self.path, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.bundle = _load_verified(self.out_dir, verify=True)  # the exporter has warned about random weights


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only swap it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(root: str | os.PathLike) -> None:
    """Directories DIR_MODE and files FILE_MODE under ``root`` (itself included), less the umask."""
    umask = current_umask()
    dir_mode, file_mode = DIR_MODE & ~umask, FILE_MODE & ~umask
    os.chmod(root, dir_mode)
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(parent, name), dir_mode)
        for name in files:
            os.chmod(os.path.join(parent, name), file_mode)


def _process_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows: keep the leftovers
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def update_manifest(bundle: Bundle, **fields: Any) -> Bundle:
    """Add informational fields (e.g. measured fidelity) to a bundle's manifest, atomically."""
    manifest = dict(bundle.manifest, **fields)
    tmp = bundle.path / (MANIFEST + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, bundle.path / MANIFEST)
    return Bundle(bundle.path, manifest)
