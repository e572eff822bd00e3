"""`--weight-format`: which number format each stored tensor of a cpu artifact holds.

A choice is one format for every linear (fp32, bf16, bfp8, bfp4) or a Tenstorrent policy by name (accuracy,
performance). It resolves through the same ``FormatPolicy`` definitions (ingot/compile/tt/policies.py) that
`ingot verify --tt-policy` predicts with (bf16/bfp8/bfp4 through ``uniform``), so one choice means the same weight
bits on both targets: the first rule matching a module's name sets its weight's format, and its bias is bfloat16
when the rule sets one (as the emulation stores them). fp32 changes nothing.

What the cpu target stores (cpu/target.py):

- a linear's weight, packed in its format (cpu/packed_linears.py); the LM head follows the policy's ``lm_head``
  rule (bfp8 under accuracy and performance);
- a tied embedding reads its rows from the LM head's panels, so it holds the LM head's format: one copy of the
  table. A Tenstorrent device keeps a separate bfloat16 embedding table instead (policies.py's ``*embed_tokens``
  rule), so here a tied embedding differs from the device's, and the prediction's;
- the other tensors a rule names (norm weights, an untied embedding, the biases of linears stored in a format):
  their values rounded to the rule's format (bfloat16), stored as float32, the dtype the programs read; they are
  a small part of the bytes. The manifest lists them (``WeightsInfo.rounded``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ingot.artifacts.weight_format import WEIGHT_FORMAT_POLICIES, WeightFormat
from ingot.compile.llm.step_module import STEP_PREFIX
from ingot.compile.tt.formats import TTFormat
from ingot.compile.tt.policies import FormatPolicy, get_policy, uniform

# The one place the two vocabularies meet: a cpu artifact's formats are Tenstorrent's.
TT_FORMATS = {
    WeightFormat.FP32: TTFormat.FLOAT32,
    WeightFormat.BF16: TTFormat.BFLOAT16,
    WeightFormat.BFP8: TTFormat.BFLOAT8_B,
    WeightFormat.BFP4: TTFormat.BFLOAT4_B,
}
WEIGHT_FORMATS = {tt: fmt for fmt, tt in TT_FORMATS.items()}


def tt_format(fmt: WeightFormat | str) -> TTFormat:
    return TT_FORMATS[WeightFormat(fmt)]


def weight_format(fmt: TTFormat) -> WeightFormat:
    return WEIGHT_FORMATS[fmt]


def format_policy(choice: str) -> FormatPolicy | None:
    """The policy `--weight-format choice` stores weights by; None for fp32 (every tensor as the model has it)."""
    if choice in WEIGHT_FORMAT_POLICIES:
        return get_policy(choice)
    fmt = WeightFormat(choice)
    return None if fmt is WeightFormat.FP32 else uniform(tt_format(fmt))


def tensor_formats(choice: str, names: Iterable[str]) -> dict[str, WeightFormat]:
    """The format of each tensor in ``names`` that ``choice`` stores in one (tensors it leaves float32 are absent).

    Names are the artifact's (ingot's step module holds the transformers model as ``model``:
    ``model.model.layers.0.mlp.up_proj.weight``, ``model.lm_head.weight``); a rule matches the module's name in the
    transformers model (``model.layers.0.mlp.up_proj``, ``lm_head``)."""
    policy = format_policy(choice)
    if policy is None:
        return {}
    formats = {}
    for name in names:
        module, _, kind = name.removeprefix(STEP_PREFIX).rpartition(".")
        rule = policy.rule_for(module)
        if rule is None or rule.weight is None or kind not in ("weight", "bias"):
            continue
        formats[name] = weight_format(rule.weight) if kind == "weight" else WeightFormat.BF16
    return formats
