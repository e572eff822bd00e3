"""Load a model source into the float32 transformers model, its tokenizer and its generation settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ingot.errors import ModelSourceError
from ingot.models.families import Family, family_of
from ingot.models.source import ModelSource

_WEIGHT_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys")


@dataclass
class LoadedModel:
    source: ModelSource
    family: Family
    config: PretrainedConfig
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eos_token_ids: list[int]


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def load_config(source: ModelSource) -> tuple[PretrainedConfig, Family]:
    try:
        config = AutoConfig.from_pretrained(source.directory, gguf_file=source.gguf_file)
    except Exception as error:  # transformers raises many kinds for a bad config
        raise ModelSourceError(f"{source.name}: cannot read the model config: {_first_line(error)}") from error
    return config, family_of(config)


def load_model(source: ModelSource) -> LoadedModel:
    config, family = load_config(source)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.directory, **kwargs)
    except Exception as error:
        raise ModelSourceError(f"{source.name}: cannot read the tokenizer: {_first_line(error)}") from error
    try:
        model, report = AutoModelForCausalLM.from_pretrained(
            source.directory, dtype=torch.float32, output_loading_info=True, **kwargs
        )
    except Exception as error:
        raise ModelSourceError(f"{source.name}: cannot read the weights: {_first_line(error)}") from error
    problems = [f"{kind.split('_')[0]} {sorted(report[kind])[0]}" for kind in _WEIGHT_PROBLEMS if report.get(kind)]
    if problems:
        raise ModelSourceError(f"{source.name}: weights do not fit the config: {'; '.join(problems)}")
    model.eval()
    return LoadedModel(source, family, model.config, model, tokenizer, _eos_token_ids(model, tokenizer))


def _eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a reply: the generation config's (from generation_config.json) and the tokenizer's."""
    ids: list[int] = []
    for value in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and token_id not in ids:
                ids.append(int(token_id))
    return ids
