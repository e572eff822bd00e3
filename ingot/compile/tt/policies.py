"""Per-layer data-format policies: which TT format each weight, activation and the KV cache is stored in.

A policy is data: an ordered list of rules, each a module-name pattern (``fnmatch`` on the module's qualified
name in the model, e.g. ``model.layers.3.mlp.up_proj`` or YOLOv4's ``down1.conv1.conv.0``) and the formats it
sets; for each module the first rule whose pattern matches applies. A policy is for one kind of artifact,
``llm`` or ``detector``.

The two LLM policies follow tt-metal's ``models/tt_transformers/tt/model_config.py`` (``ModelOptimizations``
and the ``DecodersPrecision`` it builds), read at tenstorrent/tt-metal commit 0039cbf0:

- default ``TensorPrecision``: FF1_FF3 (gate/up), FF2 (down), WQKV, WO and KV_CACHE all ``bfp8``; ACTIVATION
  ``None``, i.e. activations keep their input type, bfloat16.
- ``accuracy``: WQKV, WO and KV_CACHE ``bf16``; the MLP keeps the default ``bfp8``. (tt-metal overrides this
  for Llama 3, Mistral 7B and Phi-3-mini/phi-4, which it runs with bfp8 attention even in accuracy mode, and for
  70B+ models, which get bfp4 FF1/FF3; those model-specific exceptions are not modelled here.)
- ``performance``: FF1_FF3 ``bfp4``; everything else the default (bfp8 attention weights, bfp8 KV cache,
  bfp8 FF2). (tt-metal keeps bf16 attention for Qwen2.5-7B even here; not modelled.)

and, for the rest of the model, ``models/tt_transformers/tt/{model,mlp,lm_head}.py`` at the same time:
embeddings and norm weights are bfloat16; the LM head's weight takes the model dtype (bfloat8_b in the demos)
and its output, the logits, is bfloat8_b unless a model overrides ``lm_head_dtype``; in the MLP the gate/up
outputs are bfloat16 and the ``silu(gate) * up`` product entering the down projection is bfloat8_b; every other
linear reads and writes bfloat16 activations, and the residual stream between decoder layers is bfloat16 (the
emulation rounds it at each layer's output and at every norm's input, not after the residual add inside a
layer).

What the emulation does not model: matmul math fidelity (LoFi/HiFi2/HiFi4 drop low mantissa bits of the
operands inside the FPU), bfloat16 accumulation where ``fp32_dest_acc_en`` is off, and the reduced precision
of softmax, RMSNorm and SiLU on the device's vector unit; attention scores and softmax run in float32.

The detector policy, ``yolov4``, follows tt-metal's ``models/demos/yolov4``, read at tenstorrent/tt-metal
commit 90b63baa (``common.py``; ``tt/common.py`` at 04981738, ``tt/model_preprocessing.py`` at 21ff8f55):

- every convolution is a ``ttnn.conv2d`` with ``Conv2dConfig(weights_dtype=ttnn.bfloat8_b)``, its batch norm
  folded into it first (``fold_batch_norm2d_into_conv2d``), so the stored weight is the folded one; ttnn keeps
  a conv's bias in its weight's format (``prepare_conv_bias`` asserts it), so the bias is bfloat8_b too;
- activations are bfloat16: the input image is ``ttnn.bfloat16``, and every conv's output dtype is the
  ``Conv2dArgs`` default from ``infer_ttnn_module_args``, ``ttnn.bfloat16``; Mish and leaky ReLU run on those;
- the convs run at ``MathFidelity.LoFi`` with ``fp32_dest_acc_en=False``, which is not modelled (see above),
  nor is the rounding of the residual adds and of the on-device box decoding: the prediction is the cost of
  the storage formats, an upper bound on what the device reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from ingot.compile.tt.formats import TTFormat
from ingot.errors import OptionError

BF16, BFP8, BFP4 = TTFormat.BFLOAT16, TTFormat.BFLOAT8_B, TTFormat.BFLOAT4_B


@dataclass(frozen=True)
class Rule:
    """Formats for the modules whose qualified name matches `pattern`; None leaves that tensor in float32.

    `weight` is the module's ``weight`` (and ``bias``, in bfloat16 when a weight format is set, unless `bias`
    names one): an ``nn.Linear`` weight is quantized transposed, [in, out], as ttnn stores it, so each 16-value
    block spans 16 output features; with `transposed` False, as torch holds it, [out, in] (blocks span 16 input
    features), as the TT plugin's const-eval converts it. `input` is the format of the module's first input,
    `output` of its output.
    """

    pattern: str
    weight: TTFormat | None = None
    input: TTFormat | None = None
    output: TTFormat | None = None
    bias: TTFormat | None = None
    transposed: bool = True


@dataclass(frozen=True)
class FormatPolicy:
    name: str
    description: str
    rules: tuple[Rule, ...]
    kv_cache: TTFormat | None = None  # keys and values as attention reads them from the cache
    source: str = ""
    kind: str = "llm"  # the artifacts it applies to: "llm" or "detector"

    def rule_for(self, module_name: str) -> Rule | None:
        return next((rule for rule in self.rules if fnmatchcase(module_name, rule.pattern)), None)

    def summary(self) -> dict[str, str]:
        """Format per tensor group, for reports."""
        out = {}
        for rule in self.rules:
            for kind in ("weight", "input", "output"):
                fmt = getattr(rule, kind)
                if fmt is not None:
                    out[f"{rule.pattern} {kind}"] = fmt.value
        if self.kv_cache is not None:
            out["kv cache"] = self.kv_cache.value
        return out


BINARY = "binary"  # the policy of a TT artifact's own binary (see `binary`)

TT_TRANSFORMERS = (
    "tenstorrent/tt-metal models/tt_transformers/tt/model_config.py (ModelOptimizations, DecodersPrecision)"
)


# Each decoder layer's output, the residual stream, is bfloat16 on the device ("model.layers.N", not its children).
_RESIDUAL_STREAM = tuple(Rule("model.layers." + "[0-9]" * digits, output=BF16) for digits in (1, 2, 3))


def _llm_rules(wqkv: TTFormat, wo: TTFormat, ff1_ff3: TTFormat, ff2: TTFormat) -> tuple[Rule, ...]:
    return (
        Rule("*.self_attn.[qkv]_proj", weight=wqkv, input=BF16, output=BF16),
        Rule("*.self_attn.o_proj", weight=wo, input=BF16, output=BF16),
        Rule("*.mlp.gate_proj", weight=ff1_ff3, input=BF16, output=BF16),
        Rule("*.mlp.up_proj", weight=ff1_ff3, input=BF16, output=BF16),
        Rule("*.mlp.down_proj", weight=ff2, input=BFP8, output=BF16),  # silu(w1) * w3 is written as bfloat8_b
        Rule("lm_head", weight=BFP8, input=BF16, output=BFP8),  # logits are bfloat8_b unless lm_head_dtype is set
        Rule("*embed_tokens", weight=BF16, output=BF16),
        Rule("*norm", weight=BF16, input=BF16),
        *_RESIDUAL_STREAM,
    )


ACCURACY = FormatPolicy(
    name="accuracy",
    description="bf16 attention weights and KV cache, bfp8 MLP weights",
    rules=_llm_rules(wqkv=BF16, wo=BF16, ff1_ff3=BFP8, ff2=BFP8),
    kv_cache=BF16,
    source=TT_TRANSFORMERS + ": ModelOptimizations.accuracy",
)

PERFORMANCE = FormatPolicy(
    name="performance",
    description="bfp8 attention weights and KV cache, bfp4 FF1/FF3 (gate, up), bfp8 FF2 (down)",
    rules=_llm_rules(wqkv=BFP8, wo=BFP8, ff1_ff3=BFP4, ff2=BFP8),
    kv_cache=BFP8,
    source=TT_TRANSFORMERS + ": ModelOptimizations.performance",
)


def uniform(fmt: TTFormat) -> FormatPolicy:
    """Every linear weight in one format, activations and KV cache bfloat16: for comparing formats alone."""
    fmt = TTFormat(fmt)
    return FormatPolicy(
        name=f"all-{fmt.value}",
        description=f"every linear weight {fmt.value}, activations and KV cache bfloat16",
        rules=(
            Rule("*_proj", weight=fmt, input=BF16, output=BF16),
            Rule("lm_head", weight=fmt, input=BF16, output=BF16),
            Rule("*embed_tokens", weight=BF16, output=BF16),
            Rule("*norm", weight=BF16, input=BF16),
            *_RESIDUAL_STREAM,
        ),
        kv_cache=BF16,
        source="ingot",
    )


def binary(weights: dict[str, TTFormat], description: str) -> FormatPolicy:
    """What a TT binary holds: each linear named in `weights` (module name -> format) in that format as the TT
    plugin's const-eval converts it (as torch holds the weight, its bias float32), every other tensor, activation
    and the KV cache float32, as the lowered float32 graph computes them."""
    rules = tuple(
        Rule(escape(module), weight=fmt, bias=TTFormat.FLOAT32, transposed=False) for module, fmt in weights.items()
    )
    return FormatPolicy(
        name=BINARY, description=description, rules=rules, source="the TT artifact's programs (TTNN MLIR)"
    )


def escape(name: str) -> str:
    """An fnmatch pattern matching exactly `name`."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


# YOLOv4's layers (Darknet's [convolutional]: conv, folded batch norm, activation) by module name: down1.conv1,
# head.conv10, and the residual units' down2.resblock.module_list.0.1; never their children (conv.0, conv.1).
_YOLOV4_LAYERS = ("*conv[0-9]", "*conv[0-9][0-9]", "*.module_list.[0-9].[01]")

YOLOV4 = FormatPolicy(
    name="yolov4",
    description="bfp8 convolution weights and biases (batch norms folded), bf16 activations",
    rules=(
        Rule("*.conv.0", weight=BFP8, input=BF16, output=BF16),  # the nn.Conv2d of each layer
        *(Rule(pattern, output=BF16) for pattern in _YOLOV4_LAYERS),  # after Mish / leaky ReLU
    ),
    source="tenstorrent/tt-metal models/demos/yolov4 (tt/common.py Conv: Conv2dConfig weights_dtype bfloat8_b)",
    kind="detector",
)

POLICIES: dict[str, FormatPolicy] = {p.name: p for p in (ACCURACY, PERFORMANCE, YOLOV4)}


def get_policy(name: str, kind: str = "llm") -> FormatPolicy:
    """The policy called `name`, which must be one for `kind` artifacts (a detector has no LM head to quantize)."""
    policy = POLICIES.get(name)
    if policy is None:
        raise OptionError(f"unknown TT format policy {name!r}: one of {', '.join(POLICIES)}")
    if policy.kind != kind:
        names = ", ".join(p.name for p in policies_for(kind))
        raise OptionError(f"TT format policy {name!r} is for {policy.kind} artifacts; {kind} artifacts take {names}")
    return policy


def policies_for(kind: str) -> list[FormatPolicy]:
    """Every policy for `kind` artifacts: what `ingot verify` predicts for a TT artifact by default."""
    return [p for p in POLICIES.values() if p.kind == kind]
