"""OSNet definition: shapes, torchreid key layout, checkpoint loading, Table 6 counts."""
from __future__ import annotations

import json
import pickle
import re

import pytest
import torch

from osnet_edge.profiler.counting import count_macs, count_params
from osnet_edge.models import (CheckpointError, build_osnet, create_model, input_size, list_models,
                               load_torchreid_weights, scaled_channels)
from osnet_edge.profiler import count_grid

from .conftest import X025_MARKET, X025_MSMT, require

# Paper Table 6: (width, res) -> mult-adds in millions as printed; params per width.
TABLE6_MACS = {
    (1.0, 1.0): 978.9, (0.75, 1.0): 571.8, (0.5, 1.0): 272.9, (0.25, 1.0): 82.3,
    (1.0, 0.75): 550.7, (1.0, 0.5): 244.9, (1.0, 0.25): 61.5,
    (0.75, 0.75): 321.7, (0.75, 0.5): 143.1, (0.75, 0.25): 35.9,
    (0.5, 0.75): 153.6, (0.5, 0.5): 68.3, (0.5, 0.25): 17.2,
    (0.25, 0.75): 46.3, (0.25, 0.5): 20.6, (0.25, 0.25): 5.2,
}
TABLE6_PARAMS = {1.0: 2.2, 0.75: 1.3, 0.5: 0.6, 0.25: 0.2}
TORCHREID_NAMES = {"osnet_x1_0": (1.0, "osnet"), "osnet_x0_75": (0.75, "osnet"),
                   "osnet_x0_5": (0.5, "osnet"), "osnet_x0_25": (0.25, "osnet"),
                   "osnet_ibn_x1_0": (1.0, "ibn"), "osnet_ain_x1_0": (1.0, "ain"),
                   "osnet_ain_x0_75": (0.75, "ain"), "osnet_ain_x0_5": (0.5, "ain"),
                   "osnet_ain_x0_25": (0.25, "ain")}


def test_table6_all_16_rows_exact():
    rows = count_grid([1.0, 0.75, 0.5, 0.25], [1.0, 0.75, 0.5, 0.25])
    assert len(rows) == 16
    for row in rows:
        assert round(row["macs"] / 1e6, 1) == TABLE6_MACS[(row["width"], row["res"])], row
        assert round(row["params"] / 1e6, 1) == TABLE6_PARAMS[row["width"]], row


def test_counts_exclude_classifier():
    with_cls, without = build_osnet(0.25, num_classes=751), build_osnet(0.25)
    assert count_params(with_cls) == count_params(without)
    assert count_macs(with_cls, (256, 128)) == count_macs(without, (256, 128))


@pytest.mark.parametrize("variant", ["osnet", "ibn", "ain"])
@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25])
def test_feature_shapes(variant, width):
    if variant == "ibn" and width != 0.25 and width != 1.0:
        pytest.skip("one extra ibn width is enough")
    model = build_osnet(width, variant).eval()
    for hw in [(256, 128), (128, 64), (160, 64), (96, 48)]:
        with torch.no_grad():
            out = model(torch.randn(2, 3, *hw))
        assert out.shape == (2, 512)
        assert torch.isfinite(out).all()


def test_classifier_in_training_mode_and_feature_in_eval():
    model = build_osnet(0.25, num_classes=751)
    model.train()
    assert model(torch.randn(2, 3, 128, 64)).shape == (2, 751)
    model.eval()
    assert model(torch.randn(2, 3, 128, 64)).shape == (2, 512)


def test_state_dict_keys_match_torchreid_exactly(shared_data):
    ref = json.loads((shared_data / "torchreid_state_dict_keys.json").read_text())["models"]
    for name, (width, variant) in TORCHREID_NAMES.items():
        mine = [[k, list(v.shape)] for k, v in build_osnet(width, variant, num_classes=1000).state_dict().items()]
        assert mine == ref[name], name


def test_registry():
    assert "osnet_x0_25" in list_models() and "osnet_ain_x1_0" in list_models()
    m = create_model("osnet_ain_x0_5")
    assert m.variant == "ain" and m.width == 0.5
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet50")


@pytest.mark.parametrize("bad", [0, -1, 0.3, float("nan"), "1.0", True])
def test_bad_width_rejected(bad):
    with pytest.raises(ValueError):
        scaled_channels(bad)


def test_other_whole_channel_widths_work():
    assert scaled_channels(1.5) == (96, 384, 576, 768)
    assert build_osnet(1.5).eval()(torch.randn(1, 3, 64, 32)).shape == (1, 512)


def test_input_size():
    assert input_size(1.0) == (256, 128) and input_size(0.5) == (128, 64) and input_size(0.75) == (192, 96)
    with pytest.raises(ValueError):
        input_size(0.1)
    with pytest.raises(ValueError):
        build_osnet(1.0, variant="resnet")


def _torchreid_style_checkpoint(model, num_classes=751, wrap=True):
    """What torchreid writes: 'module.'-prefixed keys (DataParallel), a classifier, a dict."""
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.classifier.weight"] = torch.randn(num_classes, 512)
    state["module.classifier.bias"] = torch.randn(num_classes)
    return {"state_dict": state, "epoch": 60, "rank1": 0.9} if wrap else state


@pytest.mark.parametrize("variant,width", [("osnet", 0.25), ("ibn", 1.0), ("ain", 0.5)])
def test_checkpoint_round_trip(tmp_path, variant, width):
    torch.manual_seed(0)
    src = build_osnet(width, variant)
    # perturb BN statistics so that a missed key would change the output
    for m in src.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model.pth.tar"
    torch.save(_torchreid_style_checkpoint(src), path)
    dst = build_osnet(width, variant)
    info = load_torchreid_weights(dst, path)
    assert info["dropped_classifier"] == {"classifier.weight": [751, 512], "classifier.bias": [751]}
    x = torch.randn(3, 3, 128, 64)
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst.eval()(x))


def test_raw_state_dict_loads(tmp_path):
    src = build_osnet(0.25)
    torch.save(_torchreid_style_checkpoint(src, wrap=False), tmp_path / "raw.pth")
    load_torchreid_weights(build_osnet(0.25), tmp_path / "raw.pth")


def test_wrong_width_lists_mismatched_keys(tmp_path):
    torch.save(build_osnet(0.5).state_dict(), tmp_path / "x05.pth")
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: conv1.conv.weight: checkpoint \(32, 3, 7, 7\)"):
        load_torchreid_weights(build_osnet(0.25), tmp_path / "x05.pth")


def test_wrong_width_says_the_checkpoint_width_first_and_truncates_the_keys(tmp_path):
    torch.save(build_osnet(0.25).state_dict(), tmp_path / "x025.pth")
    with pytest.raises(CheckpointError) as err:
        load_torchreid_weights(build_osnet(1.0), tmp_path / "x025.pth")
    lines = str(err.value).splitlines()
    assert re.search(r"is a width 0.25 checkpoint \(conv1.conv.weight has 16 output channels = 64 x 0.25\) but the "
                     r"model has width 1: use --width 0.25", lines[0]), lines[0]
    keys = next(line for line in lines if "mis-shaped keys" in line)
    count = int(re.search(r"(\d+) mis-shaped keys", keys).group(1))
    assert count > 5 and keys.count(" vs model ") == 5 and keys.endswith(f"... {count - 5} more")
    assert len(str(err.value)) < 1000   # was ~1,500 characters of keys


def test_wrong_variant_lists_missing_and_unexpected(tmp_path):
    torch.save(build_osnet(0.25, "ain").state_dict(), tmp_path / "ain.pth")
    with pytest.raises(CheckpointError) as err:
        load_torchreid_weights(build_osnet(0.25), tmp_path / "ain.pth")
    assert "missing keys" in str(err.value) and "unexpected keys" in str(err.value)


def test_truncated_checkpoint(tmp_path):
    torch.save(build_osnet(0.25).state_dict(), tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_torchreid_weights(build_osnet(0.25), tmp_path / "cut.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError):
        load_torchreid_weights(build_osnet(0.25), tmp_path / "notes.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_torchreid_weights(build_osnet(0.25), tmp_path / "empty.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_torchreid_weights(build_osnet(0.25), tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        load_torchreid_weights(build_osnet(0.25), tmp_path / "nope.pth")


class _Legacy:  # a pickled object: weights_only loading must refuse it
    pass


def test_unsafe_pickle_needs_opt_in(tmp_path):
    state = build_osnet(0.25).state_dict()
    torch.save({"state_dict": state, "meta": _Legacy()}, tmp_path / "legacy.pth", pickle_module=pickle)
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle"):
        load_torchreid_weights(build_osnet(0.25), tmp_path / "legacy.pth")
    load_torchreid_weights(build_osnet(0.25), tmp_path / "legacy.pth", allow_unsafe_pickle=True)


@pytest.mark.parametrize("path", [X025_MSMT, X025_MARKET], ids=["msmt17", "market1501"])
def test_real_torchreid_checkpoints_load_strictly(path):
    require(path)
    model = build_osnet(0.25)
    info = load_torchreid_weights(model, path)
    assert len(info["sha256"]) == 64
    with torch.no_grad():
        f = model.eval()(torch.randn(2, 3, 256, 128))
    assert f.shape == (2, 512) and torch.isfinite(f).all() and (f >= 0).all()  # after ReLU
    with pytest.raises(CheckpointError):
        load_torchreid_weights(build_osnet(0.25, "ain"), path)
