"""`--activation-dtype bf16`: the option's one-line refusals, the cache key, the CPU flag the artifact then needs (a
CPU without avx512_bf16 refuses it in one line), and, on a CPU with AVX512-BF16, a tiny bfp8 model compiled so: its
products round their inputs to bfloat16, it verifies, generates what transformers generates on the decoded weights
with every linear's input rounded to bfloat16, and `ingot inspect` and /v1/models show it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
import torch

from ingot.artifacts import cpu_isa
from ingot.artifacts.cpu_isa import BF16_PRODUCTS_FLAG, cpu_requirement, has_flag
from ingot.artifacts.integrity import check_artifact
from ingot.cli import main
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import cache_key
from ingot.errors import CpuIsaError, OptionError
from ingot.models.source import resolve_source
from tests.artifacts.tampering import edit_manifest
from tests.compile.test_weight_formats import assert_greedy_generation_equals
from tests.conftest import TINY_OPTIONS, run_cli, tiny_cli_options
from tests.server.test_serve_cli import assert_one_line_error

WITH_AVX512 = frozenset(cpu_isa.X86_64_V4)  # e.g. Skylake-SP: AVX-512, no bfloat16 products
WITH_AVX512_BF16 = WITH_AVX512 | {BF16_PRODUCTS_FLAG}  # e.g. Sapphire Rapids, AMD Zen 4
AVX2_ONLY = frozenset(cpu_isa.X86_64_V3)
BF16_BFP8 = dict(weight_format="bfp8", activation_dtype="bf16")
NEEDS_BF16_PRODUCTS = pytest.mark.skipif(
    not has_flag(BF16_PRODUCTS_FLAG), reason="--activation-dtype bf16 runs on AVX512-BF16: this CPU lacks avx512_bf16"
)


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(flags): this process's CPU has exactly ``flags``."""
    return lambda flags: monkeypatch.setattr(cpu_isa, "host_flags", lambda: flags)


# -- the option


@pytest.mark.parametrize(
    "flags, values, message",
    [
        (WITH_AVX512_BF16, dict(activation_dtype="fp16"), "--activation-dtype: unknown activation dtype 'fp16'; "
         "choices: fp32, bf16"),
        (WITH_AVX512_BF16, dict(activation_dtype="bf16"), "--activation-dtype bf16 needs weights bfloat16 holds "
         "exactly (--weight-format bf16, bfp8, bfp4, accuracy or performance): fp32 weights would be rounded"),
        (WITH_AVX512_BF16, dict(BF16_BFP8, target="p150"), "--activation-dtype bf16 applies to the cpu target, not "
         "p150"),
        (WITH_AVX512_BF16, dict(BF16_BFP8, cpu_isa="avx2"), "--activation-dtype bf16 multiplies with AVX512-BF16: "
         "it needs --cpu-isa avx512, not avx2"),
        (WITH_AVX512, BF16_BFP8, "--activation-dtype bf16 multiplies with AVX512-BF16: this CPU lacks avx512_bf16"),
        (AVX2_ONLY, BF16_BFP8, "--activation-dtype bf16 multiplies with AVX512-BF16: this CPU lacks avx512_bf16"),
    ],
)  # fmt: skip
def test_bad_activation_dtypes_are_one_line_option_errors(fake_cpu, flags, values, message):
    fake_cpu(flags)
    with pytest.raises(OptionError) as error:
        CompileOptions.parse(**values)
    assert str(error.value) == message


def test_bf16_activations_need_avx512_bf16_which_the_artifact_then_requires(fake_cpu):
    fake_cpu(WITH_AVX512_BF16)
    for weights in ("bf16", "bfp8", "bfp4", "accuracy", "performance"):
        options = CompileOptions.parse(weight_format=weights, activation_dtype="bf16")
        assert options.cpu_isa == "avx512" and options.extra_cpu_flags == (BF16_PRODUCTS_FLAG,)
    assert CompileOptions.parse(weight_format="bfp8").extra_cpu_flags == ()  # fp32 activations: the ISA's flags
    requirement = cpu_requirement("avx512", options.extra_cpu_flags)
    assert requirement.flags == [*cpu_isa.X86_64_V4, BF16_PRODUCTS_FLAG]


def test_the_activation_dtype_is_in_the_cache_key(fake_cpu):
    fake_cpu(WITH_AVX512_BF16)
    digests = {"config": "0" * 64}
    default = cache_key(digests, CompileOptions.parse(weight_format="bfp8"))
    assert default == cache_key(digests, CompileOptions.parse(weight_format="bfp8", activation_dtype="fp32"))
    assert cache_key(digests, CompileOptions.parse(**BF16_BFP8)) != default


def test_the_cli_takes_the_option_for_language_models_only(tiny_model, tmp_path):
    model = str(tiny_model("llama"))
    result = run_cli("cache-key", model, "--activation-dtype", "bf16", cache_dir=tmp_path)
    assert_one_line_error(result, "--activation-dtype bf16 needs weights bfloat16 holds exactly")
    result = run_cli("compile", "yolov4", "--random-weights", "--activation-dtype", "bf16", cache_dir=tmp_path)
    assert_one_line_error(result, "--activation-dtype is an option for language models")
    assert not (tmp_path / "artifacts").exists()


# -- an artifact that needs avx512_bf16, on a CPU without it


@pytest.fixture
def bf16_manifest_copy(compiled, tmp_path) -> Path:
    """A copy of the shared tiny artifact whose manifest needs AVX-512 and avx512_bf16."""
    path = shutil.copytree(compiled("llama").path, tmp_path / "artifact")
    needs = cpu_requirement("avx512", (BF16_PRODUCTS_FLAG,))
    edit_manifest(path, lambda m: (m.update(cpu=needs.model_dump()), m["options"].update(BF16_BFP8)))
    return path


def test_an_artifact_needing_avx512_bf16_is_refused_on_a_cpu_without_it(bf16_manifest_copy, fake_cpu, capsys):
    fake_cpu(WITH_AVX512)
    with pytest.raises(CpuIsaError) as error:
        check_artifact(bf16_manifest_copy)
    expected = "compiled for avx512 with avx512_bf16, which this CPU lacks: recompile with --activation-dtype fp32"
    assert str(error.value) == f"artifact: {expected}"
    # inspect still shows what it needs
    assert main(["inspect", str(bf16_manifest_copy), "--cache-dir", str(bf16_manifest_copy.parent)]) == 0
    text = capsys.readouterr().out
    assert "cpu isa   avx512 + avx512_bf16 (-march=x86-64-v4; this CPU (avx512) lacks avx512_bf16)" in text
    assert "; the linears' inputs rounded to bf16 (--activation-dtype bf16)" in text

    fake_cpu(WITH_AVX512_BF16)
    assert check_artifact(bf16_manifest_copy).cpu.flags[-1] == BF16_PRODUCTS_FLAG


# -- a tiny model compiled with bfloat16 activations (needs AVX512-BF16 here)


@pytest.fixture(scope="module")
def bf16_artifact(compiled):
    return compiled("llama", **BF16_BFP8)


def _rounding_inputs(reference: torch.nn.Module) -> torch.nn.Module:
    """``reference`` with every linear's input rounded to bfloat16 (as the artifact's bfp8 linears round theirs)."""
    for module in reference.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(lambda _, args: (args[0].to(torch.bfloat16).float(), *args[1:]))
    return reference


@NEEDS_BF16_PRODUCTS
def test_the_artifact_records_bf16_activations_needs_avx512_bf16_and_verifies(bf16_artifact, compiled):
    manifest = check_artifact(bf16_artifact.path)
    assert manifest.options["activation_dtype"] == "bf16" and manifest.options["weight_format"] == "bfp8"
    assert manifest.cpu == cpu_requirement("avx512", (BF16_PRODUCTS_FLAG,))
    report = manifest.verification
    assert report.passed and report.min_pcc == 0.99 and report.pcc >= 0.99
    assert bf16_artifact.key != compiled("llama", weight_format="bfp8").key


@NEEDS_BF16_PRODUCTS
def test_the_products_take_bfloat16_inputs(bf16_artifact):
    """The prefill's logits are those of transformers on the decoded weights with every linear's input rounded to
    bfloat16 (to the summation order's last bits), and clearly not those of the same model without the rounding."""
    from ingot.compile.verify.references import reference_model
    from ingot.runtime.model_runner import ModelRunner

    manifest = check_artifact(bf16_artifact.path)
    tokens = list(range(3, 40))
    runner = ModelRunner(bf16_artifact.path, manifest, num_blocks=8)
    logits = runner.prefill([tokens], [0], [[1, 2, 3]])[0]
    with torch.no_grad():
        float32 = reference_model(bf16_artifact.path, manifest)(torch.tensor([tokens])).logits[0, -1]
        rounded = _rounding_inputs(reference_model(bf16_artifact.path, manifest))(torch.tensor([tokens])).logits[0, -1]
    to_rounded, to_float32 = (logits - rounded).abs().max().item(), (logits - float32).abs().max().item()
    assert to_rounded < 1e-4 and to_rounded * 20 < to_float32, (to_rounded, to_float32)


@NEEDS_BF16_PRODUCTS
def test_greedy_generation_equals_transformers_with_bfloat16_linear_inputs(bf16_artifact):
    from ingot.compile.verify.references import reference_model
    manifest = check_artifact(bf16_artifact.path)
    reference = _rounding_inputs(reference_model(bf16_artifact.path, manifest))
    assert_greedy_generation_equals(reference, bf16_artifact.path, manifest, new_tokens=32)


@NEEDS_BF16_PRODUCTS
def test_ingot_verify_holds_it_to_tenstorrents_bar_on_the_decoded_weights(bf16_artifact):
    from ingot.compile.verify.references import DECODED_REFERENCE
    from ingot.compile.verify.stored import verify_stored

    report = verify_stored(bf16_artifact.path)
    assert report.reference == DECODED_REFERENCE and report.passed and report.min_pcc == 0.99


@NEEDS_BF16_PRODUCTS
def test_inspect_ls_and_models_show_the_activation_dtype(bf16_artifact, session_store):
    from ingot.runtime.engine import Engine
    from ingot.server.app import create_app

    inspected = run_cli("inspect", bf16_artifact.key, cache_dir=session_store.root)
    assert inspected.returncode == 0, inspected.stderr
    weights = "weights   bfp8: linears 15 bfp8; other tensors rounded to bf16 (5); the linears' inputs rounded to bf16"
    assert f"{weights} (--activation-dtype bf16)" in inspected.stdout
    assert "cpu isa   avx512 + avx512_bf16 (-march=x86-64-v4; this CPU (avx512) has it)" in inspected.stdout
    listed = run_cli("ls", cache_dir=session_store.root).stdout
    row = next(line for line in listed.splitlines() if line.strip().startswith(bf16_artifact.key))
    assert " bfp8 " in row and " bf16 " in row and row.rstrip().endswith(" ok")

    engine = Engine(bf16_artifact.path, check_artifact(bf16_artifact.path), num_blocks=32)
    try:
        [card] = asyncio.run(_models(create_app({"tiny": engine})))
    finally:
        engine.shutdown()
    assert card["metadata"]["weight_format"] == "bfp8" and card["metadata"]["activation_dtype"] == "bf16"


def test_the_cli_option_makes_the_key(tiny_model, tmp_path, fake_cpu, capsys):
    """`ingot cache-key --activation-dtype bf16` keys what a CompileOptions with it keys (on a CPU with the flag)."""
    model = str(tiny_model("llama"))
    fake_cpu(WITH_AVX512_BF16)
    arguments = ["cache-key", model, *tiny_cli_options(), "--weight-format", "bfp8", "--activation-dtype", "bf16"]
    assert main([*arguments, "--cache-dir", str(tmp_path)]) == 0
    expected = CompileOptions.parse(**TINY_OPTIONS, **BF16_BFP8)
    assert capsys.readouterr().out.strip() == cache_key(resolve_source(model).digests(), expected)


async def _models(app) -> list[dict]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        return (await http.get("/v1/models")).json()["data"]
