"""F32 GGUF files for llama.cpp, the benchmark's peer: the weights ingot serves, in llama.cpp's format.

Two sources: a quantized GGUF (the demo model, Q4_1 as shipped) is dequantized tensor by tensor, as transformers
dequantizes it for ingot; a Hugging Face directory (a random model of a real shape) is converted from its
safetensors, with llama.cpp's names and metadata for its architecture and the tokenizer of a GGUF (by default the
demo's, which ``ingot.benchmark.shapes`` writes beside its models), padded with unused tokens up to the model's
vocabulary. Tensors stream from the source to the file one at a time: a 1B model converts in a tensor's memory.

An F32 GGUF is then the source of llama.cpp's smaller formats (BF16, Q8_0, Q4_1, ...), quantized by the gguf
package's own quantizers, for comparisons with ingot's weight formats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open

# the tokenizer's keys a converted model copies from the tokenizer GGUF (its tokens and types are padded)
_TOKENIZER_KEYS = (
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix", "tokenizer.chat_template",
)  # fmt: skip


@dataclass(frozen=True)
class _Architecture:
    arch: gguf.MODEL_ARCH
    interleaved_rope: bool  # llama.cpp's llama rotates adjacent pairs; transformers (and qwen in llama.cpp) halves


ARCHITECTURES = {
    "LlamaForCausalLM": _Architecture(gguf.MODEL_ARCH.LLAMA, interleaved_rope=True),
    "Qwen2ForCausalLM": _Architecture(gguf.MODEL_ARCH.QWEN2, interleaved_rope=False),
    "Qwen3ForCausalLM": _Architecture(gguf.MODEL_ARCH.QWEN3, interleaved_rope=False),
}


def dequantized_gguf(source: Path, out: Path) -> Path:
    """``source`` with every tensor in F32 and its metadata unchanged (but the file type)."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, reader.fields["general.architecture"].contents())
    _copy_metadata(reader, writer)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tensors = ((t.name, lambda t=t: gguf.quants.dequantize(t.data, t.tensor_type)) for t in reader.tensors)
    _write_streamed(writer, out, [(t.name, _numpy_shape(t)) for t in reader.tensors], tensors)
    return out


# llama.cpp's file type for a GGUF whose matrices are all in one format
_FILE_TYPES = {
    gguf.GGMLQuantizationType.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
    gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    gguf.GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    gguf.GGMLQuantizationType.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1,
}


def quantized_gguf(source: Path, out: Path, quant: gguf.GGMLQuantizationType) -> Path:
    """The F32 GGUF ``source`` with every matrix in ``quant`` (embeddings and output head too, as llama-quantize's
    ``--pure``) and every vector (norms, biases, rope factors) left in F32, as llama.cpp keeps them."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, reader.fields["general.architecture"].contents())
    _copy_metadata(reader, writer)
    writer.add_file_type(_FILE_TYPES[quant])
    block = gguf.GGML_QUANT_SIZES[quant][0]
    targets = {t.name: quant if len(t.shape) == 2 and int(t.shape[0]) % block == 0 else None for t in reader.tensors}
    for tensor in reader.tensors:
        shape = _numpy_shape(tensor)
        kind = targets[tensor.name]
        if kind is None:
            writer.add_tensor_info(tensor.name, shape, np.dtype(np.float32), 4 * math.prod(shape))
        else:
            byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, kind)
            writer.add_tensor_info(tensor.name, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), raw_dtype=kind)
    writer.write_header_to_file(out)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        values = np.asarray(tensor.data, dtype=np.float32).reshape(_numpy_shape(tensor))
        kind = targets[tensor.name]
        writer.write_tensor_data(values if kind is None else gguf.quants.quantize(values, kind))
    writer.close()
    return out


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every key of ``reader`` but the writer's own (version, counts, architecture) and the file type."""
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        writer.add_key_value(name, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None)


def hf_to_gguf(model_dir: Path, out: Path, tokenizer_gguf: Path | None = None) -> Path:
    """The Hugging Face model in ``model_dir`` (Llama, Qwen2 or Qwen3; float32 safetensors) as an F32 GGUF, with the
    tokenizer of ``tokenizer_gguf`` (default: the demo model's)."""
    config = json.loads((model_dir / "config.json").read_text())
    architecture = ARCHITECTURES[config["architectures"][0]]
    arch_name = gguf.MODEL_ARCH_NAMES[architecture.arch]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {"rope_theta": config.get("rope_theta", 10000.0), **(config.get("rope_scaling") or {})}

    writer = gguf.GGUFWriter(out, arch_name)
    writer.add_name(model_dir.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, tokenizer_gguf or _demo_gguf(), config["vocab_size"])

    names = gguf.get_tensor_name_map(architecture.arch, config["num_hidden_layers"])
    files = sorted(model_dir.glob("*.safetensors"))
    entries: list[tuple[str, tuple[int, ...]]] = []
    sources: dict[str, tuple[Path, str]] = {}
    for file in files:
        with safe_open(file, framework="numpy") as tensors:
            for hf_name in tensors.keys():  # a safetensors handle, not a dict
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ValueError(f"{hf_name}: no llama.cpp name for this tensor of {arch_name}")
                entries.append((name, tuple(tensors.get_slice(hf_name).get_shape())))
                sources[name] = (file, hf_name)
    extra = {}
    if rope.get("rope_type") == "llama3":  # llama.cpp reads llama3's frequency scaling as a tensor of factors
        extra[gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = _llama3_rope_factors(rope, head_dim)
        entries += [(name, value.shape) for name, value in extra.items()]

    def load(name: str) -> np.ndarray:
        if name in extra:
            return extra[name]
        file, hf_name = sources[name]
        with safe_open(file, framework="numpy") as tensors:
            value = tensors.get_tensor(hf_name).astype(np.float32, copy=False)
        if architecture.interleaved_rope and name.endswith(("attn_q.weight", "attn_k.weight")):
            value = _interleave_rope_rows(value, heads if name.endswith("attn_q.weight") else kv_heads)
        return value

    _write_streamed(writer, out, entries, ((name, lambda name=name: load(name)) for name, _ in entries))
    return out


def _write_streamed(writer: gguf.GGUFWriter, out: Path, entries, tensors: Iterator) -> None:
    """Header, metadata and tensor table first, then each tensor's data in the same order, loaded one at a time."""
    for name, shape in entries:
        writer.add_tensor_info(name, shape, np.dtype(np.float32), 4 * math.prod(shape))
    writer.write_header_to_file(out)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, load in tensors:
        writer.write_tensor_data(np.ascontiguousarray(load(), dtype=np.float32))
    writer.close()


def _numpy_shape(tensor: gguf.ReaderTensor) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dimensions innermost first


def _add_tokenizer(writer: gguf.GGUFWriter, source: Path, vocab_size: int) -> None:
    """``source``'s tokenizer, its token list padded with unused tokens to ``vocab_size`` (llama.cpp requires one
    token per embedding row)."""
    fields = gguf.GGUFReader(source).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    if len(tokens) > vocab_size:
        raise ValueError(f"{source.name}'s tokenizer has {len(tokens)} tokens, more than the model's {vocab_size}")
    padding = range(len(tokens), vocab_size)
    writer.add_token_list([*tokens, *(f"[PAD{i}]" for i in padding)])
    writer.add_token_types([*types, *(gguf.TokenType.UNUSED for _ in padding)])
    for key in _TOKENIZER_KEYS:
        if key in fields:
            field = fields[key]
            writer.add_key_value(key, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None)


def _interleave_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers rotates each head's first half against its second; llama.cpp's llama rotates adjacent pairs:
    reorder each head's rows (0, d/2, 1, d/2+1, ...) so both compute the same attention."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """Llama 3's rope scaling as per-frequency divisors (what transformers applies to its inverse frequencies):
    1 for short wavelengths, ``factor`` for long ones, a smooth blend between."""
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    original = rope["original_max_position_embeddings"]
    frequencies = 1.0 / rope["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    factors = []
    for wavelength in 2 * math.pi / frequencies:
        if wavelength < original / high:
            factors.append(1.0)
        elif wavelength > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _demo_gguf() -> Path:
    from ingot.models.source import builtin_model_path

    return builtin_model_path("smollm2-135m")
