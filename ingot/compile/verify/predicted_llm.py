"""A language model's TT-predicted accuracy: the float32 model with a format policy applied (tt/emulate.py),
against the float32 model itself, teacher-forced over the text every verification runs; PCC of the logits and
top-1/top-5 agreement, beside Tenstorrent's own acceptance numbers. `ingot verify` runs it for a TT artifact
(whose programs need a device) and, with `--tt-policy`, for a cpu artifact."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from pydantic import BaseModel, ConfigDict
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ingot.artifacts.manifest import Manifest, TenstorrentAcceptance
from ingot.compile.tt.emulate import count_applied, predicted_model
from ingot.compile.tt.policies import FormatPolicy, get_policy
from ingot.compile.verify.metrics import agreement
from ingot.compile.verify.references import LLM_REFERENCE, reference_model
from ingot.compile.verify.sample_inputs import verification_tokens
from ingot.compile.verify.tt_acceptance import TT_MIN_PCC, tenstorrent_acceptance


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


def _report(
    policy: FormatPolicy, applied: dict, num_tokens: int, actual, expected, num_layers: int
) -> TTAccuracyReport:
    counts = count_applied(applied)
    if policy.kv_cache is not None:
        counts[f"kv cache {policy.kv_cache.value}"] = num_layers
    metrics = agreement(actual, expected)
    return TTAccuracyReport(
        policy=policy.name,
        description=policy.description,
        source=policy.source,
        reference=LLM_REFERENCE,
        num_tokens=num_tokens,
        tenstorrent=tenstorrent_acceptance(policy.name),
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
