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
