"""The speed defaults keep results identical: OpenVINO's static-shape models give the dynamic
model's embeddings at every batch size and never recompile beyond their bound."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting needs torch (osnet_edge[export])")
pytest.importorskip("openvino", reason="needs openvino (osnet_edge[openvino])")

from osnet_edge.export import export_bundle  # noqa: E402
from osnet_edge.extractor import Extractor  # noqa: E402
from osnet_edge.samples import synthetic_crops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:no --weights", "ignore::UserWarning")


@pytest.fixture(scope="module")
def ov_bundle(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_bundle(tmp_path_factory.mktemp("ov") / "b", width=0.25, res=0.25, target="openvino")


def test_openvino_static_shapes_equal_the_dynamic_model(ov_bundle):
    from osnet_edge.runtimes.openvino import STATIC_SHAPES

    crops = synthetic_crops(9, seed=4)
    with Extractor(ov_bundle.path, threads=1, static_batch=False) as dynamic:
        expected = {n: dynamic(crops[:n]) for n in range(1, 10)}
    with Extractor(ov_bundle.path, threads=1) as ext:
        rt = ext._runtime
        assert rt.static_batch and list(rt._static) == [1]   # batch 1 compiled at load
        for n in list(range(1, 10)) + [3, 1]:
            np.testing.assert_allclose(ext(crops[:n]), expected[n], atol=2e-5, err_msg=f"batch {n}")
        assert len(rt._static) == STATIC_SHAPES + 1          # bounded: later sizes ran on the dynamic model
        assert list(rt._static)[:3] == [1, 2, 3]


def test_int8_placement_auto_keeps_the_fastest_faithful_candidate(tmp_path):
    """placement="auto" quantizes with each placement, times each against FP32 here and keeps the
    fastest that meets the fidelity target; the table is in the report and the bundle holds the winner."""
    pytest.importorskip("onnxruntime")
    from osnet_edge.calibration import CalibrationSet
    import cv2

    folder = tmp_path / "crops"
    folder.mkdir()
    for i, crop in enumerate(synthetic_crops(60, seed=8)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), crop)
    calibration = CalibrationSet.from_folder(folder, input_size=(64, 32), max_images=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = export_bundle(tmp_path / "b", width=0.25, res=0.25, target="onnxruntime", precision="int8",
                               calibration=calibration, placement="auto", fidelity_images=16)
    search = bundle.manifest["quantization"]["placement_search"]
    rows = {r["placement"]: r for r in search["candidates"]}
    assert set(rows) == {"conv", "all"} and all(r["int8_ms"] > 0 for r in rows.values())
    faithful = [r for r in rows.values() if r["meets_fidelity"]]
    expected = (min(faithful, key=lambda r: r["int8_ms"]) if faithful
                else max(rows.values(), key=lambda r: r["cosine_mean"] + r["cosine_p1"]))
    assert search["chosen"] == expected["placement"]
    assert bundle.manifest["quantization"]["options"]["placement"] == search["chosen"]
    with Extractor(bundle.path, threads=1) as ext:
        assert ext(synthetic_crops(2, seed=1)).shape == (2, 512)
