"""The merge history: one JSON line per merge run from the window or the command line.

Kept in ``<user data>/history.jsonl`` (see :func:`user_data_dir`): append-only, so
two front ends writing at once only interleave whole lines, and a damaged line is
skipped rather than losing the rest. Evaluation results arrive later as their own
lines and are attached to the merge that wrote the evaluated file.
"""

from __future__ import annotations

import difflib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from merge_studio.core.safe_yaml import load_yaml
from merge_studio.core.user_dirs import user_data_dir

if TYPE_CHECKING:
    from merge_studio.core.engine import MergeResult
    from merge_studio.core.recipe import Recipe

HISTORY_NAME = "history.jsonl"
Status = Literal["ok", "failed", "cancelled"]


def history_file() -> Path:
    return user_data_dir() / HISTORY_NAME


@dataclass(frozen=True)
class HistoryRecord:
    """One merge: what went in (with hashes when the merge computed them), what came out, how it went."""

    id: str
    time: float
    status: Status
    method: str
    models: list[dict[str, Any]]
    outputs: list[str]
    seconds: float
    recipe: str
    base: str | None = None
    error: str | None = None
    tensors: int | None = None
    bytes_written: int | None = None
    bytes_read: int | None = None
    source: str = "cli"
    evaluation: dict[str, Any] | None = field(default=None)

    @property
    def when(self) -> str:
        """Local date and time, to the minute."""
        return datetime.fromtimestamp(self.time).strftime("%Y-%m-%d %H:%M")

    @property
    def model_names(self) -> list[str]:
        return [m.get("name") or Path(m["path"]).name for m in self.models]

    @property
    def output(self) -> str:
        return self.outputs[0] if self.outputs else ""

    def load_recipe(self) -> Recipe:
        from merge_studio.core.recipe import Recipe

        return Recipe.from_mapping(load_yaml(self.recipe), source=f"history record {self.id}")


def _inputs(recipe: Recipe, result: MergeResult | None) -> list[dict[str, Any]]:
    """Each model of the recipe (base included, marked), with the size and hash the merge recorded."""
    known = {_key(s.get("path", "")): s for s in (result.sources if result is not None else ())}
    paths = [(m.path, False) for m in recipe.models]
    if recipe.base and all(_key(recipe.base) != _key(p) for p, _ in paths):
        paths.append((recipe.base, True))
    out = []
    for path, is_base in paths:
        entry: dict[str, Any] = {"name": Path(path).name, "path": str(path)}
        source = known.get(_key(path))
        if source is not None:
            entry.update({k: v for k, v in source.items() if k in ("size", "sha256") and v})
        if is_base or (recipe.base and _key(recipe.base) == _key(path)):
            entry["base"] = True
        out.append(entry)
    return out


def _key(path: str | Path) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):  # a link loop, an unreadable folder: compare as written
        return str(Path(path).expanduser().absolute())


def make_record(
    recipe: Recipe, *, result: MergeResult | None = None, status: Status = "ok", seconds: float | None = None,
    error: str | None = None, source: str = "cli",
) -> HistoryRecord:
    outputs = [str(p) for p in result.outputs] if result is not None else ([recipe.output] if recipe.output else [])
    return HistoryRecord(
        id=uuid.uuid4().hex[:12],
        time=time.time(),
        status=status,
        method=recipe.method,
        models=_inputs(recipe, result),
        base=recipe.base,
        outputs=outputs,
        seconds=round(result.seconds if result is not None else (seconds or 0.0), 3),
        recipe=recipe.to_yaml(),
        error=error,
        tensors=result.tensor_count if result is not None else None,
        bytes_written=result.bytes_written if result is not None else None,
        bytes_read=result.bytes_read if result is not None else None,
        source=source,
    )


def _append(line: dict[str, Any], path: Path | None) -> bool:
    """Add one line; ``False`` when the history cannot be written (a merge never fails for it)."""
    target = path or history_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    except OSError:
        return False
    return True


def record_merge(recipe: Recipe, *, path: Path | None = None, **kwargs: Any) -> HistoryRecord | None:
    """Record a finished, failed or cancelled merge (see :func:`make_record`); ``None`` when not written."""
    try:
        record = make_record(recipe, **kwargs)
    except Exception:  # noqa: BLE001 - recording must never hide the merge's own outcome or error
        return None
    return record if _append({"kind": "merge", **asdict(record)}, path) else None


def add_evaluation(output: str | Path, results: dict[str, Any], *, path: Path | None = None) -> bool:
    """Attach evaluation results to the newest merge that wrote ``output``; ``False`` when none did."""
    key = _key(output)
    if not any(_key(o) == key for r in load_history(path) for o in r.outputs):
        return False
    return _append({"kind": "evaluation", "output": key, "time": time.time(), "results": results}, path)


def evaluation_results(scores: Any, index: int, data: str | None = None) -> dict[str, float]:
    """One model's loss, accuracy and perplexity from a ``ModelScores``, keyed by split and data."""
    where = f", {data.rstrip('/').rsplit('/', 1)[-1]}" if data else ""  # a file or folder: its name
    results: dict[str, float] = {}
    for split, rows in scores.results.items():
        r = rows[index]
        results[f"loss ({split}{where})"] = round(float(r.loss), 6)
        if r.accuracy is not None:
            results[f"accuracy ({split}{where})"] = round(float(r.accuracy), 6)
        if getattr(r, "perplexity", None):
            results[f"perplexity ({split}{where})"] = round(float(r.perplexity), 4)
    return results


def load_history(path: Path | None = None) -> list[HistoryRecord]:
    """Every recorded merge, newest first; unreadable lines are skipped."""
    target = path or history_file()
    try:
        lines = target.read_text(encoding="utf-8").splitlines()
    except OSError:  # none yet, or not readable: an empty history, never an error
        return []
    records: list[HistoryRecord] = []
    names = set(HistoryRecord.__dataclass_fields__)
    for line in lines:
        try:
            data = json.loads(line)
            kind = data.pop("kind", "merge")
            if kind == "merge":
                records.append(HistoryRecord(**{k: v for k, v in data.items() if k in names}))
            elif kind == "evaluation":
                for i in range(len(records) - 1, -1, -1):
                    if any(_key(o) == data["output"] for o in records[i].outputs):
                        merged = {**(records[i].evaluation or {}), **data["results"]}
                        records[i] = HistoryRecord(**{**asdict(records[i]), "evaluation": merged})
                        break
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):  # a damaged line is skipped
            continue
    return records[::-1]


def side_by_side(left: str, right: str) -> list[tuple[str, str, bool]]:
    """Two texts aligned line by line: ``(left line, right line, differs)`` (blank where one has none)."""
    a, b = left.splitlines(), right.splitlines()
    rows: list[tuple[str, str, bool]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            rows.extend((x, x, False) for x in a[i1:i2])
            continue
        n = max(i2 - i1, j2 - j1)
        for k in range(n):
            x = a[i1 + k] if i1 + k < i2 else ""
            y = b[j1 + k] if j1 + k < j2 else ""
            rows.append((x, y, True))
    return rows

