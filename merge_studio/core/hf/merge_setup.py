"""What a merge of Hugging Face folders needs before its first tensor: vocabulary and output folder.

:func:`prepare_hf_merge` is the one call the merge planner makes. It returns the
checkpoints to merge (with vocabulary rows lined up where the vocabularies differ)
and the :class:`~merge_studio.core.hf.output_folder.OutputFolder` to complete the
output with; ``None`` when no input is a Hugging Face folder and the recipe asks
nothing of the tokenizer, so plain checkpoint merges are untouched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.dtypes import dtype_name, parse_dtype
from merge_studio.core.hf.config import model_folder
from merge_studio.core.hf.model_card import ModelCard
from merge_studio.core.hf.output_folder import CONFIG_SIDE_FILES, OutputFolder
from merge_studio.core.hf.tokenizer_files import has_tokenizer
from merge_studio.core.hf.vocabulary import VocabularyPlan, VocabModel, describe_model, plan_vocabulary
from merge_studio.core.recipe import Recipe


@dataclass
class HfMerge:
    """The merge's inputs after vocabulary alignment, and the folder files to write."""

    models: list[Checkpoint]
    base: Checkpoint | None
    vocabulary: VocabularyPlan
    output_folder: OutputFolder | None


def _distinct_inputs(paths: Sequence[str], models: Sequence[Checkpoint], base_path: str | None,
                     base: Checkpoint | None) -> tuple[list[tuple[str, Checkpoint]], int | None]:
    inputs: list[tuple[str, Checkpoint]] = []
    for path, ck in zip(paths, models, strict=True):
        if all(ck is not c for _, c in inputs):
            inputs.append((path, ck))
    base_index = None
    if base is not None and base_path is not None:
        base_index = next((i for i, (_, c) in enumerate(inputs) if c is base), None)
        if base_index is None:
            inputs.append((base_path, base))
            base_index = len(inputs) - 1
    return inputs, base_index


def _main_float_dtype(ck: Checkpoint) -> str | None:
    counts = Counter(info.dtype for info in ck.infos.values() if info.dtype.is_floating_point)
    return dtype_name(counts.most_common(1)[0][0]) if counts else None


def prepare_hf_merge(
    recipe: Recipe, paths: Sequence[str], models: Sequence[Checkpoint], base: Checkpoint | None, method_label: str
) -> HfMerge | None:
    """Plan the vocabulary and the output folder of a merge (None when neither applies)."""
    inputs, base_index = _distinct_inputs(paths, models, recipe.base, base)
    if recipe.tokenizer is None and all(model_folder(p) is None for p, _ in inputs):
        return None
    described = [describe_model(p, ck) for p, ck in inputs]
    reference = base_index if base_index is not None else 0
    vocabulary = plan_vocabulary(recipe.tokenizer, described, reference, base_index)
    wrapped = [vocabulary.wrap(ck) for ck in models]
    wrapped_base = vocabulary.wrap(base) if base is not None else None
    if wrapped_base is not None:  # the base among the models stays one object
        wrapped = [wrapped_base if ck is base else w for ck, w in zip(models, wrapped, strict=True)]
    output = _output_folder(recipe, described[reference], vocabulary, method_label,
                            described[base_index].name if base_index is not None else None)
    return HfMerge(wrapped, wrapped_base, vocabulary, output)


def _output_folder(recipe: Recipe, ref: VocabModel, vocabulary: VocabularyPlan, method_label: str,
                   base_name: str | None) -> OutputFolder | None:
    if ref.folder is None or not recipe.output or Path(recipe.output).suffix == ".safetensors":
        return None
    dtype = dtype_name(parse_dtype(recipe.dtype)) if recipe.dtype else _main_float_dtype(ref.checkpoint)
    tokenizer = vocabulary.summary if has_tokenizer(vocabulary.tokenizer) else "no tokenizer (its source model has none)"
    card = ModelCard(
        title=Path(recipe.output).name,
        method_label=method_label,
        method_name=recipe.method,
        base=base_name,
        tokenizer=tokenizer,
        recipe_yaml=recipe.to_yaml(),
    )
    copied = {name: ref.folder / name for name in CONFIG_SIDE_FILES if (ref.folder / name).is_file()}
    return OutputFolder(
        config=ref.config,
        card=card,
        dtype=dtype,
        vocab_size=vocabulary.vocab_size,
        tokenizer=vocabulary.tokenizer,
        copied=copied,
    )
