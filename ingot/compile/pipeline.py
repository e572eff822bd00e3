"""`ingot compile`: model source -> cache key -> (on a miss) capture, lower, verify, publish.

Nothing heavy is imported until a build is needed, so a cache hit answers in well under two seconds.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ingot.artifacts.manifest import SCHEMA_VERSION, Manifest
from ingot.artifacts.store import ArtifactStore
from ingot.artifacts.toolchain import toolchain_versions
from ingot.compile.options import CompileOptions
from ingot.digest import sha256_files, sha256_json
from ingot.errors import OptionError, VerificationError
from ingot.models.source import ModelSource, resolve_source
from ingot.progress import StageProgress

KEY_LENGTH = 24


@dataclass(frozen=True)
class CompileResult:
    key: str
    path: Path
    cache_hit: bool
    manifest: Manifest


def cache_key(source_digests: dict[str, str], options: CompileOptions) -> str:
    """A hash of everything that changes the artifact: sources, options, target and toolchain."""
    inputs = {
        "schema": SCHEMA_VERSION,
        "sources": source_digests,
        "options": options.model_dump(mode="json"),
        "toolchain": toolchain_versions(),
        "compiler": _compiler_digest(),
    }
    if options.target != "cpu":
        inputs["tt"] = _tt_key_inputs(options)
    return sha256_json(inputs)[:KEY_LENGTH]


def _tt_key_inputs(options: CompileOptions) -> dict:
    """A Tenstorrent target's device spec, plugin, frontend and descriptor hash, and optimization level."""
    from ingot.compile.tt import plugin
    from ingot.compile.tt.specs import device_spec

    spec = device_spec(options.target)
    level = spec.optimization_level if options.optimization_level is None else options.optimization_level
    return {"spec": spec.as_dict(), "toolchain": plugin.toolchain(options.target), "optimization_level": level}


def _compiler_digest() -> str:
    """ingot's own capture and lowering code: a change to it changes the programs, version bump or not."""
    root = Path(__file__).parent
    return sha256_files([*root.rglob("*.py"), *root.rglob("*.cpp"), *root.rglob("*.h"), *root.rglob("*.ttsys")], root)


def compile_model(model: str, options: CompileOptions, store: ArtifactStore, quiet: bool = False) -> CompileResult:
    source = resolve_source(model)
    digests = source.digests()
    key = cache_key(digests, options)
    return build_once(store, key, lambda workdir: _build(source, digests, options, key, workdir, store.root, quiet))


def build_once(store: ArtifactStore, key: str, build: Callable[[Path], Manifest]) -> CompileResult:
    """Build ``key`` in a fresh directory unless it is stored (or another process stores it while we wait)."""
    if not store.has(key):
        with store.build(key) as workdir:
            if workdir is not None:  # else another process built it while we waited for the lock
                os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(store.root / "inductor"))
                manifest = build(workdir)
                return CompileResult(key, store.path(key), cache_hit=False, manifest=manifest)
    return CompileResult(key, store.path(key), cache_hit=True, manifest=Manifest.read(store.path(key)))




def _build(
    source: ModelSource,
    digests: dict[str, str],
    options: CompileOptions,
    key: str,
    workdir: Path,
    cache_root: Path,
    quiet: bool,
) -> Manifest:
    os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF loader draws its own bar; ours shows the stage
    import torch  # noqa: F401  (heavy imports only when building)
    import transformers

    from ingot.artifacts.manifest import Buckets, KVCacheLayout, ModelInfo, ProgramSpec, TokenizerInfo
    from ingot.compile import kernels, paged_attention
    from ingot.compile.capture import capture_program
    from ingot.compile.step_module import CausalLMStep
    from ingot.compile.targets import get_target
    from ingot.compile.weights import save_weights
    from ingot.models.loader import load_model

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    target = get_target(options.target)
    plans = target.plan(options)
    prefill_buckets, decode_batches = target.buckets(options)
    paged_attention.register()

    stages = 4 + target.native_library + len(plans)  # load, (native library,) captures, lowering, save, verify
    with StageProgress(stages, quiet=quiet) as progress:
        with progress.stage(f"load model {source.name}"):
            loaded = load_model(source)
            config = loaded.config
            max_positions = getattr(config, "max_position_embeddings", None)
            if max_positions and options.max_context > max_positions:
                raise OptionError(f"--max-context {options.max_context} exceeds the model's {max_positions} positions")
            paged = copy.deepcopy(loaded.model)  # its own config copy: the reference keeps sdpa attention
            paged.config._attn_implementation = paged_attention.ATTENTION_NAME
            step = CausalLMStep(paged).eval()
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            layout = KVCacheLayout(
                num_layers=config.num_hidden_layers,
                num_kv_heads=config.num_key_value_heads,
                head_dim=head_dim,
                block_size=options.block_size,
                dtype=options.dtype,
            )

        libraries = []
        if target.native_library:
            with progress.stage("build ingot's native library"):
                libraries = kernels.add_to_artifact(workdir)

        captured = []
        for plan in plans:
            with progress.stage(f"capture {plan.name}"):
                captured.append((plan, *capture_program(step, plan, layout, options.max_blocks_per_sequence)))
        (workdir / "programs").mkdir(exist_ok=True)
        lowered = target.lower_all(
            [(plan, exported) for plan, exported, _, _ in captured], workdir / "programs", options, cache_root,
            progress,
        )
        programs = []
        for plan, _, inputs, outputs in captured:
            filename, target_info = lowered[plan.name]
            programs.append(
                ProgramSpec(
                    name=plan.name, kind=plan.kind, file=filename, batch=plan.batch, tokens=plan.tokens,
                    inputs=inputs, outputs=outputs, tt=target_info, frozen=plan.frozen,
                    kernels=libraries,
                )
            )
        del captured

        with progress.stage("save weights and tokenizer"):
            weights = save_weights(step, workdir / "weights.safetensors")
            loaded.tokenizer.save_pretrained(workdir / "tokenizer")
            model_config = config.to_dict()
            model_config.pop("quantization_config", None)
            manifest = Manifest(
                key=key,
                target=target.name,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                model=ModelInfo(
                    name=source.name,
                    family=loaded.family.name,
                    architecture=loaded.family.architecture,
                    source_kind=source.kind,
                    config=model_config,
                    source_sha256=digests,
                ),
                options=options.model_dump(mode="json"),
                toolchain=toolchain_versions(),
                kv_cache=layout,
                buckets=Buckets(
                    prefill_tokens=prefill_buckets,
                    decode_batch=decode_batches,
                    max_context=options.max_context,
                ),
                programs=programs,
                weights=weights,
                tokenizer=TokenizerInfo(
                    directory="tokenizer",
                    eos_token_ids=loaded.eos_token_ids,
                    bos_token_id=loaded.tokenizer.bos_token_id,
                    pad_token_id=loaded.tokenizer.pad_token_id,
                    has_chat_template=bool(loaded.tokenizer.chat_template),
                ),
                tt=target.manifest_info(),
            )

        with progress.stage(target.verify_stage):
            report = target.verify(workdir, manifest, loaded.model, loaded.tokenizer)
    if report is not None and not report.passed:
        raise VerificationError(
            f"verification failed: PCC {report.pcc:.6f} (min {report.min_pcc}), "
            f"top-1 {report.top1_agreement:.1%} (min {report.min_top1:.0%}), programs {report.programs}"
        )
    return publish(workdir, manifest, report)


def publish(workdir: Path, manifest: Manifest, report: object) -> Manifest:
    """Record the passed verification and every file's digest, and write the manifest: the build is complete."""
    from ingot.artifacts.integrity import file_entries

    manifest = manifest.model_copy(update={"verification": report, "files": file_entries(workdir)})
    manifest.write(workdir)
    return manifest
