"""``.pt2`` files written by ``torch.export.save``: their weights, and the program itself.

``torch.export.load`` is not safe for files from strangers (PyTorch 2.13 says so
in its docstring): pickled payloads are loaded with ``weights_only=False``,
custom objects with ``pickle.loads``, the example inputs fall back to a full
unpickle when the safe load fails, shape expressions go through
``sympy.sympify`` (which evaluates text), and ``guards_code`` strings become a
Python function when ``.module()`` is called. So we read the archive
ourselves: weights and tensor constants straight from their raw records,
pickled payloads only with ``weights_only=True``, and before handing the graph
to PyTorch's deserializer we check every expression and call target against a
strict grammar and drop the guard code (:mod:`program_checks`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merge_studio.core.checkpoints.base import Checkpoint, TensorInfo
from merge_studio.core.checkpoints.file_io import (
    LazyFile,
    read_strided,
    require_regular_file,
    strided_extent,
)
from merge_studio.core.checkpoints.torch_reader import safe_nested_torch_load
from merge_studio.core.checkpoints.zip_guard import ZipRecord, read_record, read_zip_records, refuse_compressed
from merge_studio.errors import CheckpointError, MergeStudioError, UnsafeCheckpointError

MAX_CONFIG_BYTES = 256_000_000
MAX_PICKLED_PAYLOAD_BYTES = 2_000_000_000
ARCHIVE_VERSION = "0"
TENSOR_CONSTANT_PREFIX = "tensor_"


@dataclass(frozen=True)
class _Payload:
    """One weight or constant: its record and how the tensor views it."""

    fqn: str
    record: ZipRecord
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int
    is_param: bool
    requires_grad: bool


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, dict) and type(value.get("as_int")) is int and value["as_int"] >= 0:
        return value["as_int"]
    raise CheckpointError(f"{where}: expected a fixed non-negative integer, found {value!r}")


def _dtype(code: Any, where: str) -> torch.dtype:
    try:
        from torch._export.serde import schema
        from torch._export.serde.serialize import deserialize_scalar_type

        return deserialize_scalar_type(schema.ScalarType(code))
    except Exception as exc:  # noqa: BLE001 - unknown code or a changed private API
        raise CheckpointError(f"{where}: unknown dtype code {code!r}") from exc


class ExportedProgramCheckpoint(Checkpoint):
    """The state dict of a ``.pt2`` program: parameters, buffers and tensor constants.

    ``parameter_names``, ``buffer_names`` and ``constant_names`` say which is
    which (constants include non-persistent buffers; they are in ``keys()`` too).
    """

    format = "pt2"

    def __init__(self, path: Path, model: str | None = None) -> None:
        super().__init__(path)
        require_regular_file(self.path)
        self.records = read_zip_records(self.path, self.path.name)
        refuse_compressed(self.records, self.path.name)
        self.root = self._find_root()
        self.model_name = self._pick_model(model)
        self._file = LazyFile(self.path)
        self._payloads: dict[str, _Payload] = {}
        self._in_memory: dict[str, torch.Tensor] = {}
        self.parameter_names: list[str] = []
        self.buffer_names: list[str] = []
        self.constant_names: list[str] = []
        self.skipped: list[str] = []
        order = self._record_text("byteorder", 16) if self._has("byteorder") else "little"
        if order != sys.byteorder:
            raise CheckpointError(f"{self.path.name} was saved on a {order}-endian machine; not supported")
        weights = self._config(f"data/weights/{self.model_name}_weights_config.json", required=True)
        for fqn, entry in weights.items():
            self._add(fqn, entry, "data/weights/", constant=False)
        constants = self._config(f"data/constants/{self.model_name}_constants_config.json", required=False)
        for fqn, entry in constants.items():
            path_name = entry.get("path_name") if isinstance(entry, dict) else None
            if isinstance(path_name, str) and path_name.startswith(TENSOR_CONSTANT_PREFIX):
                self._add(fqn, entry, "data/constants/", constant=True)
            else:
                self.skipped.append(f"{fqn} (custom object)")
        self.metadata = {"pt2_model": self.model_name}
        if self.constant_names:
            self.metadata["pt2_constants"] = ", ".join(self.constant_names)
        if self.skipped:
            self.metadata["skipped_entries"] = "; ".join(self.skipped)

    # --- archive layout ----------------------------------------------------------
    def _find_root(self) -> str:
        roots = [n[: -len("/archive_format")] for n in self.records
                 if n.endswith("/archive_format") and n.count("/") == 1]
        if len(roots) != 1:
            raise CheckpointError(
                f"{self.path.name} is a zip archive but not a torch.export program (no archive_format)",
                hint="save programs with torch.export.save(program, 'model.pt2')",
            )
        root = roots[0]
        if read_record(self.path, self.records[f"{root}/archive_format"], 64, self.path.name).strip() != b"pt2":
            raise CheckpointError(f"{self.path.name} is not a torch.export program (unknown archive format)")
        return root

    def _has(self, name: str) -> bool:
        return f"{self.root}/{name}" in self.records

    def _record(self, name: str) -> ZipRecord:
        try:
            return self.records[f"{self.root}/{name}"]
        except KeyError:
            raise CheckpointError(f"{self.path.name}: the archive has no {name} (damaged or incomplete)") from None

    def _record_bytes(self, name: str, limit: int) -> bytes:
        return read_record(self.path, self._record(name), limit, self.path.name)

    def _record_text(self, name: str, limit: int) -> str:
        try:
            return self._record_bytes(name, limit).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{self.path.name}: {name} is not text (corrupt file)") from exc

    def _pick_model(self, wanted: str | None) -> str:
        prefix = f"{self.root}/models/"
        names = [n[len(prefix):-len(".json")] for n in self.records
                 if n.startswith(prefix) and n.endswith(".json") and "/" not in n[len(prefix):]]
        if wanted is not None:
            if wanted not in names:
                raise CheckpointError(f"{self.path.name} holds no program named {wanted!r} (it has {names})")
            return wanted
        if "model" in names:
            return "model"
        if len(names) == 1:
            return names[0]
        raise CheckpointError(
            f"{self.path.name} holds {len(names)} programs ({', '.join(names) or 'none'}); "
            "Merge Studio reads one named 'model'"
        )

    def _config(self, name: str, required: bool) -> dict[str, Any]:
        if not self._has(name):
            if self._has(f"data/weights/{self.model_name}.pt"):
                raise CheckpointError(
                    f"{self.path.name} uses the .pt2 layout of PyTorch 2.6 or older",
                    hint="re-export it with this PyTorch: torch.export.save(program, 'model.pt2')",
                )
            if required:
                raise CheckpointError(f"{self.path.name}: the archive has no {name} (damaged or incomplete)")
            return {}
        try:
            data = json.loads(self._record_text(name, MAX_CONFIG_BYTES))
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{self.path.name}: {name} is not valid JSON (corrupt file)") from exc
        config = data.get("config") if isinstance(data, dict) else None
        if not isinstance(config, dict):
            raise CheckpointError(f"{self.path.name}: {name} has no config table (corrupt file)")
        return config

    def _add(self, fqn: str, entry: Any, folder: str, constant: bool) -> None:
        where = f"{self.path.name}: {'constant' if constant else 'weight'} {fqn!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("path_name"), str):
            raise CheckpointError(f"{where}: malformed entry (corrupt file)")
        path_name = entry["path_name"]
        if "/" in path_name or "\\" in path_name or path_name in ("", ".", ".."):
            raise CheckpointError(f"{where}: record name {path_name!r} is not a plain name (crafted file)")
        record = self._record(folder + path_name)
        if entry.get("use_pickle"):
            tensor = self._load_pickled(fqn, record, where)
            if tensor is None:
                return
            info = TensorInfo(fqn, tuple(tensor.shape), tensor.dtype)
            self._in_memory[fqn] = tensor
        else:
            payload = self._payload(fqn, entry, record, where)
            info = TensorInfo(fqn, payload.shape, payload.dtype)
            self._payloads[fqn] = payload
        if fqn in self._infos:
            raise CheckpointError(f"{where}: the name appears twice")
        self._infos[fqn] = info
        if constant:
            self.constant_names.append(fqn)
        elif entry.get("is_param"):
            self.parameter_names.append(fqn)
        else:
            self.buffer_names.append(fqn)

    def _payload(self, fqn: str, entry: dict[str, Any], record: ZipRecord, where: str) -> _Payload:
        meta = entry.get("tensor_meta")
        if not isinstance(meta, dict) or not isinstance(meta.get("sizes"), list) or not isinstance(
            meta.get("strides"), list
        ):
            raise CheckpointError(f"{where}: missing tensor description (corrupt file)")
        shape = tuple(_as_int(v, where) for v in meta["sizes"])
        stride = tuple(_as_int(v, where) for v in meta["strides"])
        if len(shape) != len(stride):
            raise CheckpointError(f"{where}: shape and strides disagree (corrupt file)")
        offset = _as_int(meta.get("storage_offset", {"as_int": 0}), where)
        dtype = _dtype(meta.get("dtype"), where)
        size = torch.empty((), dtype=dtype).element_size()
        if (offset + strided_extent(shape, stride)) * size > record.size:
            raise CheckpointError(
                f"{where} needs more bytes than its record holds ({record.size}); truncated or crafted file"
            )
        return _Payload(fqn, record, dtype, shape, stride, offset, bool(entry.get("is_param")),
                        bool(meta.get("requires_grad")))

    def _load_pickled(self, fqn: str, record: ZipRecord, where: str) -> torch.Tensor | None:
        """Pickled payloads (tensor subclasses) are loaded only with ``weights_only=True``."""
        data = read_record(self.path, record, MAX_PICKLED_PAYLOAD_BYTES, self.path.name)
        obj = safe_nested_torch_load(data, self.path, f"{self.path.name} ({fqn})")
        if not isinstance(obj, torch.Tensor) or obj.layout != torch.strided:
            self.skipped.append(f"{fqn} ({type(obj).__name__})")
            return None
        return obj.detach()

    # --- reading ---------------------------------------------------------------------
    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        if name in self._in_memory:
            t = self._in_memory[name]
            if flat_range is None:
                return t.clone(memory_format=torch.contiguous_format)
            return t.reshape(-1)[flat_range[0]:flat_range[1]].clone()
        p = self._payloads[name]
        return read_strided(self._file.fd(), p.record.data_offset, p.dtype, p.shape, p.stride,
                            p.storage_offset, flat_range, f"{self.name}:{name}")

    def tensors_sharing_storage(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Read tensors so that those stored in one record share memory (tied weights stay tied)."""
        flats: dict[str, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        for name in names:
            if name in self._in_memory:
                out[name] = self._in_memory[name]
                continue
            p = self._payloads[name]
            key = f"{p.record.name}:{p.dtype}"
            if key not in flats:
                size = torch.empty((), dtype=p.dtype).element_size()
                count = p.record.size // size
                flats[key] = read_strided(self._file.fd(), p.record.data_offset, p.dtype, (count,), (1,), 0,
                                          None, f"{self.name}:{name}")
            out[name] = flats[key].as_strided(p.shape, p.stride, p.storage_offset)
        return out

    def payload_is_param(self, name: str) -> tuple[bool, bool]:
        """``(is_param, requires_grad)`` as recorded for a weight."""
        if name in self._payloads:
            return self._payloads[name].is_param, self._payloads[name].requires_grad
        return name in self.parameter_names, name in self.parameter_names

    def example_inputs(self) -> Any:
        """The recorded example inputs (``(args, kwargs)``), or ``None`` when unsafe or absent."""
        name = f"data/sample_inputs/{self.model_name}.pt"
        if not self._has(name):
            return None
        data = self._record_bytes(name, MAX_PICKLED_PAYLOAD_BYTES)
        try:
            return safe_nested_torch_load(data, self.path, f"{self.path.name} (example inputs)")
        except CheckpointError:
            return None

    def program_json(self) -> dict[str, Any]:
        """The serialized program (graph, signature) as parsed JSON."""
        if self._record_text("archive_version", 16) != ARCHIVE_VERSION:
            raise CheckpointError(
                f"{self.path.name} was written by a different PyTorch (.pt2 archive version)",
                hint="re-export it with this PyTorch",
            )
        try:
            data = json.loads(self._record_text(f"models/{self.model_name}.json", MAX_CONFIG_BYTES))
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{self.path.name}: the program is not valid JSON (corrupt file)") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.path.name}: the program is not a JSON object (corrupt file)")
        return data

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()


def load_exported_program(path: str | Path, model: str | None = None) -> torch.export.ExportedProgram:
    """Rebuild a ``torch.export`` program from a ``.pt2`` file without running code from it.

    Raises :class:`UnsafeCheckpointError` when the program holds custom Python
    objects or calls anything but PyTorch operators, :class:`CheckpointError`
    when it is damaged or from an incompatible PyTorch.
    """
    from merge_studio.core.checkpoints.program_checks import check_program_json, check_program_targets

    p = Path(path).expanduser()
    with ExportedProgramCheckpoint(p, model) as ck:
        if ck.skipped:
            raise UnsafeCheckpointError(
                f"{p.name} holds custom Python objects ({'; '.join(ck.skipped[:5])}); "
                "rebuilding them could run code from the file",
                hint="export a program whose constants are tensors only",
            )
        data = ck.program_json()
        check_program_json(data, p.name)
        data["guards_code"] = []  # turned into Python source by .module(); never trusted
        weights = ck.parameter_names + ck.buffer_names
        shared = ck.tensors_sharing_storage(weights + ck.constant_names)
        state_dict: dict[str, torch.Tensor] = {}
        for name in weights:
            is_param, requires_grad = ck.payload_is_param(name)
            state_dict[name] = torch.nn.Parameter(shared[name], requires_grad=requires_grad) if is_param else shared[name]
        constants = {name: shared[name] for name in ck.constant_names}
        examples = ck.example_inputs()
    try:
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

        serialized = _dict_to_dataclass(schema.ExportedProgram, data)
        program = ExportedProgramDeserializer(None).deserialize(serialized, state_dict, constants, examples)
    except MergeStudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile or foreign program can raise anything
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointError(
            f"{p.name}: cannot rebuild the exported program ({type(exc).__name__}: {first})",
            hint="it may come from another PyTorch version; re-export it with this one",
        ) from exc
    program._guards_code = []
    check_program_targets(program, p.name)
    return program
