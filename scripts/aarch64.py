"""Run osnet_edge's device side on aarch64, emulated on this x86-64 host, and compare it with x86.

No board, no binfmt_misc, no root inside a guest: a Debian arm64 root filesystem is made with the first
stage of ``debootstrap --foreign`` (its downloaded .debs unpacked with ``dpkg-deb | tar
--keep-directory-symlink``, which keeps bookworm's ``/lib -> usr/lib``), the aarch64 wheels are installed
with THIS host's pip (``--target --only-binary=:all: --platform manylinux_*_aarch64``: pip does not widen
the manylinux tags itself, so each one is listed), and the guest's own ``python3.11`` runs under
``qemu-aarch64-static -L ROOTFS -cpu cortex-a76``. The guest gets an aarch64 ``/proc/cpuinfo`` of that CPU
(``import onnxruntime`` segfaults parsing the host's x86 one) and never starts another aarch64 program
(there is no binfmt handler: ``osnet-edge info`` runs in-process, through the wheel's entry point).

Everything lives in a cache (default ~/.cache/osnet_edge/aarch64, or $OSNET_EDGE_AARCH64_CACHE or
--cache), reused while complete: ``rootfs/`` (~230 MB), one ``site-RUNTIME/`` per runtime (numpy, opencv
and the runtime at the host's versions, ~100-250 MB each) and ``wheel-SHA/`` (the osnet_edge wheel
built from this checkout, installed without dependencies on every run). No torch anywhere in the guest.

  python scripts/aarch64.py build [--runtime onnxruntime litert openvino]
  python scripts/aarch64.py check BUNDLE... [--crops DIR] [--num-crops 16]
  python scripts/aarch64.py python --runtime onnxruntime -- -c "import platform; print(platform.machine())"

Emulated calls are 100-400x slower than native: correctness only, never speed.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHECK_PROGRAM = Path(__file__).resolve().with_name("aarch64_check.py")
CACHE_ENV = "OSNET_EDGE_AARCH64_CACHE"
MIRROR_ENV = "OSNET_EDGE_AARCH64_MIRROR"
DEFAULT_CACHE = Path.home() / ".cache" / "osnet_edge" / "aarch64"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE, GUEST_PYTHON = "bookworm", "3.11"          # Debian 12's python3 is 3.11 (glibc 2.36)
RECIPE = 1                                         # bump when the rootfs recipe changes: old caches rebuild
QEMU_CPU = "cortex-a76"                            # Raspberry Pi 5, RK3588's big cores
# /proc/cpuinfo of a Cortex-A76 as Linux prints it (qemu 7.2 passes the host's x86 one through)
CPUINFO = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
           "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
           "CPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n")
# MIDR_EL1 of that core (r4p1), which xbyak_aarch64 (OpenVINO, oneDNN) reads from sysfs to pick kernels
MIDR_EL1 = "0x00000000414fd0b1"
# pip only matches the tags it is given: every glibc a bookworm guest (2.36) can load, newest first
PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)] + ["manylinux2014_aarch64"]
# runtime (the osnet_edge extra) -> the distribution it installs
RUNTIMES = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert", "openvino": "openvino"}
BASE_DISTRIBUTIONS = ("numpy", "opencv-python-headless")
HOST_TOOLS = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static", "dpkg-deb": "dpkg",
              "tar": "tar"}
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# what a checkout holds besides its sources: not copied into the wheel build
LOCAL_ONLY = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
              "bundles", "runs", "reports")
# what a failed download looks like (debootstrap, pip): the host has no route to the mirror / index
NETWORK_TROUBLE = ("Could not find a version", "No matching distribution", "NewConnectionError", "Max retries",
                   "Temporary failure in name resolution", "Network is unreachable", "ConnectTimeout", "ReadTimeout",
                   "Failed getting release file", "Couldn't download", "Connection refused", "Could not resolve")
# Agreement with x86 required per precision: (min cosine per crop, max |diff| per element or None).
# fp32, and fp16 bundles where the runtime computes them in fp32 (LiteRT, OpenVINO): only the kernels'
# summation order differs between the ISAs. INT8: the same integer model, requantization may round apart.
TOLERANCES = {"fp32": (1 - 1e-6, 1e-5), "fp16": (1 - 1e-6, 1e-5), "int8": (0.999, None)}
# Where one runtime's aarch64 build is measured to run another arithmetic than its x86 build (the reason is
# the value): its own bound, and the check that its fidelity to its own FP32 matches x86's (FIDELITY_MARGIN).
RUNTIME_TOLERANCES = {
    ("onnxruntime", "fp16"): ((0.999, None), "ONNX Runtime's aarch64 build has fp16 CPU kernels (ARMv8.2 FP16) and "
                                             "computes the fp16 graph in fp16, x86's in fp32: fp16 rounding "
                                             "(2^-11), measured 1 - cos up to 2.5e-4 per crop"),
    ("openvino", "int8"): ((0.99, None), "OpenVINO's ARM CPU plugin (ACL) runs 18 of the INT8 IR's 187 convolutions "
                                         "in INT8 and the others in fp32 on dequantized weights with fake-quantized "
                                         "activations; x86 (oneDNN, AMX/VNNI) runs 139 in INT8: another computation, "
                                         "as faithful to FP32 (mean cosine 0.9958 vs 0.9961) but per crop cosine to "
                                         "x86 0.996-0.998"),
}
FIDELITY_MARGIN = 0.002   # INT8 vs its own FP32, mean cosine: the guest may be at most this much below x86


def tolerance(runtime: str, precision: str) -> tuple[float, float | None]:
    """(min cosine per crop, max |diff|) the guest must meet against x86 for ``runtime``'s ``precision``."""
    if (runtime, precision) in RUNTIME_TOLERANCES:
        return RUNTIME_TOLERANCES[runtime, precision][0]
    if precision not in TOLERANCES:
        raise ValueError(f"precision must be one of {sorted(TOLERANCES)}, got {precision!r}")
    return TOLERANCES[precision]


class HostUnfit(RuntimeError):
    """This host cannot emulate aarch64 (the reason is the message): callers skip, not fail."""


def log(msg: str) -> None:
    print(f"[aarch64] {msg}", file=sys.stderr, flush=True)


# -- host tools and the rootfs ------------------------------------------------------------------------
def host_problem() -> str | None:
    """Why this host cannot build or run the guest at all, or None."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"needs an x86-64 Linux host (this is {platform.system()} {platform.machine()})"
    return None


def missing_tools() -> list[str]:
    return [tool for tool in HOST_TOOLS if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]


def ensure_tools(install: bool) -> None:
    """qemu-user-static + debootstrap (+ Debian's archive keyring), installed with apt-get when allowed."""
    packages = sorted({HOST_TOOLS[t] for t in missing_tools()} | ({"debian-archive-keyring"} if not KEYRING.exists()
                                                                  else set()))
    if not packages:
        return
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        why = "not root" if os.geteuid() != 0 else "no apt-get" if shutil.which("apt-get") is None else "--no-install"
        raise HostUnfit(f"missing {', '.join(packages)} and cannot install them ({why}): "
                        f"apt-get install -y {' '.join(packages)}")
    log(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        res = subprocess.run(argv, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise HostUnfit(f"{' '.join(argv)} failed: {_last_line(res)}")
    if missing_tools():
        raise HostUnfit(f"still missing after apt-get: {', '.join(missing_tools())}")


def debian_mirror() -> str:
    """$OSNET_EDGE_AARCH64_MIRROR, else the Debian mirror this host's apt already uses, else deb.debian.org."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV]
    texts = [p.read_text(errors="replace") for p in [Path("/etc/apt/sources.list"),
                                                     *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
             if p.is_file() and p.suffix in (".list", ".sources", "")]
    for uri in re.findall(r"(?:^deb\s+(?:\[[^]]*\]\s+)?|^URIs:\s*)(\S+)", "\n".join(texts), flags=re.M):
        if re.match(r"https?://", uri) and uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _last_line(res: subprocess.CompletedProcess) -> str:
    lines = [line for line in (res.stderr + "\n" + res.stdout).splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {res.returncode}"


def _network_or_fail(what: str, res: subprocess.CompletedProcess) -> None:
    if res.returncode == 0:
        return
    text = res.stdout + res.stderr
    if any(t in text for t in NETWORK_TROUBLE):
        raise HostUnfit(f"{what}: cannot download (no network to the mirror / index?): {_last_line(res)}")
    raise RuntimeError(f"{what} failed (exit {res.returncode}):\n{text[-4000:]}")


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / ".complete.json").read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(folder: Path, stamp: dict) -> None:
    tmp = folder / ".complete.json.tmp"
    tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True))
    os.replace(tmp, folder / ".complete.json")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place (an old incomplete one is removed first)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _make_links_relative(rootfs: Path) -> None:
    """Absolute symlinks inside the rootfs would resolve on the HOST (qemu's -L only redirects the path it is
    given): point them inside the rootfs. /dev's links to /proc/self/fd stay (they mean the qemu process)."""
    for link in rootfs.rglob("*"):
        if link.is_symlink() and os.readlink(link).startswith("/") and not link.relative_to(rootfs).parts[0] == "dev":
            target = rootfs / os.readlink(link).lstrip("/")
            link.unlink()
            link.symlink_to(os.path.relpath(target, link.parent))


def identify_cpu(rootfs: Path) -> None:
    """The guest's view of its CPU: /proc/cpuinfo and MIDR_EL1 of the emulated core (qemu's -L serves these
    rootfs files for the host's; any other /proc or /sys path stays the host's)."""
    (rootfs / "proc").mkdir(exist_ok=True)
    (rootfs / "proc" / "cpuinfo").write_text(CPUINFO)
    midr = rootfs / "sys/devices/system/cpu/cpu0/regs/identification/midr_el1"
    midr.parent.mkdir(parents=True, exist_ok=True)
    midr.write_text(MIDR_EL1 + "\n")


def build_rootfs(cache: Path) -> Path:
    """A Debian bookworm arm64 rootfs with python3.11 in ``cache/rootfs`` (reused when its stamp matches)."""
    final = cache / "rootfs"
    key = {"suite": SUITE, "include": "python3", "recipe": RECIPE}
    stamp = _read_stamp(final)
    if stamp and stamp.get("key") == key and (final / "usr/bin" / f"python{GUEST_PYTHON}").exists():
        identify_cpu(final)  # cheap, and older caches get what this recipe writes
        return final
    t0, tmp, mirror = time.time(), cache / "rootfs.tmp", debian_mirror()
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap --foreign arm64 {SUITE} from {mirror} (first stage only)")
    keyring = ["--keyring", str(KEYRING)] if KEYRING.exists() else []
    res = subprocess.run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
                          *keyring, SUITE, str(tmp), mirror], capture_output=True, text=True, timeout=1200)
    _network_or_fail(f"debootstrap from {mirror}", res)
    # the first stage links ROOTFS/proc -> /proc (the host's): a real folder, with the guest CPU's cpuinfo
    proc = tmp / "proc"
    if proc.is_symlink():
        proc.unlink()
    proc.mkdir(exist_ok=True)
    debs = sorted((tmp / "var/cache/apt/archives").glob("*.deb"))
    log(f"unpacking {len(debs)} packages (no maintainer scripts: none are needed to run python)")
    for deb in debs:
        dump = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        res = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(tmp)], stdin=dump.stdout,
                             capture_output=True, text=True)
        dump.stdout.close()
        if dump.wait() != 0 or res.returncode != 0:
            raise RuntimeError(f"unpacking {deb.name} failed: {res.stderr[-2000:]}")
        deb.unlink()  # 38 MB of .debs nobody reads again
    _make_links_relative(tmp)
    identify_cpu(tmp)
    python = tmp / "usr/bin" / f"python{GUEST_PYTHON}"
    if not python.exists():
        raise RuntimeError(f"{python} missing after unpacking: the {SUITE} python3 is not {GUEST_PYTHON}?")
    _write_stamp(tmp, {"key": key, "mirror": mirror, "built_s": round(time.time() - t0, 1),
                       "packages": [d.name for d in debs]})
    _replace_dir(tmp, final)
    log(f"rootfs ready in {time.time() - t0:.0f} s: {final}")
    return final


# -- the osnet_edge wheel and the per-runtime site folders ----------------------------------------------
def build_wheel(out_dir: Path, repo: Path = REPO) -> Path:
    """The osnet_edge wheel of this checkout (built from a copy: the build writes egg-info and build/)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="osnet_edge_src_") as tmp:
        source = Path(tmp) / "osnet_edge"
        shutil.copytree(repo, source, ignore=shutil.ignore_patterns(*LOCAL_ONLY))
        res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                              str(source), "-w", tmp], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"building the wheel failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        (wheel,) = Path(tmp).glob("osnet_edge-*.whl")
        final = out_dir / wheel.name
        shutil.copy2(wheel, final)
    return final


def wheel_requirements(wheel: Path, extra: str) -> list[str]:
    """The wheel's Requires-Dist lines that apply with ``extra`` (the base ones and the extra's)."""
    with zipfile.ZipFile(wheel) as whl:
        metadata = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    lines = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    return sorted(line for line in lines if "extra ==" not in line or re.search(rf"extra == ['\"]{extra}['\"]", line))


def host_versions(runtime: str) -> dict[str, str]:
    """Versions of numpy, opencv and the runtime in THIS environment: the guest gets the same ones, so a
    difference from x86 comes from the ISA, not from another release."""
    from importlib import metadata

    pins = {}
    for dist in (*BASE_DISTRIBUTIONS, RUNTIMES[runtime]):
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins[dist] = metadata.version(dist)
    return pins


def _pip_target(target: Path, requirements: Sequence[str], *, deps: bool = True) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--timeout", "60",
            "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
            "--python-version", GUEST_PYTHON, "--abi", "cp" + GUEST_PYTHON.replace(".", ""),
            *[f"--platform={p}" for p in PLATFORMS], *([] if deps else ["--no-deps"]), *requirements]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    _network_or_fail(f"pip install --target (aarch64) {' '.join(requirements)}", res)


def _installed(site: Path) -> dict[str, str]:
    found = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[:-len(".dist-info")].partition("-")
        found[name.lower().replace("_", "-")] = version
    return dict(sorted(found.items()))


def build_site(cache: Path, runtime: str, wheel: Path) -> Path:
    """``cache/site-RUNTIME``: what ``pip install osnet_edge[RUNTIME]`` brings on aarch64, minus osnet_edge
    itself (the wheel layer carries it), at the host's versions. Rebuilt when the wheel's requirements or
    the host's versions change."""
    final = cache / f"site-{runtime}"
    key = {"requirements": wheel_requirements(wheel, runtime), "pins": host_versions(runtime),
           "platforms": PLATFORMS, "python": GUEST_PYTHON}
    stamp = _read_stamp(final)
    if stamp and stamp.get("key") == key:
        return final
    t0, tmp = time.time(), cache / f"site-{runtime}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"pip install --target {tmp.name} {wheel.name}[{runtime}] for cp{GUEST_PYTHON} aarch64, pinned to "
        + ", ".join(f"{k}=={v}" for k, v in key["pins"].items()))
    _pip_target(tmp, [f"{wheel}[{runtime}]", *(f"{k}=={v}" for k, v in key["pins"].items())])
    for own in [tmp / "osnet_edge", *tmp.glob("osnet_edge-*.dist-info"), tmp / "bin" / "osnet-edge"]:
        shutil.rmtree(own) if own.is_dir() else own.unlink(missing_ok=True)
    if (tmp / "torch").exists():
        raise RuntimeError(f"torch was installed into the {runtime} guest: the device side must not need it")
    _write_stamp(tmp, {"key": key, "installed": _installed(tmp), "built_s": round(time.time() - t0, 1)})
    _replace_dir(tmp, final)
    log(f"site-{runtime} ready in {time.time() - t0:.0f} s")
    return final


def install_wheel(cache: Path, wheel: Path) -> Path:
    """``cache/wheel-SHA``: the wheel alone (no dependencies), with its ``bin/osnet-edge``; older ones removed."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    final = cache / f"wheel-{digest}"
    if not _read_stamp(final):
        tmp = cache / f"wheel-{digest}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _pip_target(tmp, [str(wheel)], deps=False)
        _write_stamp(tmp, {"wheel": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()})
        _replace_dir(tmp, final)
    for old in cache.glob("wheel-*"):
        if old != final and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


# -- the guest ------------------------------------------------------------------------------------------
@dataclass
class Guest:
    """A ready emulated aarch64 Python: rootfs, the wheel layer, a site folder per runtime that installed
    (``unavailable``: runtime -> why not)."""
    cache: Path
    rootfs: Path
    wheel: Path
    wheel_layer: Path
    sites: dict[str, Path] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def python(self, runtime: str, args: Sequence[str], timeout: float = 1800) -> subprocess.CompletedProcess:
        """Run the guest's python3.11 with ``args``; osnet_edge and ``runtime``'s packages importable."""
        if runtime not in self.sites:
            raise ValueError(f"runtime {runtime!r} is not installed in the guest "
                             f"({self.unavailable.get(runtime, 'not requested')})")
        home = self.cache / "home"
        home.mkdir(exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LC_ALL": "C.UTF-8", "PYTHONNOUSERSITE": "1",
               "PYTHONPATH": os.pathsep.join([str(self.wheel_layer), str(self.sites[runtime])]),
               # bytecode goes to the cache, not next to the rootfs's (or a host path's) sources
               "PYTHONPYCACHEPREFIX": str(self.cache / "pycache"), "OMP_NUM_THREADS": "1"}
        argv = ["qemu-aarch64-static", "-L", str(self.rootfs), "-cpu", QEMU_CPU,
                str(self.rootfs / "usr/bin" / f"python{GUEST_PYTHON}"), *map(str, args)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=home)


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """One builder at a time per cache (several test runs may share a machine)."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def prepare(cache: Path | None = None, runtimes: Sequence[str] = tuple(RUNTIMES), install_tools: bool = True,
            wheel: Path | None = None) -> Guest:
    """Build or reuse everything the guest needs; raises HostUnfit where this host cannot."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; aarch64 CPU runtimes: {', '.join(RUNTIMES)}")
    problem = host_problem()
    if problem:
        raise HostUnfit(problem)
    cache = Path(cache or default_cache())
    timings = {}
    with _cache_lock(cache):
        t0 = time.time()
        if not (_read_stamp(cache / "rootfs") and not missing_tools()):
            ensure_tools(install_tools)
            if os.geteuid() != 0:
                raise HostUnfit(f"building the rootfs needs root (debootstrap, device nodes) and {cache}/rootfs "
                                "is not there: run `python scripts/aarch64.py build` once as root")
        rootfs = build_rootfs(cache)
        timings["rootfs_s"] = time.time() - t0
        t0 = time.time()
        wheel = wheel or build_wheel(cache / "dist")
        layer = install_wheel(cache, wheel)
        timings["wheel_s"] = time.time() - t0
        guest = Guest(cache, rootfs, wheel, layer, timings=timings)
        for runtime in runtimes:
            t0 = time.time()
            try:
                guest.sites[runtime] = build_site(cache, runtime, wheel)
            except RuntimeError as exc:  # e.g. a runtime without a wheel for this Python / glibc
                guest.unavailable[runtime] = str(exc).strip().splitlines()[-1][:500]
            timings[f"site_{runtime}_s"] = time.time() - t0
    return guest


# -- the check: guest vs host ---------------------------------------------------------------------------
def host_check(bundles: Sequence[Path], crops: Path, out: Path, python: str = sys.executable) -> dict:
    """The device-check program on this host (x86 reference), with this environment's osnet_edge."""
    res = subprocess.run([python, str(CHECK_PROGRAM), "--crops", str(crops), "--out", str(out),
                          *map(str, bundles)], capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    return _check_result("host", res, out)


def guest_check(guest: Guest, runtime: str, bundles: Sequence[Path], crops: Path, out: Path) -> dict:
    """The device-check program under emulation, with the wheel and ``runtime``'s aarch64 packages."""
    res = guest.python(runtime, [CHECK_PROGRAM, "--crops", crops, "--out", out, *bundles])
    return _check_result(f"guest ({runtime})", res, out)


def _check_result(where: str, res: subprocess.CompletedProcess, out: Path) -> dict:
    if res.returncode != 0:
        raise RuntimeError(f"the device check failed on the {where} (exit {res.returncode}):\n"
                           f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-5000:]}")
    report = json.loads((out / "report.json").read_text())
    for name in ("embeddings", "inputs", "resized"):
        with np.load(out / f"{name}.npz") as arrays:
            report[name] = {k: arrays[k] for k in arrays.files}
    return report


@dataclass
class Agreement:
    """How one bundle's guest embeddings agree with the x86 reference (per crop)."""
    precision: str
    min_cosine: float
    max_abs_diff: float
    bit_exact: bool
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compare(reference: np.ndarray, candidate: np.ndarray, precision: str, runtime: str = "") -> Agreement:
    """Per-crop cosine and element-wise |diff| against ``tolerance(runtime, precision)``."""
    need_cos, need_diff = tolerance(runtime, precision)
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"expected two (N, D) arrays of one shape, got {reference.shape} and {candidate.shape}")
    cosine, diff = cosines(reference, candidate), np.abs(reference - candidate)
    min_cos, max_diff = float(np.min(cosine)), float(np.max(diff))
    failures = [f"crop {i}: cosine {c:.9f} < {need_cos}" for i, c in enumerate(cosine) if not c >= need_cos]
    if need_diff is not None and not max_diff <= need_diff:
        failures.append(f"max |diff| {max_diff:.3g} > {need_diff} (crop {int(np.argmax(diff.max(axis=1)))})")
    return Agreement(precision, min_cos, max_diff, bool(np.array_equal(reference, candidate)), failures)


def select_crops(folder: Path | None, count: int, out: Path, size: tuple[int, int]) -> tuple[Path, list[str]]:
    """``count`` crops spread over ``folder``'s sorted images (or synthetic ones), as an .npz of uint8 BGR,
    already at the bundles' input ``size`` (H, W): the embeddings then compare the runtimes alone, and the
    check's own resize comparison covers preprocessing (cv2's bilinear is not bit-exact across ISAs)."""
    import cv2

    if folder is not None:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(files) < count:
            raise ValueError(f"{folder}: {len(files)} images, {count} needed")
        chosen = [files[i * len(files) // count] for i in range(count)]
        crops, names = [cv2.imread(str(p)) for p in chosen], [str(p) for p in chosen]
    else:
        sys.path.insert(0, str(REPO))
        from osnet_edge.samples import synthetic_crops

        crops, names = synthetic_crops(count, seed=7), [f"synthetic {i}" for i in range(count)]
    crops = [c if c.shape[:2] == tuple(size) else cv2.resize(c, size[::-1], interpolation=cv2.INTER_AREA)
             for c in crops]  # on the host: host and guest get the same pixels
    np.savez(out, **{f"crop{i:03d}": c for i, c in enumerate(crops)})
    return out, names


def _cmd_build(args: argparse.Namespace) -> int:
    guest = prepare(args.cache, args.runtime, install_tools=not args.no_install)
    print(json.dumps({"rootfs": str(guest.rootfs), "wheel": str(guest.wheel),
                      "sites": {r: str(p) for r, p in guest.sites.items()}, "unavailable": guest.unavailable,
                      "timings_s": {k: round(v, 1) for k, v in guest.timings.items()}}, indent=1))
    return 0 if guest.sites else 1


def _cmd_check(args: argparse.Namespace) -> int:
    bundles = [Path(b).resolve() for b in args.bundle]
    runtimes_of = {b: json.loads((b / "manifest.json").read_text())["runtime"] for b in bundles}
    guest = prepare(args.cache, sorted(set(runtimes_of.values()) & set(RUNTIMES)), not args.no_install)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="osnet_edge_aarch64_") as tmp:
        size = json.loads((bundles[0] / "manifest.json").read_text())["model"]["input_size"]
        crops, _ = select_crops(args.crops, args.num_crops, Path(tmp) / "crops.npz", tuple(size))
        host = host_check(bundles, crops, Path(tmp) / "host")
        for runtime in sorted(set(runtimes_of.values())):
            group = [b for b in bundles if runtimes_of[b] == runtime]
            if runtime not in guest.sites:
                print(f"{runtime}: not checked ({guest.unavailable.get(runtime, 'no aarch64 CPU runtime')})")
                failed += 1
                continue
            out = Path(tmp) / f"guest-{runtime}"
            got = guest_check(guest, runtime, group, crops, out)
            for b in group:
                agreement = compare(host["embeddings"][b.name], got["embeddings"][b.name],
                                    got["bundles"][b.name]["precision"], runtime)
                failed += not agreement.ok
                print(f"{b.name}: {runtime} {agreement.precision}: min cosine {agreement.min_cosine:.12f}, "
                      f"max |diff| {agreement.max_abs_diff:.3g}, bit-exact {agreement.bit_exact}"
                      + ("" if agreement.ok else "  FAIL: " + "; ".join(agreement.failures)))
            print(f"guest {runtime}: {json.dumps(got['versions'])}")
    return 1 if failed else 0


def _cmd_python(args: argparse.Namespace) -> int:
    guest = prepare(args.cache, [args.runtime], not args.no_install)
    res = guest.python(args.runtime, args.args)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


def build_parser() -> argparse.ArgumentParser:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # scripts/, for _cli (one-line errors, --debug)
    from _cli import Parser

    p = Parser(prog="python scripts/aarch64.py", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    commands = {"build": ("build or reuse the rootfs, the wheel and the runtimes' site folders", _cmd_build),
                "check": ("run bundles on the host and in the guest and compare the embeddings (exit 1 on a "
                          "mismatch)", _cmd_check),
                "python": ("run the guest's python with ARGS (osnet_edge + one runtime importable)", _cmd_python)}
    for name, (summary, func) in commands.items():
        c = sub.add_parser(name, help=summary, description=summary)
        c.set_defaults(func=func)
        c.add_argument("--cache", type=Path, default=None,
                       help=f"cache folder (default ${CACHE_ENV} or {DEFAULT_CACHE})")
        c.add_argument("--no-install", action="store_true",
                       help="never apt-get install qemu-user-static / debootstrap (default: install when root)")
        if name == "build":
            c.add_argument("--runtime", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
        elif name == "check":
            c.add_argument("bundle", nargs="+", help="bundle folders (osnet-edge export) of aarch64 CPU runtimes")
            c.add_argument("--crops", type=Path, default=None,
                           help="folder of crops to embed (default: synthetic crops); a training split, never an "
                                "evaluation one")
            c.add_argument("--num-crops", type=int, default=16)
        else:
            c.add_argument("--runtime", default="onnxruntime", choices=list(RUNTIMES))
            c.add_argument("args", nargs=argparse.REMAINDER, help="arguments of python (after --)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "args", None) and args.args[0] == "--":
        args.args = args.args[1:]
    try:
        return args.func(args)
    except HostUnfit as exc:
        print(f"error: this host cannot emulate aarch64: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _cli import run

    run(main)
