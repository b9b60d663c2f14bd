"""What machine a measurement was taken on: CPU model and ISA flags, cores, GPU, versions.

A latency figure means nothing without the hardware behind it (INT8 only pays off with
VNNI/AMX, bf16 needs AVX512_BF16 or AMX, ...), so every profiler row and report carries
this description. Device side: reads /proc, sysfs and package metadata; never imports
torch (nor the runtimes themselves, which would be slow and could fail).
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

# ISA features that decide which precisions are fast, in the order they are reported.
# /proc/cpuinfo spellings (x86: flags, ARM: Features).
KEY_CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",                         # x86
    "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2",                             # ARM
)
# Distributions whose versions matter for a latency number (PyPI names).
VERSION_PACKAGES = ("osnet_edge", "numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu",
                    "openvino", "tensorrt", "pycuda")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flag set) from /proc/cpuinfo; platform fallbacks elsewhere."""
    model, flags = "", set()
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:
        model = _read("/proc/device-tree/model").strip("\x00 \n") or platform.processor() or platform.machine()
    return model, flags


def physical_cores() -> int:
    """Physical cores (what ONNX Runtime / OpenVINO use by default); logical count as fallback."""
    pairs, cores = set(), None
    phys = core = None
    for line in _read("/proc/cpuinfo").splitlines() + [""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core is not None:
                pairs.add((phys, core))
            phys = core = None
    if pairs:
        cores = len(pairs)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores or usable, usable))


def _gpus() -> list[str]:
    """GPU names: nvidia-smi, else the NVIDIA driver's /proc entries, else a Jetson's model."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10)
            names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
            if names:
                return names
        except (OSError, subprocess.SubprocessError):
            pass
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in _read(str(info)).splitlines():
            if line.lower().startswith("model:"):
                names.append(line.split(":", 1)[1].strip())
    if names:
        return names
    tegra = _read("/proc/device-tree/model").strip("\x00 \n")
    if "jetson" in tegra.lower() or "nvidia" in tegra.lower():
        return [tegra]
    return []


def package_versions(packages: tuple[str, ...] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages behind a measurement (absent ones left out)."""
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "osnet_edge" not in out:
        from . import __version__
        out["osnet_edge"] = __version__
    return out


def _memory_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 ** 2, 1)
    return None


@functools.lru_cache(maxsize=1)
def describe_machine() -> dict:
    """A JSON-able description of this machine (cached: it does not change during a run)."""
    model, flags = _cpuinfo()
    return {
        "cpu": model or "unknown CPU",
        "arch": platform.machine(),
        "cpu_flags": [f for f in KEY_CPU_FLAGS if f in flags],
        "hypervisor": "hypervisor" in flags,
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": package_versions(),
    }


def machine_summary(machine: dict | None = None) -> str:
    """One line: 'AMD EPYC, 2 cores (VM), flags avx2 avx512f ..., no GPU'."""
    m = machine or describe_machine()
    cores = f"{m.get('physical_cores')} core{'s' if m.get('physical_cores') != 1 else ''}"
    vm = " (VM)" if m.get("hypervisor") else ""
    flags = " ".join(m.get("cpu_flags") or []) or "none of the tracked ISA extensions"
    gpu = ", ".join(m.get("gpus") or []) or "no GPU"
    return f"{m.get('cpu')} ({m.get('arch')}), {cores}{vm}, flags: {flags}; {gpu}"


def row_machine_fields(machine: dict | None = None) -> dict:
    """The compact machine columns every profiler row carries (flat, so CSV keeps them)."""
    m = machine or describe_machine()
    return {"cpu": m["cpu"], "cpu_flags": " ".join(m["cpu_flags"]), "cores": m["physical_cores"],
            "gpu": ", ".join(m["gpus"]) or None}
