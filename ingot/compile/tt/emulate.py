"""TT-predicted accuracy: the float32 model with a format policy applied, against the float32 model itself.

`predicted_model` copies a float32 transformers model and applies a `FormatPolicy`: weights are replaced by
their values in the policy's formats (`formats.quantize`, bit-exact with ttnn's conversion), forward hooks
round the activations the policy names, and an attention wrapper reads keys and values in the KV-cache format,
as decode reads them from a TT cache. `predict_accuracies` runs both models teacher-forced over the text
`ingot verify` uses and reports PCC of the logits and top-1/top-5 agreement, beside Tenstorrent's own
acceptance numbers. Arithmetic stays float32: what this predicts is the cost of the storage formats, not of
the device's math fidelity (see policies.py for what is not modelled).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import transformers
from pydantic import BaseModel, ConfigDict
from transformers import AttentionInterface, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from ingot.artifacts.manifest import Manifest
from ingot.compile.tt.formats import TTFormat, quantize
from ingot.compile.tt.policies import FormatPolicy, get_policy
from ingot.compile.verify.metrics import agreement
from ingot.compile.verify.references import LLM_REFERENCE, reference_model
from ingot.compile.verify.sample_inputs import verification_tokens

# Tenstorrent's acceptance numbers: PCC >= 0.99 for a model's output against its reference, and what tt-metal
# reports for Llama-3.1-8B teacher-forced top-1/top-5 token accuracy in each mode (models/tt_transformers).
TT_MIN_PCC = 0.99
TT_REPORTED = {"accuracy": (0.96, 1.00), "performance": (0.90, 0.97)}
TT_REPORTED_MODEL = "Llama-3.1-8B"


class TenstorrentAcceptance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_pcc: float
    reported_model: str
    reported_top1: float | None
    reported_top5: float | None


class TTAccuracyReport(BaseModel):
    """Predicted accuracy of a model under a TT format policy, against the float32 reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str
    description: str
    source: str
    reference: str
    num_tokens: int
    pcc: float
    max_abs_error: float
    top1_agreement: float
    top5_agreement: float
    tenstorrent: TenstorrentAcceptance
    meets_tt_pcc: bool
    applied: dict[str, int]  # "<tensor kind> <format>" -> how many tensors were stored in it


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
            _store_weight(module, rule.weight)
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


def predict_accuracies(
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    policies: list[FormatPolicy],
    max_context: int | None = None,
) -> list[TTAccuracyReport]:
    """One report per policy; the reference runs once."""
    tokens = verification_tokens(tokenizer, max_context or reference.config.max_position_embeddings)
    ids = torch.tensor([tokens])
    with torch.no_grad():
        expected = reference(ids).logits[0].float()
    reports = []
    for policy in policies:
        with torch.no_grad():
            model, applied = predicted_model(reference, policy)
            actual = model(ids).logits[0].float()
        del model
        reports.append(_report(policy, applied, len(tokens), actual, expected, reference.config.num_hidden_layers))
    return reports


def count_applied(applied: dict[str, dict[str, str]]) -> dict[str, int]:
    """"<tensor kind> <format>" -> how many tensors `apply_policy` stored in it."""
    counts: dict[str, int] = {}
    for formats in applied.values():
        for kind, fmt in formats.items():
            counts[f"{kind} {fmt}"] = counts.get(f"{kind} {fmt}", 0) + 1
    return dict(sorted(counts.items()))


def _report(
    policy: FormatPolicy, applied: dict, num_tokens: int, actual, expected, num_layers: int
) -> TTAccuracyReport:
    counts = count_applied(applied)
    if policy.kv_cache is not None:
        counts[f"kv cache {policy.kv_cache.value}"] = num_layers
    metrics = agreement(actual, expected)
    top1, top5 = TT_REPORTED.get(policy.name, (None, None))
    return TTAccuracyReport(
        policy=policy.name,
        description=policy.description,
        source=policy.source,
        reference=LLM_REFERENCE,
        num_tokens=num_tokens,
        tenstorrent=TenstorrentAcceptance(
            min_pcc=TT_MIN_PCC, reported_model=TT_REPORTED_MODEL, reported_top1=top1, reported_top5=top5
        ),
        meets_tt_pcc=metrics["pcc"] >= TT_MIN_PCC,
        applied=dict(sorted(counts.items())),
        **metrics,
    )


def predict_tt_accuracies(
    artifact_dir: Path, manifest: Manifest, policies: list[str | FormatPolicy]
) -> list[TTAccuracyReport]:
    """`ingot verify`'s TT numerics: rebuild the float32 reference from the artifact's own weights and config
    (as for a cpu artifact) and predict its accuracy under each policy (a name from policies.POLICIES or a policy),
    loading the reference once."""
    transformers.utils.logging.set_verbosity_error()
    resolved = [get_policy(p, manifest.kind) if isinstance(p, str) else p for p in policies]
    tokenizer = AutoTokenizer.from_pretrained(artifact_dir / manifest.tokenizer.directory)
    reference = reference_model(artifact_dir, manifest)
    return predict_accuracies(reference, tokenizer, resolved, manifest.buckets.max_context)


def _store_weight(module: torch.nn.Module, fmt: TTFormat) -> None:
    weight = module.weight.detach()
    bias_format = TTFormat.BFLOAT16
    if isinstance(module, torch.nn.Linear):
        stored = quantize(weight.t(), fmt).t()  # ttnn keeps a linear's weight as [in, out]
    elif isinstance(module, torch.nn.Conv2d):
        # ttnn's conv2d keeps its weight as a matrix [in * kh * kw, out] (blocks along output channels), and its
        # bias in the weight's format
        stored = quantize(weight.flatten(1).t(), fmt).t().reshape(weight.shape)
        bias_format = fmt
    else:
        stored = quantize(weight, fmt)
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
