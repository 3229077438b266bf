"""The ``README.md`` model card of a merged folder: what was merged, how, and from exactly what.

Users publish merged folders on model hubs, where the card is the first thing read;
it names the method, each source model with the SHA-256 of its files (so the merge
can be checked and repeated), the tokenizer chosen, and the whole recipe as YAML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

import merge_studio


@dataclass(frozen=True)
class ModelCard:
    """What the card says; the hashes arrive at the end of the merge (see :meth:`render`)."""

    title: str
    method_label: str
    method_name: str
    base: str | None  # the base model's display name
    tokenizer: str  # a sentence: which tokenizer the folder carries
    recipe_yaml: str
    layers: tuple[str, ...] = ()  # a stacked model's slices, one line each
    rerun: str = "merge-studio merge recipe.yaml"  # the command that makes it again from the YAML below

    def render(self, sources: Sequence[Mapping[str, Any]]) -> str:
        """The Markdown text; ``sources`` are the engine's records (name, path, size, sha256)."""
        names = [str(s.get("name", "?")) for s in sources]
        front = {"library_name": "transformers", "tags": ["merge", "merge-studio"]}
        if self.base:
            front["base_model"] = [self.base]
        lines = [
            "---",
            yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
            "---",
            f"# {self.title}",
            "",
            f"This model is a merge of {_listing(names)}, made with Merge Studio {merge_studio.__version__} "
            f"using the **{self.method_label}** method (`{self.method_name}`)"
            + (f" with {self.base} as the base model." if self.base else "."),
            "",
            "## Source models",
            "",
            "| Model | Size | SHA-256 |",
            "|---|---:|---|",
        ]
        for s in sources:
            digest = s.get("sha256") or "not recorded"
            lines.append(f"| {s.get('name', '?')} | {_size(s.get('size'))} | `{digest}` |")
        if self.layers:
            lines += ["", "## Layers", "", "The layers are stacked from these slices (end-inclusive):", ""]
            lines += [f"- {line}" for line in self.layers]
        lines += [
            "",
            "## Tokenizer",
            "",
            f"The folder carries {self.tokenizer}.",
            "",
            "## Recipe",
            "",
            f"Run it again with `{self.rerun}`:",
            "",
            "```yaml",
            self.recipe_yaml.rstrip(),
            "```",
            "",
        ]
        return "\n".join(lines)


def _listing(names: Sequence[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    if len(quoted) <= 1:
        return "".join(quoted) or "no models"
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return "?"
