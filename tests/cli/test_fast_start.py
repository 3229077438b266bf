"""Light commands start at once: they never import torch, matplotlib or Qt."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from merge_studio.cli.main import SUBCOMMANDS, build_parser

HEAVY = ("torch", "matplotlib", "PySide6", "transformers", "scipy")

_RUN_EACH = """
import contextlib, io, json, sys
from merge_studio.cli.main import main
heavy = {heavy!r}
seen = {{}}
for args in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
    loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set(heavy))
    seen[' '.join(args)] = [code, loaded, out.getvalue()[-300:] + err.getvalue()[-300:]]
print(json.dumps(seen))
"""


def test_help_version_methods_inspect_and_export_never_import_torch_matplotlib_or_qt(tmp_path: Path) -> None:
    single = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4), "b": torch.zeros(4)}, str(single))
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_file({"w": torch.ones(4, 4)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(4)}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"method: ties\nbase: {single}\nmodels:\n  - path: {single}\n    params: {{weight: 1.0, density: 0.5}}\n"
                      f"output: {tmp_path / 'out'}\ndtype: bf16\n")
    commands = [["--version"], ["--help"], ["methods", "list"], ["methods", "describe", "ties"],
                ["inspect", str(single), str(folder)], ["inspect", "--json", str(folder)],
                ["export-mergekit", str(recipe)], ["merge", "--help"]]
    proc = subprocess.run([sys.executable, "-c", _RUN_EACH.format(heavy=HEAVY), json.dumps(commands)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    for command, (code, loaded, output) in results.items():
        assert code == 0, (command, output)
        assert loaded == [], f"'merge-studio {command}' imported {loaded}"


def test_the_help_lines_listed_without_importing_a_command_are_the_commands_own() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    own = {choice.dest: choice.help for choice in sub._choices_actions}
    assert own == {name: help_line for name, (_, help_line) in SUBCOMMANDS.items()}
