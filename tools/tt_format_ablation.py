"""Which format costs a model the most: predicted TT accuracy of a cpu artifact under variants of the policies.

    python tools/tt_format_ablation.py ARTIFACT_DIR

Prints a markdown table (docs/tt-numerics.md has SmolLM2's). Each variant changes one thing in a policy.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import transformers
from transformers import AutoTokenizer

from ingot.artifacts.integrity import check_artifact
from ingot.compile.tt import policies as P
from ingot.compile.tt.formats import TTFormat
from ingot.compile.verify.predicted_llm import predict_accuracies
from ingot.compile.verify.references import reference_model

BF16, BFP8, BFP4 = TTFormat.BFLOAT16, TTFormat.BFLOAT8_B, TTFormat.BFLOAT4_B


def variant(base: P.FormatPolicy, name: str, **changes: dict) -> P.FormatPolicy:
    """`base` with the rules named by pattern changed."""
    rules = tuple(dataclasses.replace(r, **changes[r.pattern]) if r.pattern in changes else r for r in base.rules)
    return dataclasses.replace(base, name=name, rules=rules)


VARIANTS = [
    P.ACCURACY,
    variant(P.ACCURACY, "accuracy with bf16 logits", **{"lm_head": dict(output=BF16)}),
    P.PERFORMANCE,
    variant(
        P.PERFORMANCE,
        "performance with bfp8 gate/up",
        **{"*.mlp.gate_proj": dict(weight=BFP8), "*.mlp.up_proj": dict(weight=BFP8)},
    ),
    variant(P.PERFORMANCE, "performance with bf16 logits", **{"lm_head": dict(output=BF16)}),
    P.uniform(BF16),
    P.uniform(BFP8),
    P.uniform(BFP4),
]


def main(directory: Path) -> None:
    transformers.utils.logging.set_verbosity_error()
    manifest = check_artifact(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory / manifest.tokenizer.directory)
    reference = reference_model(directory, manifest)
    reports = predict_accuracies(reference, tokenizer, VARIANTS, manifest.buckets.max_context)
    print("| policy | logits PCC | top-1 | top-5 |\n|---|---|---|---|")
    for report in reports:
        print(f"| {report.policy} | {report.pcc:.6f} | {report.top1_agreement:.2%} | {report.top5_agreement:.2%} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
