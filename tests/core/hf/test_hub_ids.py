"""mergekit configs naming models by hub id: read from the local Hugging Face cache, or told how to get them."""

from __future__ import annotations

from pathlib import Path

import pytest

from merge_studio.core.hf.hub_cache import find_in_hub_cache, parse_hub_id
from merge_studio.core.recipe import load_recipe
from merge_studio.errors import RecipeError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cached(cache: Path, repo: str, ref: str = "main") -> Path:
    """Lay a model out the way huggingface_hub's cache does (refs/<ref> -> snapshots/<commit>)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / ref).write_text(COMMIT)
    return snapshot


def _config(tmp_path: Path, *models: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text("merge_method: linear\nmodels:\n" + "".join(f"  - model: {m}\n    parameters: {{weight: 1}}\n" for m in models))
    return path


def test_a_hub_id_in_the_local_cache_becomes_its_snapshot_folder(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snapshot = _cached(cache, "org/model-a")
    local = tmp_path / "local"
    local.mkdir()
    recipe = load_recipe(_config(tmp_path, "org/model-a", "local"))
    assert [m.path for m in recipe.models] == [str(snapshot), str(local)]


def test_a_hub_id_missing_from_the_cache_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(RecipeError) as err:
        load_recipe(_config(tmp_path, "meta-llama/Llama-3.2-1B", "org/other"))
    text = str(err.value)
    assert "meta-llama/Llama-3.2-1B is a Hugging Face hub id, not a path" in text
    assert "huggingface-cli download meta-llama/Llama-3.2-1B" in text


def test_revisions_and_things_that_are_not_hub_ids(tmp_path):
    snapshot = _cached(tmp_path, "org/m", ref="v2")
    assert find_in_hub_cache("org/m@v2", tmp_path) == snapshot
    assert find_in_hub_cache(f"org/m@{COMMIT}", tmp_path) == snapshot
    assert find_in_hub_cache("org/m", tmp_path) is None  # no refs/main
    assert parse_hub_id("./org/m") is None and parse_hub_id("/abs/path") is None and parse_hub_id("a/b/c") is None
