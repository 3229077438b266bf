"""Names for dtypes as they appear in files, recipes and the GUI.

Everything a header or a recipe needs (names, sizes, whether a dtype is a float)
is known here without importing torch, so ``merge-studio inspect``, ``methods``
and ``export-mergekit`` start at once; the torch dtype objects are built on first
use (``SAFETENSORS_DTYPES``, ``parse_dtype``...), when a tensor is about to be read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from merge_studio.errors import RecipeError

if TYPE_CHECKING:
    import torch

# safetensors' dtype codes, in the order its spec lists them, with torch's names.
SAFETENSORS_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
}
# Bytes per element and whether the dtype is a float, by torch's name.
ITEMSIZE: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
    "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "complex64": 8, "complex128": 16, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
}
FLOAT_NAMES = frozenset(n for n in ITEMSIZE if n.startswith(("float", "bfloat")))

# Names a user may write in a recipe or on the command line.
OUTPUT_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")
_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16",
            "float": "float32", "fp64": "float64", "double": "float64"}


def __getattr__(name: str) -> Any:
    """``SAFETENSORS_DTYPES``, ``SAFETENSORS_CODES`` and ``OUTPUT_DTYPES``, built when first asked."""
    if name not in ("SAFETENSORS_DTYPES", "SAFETENSORS_CODES", "OUTPUT_DTYPES"):  # e.g. __path__ probes
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import torch

    tables = {
        "SAFETENSORS_DTYPES": lambda: {code: getattr(torch, n) for code, n in SAFETENSORS_NAMES.items()},
        "SAFETENSORS_CODES": lambda: {getattr(torch, n): code for code, n in SAFETENSORS_NAMES.items()},
        "OUTPUT_DTYPES": lambda: {n: getattr(torch, n) for n in OUTPUT_DTYPE_NAMES},
    }
    value = tables[name]()
    globals()[name] = value
    return value


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` (or ``"bfloat16"``) -> ``"bfloat16"``."""
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def canonical_dtype_name(name: str | None) -> str | None:
    """A user-written float dtype name in its canonical form (``"bf16"`` -> ``"bfloat16"``)."""
    if name is None:
        return None
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in OUTPUT_DTYPE_NAMES:
        raise RecipeError(f"unknown dtype {name!r}", hint=f"use one of {', '.join(OUTPUT_DTYPE_NAMES)}")
    return key


def parse_dtype(name: str | None) -> torch.dtype | None:
    """Turn a user-written float dtype name into a torch dtype (``None`` stays ``None``)."""
    key = canonical_dtype_name(name)
    if key is None:
        return None
    import torch

    return getattr(torch, key)


def element_size(dtype: torch.dtype | str) -> int:
    """Bytes per element of ``dtype``."""
    name = dtype_name(dtype)
    if name in ITEMSIZE:
        return ITEMSIZE[name]
    return dtype.itemsize  # type: ignore[union-attr]  # a torch dtype this table does not list


def is_float(dtype: torch.dtype | str) -> bool:
    """Whether tensors of this dtype are merged (floats) or copied (ints, bools)."""
    return dtype_name(dtype) in FLOAT_NAMES if isinstance(dtype, str) else dtype.is_floating_point
