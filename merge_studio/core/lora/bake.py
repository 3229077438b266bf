"""Write any lazy checkpoint (an adapter applied onto its base, typically) to disk, tensor by tensor."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import merge_studio
from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.writer import OutputSet, PlannedTensor
from merge_studio.errors import OutputError

CHUNK_ELEMENTS = 1 << 22


def iter_write_checkpoint(
    checkpoint: Checkpoint, output: str | Path, *, shard_bytes: int | None = None, cancel: CancelToken | None = None
) -> Generator[Progress, None, Path]:
    """Copy ``checkpoint`` to ``output`` (a ``.safetensors`` file or a folder), atomically."""
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
                out.write(info.name, chunk.reshape(-1))
                done += stop - start
            yield Progress("write", done, total, current=info.name, unit="elements")
        return out.commit(metadata)
    except BaseException:
        out.abort()
        raise
