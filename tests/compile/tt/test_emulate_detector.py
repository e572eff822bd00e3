"""The YOLOv4 format policy applied to convolutions: batch norms folded first, weights stored the way ttnn's
conv2d stores them, and a policy that stores nothing predicts the float32 network exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ingot.compile.tt import emulate, policies
from ingot.compile.tt.emulate import fold_batch_norms, predicted_detector
from ingot.compile.tt.formats import TTFormat, quantize
from ingot.errors import OptionError

BFP8 = TTFormat.BFLOAT8_B


def _conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(20, 40, 3, padding=1), nn.BatchNorm2d(40))
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.normal_()
    return model.eval()


def test_folding_batch_norms_keeps_the_function():
    model = _conv_bn()
    folded = _conv_bn()
    fold_batch_norms(folded)
    assert isinstance(folded[1], nn.Identity)
    x = torch.randn(2, 20, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_conv_weights_are_stored_folded_with_blocks_along_output_channels():
    reference = _conv_bn()
    policy = policies.FormatPolicy("conv-bfp8", "", (policies.Rule("0", weight=BFP8),), kind="detector")
    model, applied = predicted_detector(reference, policy)
    assert applied == {"0": {"weight": "bfloat8_b"}}
    folded = _conv_bn()
    fold_batch_norms(folded)
    weight = folded[0].weight.detach()
    # ttnn keeps a conv's weight as [in * kh * kw, out]: 16-value blocks span 16 output channels
    assert torch.equal(model[0].weight, quantize(weight.flatten(1).t(), BFP8).t().reshape(weight.shape))
    assert not torch.equal(model[0].weight, quantize(weight, BFP8))
    assert torch.equal(model[0].bias, quantize(folded[0].bias, BFP8))  # a conv's bias takes its weight's format
    assert isinstance(reference[1], nn.BatchNorm2d)  # the reference is untouched


def test_the_yolov4_policy_names_every_layer_and_no_child_twice():
    policy = policies.get_policy("yolov4", "detector")
    assert policy.rule_for("down1.conv1.conv.0").weight is BFP8
    assert policy.rule_for("down1.conv1.conv.0").input is TTFormat.BFLOAT16
    for layer in ("down1.conv1", "head.conv18", "down3.resblock.module_list.7.1", "neck.conv20"):
        assert policy.rule_for(layer).output is TTFormat.BFLOAT16 and policy.rule_for(layer).weight is None
    for child in ("down1.conv1.conv", "down1.conv1.conv.1", "down3.resblock.module_list.7", "down3.resblock"):
        assert policy.rule_for(child) is None


def test_a_policy_is_for_one_kind_of_model():
    with pytest.raises(OptionError, match="'yolov4' is for detector artifacts; llm artifacts take accuracy, perf"):
        policies.get_policy("yolov4")
    with pytest.raises(OptionError, match="detector artifacts take yolov4"):
        policies.get_policy("performance", "detector")
    assert [p.name for p in policies.policies_for("detector")] == ["yolov4"]


def test_count_applied_counts_tensors_per_format():
    applied = {"a": {"weight": "bfloat8_b", "output": "bfloat16"}, "b": {"output": "bfloat16"}}
    assert emulate.count_applied(applied) == {"output bfloat16": 2, "weight bfloat8_b": 1}
