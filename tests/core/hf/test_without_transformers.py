"""Without the hf extra: folders still come out whole, and what needs transformers says which extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.core.hf.conftest import CHAT_TOKENS

ROOT = Path(__file__).resolve().parents[3]
BLOCK = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("transformers", "tokenizers"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _Blocked())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_without_transformers_folders_are_copied_and_a_union_names_the_extra(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    done = _run(f"""
        from merge_studio.core.engine import run_merge
        from merge_studio.core.recipe import Recipe
        from merge_studio.errors import MissingExtraError
        def recipe(out, **kw):
            return Recipe.from_mapping({{"method": "simple_average", "models": [{{"path": {str(a)!r}}}, {{"path": {str(b)!r}}}],
                                        "output": out, **kw}})
        run_merge(recipe({str(tmp_path / "plain")!r}, tokenizer={{"chat_template": "chatml"}}))
        try:
            run_merge(recipe({str(tmp_path / "union")!r}, tokenizer="union"))
        except MissingExtraError as exc:
            print("REFUSED:", exc)
        assert "transformers" not in sys.modules
    """)
    assert done.returncode == 0, done.stderr
    assert "REFUSED: a union of the models' tokenizers needs transformers, which is not installed " \
           "(pip install 'merge-studio[hf]')" in done.stdout
    out = tmp_path / "plain"
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "README.md"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 320
    assert not (tmp_path / "union").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().weight.shape[0] == 320
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(out).chat_template
