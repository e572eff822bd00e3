"""Artifacts through a real OCI registry on 127.0.0.1: push, pull into a fresh cache, `pull --check`, tampering on
the registry refused with nothing cached, `ingot serve oci://REF` pulling on a miss, and one-line errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import warnings

import httpx
import oras.provider
import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.registry import FILE_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, TITLE, check_pullable
from ingot.artifacts.store import ArtifactStore
from ingot.errors import RegistryNotFoundError, RegistryUnreachableError
from ingot.runtime.sampling_params import SamplingParams
from tests.artifacts.registry_server import RegistryServer, running_registry
from tests.conftest import run_cli
from tests.server.helpers import eventually
from tests.server.test_serve_cli import free_port, healthy


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def assert_nothing_cached(cache: ArtifactStore) -> None:
    """No artifact, no recorded digest, no leftover build: what a refused pull must leave."""
    for directory in (cache.artifacts, cache.digests, cache.building_dir):
        assert not directory.exists() or not any(directory.iterdir()), list(directory.iterdir())


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> RegistryServer:
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(compiled, session_store, registry) -> str:
    """The tiny llama artifact pushed to the module's registry; its REF, tagged with its key."""
    key = compiled("llama").key
    result = run_cli("push", key, f"{registry.host}/ingot/tiny-llama", cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    ref = f"{registry.host}/ingot/tiny-llama:{key}"
    assert f"pushed {ref}" in result.stdout
    return ref


def oci_manifest(ref: str) -> dict:
    registry, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    response = httpx.get(
        f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST_MEDIA_TYPE}
    )
    response.raise_for_status()
    return response.json()


def greedy_tokens(path) -> list[int]:
    from ingot.runtime.engine import Engine

    engine = Engine(path, check_artifact(path), num_blocks=64)
    try:
        [completion] = engine.generate(["The lighthouse keeper"], SamplingParams(temperature=0, max_tokens=12))
        return completion.token_ids
    finally:
        engine.shutdown()


def test_push_then_pull_into_a_fresh_cache_generates_as_the_original(compiled, pushed, tmp_path):
    original = compiled("llama")
    layers = oci_manifest(pushed)["layers"]
    manifest = check_artifact(original.path)
    assert {layer["annotations"][TITLE]: layer["digest"] for layer in layers} == {
        name: f"sha256:{entry.sha256}" for name, entry in manifest.files.items()
    }  # one layer per file, its digest the manifest's sha256

    result = run_cli("pull", pushed, cache_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"pulled {original.key}" in result.stdout
    cache = ArtifactStore(tmp_path)
    assert cache.has(original.key)
    assert cache.recorded_digest(original.key) == ArtifactStore.holding(original.path).recorded_digest(original.key)
    assert greedy_tokens(cache.path(original.key)) == greedy_tokens(original.path)

    again = run_cli("pull", pushed, cache_dir=tmp_path)
    assert again.returncode == 0 and "already in the cache" in again.stdout


def test_pull_check_answers_without_downloading(pushed, registry, tmp_path):
    present = run_cli("pull", "--check", pushed, cache_dir=tmp_path)
    assert present.returncode == 0, present.stderr
    absent_tag = run_cli("pull", "--check", f"{pushed.rpartition(':')[0]}:0123456789abcdef01234567", cache_dir=tmp_path)
    assert absent_tag.returncode == 1 and "not in the registry" in absent_tag.stdout
    absent_repository = run_cli("pull", "--check", f"{registry.host}/ingot/never-pushed:abc", cache_dir=tmp_path)
    assert absent_repository.returncode == 1
    assert not (tmp_path / "artifacts").exists()


def test_an_unknown_tag_is_a_one_line_error(pushed, tmp_path):
    result = run_cli("pull", f"{pushed.rpartition(':')[0]}:no-such-tag", cache_dir=tmp_path)
    assert_one_line_error(result, "no-such-tag", "not in the registry")
    assert_nothing_cached(ArtifactStore(tmp_path))


def test_check_pullable_asks_the_registry_only_on_a_cache_miss(compiled, pushed, session_store, tmp_path):
    """What `ingot serve --replicas oci://REF` checks before Ray starts (each replica then pulls for itself)."""
    empty = ArtifactStore(tmp_path)
    check_pullable(empty, pushed)
    with pytest.raises(RegistryNotFoundError):
        check_pullable(empty, pushed.rsplit(":", 1)[0] + ":no-such-tag")
    unreachable = f"127.0.0.1:{free_port()}/ingot/tiny-llama:{compiled('llama').key}"
    check_pullable(session_store, unreachable)  # the key is cached: no network
    with pytest.raises(RegistryUnreachableError):
        check_pullable(empty, unreachable)
    assert_nothing_cached(empty)


def test_a_manifest_whose_layer_lies_is_refused_before_any_download(compiled, pushed, registry, tmp_path):
    """Someone pushes the real manifest.json as config, with the weights layer pointing at other bytes."""
    lying = oci_manifest(pushed)
    other_weights = tmp_path / "weights.safetensors"
    data = bytearray((compiled("llama").path / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    other_weights.write_bytes(bytes(data))
    [layer] = [layer for layer in lying["layers"] if layer["annotations"][TITLE] == "weights.safetensors"]
    layer.update(digest=f"sha256:{hashlib.sha256(data).hexdigest()}", mediaType=FILE_MEDIA_TYPE)
    client = oras.provider.Registry(registry.host, insecure=True)
    ref = f"{pushed.rpartition(':')[0]}:lying"  # the repository that holds the other blobs (the registry checks)
    assert client.upload_blob(str(other_weights), client.get_container(ref), dict(layer)).status_code in (200, 201)
    assert client.upload_manifest(lying, client.get_container(ref)).status_code == 201

    result = run_cli("pull", ref, cache_dir=tmp_path / "cache")
    assert_one_line_error(result, "weights.safetensors does not match its sha256 in the manifest")
    assert_nothing_cached(ArtifactStore(tmp_path / "cache"))


def flip_a_byte(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01  # same size: only the sha256 can tell
    return bytes(changed)


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]  # as a pull cut short by the registry would see it


@pytest.mark.parametrize(
    ("blob", "tamper", "expected"),
    [
        ("weights.safetensors", flip_a_byte, "does not match its sha256 in the manifest (tampered or corrupt)"),
        ("manifest.json", flip_a_byte, "does not match its digest in the registry's manifest (tampered or corrupt)"),
        ("programs/decode.pt2", cut_in_half, ""),  # the registry either ends the stream early or sends too little
    ],
    ids=["weights changed", "manifest changed", "program truncated"],
)
def test_a_blob_tampered_with_in_the_registry_storage_is_refused_and_nothing_is_cached(
    compiled, blob, tamper, expected, tmp_path
):
    """A registry of its own: a tampered blob is tampered for every repository that shares it."""
    original = compiled("llama")
    with running_registry(tmp_path) as registry:
        ref = f"{registry.host}/ingot/tampered:{original.key}"
        assert run_cli("push", str(original.path), ref, cache_dir=tmp_path / "unused").returncode == 0
        manifest = oci_manifest(ref)
        layers = {layer["annotations"][TITLE]: layer for layer in manifest["layers"]}
        stored = registry.blob_file((manifest["config"] if blob == "manifest.json" else layers[blob])["digest"])
        stored.write_bytes(tamper(stored.read_bytes()))

        result = run_cli("pull", ref, cache_dir=tmp_path / "cache")
    assert_one_line_error(result, blob, expected)
    assert_nothing_cached(ArtifactStore(tmp_path / "cache"))


def test_serve_oci_ref_pulls_on_a_miss_and_serves(compiled, pushed, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "ingot.cli", "serve", f"oci://{pushed}", "--port", str(port),
         "--cache-dir", str(tmp_path), "--kv-cache-gb", "0.05"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert eventually(lambda: healthy(url) or process.poll() is not None, timeout=180)
        assert process.poll() is None, process.stderr.read()
        request = {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}
        response = httpx.post(f"{url}/v1/completions", json=request, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 5
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert ArtifactStore(tmp_path).has(compiled("llama").key)


def test_an_unreachable_registry_is_a_prompt_one_line_error(tmp_path):
    started = time.monotonic()
    result = run_cli("pull", f"127.0.0.1:{free_port()}/ingot/model:abc", cache_dir=tmp_path)
    assert_one_line_error(result, "registry unreachable", "Connection refused")
    assert time.monotonic() - started < 30  # no retries with back-off


def test_a_ref_without_a_registry_is_refused(tmp_path):
    assert_one_line_error(run_cli("pull", "ingot/model:abc", cache_dir=tmp_path), "expected REGISTRY/REPOSITORY")


def _htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (the only kind the registry takes), made with the C library's crypt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            pytest.skip("no crypt module (Python 3.13+) to write the registry's bcrypt htpasswd")
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    return f"{user}:{hashed}\n"


def test_credentials_come_from_the_environment_or_the_docker_config(compiled, session_store, tmp_path, monkeypatch):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(_htpasswd_line("ci", "s3cret"))
    monkeypatch.delenv("INGOT_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("INGOT_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # none yet: no credentials
    key = compiled("llama").key
    with running_registry(tmp_path, htpasswd=htpasswd) as registry:
        ref = f"{registry.host}/ingot/private:{key}"
        assert_one_line_error(run_cli("pull", "--check", ref, cache_dir=tmp_path), "asks for credentials")

        monkeypatch.setenv("INGOT_REGISTRY_USERNAME", "ci")
        monkeypatch.setenv("INGOT_REGISTRY_PASSWORD", "wrong")
        assert_one_line_error(run_cli("pull", "--check", ref, cache_dir=tmp_path), "refused access")

        monkeypatch.setenv("INGOT_REGISTRY_PASSWORD", "s3cret")
        pushed = run_cli("push", key, ref, cache_dir=session_store.root)
        assert pushed.returncode == 0, pushed.stderr

        monkeypatch.delenv("INGOT_REGISTRY_USERNAME")
        monkeypatch.delenv("INGOT_REGISTRY_PASSWORD")
        (tmp_path / "docker").mkdir()
        auth = {"auths": {registry.host: {"auth": "Y2k6czNjcmV0"}}}  # base64 of ci:s3cret, as docker login writes
        (tmp_path / "docker" / "config.json").write_text(json.dumps(auth))
        assert run_cli("pull", "--check", ref, cache_dir=tmp_path).returncode == 0
