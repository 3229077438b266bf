"""The one spelling of an architecture: zoo names, factory files, modules, .pt2 programs."""

from __future__ import annotations

import pytest

from merge_studio.core.arch import ArchSpec, parse_arch
from merge_studio.errors import ArchitectureError


@pytest.mark.parametrize(
    "text",
    [
        "zoo:resnet20",
        "zoo:resnet20?width=4",
        "zoo:mlp?in_features=64&hidden=512,512&num_classes=10",
        "models/net.py:build",
        "models/net.py:build?depth=3&scale=0.5&tied=true",
        "my_pkg.models:make_model",
        "exports/model.pt2",
    ],
)
def test_canonical_spellings_round_trip(text):
    assert str(parse_arch(text)) == text


def test_arguments_are_read_as_numbers_booleans_and_text():
    spec = parse_arch("net.py:build?depth=3&scale=0.5&tied=false&hidden=8,8&name=small")
    assert spec == ArchSpec("file", "net.py", "build", {"depth": 3, "scale": 0.5, "tied": False, "hidden": "8,8", "name": "small"})


def test_each_kind_is_recognised():
    assert parse_arch("zoo:gpt").kind == "zoo"
    assert parse_arch("a/b.py:f").kind == "file"
    assert parse_arch("a.b:f").kind == "module"
    assert parse_arch("m.pt2").kind == "pt2"


def test_windows_paths_keep_their_drive_letter():
    spec = parse_arch(r"C:\models\net.py:build")
    assert (spec.target, spec.function) == (r"C:\models\net.py", "build")


@pytest.mark.parametrize("bad", ["", "resnet20", "zoo:", "net.py:", "zoo:mlp?width", "pkg:1x"])
def test_bad_spellings_say_which_forms_are_expected(bad):
    with pytest.raises(ArchitectureError) as info:
        parse_arch(bad)
    assert "zoo:NAME" in str(info.value) or "key=value" in str(info.value)


def test_specs_are_hashable_and_comparable():
    assert {parse_arch("zoo:vit?patch=4"), parse_arch("zoo:vit?patch=4")} == {parse_arch("zoo:vit?patch=4")}
