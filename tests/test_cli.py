"""The `ingot` command as a user runs it: exit codes, one-line errors, and the cache behaviour."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from ingot.artifacts.manifest import Manifest
from tests.conftest import run_cli, tiny_cli_options
from tests.server.test_serve_cli import free_port


def assert_one_line_error(result, message):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]


def test_compile_missing_path(tmp_path):
    assert_one_line_error(run_cli("compile", str(tmp_path / "nope"), cache_dir=tmp_path), "no such file or directory")


def test_compile_bad_option(tiny_model, tmp_path):
    result = run_cli("compile", str(tiny_model("llama")), "--max-batch", "0", cache_dir=tmp_path)
    assert_one_line_error(result, "--max-batch")


def test_compile_unknown_kv_cache_dtype(tiny_model, tmp_path):
    result = run_cli("compile", str(tiny_model("llama")), "--kv-cache-dtype", "fp8", cache_dir=tmp_path)
    assert_one_line_error(result, "--kv-cache-dtype: unknown KV-cache dtype 'fp8'; choices: fp32, bf16")


def test_compile_unknown_target(tiny_model, tmp_path):
    assert_one_line_error(run_cli("compile", str(tiny_model("llama")), "--target", "tpu", cache_dir=tmp_path), "tpu")


def test_compile_unknown_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    result = run_cli("compile", str(tmp_path / "gpt2"), cache_dir=tmp_path)
    assert_one_line_error(result, "unsupported architecture GPT2LMHeadModel")


def test_compile_corrupt_weights(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model("llama"), broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    assert_one_line_error(run_cli("compile", str(broken), cache_dir=tmp_path), "cannot read the weights")


def test_compile_context_beyond_the_model(tiny_model, tmp_path):
    result = run_cli("compile", str(tiny_model("llama")), "--max-context", "4096", cache_dir=tmp_path)
    assert_one_line_error(result, "exceeds the model's 1024 positions")


def test_inspect_unknown_key(tmp_path):
    assert_one_line_error(run_cli("inspect", "0123abc", cache_dir=tmp_path), "no such artifact")


def test_cache_key_matches_compile_and_a_hit_imports_no_torch(compiled, tiny_model, session_store):
    result = compiled("llama")
    key = run_cli("cache-key", str(tiny_model("llama")), *tiny_cli_options(), cache_dir=session_store.root)
    assert key.returncode == 0 and key.stdout.strip() == result.key
    code = (
        "import sys; from ingot.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'a cache hit imported torch'; sys.exit(rc)"
    )
    env = dict(os.environ, INGOT_CACHE_DIR=str(session_store.root))
    hit = subprocess.run(
        [sys.executable, "-c", code, "compile", str(tiny_model("llama")), *tiny_cli_options()],
        capture_output=True, text=True, env=env,
    )
    assert hit.returncode == 0, hit.stderr
    assert f"cache hit: {result.key}" in hit.stdout


def test_ls_inspect_and_verify(compiled, session_store):
    result = compiled("qwen3")
    listing = run_cli("ls", cache_dir=session_store.root)
    assert listing.returncode == 0 and result.key[:12] in listing.stdout
    inspect = run_cli("inspect", result.key[:10], cache_dir=session_store.root)
    assert inspect.returncode == 0
    assert "Qwen3ForCausalLM" in inspect.stdout and "decode" in inspect.stdout and "passed" in inspect.stdout
    verify = run_cli("verify", result.key, cache_dir=session_store.root)
    assert verify.returncode == 0, verify.stderr
    assert "passed" in verify.stdout and "top-1 agreement" in verify.stdout


def test_inspect_shows_the_weight_bytes_and_the_expected_serving_memory(compiled, session_store):
    result = compiled("llama")
    inspect = run_cli("inspect", result.key, "--kv-cache-gb", "0.5", cache_dir=session_store.root)
    assert inspect.returncode == 0, inspect.stderr
    weights = (result.path / "weights.safetensors").stat().st_size
    # 0.5 GiB of 8 KiB blocks (2 layers x K and V x 16 tokens x 2 heads x 16 dims x 4 bytes): exactly 0.5 GiB
    kv_cache = 2**29
    expected = weights + kv_cache + 600_000_000  # the target: weights + KV cache + 0.6 GB
    printed = " ".join(inspect.stdout.split())
    assert f"memory weights {weights / 1e6:.0f} MB" in printed
    assert (
        f"serving with --kv-cache-gb 0.5: {expected / 1e9:.2f} GB expected (weights + KV cache 537 MB + runtime 600 MB)"
        in printed
    )


def test_verify_refuses_a_tampered_artifact(compiled, tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(compiled("llama").path, copy)
    with open(copy / "programs" / "prefill.pt2", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    assert_one_line_error(run_cli("verify", str(copy), cache_dir=tmp_path), "does not match its sha256")


def test_two_concurrent_compiles_make_one_artifact(tiny_model, tmp_path):
    model = str(tiny_model("llama", seed=7))
    env = dict(os.environ, INGOT_CACHE_DIR=str(tmp_path))
    # --max-batch 1: two programs, the quickest compile (the lock is what is tested here)
    command = [sys.executable, "-m", "ingot.cli", "compile", model, *tiny_cli_options(), "--max-batch", "1", "--quiet"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stdout = [out for out, _ in outputs]
    assert sum("compiled " in out for out in stdout) == 1
    assert sum("cache hit" in out for out in stdout) == 1
    artifacts = list((tmp_path / "artifacts").iterdir())
    assert len(artifacts) == 1
    assert list((tmp_path / "building").iterdir()) == []
    programs = Manifest.read(artifacts[0]).programs
    assert [p.name for p in programs] == ["prefill", "decode", "logits"]


def test_killed_compile_leaves_nothing_and_gc_cleans_up(tiny_model, tmp_path):
    proc = _start_compile(tiny_model("llama", seed=8), tmp_path)
    building = tmp_path / "building"
    deadline = time.monotonic() + 120
    while not (building.is_dir() and any(building.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # let it write into the build directory
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(building.iterdir()), "the compile never started building"
    assert not (tmp_path / "artifacts").exists() or list((tmp_path / "artifacts").iterdir()) == []
    gc = run_cli("gc", cache_dir=tmp_path)
    assert gc.returncode == 0 and "1 removed" in gc.stdout
    assert list(building.iterdir()) == []


def test_a_killed_compile_takes_its_lowering_workers_with_it(tiny_model, tmp_path):
    proc = _start_compile(tiny_model("llama", seed=9), tmp_path)
    compile_process = psutil.Process(proc.pid)
    deadline = time.monotonic() + 300
    workers = []
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
        workers = [c for c in compile_process.children() if "spawn_main" in " ".join(_cmdline(c))]
        time.sleep(0.2)
    assert len(workers) == 2, "the compile never started its lowering workers"
    while min(_cpu_seconds(w) for w in workers) < 8 and time.monotonic() < deadline:
        time.sleep(0.2)  # past starting up (which a dead parent ends anyway): lowering
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)  # lowering a program takes longer
    assert alive == []


def _start_compile(model: Path, cache_dir: Path) -> subprocess.Popen:
    """`ingot compile` of a tiny model in the background, to be killed."""
    return subprocess.Popen(
        [sys.executable, "-m", "ingot.cli", "compile", str(model), *tiny_cli_options(), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, INGOT_CACHE_DIR=str(cache_dir)),
    )


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        return process.cpu_times().user
    except psutil.NoSuchProcess:
        return float("inf")


@pytest.mark.parametrize("command", [["compile"], ["inspect"], ["bogus"]])
def test_usage_errors_exit_non_zero(command, tmp_path):
    result = run_cli(*command, cache_dir=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [["compile", "smollm2-135m"], ["cache-key", "smollm2-135m"], ["ls"], ["inspect", "0123abc"], ["verify", "0123abc"],
     ["gc"], ["serve", "smollm2-135m"], ["detect", "image.png"], ["bench", "offline", "0123abc"]],
)  # fmt: skip
def test_a_cache_dir_that_is_a_file_is_refused_in_one_line_by_every_command(command, tmp_path):
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file")
    for cache_dir in (not_a_directory, not_a_directory / "inside"):
        result = run_cli(*command, "--cache-dir", str(cache_dir), timeout=120)
        assert_one_line_error(result, "not a directory")


def _copy_as_device_artifact(artifact: Path, target: Path) -> None:
    """A copy of ``artifact`` for a Tenstorrent target: serving it is refused at once, naming p150."""
    shutil.copytree(artifact, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["target"] = "p150"
    (target / "manifest.json").write_text(json.dumps(manifest))


def test_a_directory_named_like_a_builtin_model_does_not_shadow_it(compiled, tmp_path):
    """`smollm2-135m` and `yolov4` are the built-in models even beside same-named directories; `./smollm2-135m`
    is the directory."""
    workdir = tmp_path / "work"
    for name in ("smollm2-135m", "yolov4"):
        _copy_as_device_artifact(compiled("llama").path, workdir / name)
    Image.new("RGB", (8, 8)).save(workdir / "image.png")
    cache = tmp_path / "cache"

    def ingot(*args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, INGOT_CACHE_DIR=str(cache))
        command = [sys.executable, "-m", "ingot.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, timeout=120)

    port = str(free_port())
    assert_one_line_error(ingot("serve", "smollm2-135m", "--no-compile", "--port", port), "smollm2-135m: not compiled")
    assert_one_line_error(ingot("serve", "yolov4", "--port", port), "yolov4 is not compiled")
    assert_one_line_error(ingot("inspect", "smollm2-135m"), "smollm2-135m: not compiled")
    assert_one_line_error(ingot("verify", "yolov4"), "yolov4 is not compiled")
    assert_one_line_error(ingot("detect", "image.png", "--model", "yolov4"), "yolov4 is not compiled")
    # a path names the directory
    assert_one_line_error(ingot("serve", "./smollm2-135m", "--no-compile", "--port", port), "p150")
    inspect = ingot("inspect", "./yolov4")
    assert inspect.returncode == 0 and "p150" in inspect.stdout, inspect.stderr
