"""The method pages in docs/ are generated from the declarations and must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from merge_studio.core.methods.registry import list_methods

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("generate_methods", ROOT / "docs" / "generate_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_method_pages_are_up_to_date_with_the_declarations(generator):
    stale = generator.differences(ROOT / "docs" / "methods")
    assert not stale, (
        f"docs/methods is out of date for {stale}; run: .venv/bin/python docs/generate_methods.py"
    )


def test_every_registered_method_has_a_page_with_its_parameters(generator):
    for spec in list_methods():
        page = (ROOT / "docs" / "methods" / f"{spec.name}.md").read_text(encoding="utf-8")
        assert spec.label in page and spec.description in page
        for name, field in spec.params.model_fields.items():
            assert f"`{field.alias or name}`" in page, (spec.name, name)
        for heading in ("## What it does", "## Parameters", "## When to use it", "## Reference"):
            assert heading in page, (spec.name, heading)


def test_the_readme_table_lists_every_method_with_a_link(generator):
    table = generator.render_methods_table()
    for spec in list_methods():
        assert f"(docs/methods/{spec.name}.md)" in table


def test_a_changed_declaration_makes_the_check_fail(generator, tmp_path):
    generator.generate(tmp_path)
    page = tmp_path / "ties.md"
    page.write_text(page.read_text(encoding="utf-8").replace("TIES", "TIES (edited by hand)"), encoding="utf-8")
    (tmp_path / "removed_method.md").write_text("old page\n", encoding="utf-8")
    assert generator.differences(tmp_path) == ["removed_method.md", "ties.md"]


def test_every_example_recipe_on_the_method_pages_is_valid(generator):
    import yaml

    from merge_studio.core.recipe import Recipe

    for spec in list_methods():
        page = (ROOT / "docs" / "methods" / f"{spec.name}.md").read_text(encoding="utf-8")
        block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
        recipe = Recipe.from_mapping(yaml.safe_load(block))
        assert recipe.method == spec.name
        assert len(recipe.models) >= spec.n_models[0]
