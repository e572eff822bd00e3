"""A float32 model as a Tenstorrent device would store it: a format policy applied to a copy of the model.

`predicted_model` copies a float32 transformers model and applies a `FormatPolicy`: weights are replaced by
their values in the policy's formats (`formats.quantize`, bit-exact with ttnn's conversion), forward hooks
round the activations the policy names, and an attention wrapper reads keys and values in the KV-cache format,
as decode reads them from a TT cache. A Tenstorrent YOLOv4 folds each batch norm into its convolution and then
stores the folded weight in a block format, so `predicted_detector` folds first (torch's `fuse_conv_bn_eval`)
and then applies the policy the same way. Arithmetic stays float32: what this emulates is the cost of the
storage formats, not of the device's math fidelity (see policies.py for what is not modelled). What the
predictions score is in verify/predicted_llm.py and verify/predicted_detector.py.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from ingot.compile.tt.formats import TTFormat, quantize
from ingot.compile.tt.policies import FormatPolicy, Rule


def apply_policy(model: torch.nn.Module, policy: FormatPolicy) -> dict[str, dict[str, str]]:
    """Apply `policy` to `model` in place; returns module name -> {"weight"|"input"|"output": format}."""
    applied: dict[str, dict[str, str]] = {}
    for name, module in model.named_modules():
        rule = policy.rule_for(name) if name else None
        if rule is None:
            continue
        done = {}
        weight = module._parameters.get("weight")
        if rule.weight is not None and weight is not None:
            _store_weight(module, rule)
            done["weight"] = rule.weight.value
        if rule.input is not None:
            module.register_forward_pre_hook(_round_input(rule.input))
            done["input"] = rule.input.value
        if rule.output is not None:
            module.register_forward_hook(_round_output(rule.output))
            done["output"] = rule.output.value
        if done:
            applied[name] = done
    if policy.kv_cache is not None:
        model.config._attn_implementation = _register_kv_attention(policy.kv_cache)
    return applied


def predicted_model(reference: PreTrainedModel, policy: FormatPolicy) -> tuple[PreTrainedModel, dict]:
    """A copy of `reference` (untouched) with `policy` applied. Tied weights are untied: on a TT device the
    embedding table (bfloat16, row-major) and the LM head (a tiled matmul weight) are separate tensors."""
    model = copy.deepcopy(reference)
    applied = apply_policy(model, policy)
    return model.eval(), applied


def fold_batch_norms(model: nn.Module) -> None:
    """Fold every batch norm into the convolution just before it in the same container, in place (eval mode)."""
    for container in model.modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            continue
        for i in range(len(container) - 1):
            conv, norm = container[i], container[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                container[i] = fuse_conv_bn_eval(conv, norm)
                container[i + 1] = nn.Identity()


def predicted_detector(reference: nn.Module, policy: FormatPolicy) -> tuple[nn.Module, dict]:
    """A copy of `reference` (untouched) with its batch norms folded and `policy` applied."""
    model = copy.deepcopy(reference).eval()
    fold_batch_norms(model)
    applied = apply_policy(model, policy)
    return model, applied


def count_applied(applied: dict[str, dict[str, str]]) -> dict[str, int]:
    """"<tensor kind> <format>" -> how many tensors `apply_policy` stored in it."""
    counts: dict[str, int] = {}
    for formats in applied.values():
        for kind, fmt in formats.items():
            counts[f"{kind} {fmt}"] = counts.get(f"{kind} {fmt}", 0) + 1
    return dict(sorted(counts.items()))


def _store_weight(module: torch.nn.Module, rule: Rule) -> None:
    weight, fmt = module.weight.detach(), rule.weight
    bias_format = TTFormat.BFLOAT16
    if isinstance(module, torch.nn.Linear):
        # ttnn keeps a linear's weight as [in, out]; the TT plugin's const-eval converts it as torch holds it
        stored = quantize(weight.t(), fmt).t() if rule.transposed else quantize(weight, fmt)
    elif isinstance(module, torch.nn.Conv2d):
        # ttnn's conv2d keeps its weight as a matrix [in * kh * kw, out] (blocks along output channels), and its
        # bias in the weight's format
        stored = quantize(weight.flatten(1).t(), fmt).t().reshape(weight.shape)
        bias_format = fmt
    else:
        stored = quantize(weight, fmt)
    bias_format = rule.bias or bias_format
    # A new Parameter, never an in-place write: a tied tensor keeps its own format elsewhere.
    module.weight = torch.nn.Parameter(stored.contiguous(), requires_grad=False)
    bias = module._parameters.get("bias")
    if bias is not None:
        module.bias = torch.nn.Parameter(quantize(bias.detach(), bias_format), requires_grad=False)


def _round_input(fmt: TTFormat):
    def hook(module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            return (quantize(args[0], fmt), *args[1:])
        return None

    return hook


def _round_output(fmt: TTFormat):
    def hook(module, args, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return quantize(output, fmt)
        return None

    return hook


def _register_kv_attention(fmt: TTFormat) -> str:
    """An attention function that reads keys and values in `fmt` (then runs sdpa), registered under its name."""
    name = f"ingot_tt_kv_{fmt.value}"

    def attention(module, query, key, value, attention_mask, **kwargs):
        return sdpa_attention_forward(module, query, quantize(key, fmt), quantize(value, fmt), attention_mask, **kwargs)

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return name
