"""Names for dtypes as they appear in files, recipes and the GUI."""

from __future__ import annotations

import torch

from merge_studio.errors import RecipeError

# safetensors' dtype codes, in the order its spec lists them.
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
SAFETENSORS_CODES: dict[torch.dtype, str] = {v: k for k, v in SAFETENSORS_DTYPES.items()}

# Names a user may write in a recipe or on the command line.
OUTPUT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16",
            "float": "float32", "fp64": "float64", "double": "float64"}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str | None) -> torch.dtype | None:
    """Turn a user-written float dtype name into a torch dtype (``None`` stays ``None``)."""
    if name is None:
        return None
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in OUTPUT_DTYPES:
        raise RecipeError(
            f"unknown dtype {name!r}", hint=f"use one of {', '.join(OUTPUT_DTYPES)}"
        )
    return OUTPUT_DTYPES[key]


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def is_float(dtype: torch.dtype) -> bool:
    """Whether tensors of this dtype are merged (floats) or copied (ints, bools)."""
    return dtype.is_floating_point
