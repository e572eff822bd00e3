"""Turns a batch of logits into next tokens, one request per row, with vLLM's sampling semantics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ingot.runtime.grammar import GrammarState, mask_logits
from ingot.runtime.sampling_params import SamplingParams

# A top-p cut usually falls within this many tokens; only a flatter distribution pays for sorting the whole vocabulary.
_TOP_P_PREFIX = 1024


@dataclass(eq=False)
class SampleRequest:
    """What the sampler needs of one request. Made once per request: ``output_token_ids`` is the request's own
    growing list, and the logit-bias and ban tensors are built here, not at every step (a full-vocabulary
    ``logit_bias`` rebuilt per step cost ~40 ms a token)."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    generator: torch.Generator | None  # the request's own RNG (see make_generator); None = torch's global RNG
    eos_token_ids: list[int]
    grammar: GrammarState | None = None  # structured outputs: only the tokens it allows next may be sampled
    bias_ids: torch.Tensor = field(init=False)
    bias_values: torch.Tensor = field(init=False)
    banned_ids: torch.Tensor = field(init=False)  # what may not end the output before min_tokens

    def __post_init__(self) -> None:
        bias = self.params.logit_bias
        self.bias_ids = torch.tensor(list(bias), dtype=torch.long)
        self.bias_values = torch.tensor(list(bias.values()), dtype=torch.float32)
        self.banned_ids = torch.tensor([*self.eos_token_ids, *self.params.stop_token_ids], dtype=torch.long)


@dataclass
class SampledToken:
    token_id: int
    logprob: float | None  # of the raw logits, before any processing (vLLM's default); None when no row asked
    top_logprobs: list[tuple[int, float]]  # params.logprobs alternatives, highest first


def make_generator(seed: int | None) -> torch.Generator | None:
    """A request's own RNG, so a seeded request draws the same tokens whatever else shares its batch."""
    if seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


class Sampler:
    def sample(self, logits: torch.Tensor, requests: list[SampleRequest]) -> list[SampledToken]:
        """One token per row of `logits` [batch, vocab]; the tensor is left untouched."""
        if logits.dim() != 2 or logits.shape[0] != len(requests):
            raise ValueError(f"logits of shape {tuple(logits.shape)} for {len(requests)} requests")
        logits = logits.float()
        constrained = [row for row, request in enumerate(requests) if request.grammar is not None]
        if constrained:  # a masked copy; the logprobs below are the masked distribution's, as in vLLM
            logits = mask_logits(logits, constrained, [requests[row].grammar for row in constrained])
        tokens = logits.numpy().argmax(axis=1).tolist()  # every plain greedy row, in one pass (numpy's: 7x torch's)
        for row, request in enumerate(requests):
            if not request.params.greedy or _has_penalties(request):
                tokens[row] = _sample_row(logits[row], request)
        if all(request.params.logprobs is None for request in requests):
            return [SampledToken(token, None, []) for token in tokens]  # skips a pass over the vocabulary
        return _with_logprobs(logits, tokens, requests)


def _has_penalties(request: SampleRequest) -> bool:
    params = request.params
    return bool(
        params.logit_bias
        or len(request.output_token_ids) < params.min_tokens
        or params.repetition_penalty != 1
        or params.presence_penalty
        or params.frequency_penalty
    )


def _sample_row(row: torch.Tensor, request: SampleRequest) -> int:
    params = request.params
    row = _penalise(row.clone(), request)
    if params.greedy:
        return _greedy(row)
    values, ids = _candidates(row / params.temperature, params)
    probs = values.softmax(dim=0)
    if not probs.numel() or not bool(probs.isfinite().all()):
        # Logits that are not finite (a model's inf, a penalty's overflow) leave no distribution to draw from.
        return _greedy(row)
    # The exponential race (Gumbel-max): the same distribution as multinomial, at a fraction of its cost.
    noise = torch.empty_like(probs).exponential_(generator=request.generator)
    choice = int((probs / noise).argmax())
    return choice if ids is None else int(ids[choice])


def _greedy(row: torch.Tensor) -> int:
    """The highest logit, NaN counting as the lowest: always a token of the vocabulary, and a banned one (-inf)
    only when every token is banned or NaN."""
    return int(row.nan_to_num(nan=-math.inf, posinf=math.inf).argmax())


def _penalise(row: torch.Tensor, request: SampleRequest) -> torch.Tensor:
    """Logit bias, min-tokens bans, then repetition, frequency and presence penalties, in vLLM's order, in place."""
    params = request.params
    output = request.output_token_ids
    if params.logit_bias:
        row[request.bias_ids] += request.bias_values
    if len(output) < params.min_tokens:  # neither eos nor a stop token may end the output early
        row[request.banned_ids] = -math.inf
    if params.repetition_penalty != 1:
        seen = torch.tensor([*request.prompt_token_ids, *output], dtype=torch.long).unique()
        values = row[seen]
        row[seen] = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
    if (params.frequency_penalty or params.presence_penalty) and output:
        ids, counts = torch.tensor(output).unique(return_counts=True)
        row[ids] -= params.frequency_penalty * counts + params.presence_penalty
    return row


def _candidates(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logits top-k, top-p and min-p keep, with their token ids (None: all tokens, in vocabulary order)."""
    vocab = logits.numel()
    ids = None
    if 0 < params.top_k < vocab:
        logits, ids = logits.topk(params.top_k)
    if params.top_p < 1:
        logits, ids = _top_p(logits, ids, params.top_p)
    if params.min_p > 0:  # prob < min_p * max_prob, compared in log space
        keep = logits >= logits.max() + math.log(params.min_p)
        ids = keep.nonzero().squeeze(1) if ids is None else ids[keep]
        logits = logits[keep]
    return logits, ids


def _top_p(logits: torch.Tensor, ids: torch.Tensor | None, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the smallest set of top tokens whose probability reaches top_p; the top token always stays."""
    normaliser = logits.logsumexp(dim=0)
    if ids is None:
        values, ids = logits.topk(min(_TOP_P_PREFIX, logits.numel()))
        if (values - normaliser).exp().sum() < top_p:
            values, ids = logits.sort(descending=True)
    else:
        values = logits  # top-k output is already sorted, highest first
    probs = (values - normaliser).exp()
    keep = probs.cumsum(dim=0) - probs < top_p  # the mass ranked above each token is still short of top_p
    keep[0] = True  # a top_p below float32's smallest number compares as 0 < 0
    return values[keep], ids[keep]


def _with_logprobs(logits: torch.Tensor, tokens: list[int], requests: list[SampleRequest]) -> list[SampledToken]:
    """Log-softmax of the raw logits at the chosen tokens, and the top alternatives each request asked for."""
    normaliser = logits.logsumexp(dim=-1)
    chosen = (logits.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1) - normaliser).tolist()
    wanted = [min(request.params.logprobs or 0, logits.shape[1]) for request in requests]
    top_values, top_ids = logits.topk(max(wanted), dim=-1)
    top_values = (top_values - normaliser.unsqueeze(1)).tolist()
    top_ids = top_ids.tolist()
    return [
        SampledToken(token, logprob, list(zip(top_ids[row][:count], top_values[row][:count])))
        for row, (token, logprob, count) in enumerate(zip(tokens, chosen, wanted))
    ]
