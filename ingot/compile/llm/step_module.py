"""The modules language-model programs are captured from: one model step over the paged cache, and the model's
output head alone (hidden states to logits, for scoring prompts)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

STEP_PREFIX = "model."  # the step holds the transformers model as ``model``: the artifact's tensors are named so


class CausalLMStep(torch.nn.Module):
    """Runs the family's own transformers model on the paged cache and returns one row of logits per sequence.

    Inputs (B sequences, N tokens each): ``input_ids``, ``position_ids`` and ``slot_mapping`` [B, N];
    ``block_tables`` [B, blocks]; ``logits_index`` [B], the token whose logits each sequence needs;
    ``kv_cache`` [layers, 2, num_blocks, block_size, kv_heads, head_dim], updated in place.

    With ``hidden_states`` (prefill) the step also returns the final hidden states of every token [B, N, hidden]:
    computed anyway, so returning them costs an allocation; the ``logits`` program turns the rows a request asks
    about into logits (prompt logprobs) only when one does.
    """

    def __init__(self, model: PreTrainedModel, decode_kernel: bool = False, hidden_states: bool = False) -> None:
        super().__init__()
        self.model = model
        self.decode_kernel = decode_kernel  # decode attention through ingot's kernel (see paged_attention)
        self.hidden_states = hidden_states

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        slot_mapping: torch.Tensor,
        block_tables: torch.Tensor,
        logits_index: torch.Tensor,
        kv_cache: torch.Tensor,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.model(
            input_ids=input_ids,
            position_ids=position_ids,
            use_cache=False,
            kv_cache=kv_cache,
            slot_mapping=slot_mapping,
            block_tables=block_tables,
            decode_kernel=self.decode_kernel,
        ).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        logits = self.model.lm_head(hidden[rows, logits_index])
        return (logits, hidden) if self.hidden_states else logits


class LogitsHead(torch.nn.Module):
    """The model's own output head: final hidden states [rows, hidden] -> logits [rows, vocab].

    It holds ``step.model.lm_head`` itself (whatever that module is) under the step module's name for it,
    ``model.lm_head``, so the program's constants have the names the artifact's weights file stores them under."""

    def __init__(self, step: CausalLMStep) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.lm_head = step.model.lm_head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)
