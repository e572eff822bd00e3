"""The TT conversion check: each program's JAX function (what was lowered to TT-NN) on JAX's CPU backend against
the torch program it was converted from, at compile time and again by `ingot verify`; and what it does when a
program is deliberately perturbed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import MANIFEST_NAME, Manifest, ProgramSpec, TensorSpec, TtProgramInfo
from ingot.artifacts.store import ArtifactStore
from ingot.compile.pipeline import check_tt_conversion, publish
from ingot.compile.options import CompileOptions
from ingot.compile.verify.tt_conversion import MIN_PCC
from ingot.compile.verify.tt_conversion_inputs import step_inputs
from ingot.errors import VerificationError
from ingot.runtime.block_manager import PAD_BLOCK
from tests.compile.tt.conftest import TT_TINY_OPTIONS
from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error


def _step(batch: int, tokens: int, blocks: int = 16, block_size: int = 16) -> ProgramSpec:
    cache_blocks = batch * blocks + 1  # as TT plans it: max_batch full sequences and the padding block
    shapes = {
        "input_ids": [batch, tokens], "position_ids": [batch, tokens], "slot_mapping": [batch, tokens],
        "block_tables": [batch, blocks], "logits_index": [batch], "kv_cache": [2, 2, cache_blocks, block_size, 2, 8],
    }  # fmt: skip
    info = TtProgramInfo(
        status="lowered", ttnn_ops={}, toolchain={}, optimization_level=0, seconds=0.0,
        inputs=[TensorSpec(name=n, dtype="int32", shape=s) for n, s in shapes.items()],
    )  # fmt: skip
    kind = "decode" if tokens == 1 else "prefill"
    shape = dict(batch=(batch, batch), tokens=(tokens, tokens), inputs=[], outputs=[])
    return ProgramSpec(name="p", kind=kind, file="", tt=info, **shape)


@pytest.mark.parametrize("batch, tokens", [(1, 32), (2, 1), (4, 1)])
def test_the_check_runs_steps_as_serving_pads_them(batch, tokens):
    inputs = step_inputs(_step(batch, tokens), vocab_size=100, max_context=256)
    tables, slots = inputs["block_tables"], inputs["slot_mapping"]
    rows = batch - 1 if batch > 1 else 1
    used = tables[:rows][tables[:rows] != PAD_BLOCK].tolist()
    assert len(used) == len(set(used))  # each sequence has blocks of its own
    assert used != list(range(1, len(used) + 1))  # scattered over the cache, not its first blocks in order
    for row in range(rows):
        length = inputs["logits_index"][row] + 1
        positions = inputs["position_ids"][row, :length]
        assert positions[0] > 0  # earlier tokens of the sequence are already in the cache
        blocks = tables[row][positions // 16]
        assert (slots[row, :length] == blocks * 16 + positions % 16).all() and (blocks != PAD_BLOCK).all()
        assert (slots[row, length:] == 0).all()  # padded tokens write to the padding block
    if tokens > 1:
        assert inputs["logits_index"][0] < tokens - 1  # a prefill chunk shorter than its bucket
    if batch > 1:
        assert (tables[-1] == PAD_BLOCK).all() and (slots[-1] == 0).all()  # a padding row
    assert inputs["kv_cache"].std() > 0.5  # a filled cache


def test_every_llama_program_passes_with_its_logits_cache_and_hidden_states(tt_compiled):
    manifest = check_artifact(tt_compiled("llama").path)
    for program in manifest.programs:
        check = program.tt.conversion
        assert check.passed and check.min_pcc == MIN_PCC == 0.9999
        expected = {"kv_cache", "logits"} | ({"hidden_states"} if program.kind == "prefill" else set())
        assert set(check.outputs) == expected, program.name
        assert check.pcc >= 0.99999 and check.max_abs_error < 1e-3, program.name
        assert program.tt.jax_program == f"programs/{program.name}.jax"
        assert program.tt.torch_program == f"programs/{program.name}.pt2"


def test_every_yolov4_program_passes_on_its_head_maps(tt_yolo):
    manifest = check_artifact(tt_yolo.path)
    for program in manifest.programs:
        check = program.tt.conversion
        assert check.passed and set(check.outputs) == {"stride8", "stride16", "stride32"}
        assert check.pcc >= 0.9999, program.name


def test_inspect_and_verify_show_the_check(tt_compiled, session_store):
    key = tt_compiled("llama").key
    inspect = run_cli("inspect", key, cache_dir=session_store.root)
    assert inspect.returncode == 0, inspect.stderr
    assert "conversion check" in inspect.stdout and "kv_cache (written slots)" in inspect.stdout
    assert "passed (>= 0.9999)" in inspect.stdout
    verify = run_cli("verify", key, cache_dir=session_store.root)  # runs the check again, from the artifact alone
    assert verify.returncode == 0, verify.stderr
    assert "conversion check" in verify.stdout and "passed (>= 0.9999)" in verify.stdout


# Reverses the vocabulary of a program's last output (the logits): a JAX function that no longer computes what
# its torch program computes, exported for JAX's CPU backend in place of the lowered one.
PERTURB = """
import sys, jax
from pathlib import Path
path = Path(sys.argv[1])
original = jax.export.deserialize(bytearray(path.read_bytes()))
def perturbed(weights, inputs):
    outputs = original.call(weights, inputs)
    return [*outputs[:-1], outputs[-1][..., ::-1]]
args, _ = jax.tree_util.tree_unflatten(original.in_tree, original.in_avals)
path.write_bytes(jax.export.export(jax.jit(perturbed), platforms=("cpu",))(*args).serialize())
"""


@pytest.fixture(scope="module")
def perturbed(tt_compiled, tmp_path_factory):
    """The tiny Llama artifact, published again in a store of its own with decode_1's JAX function perturbed."""
    original = tt_compiled("llama")
    store = ArtifactStore(tmp_path_factory.mktemp("perturbed"))
    with store.build(original.key) as workdir:
        shutil.copytree(original.path, workdir, dirs_exist_ok=True, copy_function=os.link)  # links: no copies
        jax_file = workdir / "programs" / "decode_1.jax"
        (workdir / MANIFEST_NAME).unlink()  # links to the session's artifact: replaced, never written through
        content = jax_file.read_bytes()
        jax_file.unlink()
        jax_file.write_bytes(content)
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        subprocess.run([sys.executable, "-c", PERTURB, str(jax_file)], env=env, check=True, capture_output=True)
        publish(workdir, original.manifest)
    return store, original.key


def test_verify_fails_in_one_line_when_a_program_is_perturbed(perturbed):
    store, key = perturbed
    result = run_cli("verify", key, cache_dir=store.root)
    assert_one_line_error(result, "TT conversion check failed (decode_1: logits PCC")
    assert "prefill_32" not in result.stderr  # only the perturbed program fails


def test_the_compile_fails_on_it_unless_allowed_which_records_it(perturbed):
    store, key = perturbed
    path = store.path(key)
    manifest = Manifest.read(path)
    with pytest.raises(VerificationError, match=r"decode_1: logits PCC .*--allow-unverified records it instead$"):
        check_tt_conversion(path, manifest, CompileOptions.parse(**TT_TINY_OPTIONS))
    allowed = CompileOptions.parse(**TT_TINY_OPTIONS, allow_unverified=True)
    recorded = check_tt_conversion(path, manifest, allowed)
    checks = {p.name: p.tt.conversion for p in recorded.programs}
    assert not checks["decode_1"].passed and checks["decode_1"].outputs["logits"].pcc < 0.5
    assert checks["decode_1"].outputs["kv_cache"].pcc > MIN_PCC  # the cache writes were not perturbed
    assert all(check.passed for name, check in checks.items() if name != "decode_1")


def test_allow_unverified_is_a_tt_option_and_part_of_the_key(tiny_model, tmp_path):
    model = str(tiny_model("llama"))
    assert_one_line_error(run_cli("cache-key", model, "--allow-unverified", cache_dir=tmp_path), "not cpu")
    keys = [
        run_cli("cache-key", model, "--target", "p150", *flag, cache_dir=tmp_path).stdout
        for flag in ([], ["--allow-unverified"])
    ]
    assert keys[0] and keys[0] != keys[1]
