"""A request's sequence as the scheduler sees it: tokens, progress, cache blocks and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingot.runtime.sampling_params import SamplingParams

if TYPE_CHECKING:  # a type only: the scheduler needs no torch
    from ingot.runtime.outputs import PromptLogprob


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    token_ids: list[int] = field(default_factory=list)  # prompt then output
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    block_table: list[int] = field(default_factory=list)
    block_keys: list[bytes] = field(default_factory=list)  # prefix-cache keys of the full computed blocks
    arrival_time: float = field(default_factory=time.monotonic)
    scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    output_token_ids: list[int] = field(init=False, default_factory=list)  # one list for the request's lifetime
    # each prompt token's logprob so far (the first token's is None), when the request asks for them
    prompt_logprobs: list[PromptLogprob | None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)
        self.output_token_ids = self.token_ids[len(self.prompt_token_ids) :]
        if self.params.prompt_logprobs is not None:
            self.prompt_logprobs = [None]

    @property
    def scores_prompt(self) -> bool:
        """The request wants prompt logprobs not all computed yet: its prompt must run through the model (not come
        from the prefix cache), since they are made from the hidden states of its prefill."""
        return self.prompt_logprobs is not None and len(self.prompt_logprobs) < len(self.prompt_token_ids)

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        self.output_token_ids.append(token_id)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_prefilling(self) -> bool:
        """More than the last sampled token still has to run through the model."""
        return self.num_uncomputed > 1 or not self.output_token_ids
