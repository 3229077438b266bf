"""One spelling for "where a model comes from", shared by the GUI, recipes and ``--arch``.

Forms::

    zoo:NAME[?k=v&k2=v2]              a built-in model (see ``merge_studio.core.arch.ZOO``)
    path/to/file.py:function[?k=v]    a factory in a Python file the user chose
    package.module:function[?k=v]     a factory in an importable module
    path/to/model.pt2                 a ``torch.export`` program (carries its own module)
    hf:path/to/folder[?k=v]           a Hugging Face model folder's config.json (or the
                                      config.json itself); arguments override config values

Arguments after ``?`` are coerced to int, float or bool where they read as one; lists
stay comma strings (``hidden=512,512``) and the builder splits them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from merge_studio.errors import ArchitectureError

ArchKind = Literal["zoo", "file", "module", "pt2", "hf"]

EXPECTED_FORMS = (
    "expected one of: zoo:NAME (e.g. zoo:resnet20?width=4), path/to/file.py:function, "
    "package.module:function, path/to/model.pt2, or hf:path/to/model_folder (its config.json)"
)

_IDENTIFIER = r"[A-Za-z_]\w*"
_MODULE_SPEC = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}$")
_FUNCTION = re.compile(rf"^{_IDENTIFIER}$")


@dataclass(frozen=True)
class ArchSpec:
    """A parsed architecture spelling; ``str(spec)`` gives the canonical text back."""

    kind: ArchKind
    target: str  # zoo name, file path, dotted module, .pt2 path, or HF folder / config.json
    function: str | None = None  # factory function for "file" and "module"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind == "zoo":
            text = f"zoo:{self.target}"
        elif self.kind == "pt2":
            text = self.target
        elif self.kind == "hf":
            text = f"hf:{self.target}"
        else:
            text = f"{self.target}:{self.function}"
        if self.kwargs:
            text += "?" + "&".join(f"{k}={format_value(v)}" for k, v in self.kwargs.items())
        return text

    def __hash__(self) -> int:  # kwargs is a dict; the canonical text identifies a spec
        return hash(str(self))

    def with_kwargs(self, **kwargs: Any) -> ArchSpec:
        """A copy with some keyword arguments added or replaced."""
        return ArchSpec(self.kind, self.target, self.function, {**self.kwargs, **kwargs})


def format_value(value: Any) -> str:
    """Write a keyword value the way :func:`coerce_value` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def coerce_value(text: str) -> Any:
    """Read ``"4"`` as 4, ``"0.5"`` as 0.5, ``"true"`` as True; anything else stays text."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_kwargs(query: str, spec_text: str) -> dict[str, Any]:
    """Parse ``k=v&k2=v2`` into coerced keyword arguments."""
    kwargs: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not _FUNCTION.match(key):
            raise ArchitectureError(
                f"architecture {spec_text!r}: argument {part!r} is not key=value",
                hint="write arguments as ?key=value&key2=value2, e.g. zoo:resnet20?width=4",
            )
        kwargs[key] = coerce_value(value.strip())
    return kwargs


def parse_arch(spec: str | ArchSpec) -> ArchSpec:
    """Parse an architecture spelling; bad spellings raise :class:`ArchitectureError`."""
    if isinstance(spec, ArchSpec):
        return spec
    text = str(spec).strip()
    if not text:
        raise ArchitectureError("no architecture given", hint=EXPECTED_FORMS)
    head, _, query = text.partition("?")
    kwargs = parse_kwargs(query, text)
    if head.startswith("zoo:"):
        name = head[4:].strip()
        if not _FUNCTION.match(name):
            raise ArchitectureError(f"architecture {text!r}: {name!r} is not a zoo name", hint=EXPECTED_FORMS)
        return ArchSpec("zoo", name, None, kwargs)
    if head.startswith("hf:"):
        target = head[3:].strip()
        if not target:
            raise ArchitectureError(
                f"architecture {text!r} names no folder",
                hint="write hf:path/to/model_folder or hf:path/to/config.json",
            )
        return ArchSpec("hf", target, None, kwargs)
    if head.lower().endswith(".pt2"):
        return ArchSpec("pt2", head, None, kwargs)
    if ".py:" in head:
        # rpartition keeps Windows drive letters (C:\models\net.py:build) in the path
        path, _, function = head.rpartition(":")
        if not _FUNCTION.match(function):
            raise ArchitectureError(
                f"architecture {text!r}: {function!r} is not a function name", hint=EXPECTED_FORMS
            )
        return ArchSpec("file", path, function, kwargs)
    if _MODULE_SPEC.match(head):
        module, _, function = head.rpartition(":")
        return ArchSpec("module", module, function, kwargs)
    raise ArchitectureError(f"cannot read architecture {text!r}", hint=EXPECTED_FORMS)


def merged_kwargs(spec: ArchSpec, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec's keyword arguments, overridden by ``extra``."""
    return {**spec.kwargs, **(extra or {})}
