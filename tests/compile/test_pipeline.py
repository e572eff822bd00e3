import re
import zipfile
from pathlib import Path

import pytest

from ingot.compile.llm.kind import compile_model
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import cache_key
from ingot.models.source import resolve_source
from tests.conftest import TINY_OPTIONS


@pytest.mark.parametrize("family", ["llama", "llama3", "qwen2", "qwen3"])
def test_each_family_compiles_and_matches_the_float32_reference(compiled, family):
    result = compiled(family)
    report = result.manifest.verification
    assert report.passed
    assert report.pcc >= 0.9999
    assert report.top1_agreement >= 0.99
    assert report.num_tokens >= 256
    assert set(report.programs) == {"prefill", "decode", "logits", "prefill (batch 4)", "decode (batch 4)"}
    assert all(value >= 0.9999 for value in report.programs.values())


def test_a_compile_shows_each_program_lowered_and_each_verification_step_as_it_goes(compiled):
    compiled("llama")
    lines = compiled.progress["llama"].splitlines()
    step = re.compile(r"  · (.+?) +(\d+\.\d) s$")
    done = [i for i, line in enumerate(lines) if line.startswith("✓ ")]
    lowering = next(i for i in done if lines[i].startswith("✓ lower"))
    verifying = next(i for i in done if lines[i].startswith("✓ verify"))

    def steps(stage_end: int) -> list[str]:
        """The steps noted under the stage that ended on line ``stage_end``, which are printed before it ends."""
        start = max(i for i in done if i < stage_end) + 1
        matches = [step.match(line) for line in lines[start:stage_end]]
        assert all(matches), lines[start:stage_end]
        seconds = [float(m.group(2)) for m in matches]
        assert seconds == sorted(seconds)  # the time since the stage began
        return [m.group(1) for m in matches]

    assert sorted(steps(lowering)) == ["decode lowered", "logits lowered", "prefill lowered"]
    verified = steps(verifying)
    assert verified[0].startswith("reference: ") and verified[1] == "prefill: 32 tokens"
    decoded = verified[2:-2]
    assert decoded and all(re.fullmatch(r"decode: \d+/\d+ tokens", text) for text in decoded)
    total = int(decoded[-1].split("/")[1].split()[0])
    assert decoded[-1] == f"decode: {total}/{total} tokens"
    assert verified[-2:] == ["prefill: 4 sequences", "decode: 4 sequences x 4 steps"]


def test_artifact_holds_everything_serving_needs(compiled):
    result = compiled("llama")
    manifest = result.manifest
    files = set(manifest.files)
    assert {"weights.safetensors", "programs/prefill.pt2", "programs/decode.pt2"} <= files
    assert any(name.startswith("tokenizer/") for name in files)
    assert not any(name.endswith((".bin", ".pkl", ".pt")) for name in files)
    assert manifest.tokenizer.eos_token_ids == [2]
    assert manifest.tokenizer.has_chat_template
    assert manifest.model.family == "llama" and manifest.model.config["num_hidden_layers"] == 2
    assert set(manifest.toolchain) >= {"ingot", "torch", "transformers"}
    assert manifest.buckets.prefill_tokens == [16, 32, 64] and manifest.buckets.decode_batch == [1, 2, 4]
    decode = manifest.program("decode")
    assert decode.batch == (1, 4) and decode.tokens == (1, 1)  # one program for every batch: the same bits in any
    assert manifest.program("prefill").batch == (1, 4)  # prompts arriving together share a prefill step
    assert [t.name for t in decode.inputs][-1] == "kv_cache"
    # every program reads the one weights file
    assert not any(p.frozen for p in manifest.programs)
    # ingot's native library runs every program (and holds the decode attention kernel): the artifact carries it
    assert all(p.kernels == ["kernels/ingot_kernels.so"] for p in manifest.programs)
    assert "kernels/ingot_kernels.so" in files
    # every program's matrix products run on the library's packed_linear, prefill's too
    calls = {p.name: _mentions(result.path / p.file, b"packed_linear") for p in manifest.programs}
    assert calls == {"prefill": True, "decode": True, "logits": True}
    # prompt logprobs: prefill returns every token's hidden states, the logits program turns rows of them into logits
    assert [t.name for t in manifest.program("prefill").outputs] == ["logits", "hidden_states"]
    logits = manifest.program("logits")
    assert (logits.kind, logits.batch, logits.frozen) == ("logits", (1, 64), False)
    assert [(t.name, t.shape) for t in logits.inputs + logits.outputs] == [
        ("hidden_states", ["rows", 64]), ("logits", ["rows", 384])
    ]


def _mentions(package: Path, name: bytes) -> bool:
    """Whether a compiled program's generated code calls ``name``."""
    with zipfile.ZipFile(package) as archive:
        sources = [entry for entry in archive.namelist() if entry.endswith((".wrapper.cpp", ".wrapper.json"))]
        return any(name in archive.read(entry) for entry in sources)


def test_compiling_leaves_no_copy_of_the_programs_in_inductors_cache(compiled):
    """A frozen program's library holds the model's weights: the artifact has it, a cache must not keep another."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    compiled("llama")
    assert not [path for path in Path(cache_dir()).rglob("*.so") if ".wrapper" in path.name]


def test_a_max_batch_of_one_plans_one_sequence_programs():
    from ingot.compile.cpu.target import CPU

    single = CPU.plan(CompileOptions.parse(**{**TINY_OPTIONS, "max_batch": 1}))
    assert [(p.name, p.batch) for p in single] == [("prefill", (1, 1)), ("decode", (1, 1)), ("logits", (1, 64))]


def test_every_program_reads_one_copy_of_the_weights(compiled, tiny_model):
    """The weights file holds each weight once, packed for the matrix product (the tied embedding reads its rows
    from the LM head's panels), and every program reads those same tensors."""
    from safetensors import safe_open

    from ingot.runtime.programs import load_programs

    result = compiled("llama")  # the tiny llama ties lm_head to the embedding
    with safe_open(result.path / "weights.safetensors", "pt") as weights:
        names = set(weights.keys())
    assert "packed_model_lm_head_weight" in names
    assert not any(name.endswith(("embed_tokens.weight", "lm_head.weight", "proj.weight")) for name in names)
    source = (tiny_model("llama") / "model.safetensors").stat().st_size  # each tensor once, unpacked
    assert (result.path / "weights.safetensors").stat().st_size < 1.25 * source  # packing pads panels to 48 columns

    programs = load_programs(result.path, result.manifest)
    read = {name: set(program.constant_names()) for name, program in programs.items()}
    assert set.union(*read.values()) <= names
    packed = {name for name in names if name.startswith("packed_")}
    assert read.pop("logits") == {"packed_model_lm_head_weight"}  # the output head alone, for prompt logprobs
    assert all(packed <= constants for constants in read.values())
    # what the packed tensors hold is recorded, so a reference model can be rebuilt from the artifact alone
    packed_linears = result.manifest.weights.packed
    assert set(packed_linears) == packed
    assert packed_linears["packed_model_lm_head_weight"].weights == ["model.lm_head.weight"]


def test_second_compile_is_a_cache_hit_that_does_no_work(compiled, tiny_model, session_store):
    first = compiled("llama")
    before = {p: p.stat().st_mtime_ns for p in first.path.rglob("*")}
    again = compile_model(str(tiny_model("llama")), CompileOptions.parse(**TINY_OPTIONS), session_store, quiet=True)
    assert again.cache_hit and again.key == first.key
    assert {p: p.stat().st_mtime_ns for p in first.path.rglob("*")} == before


def _key(path, **options):
    return cache_key(resolve_source(str(path)).digests(), CompileOptions.parse(**{**TINY_OPTIONS, **options}))


def test_cache_key_changes_with_every_input(tiny_model, tmp_path, monkeypatch):
    import shutil

    original = tiny_model("llama")
    base = _key(original)
    assert _key(original) == base  # stable

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert _key(copy) == base  # content-addressed: the path does not matter

    for name, edit in [
        ("config.json", lambda text: text.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05')),
        ("tokenizer_config.json", lambda text: text.replace("<|im_end|>", "<|endoftext|>", 1)),
    ]:
        changed = tmp_path / name
        shutil.copytree(original, changed)
        (changed / name).write_text(edit((changed / name).read_text()))
        assert _key(changed) != base, name

    other_weights = tiny_model("llama", seed=1)
    assert _key(other_weights) != base
    assert _key(original, max_batch=8) != base
    assert _key(original, max_context=512) != base
    assert _key(original, block_size=32) != base
    assert _key(original, prefill_buckets=(16, 64)) != base

    monkeypatch.setattr("ingot.compile.pipeline._compiler_digest", lambda: "changed lowering code")
    assert _key(original) != base
    monkeypatch.undo()
    monkeypatch.setattr("ingot.compile.pipeline.toolchain_versions", lambda: {"torch": "9.9"})
    assert _key(original) != base
