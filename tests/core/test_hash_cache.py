"""Source hashes are remembered for unchanged files and recomputed for changed ones."""

from __future__ import annotations

import hashlib
import os

from merge_studio.core import hash_cache
from merge_studio.core.hashing import file_sha256


def test_an_unchanged_file_reuses_its_digest_and_a_changed_one_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"first version")
    assert file_sha256(path) == hashlib.sha256(b"first version").hexdigest()
    hash_cache.remember(hash_cache.file_key(path), "remembered")
    assert file_sha256(path) == "remembered"  # not read again
    assert file_sha256(path, use_cache=False) == hashlib.sha256(b"first version").hexdigest()

    path.write_bytes(b"second version")  # same size: mtime/ctime tell the change
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    assert file_sha256(path) == hashlib.sha256(b"second version").hexdigest()


def test_a_corrupt_or_unwritable_cache_only_means_hashing_again(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / hash_cache.CACHE_FILE).write_text("{not json")
    monkeypatch.setenv("MERGE_STUDIO_CACHE_DIR", str(cache))
    path = tmp_path / "m.bin"
    path.write_bytes(b"data")
    assert file_sha256(path) == hashlib.sha256(b"data").hexdigest()
    monkeypatch.setenv("MERGE_STUDIO_CACHE_DIR", str(path))  # a file, not a folder: cannot be written
    assert file_sha256(path) == hashlib.sha256(b"data").hexdigest()


def test_the_cache_keeps_only_the_newest_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDIO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hash_cache, "MAX_ENTRIES", 3)
    for i in range(5):
        hash_cache.remember(f"key{i}", f"digest{i}")
    assert hash_cache.remembered("key0") is None
    assert [hash_cache.remembered(f"key{i}") for i in (2, 3, 4)] == ["digest2", "digest3", "digest4"]
