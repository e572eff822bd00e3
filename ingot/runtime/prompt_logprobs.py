"""Prompt logprobs: how likely the model found each prompt token given the ones before it, for the requests that ask
(``SamplingParams.prompt_logprobs``; OpenAI's ``echo`` with ``logprobs``, what evaluation harnesses score with).

A prefill step returns the final hidden states of every token it ran; for a scoring sequence, the rows of its prompt
positions go through the artifact's ``logits`` program a chunk at a time (a chunk's logits are rows x vocabulary
floats: 512 rows of Llama 3's 128,256 would be 260 MB), then log-softmax, each next prompt token's value, its rank
and the top alternatives. Requests that do not ask cost nothing here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ingot.runtime.outputs import PromptLogprob

if TYPE_CHECKING:
    from ingot.runtime.model_runner import ModelRunner
    from ingot.runtime.sequence import Sequence

# Rows of logits computed at once are capped at this many floats (64 MiB in float32).
MAX_CHUNK_FLOATS = 1 << 24


def score_prompt_chunk(
    runner: ModelRunner, seq: Sequence, start: int, hidden_states: torch.Tensor
) -> None:
    """Extend ``seq.prompt_logprobs`` with the tokens the chunk that ran at positions ``start..`` predicts:
    ``hidden_states`` [chunk tokens, hidden] are that chunk's rows; position p predicts prompt token p + 1.

    Positions already scored (a sequence recomputed after preemption) and the last prompt position (which predicts
    the first generated token, not a prompt token) are skipped."""
    scored = seq.prompt_logprobs
    first = max(start, len(scored) - 1)  # the first position whose next token is not scored yet
    end = min(start + hidden_states.shape[0], len(seq.prompt_token_ids) - 1)
    if first >= end:
        return
    rows = hidden_states[first - start : end - start]
    targets = torch.tensor(seq.prompt_token_ids[first + 1 : end + 1], dtype=torch.long)
    scored.extend(prompt_logprobs(runner, rows, targets, seq.params.prompt_logprobs))


def prompt_logprobs(
    runner: ModelRunner, hidden_states: torch.Tensor, targets: torch.Tensor, top: int
) -> list[PromptLogprob]:
    """Each row's log-probability of its target token, with its rank and the ``top`` most likely tokens."""
    chunk = max(1, min(runner.max_logits_rows, MAX_CHUNK_FLOATS // runner.vocab_size))
    results: list[PromptLogprob] = []
    for begin in range(0, hidden_states.shape[0], chunk):
        logits = runner.logits(hidden_states[begin : begin + chunk]).float()
        wanted = targets[begin : begin + chunk].unsqueeze(1)
        normaliser = logits.logsumexp(dim=-1, keepdim=True)
        chosen = logits.gather(1, wanted)
        ranks = (logits > chosen).sum(dim=1) + 1
        logprobs = (chosen - normaliser).squeeze(1).tolist()
        top_values, top_ids = logits.topk(min(top, logits.shape[1]), dim=-1)
        top_values = (top_values - normaliser).tolist()
        top_ids = top_ids.tolist()
        for row, (token, logprob, rank) in enumerate(zip(wanted.squeeze(1).tolist(), logprobs, ranks.tolist())):
            results.append(PromptLogprob(token, logprob, rank, list(zip(top_ids[row], top_values[row]))))
    return results
