"""YOLOv4's two weight formats: files written from random parameters load back exactly; files of another network
are refused by size, key or shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ingot.errors import ModelSourceError
from ingot.models.yolov4.darknet import load_darknet, save_darknet
from ingot.models.yolov4.network import YOLOv4
from ingot.models.yolov4.port import load_port
from ingot.models.yolov4.source import resolve_detector

YOLOV4_WEIGHTS_BYTES = 257_717_640  # the size of the published yolov4.weights


def random_model(seed: int) -> YOLOv4:
    """Every parameter and statistic random, so a tensor loaded into the wrong place cannot go unnoticed."""
    model = YOLOv4()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.1)
    return model


def assert_same(a: YOLOv4, b: YOLOv4) -> None:
    expected = a.state_dict()
    for name, tensor in b.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(tensor, expected[name]), name


@pytest.fixture(scope="module")
def model() -> YOLOv4:
    return random_model(1)


def test_yolov4_has_the_published_layers_and_darknet_file_size(model: YOLOv4, tmp_path: Path) -> None:
    assert len(model.conv_layers()) == 110
    save_darknet(model, tmp_path / "yolov4.weights")
    assert (tmp_path / "yolov4.weights").stat().st_size == YOLOV4_WEIGHTS_BYTES


def test_darknet_weights_round_trip(model: YOLOv4, tmp_path: Path) -> None:
    path = tmp_path / "yolov4.weights"
    save_darknet(model, path)
    loaded = YOLOv4()
    load_darknet(loaded, path)
    assert_same(model, loaded)


def test_darknet_layout_is_batch_norm_then_conv_weight_in_cfg_order(tmp_path: Path) -> None:
    """Independent of save_darknet: a hand-made file of counting floats lands where yolov4.cfg puts it."""
    total = (YOLOV4_WEIGHTS_BYTES - 20) // 4
    header = np.array([0, 2, 5], "<i4").tobytes() + np.array([0], "<i8").tobytes()
    path = tmp_path / "counting.weights"
    path.write_bytes(header + np.arange(total, dtype="<f4").tobytes())
    loaded = YOLOv4()
    load_darknet(loaded, path)
    first = loaded.down1.conv1.conv  # 3x3 conv, 3 -> 32, batch norm: bias, scale, mean, var, then 864 weights
    assert first[1].bias[0] == 0 and first[1].weight[0] == 32 and first[1].running_var[31] == 127
    assert first[0].weight.flatten()[0] == 128 and first[0].weight.flatten()[-1] == 128 + 864 - 1
    assert loaded.down1.conv2.conv[1].bias[0] == 128 + 864  # the second layer follows
    last = loaded.head.conv18.conv[0]  # no batch norm: 255 biases, then the weights, to the file's end
    assert last.weight.flatten()[-1] == total - 1 and last.bias[0] == total - 1 - last.weight.numel() - 254


def test_old_darknet_header_with_32_bit_seen_is_read(model: YOLOv4, tmp_path: Path) -> None:
    path = tmp_path / "old.weights"
    save_darknet(model, path)
    data = path.read_bytes()
    path.write_bytes(np.array([0, 1, 0, 0], "<i4").tobytes() + data[20:])  # format 0.1: seen is an int32
    loaded = YOLOv4()
    load_darknet(loaded, path)
    assert_same(model, loaded)


def test_darknet_file_of_another_size_is_refused(model: YOLOv4, tmp_path: Path) -> None:
    path = tmp_path / "yolov4-tiny.weights"
    save_darknet(model, path)
    path.write_bytes(path.read_bytes()[:-4000])
    with pytest.raises(ModelSourceError, match="yolov4-tiny.weights: holds .* bytes .* needs 257717620"):
        load_darknet(YOLOv4(), path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_port_state_dict_round_trip(model: YOLOv4, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"yolov4{suffix}"
    if suffix == ".pth":
        torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)  # as DataParallel saves it
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded = YOLOv4()
    load_port(loaded, path)
    assert_same(model, loaded)


def test_port_state_dict_of_a_custom_class_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "yolov4-voc.pth"
    torch.save(YOLOv4(num_classes=20).state_dict(), path)
    with pytest.raises(ModelSourceError, match=r"head.conv2.conv.0.weight has shape \[75, 256, 1, 1\].* \[255, 256"):
        load_port(YOLOv4(), path)


def test_port_state_dict_with_missing_keys_is_refused(model: YOLOv4, tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"
    state = model.state_dict()
    del state["neck.conv5.conv.0.weight"]
    torch.save(state, path)
    with pytest.raises(ModelSourceError, match="lacks neck.conv5.conv.0.weight"):
        load_port(YOLOv4(), path)


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": print}, path)  # a callable: the weights-only unpickler refuses it
    with pytest.raises(ModelSourceError, match="evil.pth: not a PyTorch state dict"):
        load_port(YOLOv4(), path)


def test_weights_are_required_unless_random_is_asked_for(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="--weights yolov4.weights .* --random-weights"):
        resolve_detector("yolov4", None, random_weights=False)
    assert resolve_detector("yolov4", None, random_weights=True).kind == "random"
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="unknown weights format"):
        resolve_detector("yolov4", str(tmp_path / "w.onnx"), random_weights=False)
