"""The lazy checkpoint every reader returns: names, shapes and dtypes up front,
tensor data only when asked, one tensor at a time."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from merge_studio.core.dtypes import dtype_name, element_size, is_float

if TYPE_CHECKING:
    import torch

    from merge_studio.core.checkpoints.keys import KeyNode
    from merge_studio.core.progress import CancelToken


class TensorInfo:
    """What is known about a tensor without reading it.

    ``dtype`` may be given as a torch dtype or as its name (``"bfloat16"``); readers
    of headers give names, so listing a checkpoint never imports torch. The torch
    dtype is made on first use of :attr:`dtype`. Immutable and compared by value.
    """

    __slots__ = ("name", "shape", "_dtype")
    name: str
    shape: tuple[int, ...]

    def __init__(self, name: str, shape: tuple[int, ...], dtype: torch.dtype | str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "_dtype", dtype)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("TensorInfo is immutable")

    @property
    def dtype(self) -> torch.dtype:
        dtype = self._dtype
        if isinstance(dtype, str):
            import torch

            dtype = getattr(torch, dtype)
            object.__setattr__(self, "_dtype", dtype)
        return dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * element_size(self._dtype)

    @property
    def dtype_name(self) -> str:
        return dtype_name(self._dtype)

    @property
    def is_float(self) -> bool:
        """Whether the tensor is merged (floats) rather than copied (ints, bools)."""
        return is_float(self._dtype)

    def _key(self) -> tuple[str, tuple[int, ...], str]:
        return (self.name, self.shape, self.dtype_name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorInfo) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"TensorInfo(name={self.name!r}, shape={self.shape}, dtype={self.dtype_name})"

    def __reduce__(self) -> tuple[type, tuple[str, tuple[int, ...], str]]:
        return (TensorInfo, (self.name, self.shape, self.dtype_name))


@dataclass(frozen=True)
class CheckpointSummary:
    """The numbers a user looks at first: how big, what precision, what inside."""

    path: str
    format: str
    tensor_count: int
    parameter_count: int
    total_bytes: int
    file_bytes: int
    dtypes: dict[str, int]  # dtype name -> number of tensors
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def main_dtype(self) -> str:
        """The dtype holding most tensors (shown in one-line listings)."""
        if not self.dtypes:
            return "-"
        return max(self.dtypes.items(), key=lambda kv: kv[1])[0]


class Checkpoint(ABC):
    """A lazily opened checkpoint.

    Subclasses fill ``_infos`` (ordered as in the file) and implement
    :meth:`_read`. Reading returns a tensor that owns its memory (never a view of
    a mapped file that could be closed under it).
    """

    format: str = "?"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._infos: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self.skipped: list[str] = []  # entries found but not read as tensors, "name (what)"
        self.cancel: CancelToken | None = None  # checked while reading very large tensors

    def watch(self, cancel: CancelToken | None) -> None:
        """Let ``cancel`` stop reads in progress (a job sets it on the checkpoints it opened)."""
        self.cancel = cancel

    # --- what is inside -------------------------------------------------------
    @property
    def name(self) -> str:
        """A short display name: the file name, or the folder name for shards."""
        return self.path.name

    def keys(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    @property
    def infos(self) -> dict[str, TensorInfo]:
        return dict(self._infos)

    def file_bytes(self) -> int:
        """Size on disk of everything this checkpoint reads."""
        return sum(p.stat().st_size for p in self.source_files())

    def source_files(self) -> list[Path]:
        """The files on disk that hold this checkpoint's data."""
        return [self.path]

    def summary(self) -> CheckpointSummary:
        dtypes = Counter(info.dtype_name for info in self._infos.values())
        return CheckpointSummary(
            path=str(self.path),
            format=self.format,
            tensor_count=len(self._infos),
            parameter_count=sum(i.numel for i in self._infos.values()),
            total_bytes=sum(i.nbytes for i in self._infos.values()),
            file_bytes=self.file_bytes(),
            dtypes=dict(sorted(dtypes.items())),
            metadata=dict(self.metadata),
        )

    def key_tree(self) -> KeyNode:
        """The module tree of the tensor names (see :mod:`keys`)."""
        from merge_studio.core.checkpoints.keys import build_key_tree

        return build_key_tree(self._infos)

    # --- reading ----------------------------------------------------------------
    def get_tensor(self, name: str) -> torch.Tensor:
        """Read one tensor (CPU, its own memory, the file's dtype and shape)."""
        if name not in self._infos:
            raise KeyError(f"{self.name} has no tensor named {name!r}")
        return self._read(name, None)

    def get_flat(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Read elements ``[start, stop)`` of the flattened tensor.

        Lets the engine stream very large tensors in chunks without holding them
        whole. Readers that cannot read a slice directly read the tensor and cut.
        """
        info = self._infos[name]
        start, stop = max(0, start), min(stop, info.numel)
        return self._read(name, (start, stop))

    @abstractmethod
    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        """Read a tensor, or a range of its flattened elements."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Read every tensor (only for small models, evaluation and alignment)."""
        return {name: self.get_tensor(name) for name in self._infos}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles; the default reader holds none."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} ({len(self)} tensors)>"
