"""Tiny random-weight Llama, Qwen2 and Qwen3 models with a real byte-level BPE tokenizer, for tests."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ingot.benchmark.shapes import architecture_config, write_random_model

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>"]
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. Compilers turn programs into fast code.",
    "Héllo wörld! Ünïcode: 日本語のテキスト, emoji 🦊🚀, and Ελληνικά letters.",
    "def main():\n    return sum(i * i for i in range(10))\n",
] * 20

VOCAB_SIZE = 384
COMMON = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    bos_token_id=None,
    eos_token_id=2,
    pad_token_id=0,
    initializer_range=0.1,  # wider than the default, so greedy choices are well separated
)
FAMILIES = {
    "llama": ("LlamaForCausalLM", dict(tie_word_embeddings=True)),
    # Llama-3 style: untied embeddings and llama3 rope scaling
    "llama3": (
        "LlamaForCausalLM",
        dict(
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 128,
            },
        ),
    ),
    "qwen2": ("Qwen2ForCausalLM", dict(tie_word_embeddings=False)),
    "qwen3": ("Qwen3ForCausalLM", dict(tie_word_embeddings=True, head_dim=16)),
}


def make_tokenizer(add_bos: bool = False) -> PreTrainedTokenizerFast:
    """``add_bos``: prefix every encoded text with a BOS token, as Llama 3's tokenizer does."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    bos = "<|begin_of_text|>"
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos if add_bos else None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(family: str, path: Path, seed: int = 0) -> Path:
    """Write a tiny random model of ``family`` as a Hugging Face directory at ``path``."""
    architecture, extra = FAMILIES[family]
    config = architecture_config(architecture, **COMMON, **extra)
    return write_random_model(config, make_tokenizer(add_bos=family == "llama3"), path, seed)
