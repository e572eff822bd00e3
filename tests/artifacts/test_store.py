import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.store import ArtifactStore, default_cache_dir
from ingot.errors import ArtifactError
from tests.artifacts.tampering import edit_chat_template
from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error


def _publish(store: ArtifactStore, artifact: Path, key: str) -> Path:
    """Publish a copy of ``artifact`` under ``key`` the way a compile does (the store records its digest)."""
    with store.build(key) as workdir:
        shutil.copytree(artifact, workdir, dirs_exist_ok=True)
    return store.path(key)


def test_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.build("k1") as workdir:
            (workdir / "manifest.json").write_text("{}")
            raise RuntimeError("compile failed")
    assert not store.has("k1")
    assert list(store.building_dir.iterdir()) == []


def test_successful_build_is_renamed_into_place_and_then_hits(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("k1") as workdir:
        (workdir / "manifest.json").write_text("{}")
    assert store.has("k1")
    with store.build("k1") as workdir:
        assert workdir is None


def test_resolve_accepts_key_prefix_and_path(tmp_path):
    store = ArtifactStore(tmp_path)
    for key in ("abc123", "abd456"):
        with store.build(key) as workdir:
            (workdir / "manifest.json").write_text("{}")
    assert store.resolve("abc") == store.path("abc123")
    assert store.resolve(str(store.path("abd456"))) == store.path("abd456")
    with pytest.raises(ArtifactError, match="ambiguous"):
        store.resolve("ab")
    with pytest.raises(ArtifactError, match="no such artifact"):
        store.resolve("zzz")


def test_gc_removes_unloadable_artifacts_and_stale_builds(tmp_path, compiled):
    store = ArtifactStore(tmp_path)
    good = compiled("llama")
    _publish(store, good.path, good.key)
    with store.build("broken") as workdir:
        (workdir / "manifest.json").write_text("{}")  # unreadable as a manifest
    stale = store.building_dir / "deadbeef.x1y2"
    stale.mkdir(parents=True)
    removed = store.gc()
    assert set(removed) == {store.path("broken"), stale}
    assert store.has(good.key)
    assert store.gc(everything=True) == [store.path(good.key)]


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("INGOT_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir(tmp_path / "flag") == tmp_path / "flag"
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("INGOT_CACHE_DIR")
    assert "ingot" in str(default_cache_dir())


def test_a_published_artifact_passes_and_its_manifest_digest_is_recorded_outside_it(tmp_path, compiled):
    store = ArtifactStore(tmp_path)
    path = _publish(store, compiled("llama").path, "k1")
    assert store.recorded_digest("k1") == hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    assert sorted(p.name for p in store.artifacts.iterdir()) == ["k1"]
    assert check_artifact(path).model.family == "llama"
    assert [a.problem for a in store.list()] == [None]


def test_an_edited_manifest_in_the_store_is_reported_by_load_ls_and_verify(tmp_path, compiled):
    """A file and its sha256 in the manifest edited together: the files agree, the store's digest does not."""
    store = ArtifactStore(tmp_path)
    path = _publish(store, compiled("llama").path, "k1")
    edit_chat_template(path)
    with pytest.raises(ArtifactError, match="k1: manifest.json does not match the digest recorded when it was built"):
        check_artifact(path)
    assert "does not match the digest recorded" in store.list()[0].problem
    listing = run_cli("ls", cache_dir=tmp_path)
    assert listing.returncode == 0 and "does not match" in listing.stdout and " ok" not in listing.stdout
    assert_one_line_error(run_cli("verify", "k1", cache_dir=tmp_path), "does not match the digest recorded")
    assert store.gc() == [path] and not store.digest_path("k1").exists()


def test_an_artifact_copied_into_the_store_by_hand_is_not_vouched_for(tmp_path, compiled):
    store = ArtifactStore(tmp_path)
    _publish(store, compiled("llama").path, "k0")
    shutil.copytree(compiled("llama").path, store.path("k1"))
    with pytest.raises(ArtifactError, match="k1: no manifest digest recorded by the store"):
        check_artifact(store.path("k1"))
    assert [a.problem for a in store.list()][0] is None and "no manifest digest" in store.list()[1].problem
    assert not store.has("k1")


def test_a_symlink_in_the_store_is_refused_by_key_and_by_path(tmp_path, compiled):
    """Even pointing at an intact copy, with the digest the store recorded for the key."""
    store = ArtifactStore(tmp_path / "store")
    _publish(store, compiled("llama").path, "k1")
    shutil.move(store.path("k1"), tmp_path / "elsewhere")
    store.path("k1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactError, match="k1: is a symbolic link"):
        check_artifact(store.resolve("k1"))
    with pytest.raises(ArtifactError, match="k1: is a symbolic link"):
        store.resolve(str(store.path("k1")))
    assert "symbolic link" in store.list()[0].problem
    assert store.gc() == [store.path("k1")]
    assert (tmp_path / "elsewhere" / "manifest.json").is_file()  # the link went, not what it pointed to


def test_a_leftover_directory_without_a_manifest_is_replaced_by_the_next_build(tmp_path):
    store = ArtifactStore(tmp_path)
    (store.path("k1") / "programs").mkdir(parents=True)  # e.g. a half-copied or half-deleted artifact
    (store.path("k1") / "programs" / "prefill.pt2").write_bytes(b"partial")
    with store.build("k1") as workdir:
        assert workdir is not None
        (workdir / "manifest.json").write_text("{}")
    assert store.has("k1") and sorted(p.name for p in store.path("k1").iterdir()) == ["manifest.json"]


def test_gc_removes_programs_unpacked_by_a_process_killed_while_loading(tmp_path, compiled, monkeypatch):
    """SIGKILL while a program loads leaves its unpack directory (no code runs then); gc removes it once that
    process is gone, and leaves a live process's alone."""
    unpack_root = tmp_path / "tmp"
    unpack_root.mkdir()
    script = (
        "import os, signal, sys; from contextlib import contextmanager; from pathlib import Path\n"
        "from ingot.artifacts.manifest import Manifest\n"
        "from ingot.runtime import programs\n"
        "unpack = programs.unpack_directory\n"
        "@contextmanager\n"
        "def killed_while_loading():\n"
        "    with unpack() as directory:\n"
        "        yield directory\n"
        "        os.kill(os.getpid(), signal.SIGKILL)  # unpacked, loaded, not yet removed\n"
        "programs.unpack_directory = killed_while_loading\n"
        "directory = Path(sys.argv[1])\n"
        "programs.load_programs(directory, Manifest.read(directory))\n"
    )
    env = dict(os.environ, TMPDIR=str(unpack_root))
    killed = subprocess.run([sys.executable, "-c", script, str(compiled("llama").path)], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    [leftover] = unpack_root.glob("ingot-unpacked-*")
    assert any(leftover.iterdir())
    live = unpack_root / f"ingot-unpacked-{os.getpid()}-live"
    live.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(unpack_root))
    assert ArtifactStore(tmp_path / "store").gc() == [leftover]
    assert not leftover.exists() and live.exists()
