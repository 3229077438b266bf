"""Write any lazy checkpoint (an adapter applied onto its base, typically) to disk, tensor by tensor."""

from __future__ import annotations

import shutil
from collections.abc import Generator
from pathlib import Path

import merge_studio
from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.finite import all_finite, non_finite_error
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.writer import OutputSet, PlannedTensor
from merge_studio.errors import OutputError

CHUNK_ELEMENTS = 1 << 22


def _copy_folder_files(checkpoint: Checkpoint):  # noqa: ANN202 - a callable for OutputSet.commit
    """Copy the base Hugging Face folder's config, tokenizer and generation files next to the weights."""
    from merge_studio.core.hf.output_folder import FOLDER_FILES, CARD_NAME

    base = getattr(checkpoint, "base", checkpoint)
    folder = base.path if base.path.is_dir() else None

    def copy(target: Path) -> None:
        if folder is None:
            return
        for name in sorted(FOLDER_FILES - {CARD_NAME}):
            source = folder / name
            if source.is_file():
                shutil.copyfile(source, target / name)

    return copy


def iter_write_checkpoint(
    checkpoint: Checkpoint,
    output: str | Path,
    *,
    shard_bytes: int | None = None,
    allow_non_finite: bool = False,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, Path]:
    """Copy ``checkpoint`` to ``output`` (a ``.safetensors`` file or a folder), atomically.

    NaN or infinity in a tensor stops the write (nothing is left behind), as in a
    merge: an adapter holding them would otherwise spread them silently into the model.

    A folder output of a Hugging Face base also gets the base's config, generation
    config and tokenizer files, so it loads with ``from_pretrained`` as it is.
    """
    target = Path(output).expanduser()
    sources = {p.resolve() for p in checkpoint.source_files()}
    if target.resolve() in sources or any(s.is_relative_to(target.resolve()) for s in sources if target.is_dir()):
        raise OutputError(f"the output {target} would overwrite an input", hint="choose another output path")
    planned = [PlannedTensor(i.name, i.shape, i.dtype) for i in checkpoint.infos.values()]
    metadata = {"format": "pt", "merge_studio.version": merge_studio.__version__,
                "merge_studio.source": checkpoint.name}
    out = OutputSet(target, planned, shard_bytes=shard_bytes, metadata=metadata)
    total = sum(p.numel for p in planned) or 1
    done = 0
    try:
        for info in planned:
            check_cancel(cancel)
            for start in range(0, max(info.numel, 1), CHUNK_ELEMENTS):
                stop = min(start + CHUNK_ELEMENTS, info.numel)
                chunk = checkpoint.get_flat(info.name, start, stop) if info.numel else checkpoint.get_tensor(info.name)
                if not allow_non_finite and chunk.is_floating_point() and not all_finite(chunk):
                    raise non_finite_error(info.name, [checkpoint.name])
                out.write(info.name, chunk.reshape(-1))
                done += stop - start
            yield Progress("write", done, total, current=info.name, unit="elements")
        return out.commit(metadata, before_move=None if out.is_file else _copy_folder_files(checkpoint))
    except BaseException:
        out.abort()
        raise
