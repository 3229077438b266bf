"""What a search optimises: accuracy, loss or perplexity of the merged model on data.

Written on the command line as ``KIND[:SOURCE[,SOURCE…]][@SPLIT]``:

* ``accuracy`` — test accuracy on the recipe's data (digits when it names none);
* ``loss:task_a.safetensors,task_b.safetensors@train`` — the mean training loss over two
  data sources (each source weighs the same, whatever its size);
* ``perplexity:corpus.txt`` — a language model's perplexity on text.

Several objectives make a multi-objective search whose answer is a Pareto front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from merge_studio.core.search.space import SearchError

Kind = Literal["accuracy", "loss", "perplexity"]
KINDS: tuple[str, ...] = ("accuracy", "loss", "perplexity")


@dataclass(frozen=True)
class Objective:
    kind: Kind = "accuracy"
    data: tuple[str, ...] = ()
    split: Literal["train", "test"] = "test"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SearchError(f"unknown objective {self.kind!r}", hint=f"choose one of {', '.join(KINDS)}")
        if isinstance(self.data, list):
            object.__setattr__(self, "data", tuple(self.data))

    @classmethod
    def parse(cls, text: str) -> Objective:
        body, _, split = text.strip().partition("@")
        kind, _, sources = body.partition(":")
        split = split.strip() or "test"
        if split not in ("train", "test"):
            raise SearchError(f"objective {text!r}: the split must be train or test, not {split!r}")
        data = tuple(s.strip() for s in sources.split(",") if s.strip())
        return cls(kind.strip().lower(), data, split)  # type: ignore[arg-type]

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.kind == "accuracy" else "minimize"

    @property
    def name(self) -> str:
        """A short label for plots and tables: the kind, which data (abridged) and the split."""
        if not self.data:
            where = "recipe data"
        elif len(self.data) == 1:
            where = Path(self.data[0]).name.split(".")[0][:24]
        else:
            where = f"mean of {len(self.data)} sources"
        return f"{self.kind} ({where}, {self.split})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "data": list(self.data), "split": self.split}


def _value(result: Any, kind: str, source: str) -> float:
    if kind == "accuracy":
        if result.accuracy is None:
            raise SearchError(f"no accuracy on {source}: the task is regression", hint="use the loss objective")
        return float(result.accuracy)
    if kind == "perplexity":
        if result.perplexity is None:
            raise SearchError(f"no perplexity on {source}: it is not language modelling", hint="use loss or accuracy")
        return float(result.perplexity)
    return float(result.loss)


def score(objective: Objective, merged: str | Path, recipe: Mapping[str, Any], device: str = "auto") -> float:
    """The objective's value for a merged checkpoint (mean over its data sources)."""
    from merge_studio.core.evaluate.data import DataSpec
    from merge_studio.core.evaluate.jobs import EvaluateRequest
    from merge_studio.core.progress import drive

    base = dict(recipe.get("data") or {})
    sources = objective.data or (base.get("source", "digits"),)
    values = []
    for source in sources:
        spec = DataSpec.model_validate({**base, "source": source})
        request = EvaluateRequest(models=(str(merged),), arch=recipe.get("arch"), data=spec, splits=(objective.split,),
                                  device=device)
        scores = drive(request.job())
        split = objective.split if objective.split in scores.results else "test"
        values.append(_value(scores.results[split][0], objective.kind, source))
    return sum(values) / len(values)


def scores(objectives: Sequence[Objective], merged: str | Path, recipe: Mapping[str, Any], device: str = "auto") -> list[float]:
    return [score(o, merged, recipe, device) for o in objectives]
