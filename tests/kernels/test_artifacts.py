"""The content-addressed artifact store (pocv.artifacts): hashes, the store, refusals naming the hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from blake3 import blake3

from pocv.artifacts import DIR_CONTEXT, ENV_VAR, ArtifactStore, default_root, hash_bytes, hash_path
from pocv.errors import ArtifactError, InputError
from pocv.kernels.params import artifact_bytes, artifact_path, use_artifacts


def test_a_files_hash_is_blake3_of_its_bytes(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    assert hash_path(f) == "blake3:" + blake3(b"weights").hexdigest() == hash_bytes(b"weights")


def test_a_directorys_hash_is_its_sorted_manifest(tmp_path: Path) -> None:
    d = tmp_path / "tok"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_bytes(b"B")
    (d / "sub" / "a.txt").write_bytes(b"A")
    (d / "empty").mkdir()
    manifest = (f"{blake3(b'B').hexdigest()}  b.txt\n{blake3(b'A').hexdigest()}  sub/a.txt\n").encode()
    assert hash_path(d) == "blake3:" + blake3(manifest, derive_key_context=DIR_CONTEXT).hexdigest()
    (d / "sub" / "a.txt").write_bytes(b"a")
    assert hash_path(d) != "blake3:" + blake3(manifest, derive_key_context=DIR_CONTEXT).hexdigest()


def test_links_in_a_directory_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_bytes(b"x")
    os.symlink(d / "x", d / "link")
    with pytest.raises(InputError, match="not a regular file"):
        hash_path(d)


def test_add_resolve_and_refuse_missing_or_altered(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src = tmp_path / "data.bin"
    src.write_bytes(b"\x00" * 1000)
    ref = store.add(src)
    assert store.add(src) == ref and ref in store
    assert store.read_bytes(ref) == b"\x00" * 1000
    assert store.path(ref).read_bytes() == b"\x00" * 1000
    with use_artifacts(store):
        assert artifact_bytes(ref) == b"\x00" * 1000
        assert artifact_path(ref) == store.location(ref)
    other = "blake3:" + "0" * 64
    with pytest.raises(ArtifactError, match=other):
        store.read_bytes(other)
    with pytest.raises(ArtifactError, match=other):
        store.path(other)
    loc = store.location(ref)
    loc.write_bytes(b"\x01" * 1000)  # altered in place
    with pytest.raises(ArtifactError, match=f"{ref}.*altered"):
        store.read_bytes(ref)
    with pytest.raises(ArtifactError, match=f"{ref}.*altered"):
        store.path(ref)
    assert store.add(src) == ref  # adding again repairs it
    assert store.read_bytes(ref) == b"\x00" * 1000


def test_directory_artifacts(tmp_path: Path) -> None:
    d = tmp_path / "tok"
    d.mkdir()
    (d / "vocab.txt").write_text("a b c")
    store = ArtifactStore(tmp_path / "store")
    ref = store.add(d)
    assert store.path(ref).is_dir() and hash_path(store.path(ref)) == ref
    with pytest.raises(ArtifactError, match="directory"):
        store.read_bytes(ref)
    (store.path(ref) / "vocab.txt").write_text("a b d")
    with pytest.raises(ArtifactError, match="altered"):
        store.path(ref)


def test_no_store_in_use_is_refused_naming_the_hash() -> None:
    ref = "blake3:" + "1" * 64
    with pytest.raises(ArtifactError, match=ref):
        artifact_bytes(ref)


def test_default_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "a"))
    assert default_root() == tmp_path / "a" and ArtifactStore().root == tmp_path / "a"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c" / "pocv" / "artifacts"
