"""Everything a merged Hugging Face folder holds besides its weights.

When the inputs are Hugging Face model folders and the output is a folder, the output
becomes a complete model folder: ``config.json`` (from the base model, else the first
model) with the output dtype and vocabulary size, ``generation_config.json`` and any
processor files, the chosen tokenizer, and a ``README.md`` model card.

The hook
--------
:class:`OutputFolder` is planned with the merge (``plan.output_folder``), so a bad
config or a missing library stops the merge before any tensor is read. The engine
calls :meth:`OutputFolder.write_into` on the temporary output folder after the last
weight is written and before the folder is renamed into place
(:meth:`merge_studio.core.writer.OutputSet.commit`'s ``before_move``): the folder
appears whole or not at all, and a failure or a cancel leaves nothing behind.

Features that change the model's shape adjust the config through the plan before the
merge starts, never by editing files afterwards:

* layer stacking (passthrough with slices) sets the new depth:
  ``plan.output_folder.override_config({"num_hidden_layers": 48})``;
* mixture-of-experts assembly gives a different architecture:
  ``plan.output_folder.override_config({"architectures": ["MixtralForCausalLM"],
  "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2})``
  (nested mappings merge key by key; a ``None`` value removes a key), or
  ``replace_config(new_config)`` for a config built from scratch.

The output dtype and vocabulary size are applied last, on top of either.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merge_studio.core.hf.config import CONFIG_NAME, deep_update, patched_config, write_json
from merge_studio.core.hf.model_card import ModelCard
from merge_studio.core.hf.tokenizer_files import TOKENIZER_FILES, TokenizerFiles, write_tokenizer_files

CARD_NAME = "README.md"
# Files that travel with the config (generation settings, image/video processors).
CONFIG_SIDE_FILES = (
    "generation_config.json", "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
)
# Every non-weight file a merged folder may hold (an existing output holding only these is replaced).
FOLDER_FILES = frozenset({CONFIG_NAME, CARD_NAME, *CONFIG_SIDE_FILES, *TOKENIZER_FILES})


@dataclass
class OutputFolder:
    """The non-weight files of one merged model folder (see the module docstring)."""

    config: dict[str, Any]
    card: ModelCard
    dtype: str | None = None
    vocab_size: int | None = None
    tokenizer: TokenizerFiles = field(default_factory=dict)
    copied: dict[str, Path] = field(default_factory=dict)  # output file name -> source file
    _overrides: dict[str, Any] = field(default_factory=dict)

    def override_config(self, overrides: Mapping[str, Any]) -> None:
        """Change config keys for a merge that reshapes the model (merged with earlier overrides)."""
        deep_update(self._overrides, overrides)

    def replace_config(self, config: Mapping[str, Any]) -> None:
        """Start from another config altogether (e.g. a mixture-of-experts one)."""
        self.config = dict(config)
        self._overrides = {}

    def final_config(self) -> dict[str, Any]:
        """The ``config.json`` the folder gets."""
        out = patched_config(self.config, overrides=self._overrides)
        return patched_config(out, dtype=self.dtype, vocab_size=self.vocab_size)

    def write_into(self, folder: Path, sources: Sequence[Mapping[str, Any]]) -> None:
        """Write config, side files, tokenizer and card into ``folder`` (the temporary output)."""
        folder = Path(folder)
        write_json(folder / CONFIG_NAME, self.final_config())
        for name, src in self.copied.items():
            shutil.copyfile(src, folder / name)
        write_tokenizer_files(folder, self.tokenizer)
        (folder / CARD_NAME).write_text(self.card.render(sources), encoding="utf-8")
