"""--cpu-isa: a cpu artifact names the vector ISA its native code needs, the cache key covers it, and a CPU without
it refuses the artifact in one line before loading any of its code (which would die of SIGILL)."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from ingot.artifacts import cpu_isa
from ingot.artifacts.cpu_isa import cpu_requirement, host_isa
from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import Manifest
from ingot.compile import kernels
from ingot.compile.options import CompileOptions, DetectorOptions
from ingot.compile.pipeline import cache_key
from ingot.errors import CpuIsaError, OptionError
from tests.artifacts.tampering import edit_manifest
from tests.conftest import TINY_OPTIONS, run_cli
from tests.server.test_serve_cli import assert_one_line_error, free_port

AVX2_ONLY = frozenset(cpu_isa.X86_64_V3)  # e.g. an AMD Zen 3 CI runner
WITH_AVX512 = frozenset(cpu_isa.X86_64_V4)


def future_isa() -> dict:
    """A manifest's cpu section needing this host's flags and one no CPU has: only that one is lacking."""
    return {"isa": "avx1024", "march": "x86-64-v9", "flags": [*cpu_requirement(host_isa()).flags, "avx1024"]}


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(flags): this process's CPU has exactly ``flags``."""
    return lambda flags: monkeypatch.setattr(cpu_isa, "host_flags", lambda: flags)


@pytest.fixture
def artifact_copy(compiled, tmp_path) -> Path:
    return shutil.copytree(compiled("llama").path, tmp_path / "artifact")


# -- options and the cache key


def test_native_resolves_to_this_cpus_isa_before_the_cache_key(fake_cpu):
    digests = {"config": "0" * 64}
    fake_cpu(AVX2_ONLY)
    assert CompileOptions().cpu_isa == "avx2" and DetectorOptions().cpu_isa == "avx2"
    on_avx2 = cache_key(digests, CompileOptions.parse(cpu_isa="native"))
    assert on_avx2 == cache_key(digests, CompileOptions.parse(cpu_isa="avx2"))
    fake_cpu(WITH_AVX512)
    assert CompileOptions().cpu_isa == "avx512"
    on_avx512 = cache_key(digests, CompileOptions.parse())
    assert on_avx512 == cache_key(digests, CompileOptions.parse(cpu_isa="avx512"))
    assert on_avx512 != on_avx2  # two kinds of machine, two artifacts
    assert on_avx2 == cache_key(digests, CompileOptions.parse(cpu_isa="avx2"))  # a portable one is the same anywhere


@pytest.mark.parametrize(
    "values, message",
    [
        ({"cpu_isa": "sse4"}, "--cpu-isa: unknown vector ISA 'sse4'; choices: native, avx2, avx512"),
        ({"cpu_isa": "avx512", "target": "p150"}, "--cpu-isa: applies to the cpu target, not p150"),
        ({"cpu_isa": "avx2", "target": "p150"}, "--cpu-isa: applies to the cpu target, not p150"),
        ({"cpu_isa": "avx512"}, "--cpu-isa: this CPU has avx2, not avx512"),
    ],
)
def test_bad_cpu_isas_are_one_line_option_errors(fake_cpu, values, message):
    fake_cpu(AVX2_ONLY)
    for options in (CompileOptions, DetectorOptions):
        with pytest.raises(OptionError) as error:
            options.parse(**values)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_cpu_without_avx2_is_refused(fake_cpu):
    fake_cpu(frozenset(cpu_isa.X86_64_V2))
    with pytest.raises(OptionError, match="neither avx2 nor avx512"):
        CompileOptions.parse()


def test_a_tenstorrent_target_has_no_cpu_isa():
    assert CompileOptions.parse(target="p150").cpu_isa is None
    assert CompileOptions.parse(target="p150", cpu_isa="native").cpu_isa is None


def test_cache_key_cli_takes_the_isa_and_refuses_bad_values_in_one_line(tiny_model, tmp_path):
    model = str(tiny_model("llama"))
    keys = {isa: run_cli("cache-key", model, "--cpu-isa", isa, cache_dir=tmp_path) for isa in ("native", "avx2")}
    assert all(result.returncode == 0 for result in keys.values()), keys
    default = run_cli("cache-key", model, cache_dir=tmp_path).stdout
    assert keys["native"].stdout == default
    assert (keys["avx2"].stdout != default) == (host_isa() != "avx2")
    assert_one_line_error(run_cli("cache-key", model, "--cpu-isa", "avx3", cache_dir=tmp_path), "--cpu-isa", "avx3")
    result = run_cli("compile", model, "--target", "p150", "--cpu-isa", "avx2", cache_dir=tmp_path)
    assert_one_line_error(result, "--cpu-isa: applies to the cpu target, not p150")


# -- the refusal


def test_an_artifact_for_an_isa_this_cpu_lacks_is_refused_before_loading(artifact_copy, fake_cpu):
    from ingot.runtime.engine import Engine
    from ingot.runtime.programs import load_programs

    fake_cpu(AVX2_ONLY)
    edit_manifest(artifact_copy, lambda m: m.update(cpu=cpu_requirement("avx512").model_dump()))
    expected = "compiled for avx512, this CPU has avx2: recompile (or compile with --cpu-isa avx2)"
    with pytest.raises(CpuIsaError) as error:
        check_artifact(artifact_copy)
    assert str(error.value) == f"artifact: {expected}"
    with pytest.raises(CpuIsaError, match="compiled for avx512"):
        Engine.from_artifact(str(artifact_copy))
    with pytest.raises(CpuIsaError, match="compiled for avx512"):  # even for a caller that skipped the check
        load_programs(artifact_copy, Manifest.read(artifact_copy))


def test_the_refusal_is_one_line_in_verify_and_serve(artifact_copy, tmp_path):
    edit_manifest(artifact_copy, lambda m: m.update(cpu=future_isa()))
    expected = f"compiled for avx1024, this CPU has {host_isa()} (it lacks avx1024): recompile"
    assert_one_line_error(run_cli("verify", str(artifact_copy), cache_dir=tmp_path), expected)
    result = run_cli("serve", str(artifact_copy), "--no-compile", "--port", str(free_port()), cache_dir=tmp_path)
    assert_one_line_error(result, expected)
    shown = run_cli("inspect", str(artifact_copy), cache_dir=tmp_path)  # inspect still shows what it needs
    assert shown.returncode == 0 and "avx1024" in shown.stdout and "lacks avx1024" in shown.stdout


def test_ls_shows_each_artifacts_isa_and_one_this_cpu_lacks(compiled, session_store, fake_cpu, monkeypatch):
    from rich.console import Console

    from ingot.cli import main, printing

    isa = compiled("llama").manifest.cpu.isa
    listing = Console(width=400, record=True, file=io.StringIO())
    monkeypatch.setattr(printing, "out", listing)
    assert main(["ls", "--cache-dir", str(session_store.root)]) == 0
    row = next(line for line in listing.export_text().splitlines() if compiled("llama").key in line)
    assert f" {isa} " in row and row.rstrip().endswith(" ok")
    fake_cpu(frozenset(cpu_isa.X86_64_V2))  # a CPU older than AVX2
    assert main(["ls", "--cache-dir", str(session_store.root)]) == 0
    row = next(line for line in listing.export_text().splitlines() if compiled("llama").key in line)
    assert row.rstrip().endswith(f"needs {isa}, which this CPU lacks")


def test_a_cpu_artifact_records_its_isa(compiled):
    manifest = check_artifact(compiled("llama").path)
    assert manifest.cpu == cpu_requirement(manifest.options["cpu_isa"])
    assert manifest.cpu.isa == host_isa()


def test_a_detector_artifact_records_its_isa(compiled_yolo):
    manifest = check_artifact(compiled_yolo(320).path)
    assert manifest.options["cpu_isa"] == host_isa() and manifest.cpu == cpu_requirement(host_isa())


def test_a_manifest_of_the_older_schema_is_refused_with_a_recompile_hint(artifact_copy):
    from ingot.errors import ArtifactError

    edit_manifest(artifact_copy, lambda m: (m.pop("cpu"), m.update(schema_version=1)))
    with pytest.raises(ArtifactError, match="manifest schema 1, this ingot reads schema 2: recompile"):
        check_artifact(artifact_copy)


# -- a portable artifact


@pytest.fixture(scope="module")
def avx2_artifact(tiny_model, session_store):
    from ingot.compile.llm.kind import compile_model

    options = CompileOptions.parse(**TINY_OPTIONS, cpu_isa="avx2")
    return compile_model(str(tiny_model("llama")), options, session_store, quiet=True).path


def _uses_512_bit_registers(library: Path) -> bool:
    code = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    return "%zmm" in code


def test_an_avx2_artifact_compiles_verifies_and_generates_here(avx2_artifact, tmp_path):
    from ingot.compile.verify.references import reference_model
    from ingot.runtime.engine import Engine
    from ingot.runtime.sampling_params import SamplingParams

    manifest = check_artifact(avx2_artifact)
    assert manifest.cpu == cpu_requirement("avx2") and manifest.cpu.march == "x86-64-v3"
    assert manifest.verification.passed
    # its native code uses no AVX-512 register, whatever this machine has: ingot's library ...
    library = avx2_artifact / "kernels" / "ingot_kernels.so"
    assert library.read_bytes() == kernels.library_file("avx2").read_bytes()  # built apart from other ISAs'
    assert not _uses_512_bit_registers(library)
    # ... and every program's
    for program in manifest.programs:
        with zipfile.ZipFile(avx2_artifact / program.file) as package:
            for name in [n for n in package.namelist() if n.endswith(".so")]:
                (tmp_path / "program.so").write_bytes(package.read(name))
                assert not _uses_512_bit_registers(tmp_path / "program.so"), f"{program.name}: {name}"

    engine = Engine(avx2_artifact, manifest, num_blocks=64)
    try:
        [completion] = engine.generate(["The quick brown fox"], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
        ids = engine.tokenize("The quick brown fox")
    finally:
        engine.shutdown()
    import torch

    reference = reference_model(avx2_artifact, manifest)
    expected = reference.generate(torch.tensor([ids]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert completion.token_ids == expected[0, len(ids):].tolist()


def test_an_avx2_artifact_verifies_and_shows_its_isa_in_the_cli(avx2_artifact, tmp_path):
    verified = run_cli("verify", str(avx2_artifact), cache_dir=tmp_path)
    assert verified.returncode == 0, verified.stderr
    shown = run_cli("inspect", str(avx2_artifact), cache_dir=tmp_path)
    assert "cpu isa   avx2 (-march=x86-64-v3; this CPU" in shown.stdout and "has it" in shown.stdout
