"""A language model (Llama, Qwen2, Qwen3) as a kind of model for the build: transformers loads it, each program is
a step of it over ingot's paged KV cache, its artifact carries the tokenizer, and its verification runs the
artifact against the eager float32 model.

This module is imported for a cache hit too, so torch, transformers and the runtime are imported inside the
methods a build calls, never at the top."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ingot.artifacts.manifest import (
    Buckets,
    KVCacheLayout,
    Manifest,
    ModelInfo,
    TokenizerInfo,
    VerificationReport,
)
from ingot.artifacts.store import ArtifactStore
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import CapturedProgram, CompileResult, compile_artifact
from ingot.compile.plan import ProgramPlan, Target
from ingot.errors import OptionError
from ingot.models.source import ModelSource, resolve_source

if TYPE_CHECKING:  # types only: a cache hit imports no torch
    from ingot.compile.llm.step_module import CausalLMStep
    from ingot.models.loader import LoadedModel


def compile_model(model: str, options: CompileOptions, store: ArtifactStore, quiet: bool = False) -> CompileResult:
    """The artifact of the language model ``model`` (a built-in name, a Hugging Face directory or a .gguf)."""
    source = resolve_source(model)
    return compile_artifact(LanguageModelKind(source, source.digests(), options), store, quiet)


class LanguageModelKind:
    """What a language model brings to the build (see pipeline.ModelKind)."""

    name: Literal["llm"] = "llm"
    save_stage = "save weights and tokenizer"

    def __init__(self, source: ModelSource, digests: dict[str, str], options: CompileOptions) -> None:
        self.source, self.digests, self.options = source, digests, options
        self.load_stage = f"load model {source.name}"
        self.loaded: LoadedModel | None = None
        self.step: CausalLMStep | None = None
        self.layout: KVCacheLayout | None = None
        self.buckets: tuple[list[int], list[int]] | None = None

    def plans(self, target: Target) -> list[ProgramPlan]:
        self.buckets = target.buckets(self.options)
        return target.plan(self.options)

    def load(self) -> CausalLMStep:
        import transformers

        from ingot.compile.llm import paged_attention
        from ingot.compile.llm.step_module import CausalLMStep
        from ingot.models.loader import load_model

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        paged_attention.register()
        self.loaded = load_model(self.source)
        config, options = self.loaded.config, self.options
        max_positions = getattr(config, "max_position_embeddings", None)
        if max_positions and options.max_context > max_positions:
            raise OptionError(f"--max-context {options.max_context} exceeds the model's {max_positions} positions")
        # Its own config (the reference keeps sdpa attention), the reference's tensors: one copy of the weights.
        reference = self.loaded.model
        shared = {id(tensor): tensor for tensor in (*reference.parameters(), *reference.buffers())}
        paged = copy.deepcopy(reference, memo=shared)
        paged.config._attn_implementation = paged_attention.ATTENTION_NAME
        self.step = CausalLMStep(paged).eval()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.layout = KVCacheLayout(
            num_layers=config.num_hidden_layers,
            num_kv_heads=config.num_key_value_heads,
            head_dim=head_dim,
            block_size=options.block_size,
            dtype=options.kv_cache_torch_dtype,
        )
        return self.step

    def capture(self, plan: ProgramPlan) -> CapturedProgram:
        from ingot.compile.llm.capture import capture_program

        return capture_program(self.step, plan, self.layout, self.options.max_blocks_per_sequence)

    def exports(self) -> dict[str, Callable[[Path], None]]:
        return {}

    def manifest_fields(self, workdir: Path, target: Target) -> dict:
        loaded = self.loaded
        loaded.tokenizer.save_pretrained(workdir / "tokenizer")
        model_config = loaded.config.to_dict()
        model_config.pop("quantization_config", None)
        prefill_buckets, decode_batches = self.buckets
        return dict(
            model=ModelInfo(
                name=self.source.name,
                family=loaded.family.name,
                architecture=loaded.family.architecture,
                source_kind=self.source.kind,
                config=model_config,
                source_sha256=self.digests,
            ),
            kv_cache=self.layout,
            buckets=Buckets(
                prefill_tokens=prefill_buckets, decode_batch=decode_batches, max_context=self.options.max_context
            ),
            tokenizer=TokenizerInfo(
                directory="tokenizer",
                eos_token_ids=loaded.eos_token_ids,
                bos_token_id=loaded.tokenizer.bos_token_id,
                pad_token_id=loaded.tokenizer.pad_token_id,
                has_chat_template=bool(loaded.tokenizer.chat_template),
            ),
        )

    def verify_stage(self, target: Target) -> str:
        return "verify against float32 eager" if target.accuracy else "verification: recorded as needing a device"

    def verify(self, target: Target, workdir: Path, manifest: Manifest) -> Manifest:
        """Run the artifact against the float32 model (its original weights); on a device target nothing runs here
        (no report). fp32 weights must match it (the target's bar); weights stored in a smaller format are held to
        Tenstorrent's PCC bar and shown beside its numbers, and --allow-low-accuracy publishes one that misses it."""
        if target.accuracy is None:
            return manifest
        from ingot.compile.verify.llm import llm_bar, verify_llm
        from ingot.compile.verify.tt_acceptance import TT_MIN_PCC, tenstorrent_acceptance

        choice = self.options.weight_format
        bar = llm_bar(target.accuracy, manifest)
        min_pcc, min_top1 = (bar.min_pcc, bar.min_top1) if choice == "fp32" else (TT_MIN_PCC, 0.0)
        report = verify_llm(workdir, manifest, self.loaded.model, self.loaded.tokenizer, min_pcc, min_top1)
        if choice != "fp32":
            allowed = not report.passed and self.options.allow_low_accuracy
            report = report.model_copy(
                update={"tenstorrent": tenstorrent_acceptance(choice), "allowed_below_bar": allowed}
            )
        return manifest.model_copy(update={"verification": report})

    def failure(self, report: VerificationReport) -> str:
        if report.weight_format != "fp32":
            worst = min(report.programs, key=report.programs.get)
            return (
                f"verification failed: --weight-format {report.weight_format} reaches logits PCC {report.pcc:.6f} "
                f"({worst} {report.programs[worst]:.6f}) against float32, below Tenstorrent's {report.min_pcc}; "
                "--allow-low-accuracy publishes it anyway"
            )
        return (
            f"verification failed: PCC {report.pcc:.6f} (min {report.min_pcc}), "
            f"top-1 {report.top1_agreement:.1%} (min {report.min_top1:.0%}), programs {report.programs}"
        )
