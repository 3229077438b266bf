"""``.pt2`` exported programs: they carry their own graph, module and example inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from merge_studio.errors import ArchitectureError, MergeStudioError


def load_program(path: str | Path) -> Any:
    """Load a ``torch.export`` program, through the safe checkpoint reader when present."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ArchitectureError(f"exported program {p} does not exist")
    try:
        from merge_studio.core.checkpoints.export_reader import load_exported_program
    except ImportError:  # the reader is written alongside; until then torch's own loader
        load_exported_program = None
    try:
        if load_exported_program is not None:
            return load_exported_program(p)
        import torch.export

        return torch.export.load(str(p))
    except MergeStudioError:  # unsafe or damaged programs keep their own explanation
        raise
    except Exception as exc:
        raise ArchitectureError(
            f"cannot load exported program {p.name}: {exc}",
            hint="save it with torch.export.save(torch.export.export(model, args), 'model.pt2')",
        ) from exc


def program_module(path: str | Path) -> nn.Module:
    """The program as an ``nn.Module`` with the original submodules and parameter names.

    ``torch.export.unflatten`` rebuilds the module hierarchy (so a graph shows
    ``layer1.0.conv1`` rather than a flat list of ops, and ``eval()`` works);
    programs it cannot unflatten fall back to the flat ``.module()``.
    """
    import torch.export

    program = load_program(path)
    try:
        return torch.export.unflatten(program)
    except Exception:  # noqa: BLE001 - the flat module still runs and binds
        return program.module()


def program_example_input(path: str | Path) -> Any:
    """The example inputs recorded at export time (a tensor, or a tuple of them)."""
    args, _kwargs = load_program(path).example_inputs
    return args[0] if len(args) == 1 else tuple(args)
