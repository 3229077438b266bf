"""Weights read from disk tensor by tensor, so a sweep over two 7B models holds one model.

:class:`LazyState` is a checkpoint seen as a state dict whose tensors are read when
asked for (as float32); small checkpoints keep what they read, big ones read again
at every point. :class:`StreamingInterpolator` writes θ(λ) into a module's own
tensors one tensor at a time: memory is the module plus two tensors, never two
extra models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from merge_studio.core.progress import CancelToken, check_cancel
from merge_studio.errors import IncompatibleCheckpointsError

KEEP_IN_MEMORY_BYTES = 256 * 2**20
"""Checkpoints up to this size (as float32) keep their tensors once read: a sweep's
later points then cost no disk reads. Bigger ones are read again at every point."""


class LazyState(Mapping[str, torch.Tensor]):
    """A checkpoint as a read-on-demand state dict of float32 tensors (other dtypes as stored)."""

    def __init__(self, path: str | Path, *, keep: bool | None = None) -> None:
        from merge_studio.core.checkpoints import open_checkpoint

        self.path = Path(path)
        self.checkpoint = open_checkpoint(path)
        float_bytes = sum(4 * i.numel if i.dtype.is_floating_point else i.nbytes for i in self.checkpoint.infos.values())
        self.keep = float_bytes <= KEEP_IN_MEMORY_BYTES if keep is None else keep
        self._kept: dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return self.checkpoint.name

    def shape_of(self, key: str) -> tuple[int, ...]:
        """A tensor's shape, from the header (nothing is read)."""
        return tuple(self.checkpoint.info(key).shape)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._kept:
            return self._kept[key]
        tensor = self.checkpoint.get_tensor(key)
        if tensor.is_floating_point():
            tensor = tensor.float()
        if self.keep:
            self._kept[key] = tensor
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.checkpoint.keys())

    def __len__(self) -> int:
        return len(self.checkpoint)

    def __contains__(self, key: object) -> bool:
        return key in self.checkpoint

    def close(self) -> None:
        self._kept.clear()
        self.checkpoint.close()

    def __enter__(self) -> LazyState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _source_names(module: nn.Module, anchor: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """For each tensor of the module to fill, the name the anchor holds it under (ties resolved)."""
    from merge_studio.core.arch.bind import tied_names

    aliases = tied_names(module)
    names: dict[str, str] = {}
    for key in module.state_dict():
        if key in aliases:
            continue  # filled through the tensor it is tied to
        tied = [a for a, canonical in aliases.items() if canonical == key]
        source = key if key in anchor else next((a for a in tied if a in anchor), None)
        if source is not None:
            names[key] = source
    return names


class StreamingInterpolator:
    """Sets a module to θ(λ) along a chain of lazy states, reading one tensor pair at a time."""

    def __init__(
        self,
        module: nn.Module,
        anchors: Sequence[Mapping[str, torch.Tensor]],
        names: Sequence[str],
        device: torch.device,
        positions: Sequence[float] | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.module = module.to(device)
        self.device = device
        self.positions = positions
        self.cancel = cancel
        self.anchors = list(anchors)
        from merge_studio.core.arch.bind import tied_names

        targets = module.state_dict()
        tied = set(tied_names(module))
        self.sources = _source_names(module, anchors[0])
        for anchor, name in zip(anchors, names, strict=True):
            missing = [k for k in targets if k not in tied and not k.endswith("num_batches_tracked")
                       and self.sources.get(k) not in anchor]
            if missing:
                raise IncompatibleCheckpointsError(
                    f"model {name} lacks {len(missing)} tensor(s) of the architecture, e.g. {missing[0]!r}",
                    hint="choose the architecture these checkpoints were trained with",
                )
            for key, source in self.sources.items():
                shape = anchor.shape_of(source) if hasattr(anchor, "shape_of") else tuple(anchor[source].shape)
                if tuple(shape) != tuple(targets[key].shape):
                    raise IncompatibleCheckpointsError(
                        f"{source} of model {name} has shape {tuple(shape)}, the architecture wants {tuple(targets[key].shape)}",
                        hint="choose the architecture these checkpoints were trained with",
                    )
        self.targets = targets

    @torch.no_grad()
    def set(self, lam: float) -> None:
        from merge_studio.core.evaluate.interpolate import path_position

        seg, t = path_position(lam, len(self.anchors), self.positions)
        first, second = self.anchors[seg], self.anchors[min(seg + 1, len(self.anchors) - 1)]
        for n, (key, source) in enumerate(self.sources.items()):
            if n % 16 == 0:
                check_cancel(self.cancel)
            target = self.targets[key]
            if t >= 1.0:
                target.copy_(second[source])
                continue
            target.copy_(first[source])
            if 0.0 < t and target.is_floating_point():
                target.lerp_(second[source].to(device=self.device, dtype=target.dtype), t)


def is_lazy(state: object) -> bool:
    return isinstance(state, LazyState)
