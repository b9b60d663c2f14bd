"""Rockchip NPU simulator on x86 (``rknn-sim``): verifies an rknn bundle where no board is at hand.

rknn-toolkit2's simulator refuses a model loaded from .rknn, so this runtime rebuilds the bundle's model from its
model.onnx with the build settings and calibration crops the manifest records (in the isolated toolkit venv,
``osnet-edge setup rknn``), checks that the rebuild reproduces the simulator rows recorded at export for the
bundle's probe crops (``rknn_probe.npz``; two identical builds give identical rows, though ~1000 bytes of the .rknn
files differ: in-memory addresses), then runs crops through the simulator: the same (N, dim) raw rows the board's NPU would give, within the simulator's fidelity.
Slow (rebuild 15-400 s, then ~10-30 crops/s on two cores): for verification, never for deployment.
Device side: numpy + a subprocess; never torch.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import RuntimeFailure, RuntimeUnavailable
from .rknn import check_batch

if TYPE_CHECKING:
    from osnet_edge.bundle import Bundle


def rebuild_job(bundle: "Bundle", export_path: str) -> dict:
    """The worker job that rebuilds ``bundle``'s model exactly as it was exported."""
    record = bundle.manifest.get("build") or {}
    if "platform" not in record or "mean_values" not in record:
        raise RuntimeFailure(f"bundle {bundle.path} has no rknn build record in its manifest (not an rknn bundle?)")
    job = {k: v for k, v in record.items()
           if k not in ("input", "hybrid_ranking", "toolkit", "calibration_file", "probe_file")}
    job.update(onnx=str(bundle.file("model.onnx").resolve()), export=export_path,
               dataset=str(bundle.file(record["calibration_file"]).resolve()) if record.get("calibration_file")
               else None)
    return job


class RknnSimulatorRuntime:
    """Runs an rknn bundle in rknn-toolkit2's x86 simulator after rebuilding it from the bundle's ONNX."""

    name = "rknn-sim"

    @staticmethod
    def is_available() -> bool:
        from osnet_edge.toolchains.rknn import default_venv_dir, venv_python

        return venv_python(default_venv_dir()).exists()

    def __init__(self, bundle: "Bundle", device: str | None = None, threads: int | None = None,
                 venv: str | None = None, verify: bool = True) -> None:
        from osnet_edge.toolchains.rknn import RknnToolchainError, SimulatorProcess, default_venv_dir, venv_python

        if device not in (None, "cpu", "simulator"):
            raise ValueError(f"rknn-sim runs on the x86 simulator: device must be None or 'simulator', got {device!r}")
        venv = venv or default_venv_dir()
        if not venv_python(venv).exists():
            raise RuntimeUnavailable(f"rknn-sim needs the rknn-toolkit2 venv ({venv} is missing): run "
                                     "'osnet-edge setup rknn' (x86-64 Linux, Python 3.6-3.12)")
        self.device, self.threads = "simulator", None
        self.input_size = bundle.input_size
        self._tmp = tempfile.TemporaryDirectory(prefix="osnet_edge_rknn_rebuild_")
        try:
            self._sim = SimulatorProcess(rebuild_job(bundle, str(Path(self._tmp.name) / "rebuilt.rknn")), venv=venv)
        except RknnToolchainError as exc:
            self._tmp.cleanup()
            raise RuntimeFailure(str(exc)) from None
        self.rebuild = {k: self._sim.facts.get(k) for k in ("build_seconds", "rknn_sha256", "toolkit_version")}
        if verify:
            self._verify(bundle)

    def _verify(self, bundle: "Bundle") -> None:
        """The rebuild must give the rows the export's simulator gave for the probe crops."""
        record = bundle.manifest.get("build") or {}
        with np.load(bundle.file(record.get("probe_file") or "rknn_probe.npz")) as probe:
            crops, expected = probe["crops"], probe["embeddings"]
        got = self.infer(crops)
        self.probe_max_abs_diff = float(np.abs(got - expected).max())
        if self.probe_max_abs_diff > 1e-5 * max(1.0, float(np.abs(expected).max())):
            self.close()
            raise RuntimeFailure(f"the simulator's rebuild of {bundle.path} does not reproduce the export's rows on "
                                 f"its probe crops (max abs diff {self.probe_max_abs_diff:.3g}): another "
                                 "rknn-toolkit2 version than the export's? pass verify=False to simulate anyway")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._sim is None:
            raise RuntimeFailure("rknn-sim runtime is closed")
        return self._sim.infer(check_batch(batch, self.input_size)).astype(np.float32, copy=False)

    def close(self) -> None:
        sim, self._sim = getattr(self, "_sim", None), None
        if sim is not None:
            sim.close()
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()
            self._tmp = None
