import pytest

from ingot.artifacts.store import ArtifactStore, default_cache_dir
from ingot.errors import ArtifactError


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
    import shutil

    store = ArtifactStore(tmp_path)
    good = compiled("llama")
    shutil.copytree(good.path, store.path(good.key))
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
