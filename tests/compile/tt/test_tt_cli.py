"""A p150 artifact as a user meets it: inspect, verify, serve, and the targets this build refuses."""

from __future__ import annotations

import pytest

from ingot.errors import ArtifactError
from ingot.runtime.engine import Engine
from tests.conftest import run_cli, tiny_cli_options
from tests.test_cli import assert_one_line_error


def test_inspect_lists_each_programs_ttnn_ops(tt_compiled, session_store):
    result = run_cli("inspect", tt_compiled("llama").key, cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    for text in ("TT-NN programs for Tenstorrent Blackhole p150", "prefill_64", "decode_2", "lowered", "matmul", "rms_norm"):
        assert text in result.stdout, text
    assert "needs a Tenstorrent Blackhole p150" in result.stdout


def test_verify_checks_the_files_and_says_running_needs_the_device(tt_compiled, session_store):
    result = run_cli("verify", tt_compiled("llama").key, cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    assert "files and toolchain: ok" in result.stdout and "tt-metal" in result.stdout


def test_serve_refuses_a_tt_artifact_in_one_line(tt_compiled, session_store):
    key = tt_compiled("llama").key
    result = run_cli("serve", key, "--no-compile", cache_dir=session_store.root)
    assert_one_line_error(result, "built for target p150; serving it needs a Tenstorrent Blackhole p150")
    assert "TT runtime (tt-metal)" in result.stderr


def test_engine_refuses_a_tt_artifact(tt_compiled, session_store):
    with pytest.raises(ArtifactError, match="target p150.*TT runtime"):
        Engine.from_artifact(tt_compiled("llama").key, cache_dir=str(session_store.root))


@pytest.mark.parametrize("target", ["n150", "n300"])
def test_wormhole_above_level_0_is_refused_saying_why(tiny_model, tmp_path, target):
    for command in ("compile", "cache-key"):
        model = str(tiny_model("llama"))
        result = run_cli(command, model, "--target", target, "--optimization-level", "1", *tiny_cli_options(),
                         cache_dir=tmp_path)  # fmt: skip
        assert_one_line_error(result, f"--optimization-level 1 on {target}: builds device kernels on the host")
        assert "no Wormhole firmware toolchain" in result.stderr


def test_tt_flags_are_refused_on_the_cpu_target(tiny_model, tmp_path):
    model = str(tiny_model("llama"))
    assert_one_line_error(run_cli("cache-key", model, "--optimization-level", "1", cache_dir=tmp_path), "not cpu")
    assert_one_line_error(run_cli("cache-key", model, "--allow-cpu-fallback", cache_dir=tmp_path), "not cpu")
    assert_one_line_error(run_cli("cache-key", model, "--allow-unverified", cache_dir=tmp_path), "not cpu")
