"""Concurrency and soak (``slow``: run with ``pytest -m slow tests/test_concurrency.py``).

One Extractor shared by 8 threads x 200 calls must give exactly the serial results, and
10,000 calls on x0.25 @ 128x64 must keep the process's RSS flat. The measurement code is
scripts/soak.py's (the same figures the script prints), loaded here as a module.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("torch", reason="exporting the test bundle needs torch (osnet_edge[export])")
pytest.importorskip("psutil", reason="RSS is measured with psutil (osnet_edge[dev])")

from osnet_edge import runtimes  # noqa: E402
from osnet_edge.extractor import Extractor  # noqa: E402

from .conftest import load_script  # noqa: E402

SOAK_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"
RUNTIMES = [r for r in ("onnxruntime", "openvino") if r in runtimes.available()]


def _load_soak():
    return load_script(SOAK_SCRIPT.name, "soak_script")


soak_script = _load_soak()


@pytest.fixture(scope="module", params=RUNTIMES)
def bundle(request, tmp_path_factory):
    from osnet_edge.export import export_bundle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(tmp_path_factory.mktemp(request.param) / "x025_r05", width=0.25, res=0.5,
                             target=request.param)


def test_eight_threads_equal_serial(bundle):
    with Extractor(bundle.path) as ext:
        result = soak_script.concurrency_check(ext, workers=8, calls_per_worker=200)
    print(f"\n{bundle.runtime}: 8 threads x 200 calls: max abs diff {result['max_abs_diff']}, "
          f"{result['calls_per_s']:.0f} calls/s shared, {result['serial_calls_per_s']:.0f} calls/s serial")
    assert result["calls"] == 1600
    assert result["mismatched_calls"] == 0 and result["max_abs_diff"] == 0.0


def test_threads_racing_close_get_a_clear_error_not_a_crash(bundle):
    """Closing while other threads call: each call either completes or raises 'Extractor is closed'."""
    import threading

    ext = Extractor(bundle.path)
    crop = np.zeros((64, 32, 3), np.uint8)
    outcomes: list[str] = []

    def work() -> None:
        for _ in range(50):
            try:
                assert ext(crop).shape == (1, 512)
                outcomes.append("ok")
            except RuntimeError as exc:
                assert "Extractor is closed" in str(exc)
                outcomes.append("closed")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    ext.close()
    for t in threads:
        t.join()
    assert len(outcomes) == 200 and set(outcomes) <= {"ok", "closed"}


def test_soak_10000_calls_keeps_rss_flat(bundle):
    with Extractor(bundle.path) as ext:
        s = soak_script.soak(ext, calls=10_000, progress=False)
    print(f"\n{bundle.runtime}: {s['calls']} calls ({s['crops']} crops) {s['calls_per_s']:.0f} calls/s; RSS start "
          f"{s['rss_start_mb']:.1f} MB end {s['rss_end_mb']:.1f} MB max {s['rss_max_mb']:.1f} MB "
          f"(second half {s['rss_growth_second_half_mb']:+.2f} MB)")
    # A leak of 1 KB per call (two embeddings' worth) would add 5 MB over the second 5,000 calls.
    assert s["rss_growth_second_half_mb"] < 5.0, s["rss_trace"]
    assert s["rss_growth_mb"] < 20.0, s["rss_trace"]
