"""Stream-merged OSNet (osnet_edge.models.merged): same embeddings as OSNet, in torch and in ONNX Runtime.

Every model gets non-trivial BatchNorm running statistics and affine parameters (and random gate
biases) from a fixed seed, so that the folds are really exercised: with the default init
(mean 0, var 1, weight 1, bias 0) a missing or wrong fold would go unnoticed.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from osnet_edge.models import build_osnet, input_size, load_torchreid_weights
from osnet_edge.models.merged import FORMS, MergedOSNet, merge_streams
from osnet_edge.models.osnet import OSBlock, OSBlockAIN

from .conftest import X025_MARKET, require

COSINE = 0.999999
WIDTHS = (1.0, 0.75, 0.5, 0.25)
VARIANTS = ("osnet", "ibn", "ain")
RESOLUTIONS = (1.0, 0.5, 0.25)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine torch's default pool spins against other work
    (a 64x32 forward took seconds instead of milliseconds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running stats and affine parameters for every BatchNorm, InstanceNorm affine and conv bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            if isinstance(m, nn.Conv2d) and m.bias is not None:  # the gate's fc1/fc2
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model


_MODELS: dict[tuple[float, str], nn.Module] = {}


def model_for(width: float, variant: str) -> nn.Module:
    """One randomised eval-mode model per (width, variant), built once per session."""
    key = (width, variant)
    if key not in _MODELS:
        torch.manual_seed(1234)
        _MODELS[key] = randomise_norms(build_osnet(width, variant), seed=7).eval()
    return _MODELS[key]


def assert_same_embedding(ref: torch.Tensor, out: torch.Tensor, what: str) -> None:
    assert out.shape == ref.shape, what
    ref64, out64 = ref.double(), out.double()
    assert torch.isfinite(out64).all(), what
    # a non-degenerate reference, else cosine would prove little
    assert (ref64 > 0).double().mean() > 0.1 and ref64.norm(dim=1).min() > 1e-3, what
    cos = torch.nn.functional.cosine_similarity(ref64, out64, dim=1)
    assert cos.min() >= COSINE, f"{what}: per-sample cosine {cos.tolist()}"
    # cosine ignores scale: the magnitudes must agree too
    torch.testing.assert_close(out64, ref64, rtol=1e-4, atol=1e-5 * float(ref64.abs().max()), msg=what)


@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("width", WIDTHS)
def test_merged_forms_match_osnet(width, variant, res):
    model = model_for(width, variant)
    hw = input_size(res)
    x = torch.randn(4, 3, *hw, generator=torch.Generator().manual_seed(int(width * 100 + res * 10)))
    with torch.inference_mode():
        ref = model(x)
    for form in FORMS:
        merged = merge_streams(model, form)
        with torch.inference_mode():
            assert_same_embedding(ref, merged(x), f"{variant} x{width} res {res} form {form}")
    # conv3 absorbing the sum: one form per case, rotating over the forms
    form = FORMS[(WIDTHS.index(width) + RESOLUTIONS.index(res)) % len(FORMS)]
    with torch.inference_mode():
        out = merge_streams(model, form, absorb_sum=True)(x)
    assert_same_embedding(ref, out, f"{variant} x{width} res {res} form {form} absorb_sum")


def test_merged_structure():
    """Streams really merged: no BatchNorm left, T x fewer stream convs, no trainable parameters."""
    model = model_for(0.25, "osnet")
    blocks = sum(isinstance(m, (OSBlock, OSBlockAIN)) for m in model.modules())
    plain_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    for form in FORMS:
        merged = merge_streams(model, form)
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in merged.modules())
        convs = sum(isinstance(m, nn.Conv2d) for m in merged.modules())
        # per block: 20 stream convs + 2 gate FCs -> 8 + 2; conv1, conv3 and downsample unchanged
        assert convs == plain_convs - blocks * 12, form
        assert not any(p.requires_grad for p in merged.parameters())
        assert (merged.width, merged.variant, merged.form) == (0.25, "osnet", form)


def test_tolerance_catches_a_small_folding_error():
    """Control for the tolerance: a 2 % error in one folded depthwise layer fails the comparison."""
    model = model_for(0.25, "osnet")
    x = torch.randn(4, 3, 128, 64, generator=torch.Generator().manual_seed(3))
    merged = merge_streams(model, "grouped")
    block = merged.features[2][0]
    with torch.no_grad():
        block.depthwise[-1].weight.mul_(1.02)   # the deepest stream's last layer
    with torch.inference_mode():
        ref, out = model(x), merged(x)
    with pytest.raises(AssertionError):
        assert_same_embedding(ref, out, "perturbed")


def test_source_model_untouched_and_training_mode_accepted():
    torch.manual_seed(0)
    model = randomise_norms(build_osnet(0.25, "ain", num_classes=10), seed=1)
    model.train()
    before = copy.deepcopy(model.state_dict())
    merged = merge_streams(model, "wide_grouped")
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(merged, MergedOSNet) and not merged.training
    assert not any(m.training for m in merged.modules())
    x = torch.randn(2, 3, 128, 64)
    with torch.inference_mode():
        out = merged(x)
        ref = model.eval()(x)       # the eval-mode embedding, not the training-mode logits
    assert out.shape == (2, 512)
    assert_same_embedding(ref, out, "merged from a training-mode model")
    with pytest.raises(RuntimeError, match="inference-only"):
        merged.train()
    merged.eval()  # allowed


def test_bad_form_and_bad_model():
    model = model_for(0.25, "osnet")
    with pytest.raises(ValueError, match="form must be one of"):
        merge_streams(model, "dense")
    with pytest.raises(ValueError, match="needs an osnet_edge OSNet"):
        merge_streams(nn.Sequential(nn.Conv2d(3, 8, 3)))
    with pytest.raises(ValueError, match="needs an osnet_edge OSNet"):
        merge_streams(merge_streams(model))


def test_real_checkpoint():
    path = require(X025_MARKET)
    model = build_osnet(0.25)
    load_torchreid_weights(model, path)
    model.eval()
    from osnet_edge.preprocess import preprocess
    from osnet_edge.samples import synthetic_crops

    x = torch.from_numpy(preprocess(synthetic_crops(4, seed=5), input_size(1.0)))
    with torch.inference_mode():
        ref = model(x)
        for form in FORMS:
            assert_same_embedding(ref, merge_streams(model, form)(x), f"x0.25 Market-1501 checkpoint, {form}")


@pytest.fixture(scope="module")
def onnx_plain(tmp_path_factory):
    from osnet_edge.export import to_onnx

    model = model_for(0.25, "osnet")
    return to_onnx(model, tmp_path_factory.mktemp("merged_onnx") / "plain.onnx", input_size(0.5))


@pytest.mark.parametrize("form", FORMS)
def test_onnx_export_matches_torch_with_fewer_nodes(form, onnx_plain, tmp_path, record_property):
    import onnx
    import onnxruntime as ort

    from osnet_edge.export import to_onnx

    model = model_for(0.25, "osnet")
    hw = input_size(0.5)
    path = to_onnx(merge_streams(model, form), tmp_path / f"{form}.onnx", hw)
    x = np.random.default_rng(11).standard_normal((4, 3, *hw)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"input": x})[0])
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    assert_same_embedding(ref, got, f"ONNX Runtime, form {form}")
    plain_nodes = len(onnx.load(str(onnx_plain)).graph.node)
    nodes = onnx.load(str(path)).graph.node
    record_property("onnx_nodes", {"plain": plain_nodes, form: len(nodes)})
    print(f"ONNX nodes x0.25 @ {hw[0]}x{hw[1]}: plain {plain_nodes}, {form} {len(nodes)}")
    assert len(nodes) < 0.6 * plain_nodes, (form, len(nodes), plain_nodes)
    assert not any(n.op_type == "BatchNormalization" for n in nodes)
    if form != "grouped":  # the wide forms keep the streams in one tensor: no Concat at all
        assert not any(n.op_type == "Concat" for n in nodes)
