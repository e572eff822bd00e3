"""The module every language-model program is captured from: one model step over the paged cache."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


class CausalLMStep(torch.nn.Module):
    """Runs the family's own transformers model on the paged cache and returns one row of logits per sequence.

    Inputs (B sequences, N tokens each): ``input_ids``, ``position_ids`` and ``slot_mapping`` [B, N];
    ``block_tables`` [B, blocks]; ``logits_index`` [B], the token whose logits each sequence needs;
    ``kv_cache`` [layers, 2, num_blocks, block_size, kv_heads, head_dim], updated in place.
    """

    def __init__(self, model: PreTrainedModel, decode_kernel: bool = False) -> None:
        super().__init__()
        self.model = model
        self.decode_kernel = decode_kernel  # decode attention through ingot's kernel (see paged_attention)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        slot_mapping: torch.Tensor,
        block_tables: torch.Tensor,
        logits_index: torch.Tensor,
        kv_cache: torch.Tensor,
    ) -> torch.Tensor:
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
        return self.model.lm_head(hidden[rows, logits_index])
