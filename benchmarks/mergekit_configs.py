"""mergekit configs for ``vs_mergekit.py --suite tiny``: mergekit's own tests and examples, every method,
and the parameter scopes (gradients, filters, slices with parameters, global per-model parameters).

Each entry is ``(label, group, kind, yaml template)``. Templates name the tiny models
``{a} {b} {c}`` (mergekit's tests: three independent random Llama initialisations) or
``{base} {ft1} {ft2} {ft3}`` (a base and three sparse fine-tunes of it, every tensor
changed, norms and head included). ``kind`` says what agreement means:

* ``same``: deterministic, must give mergekit's tensors (to 1e-5 in float32);
* ``random``: a randomised method (DARE, DELLA): the draws differ by design, only the size of
  the difference is reported;
* ``refused``: mergekit refuses the config, and so must we.

Placeholders are replaced by plain substitution (not ``str.format``), so YAML braces stay as written.

mergekit computes in float32 here (``dtype: float32``), so rounding is not what differs.
"""

from __future__ import annotations

F32 = "dtype: float32\n"


def _two(method: str, base: str | None = None, params: str = "", a: str = "{a}", b: str = "{b}") -> str:
    """mergekit's ``two_model_config`` from tests/test_basic_merges.py, computing in float32."""
    text = f"merge_method: {method}\n"
    if base:
        text += f"base_model: {base}\n"
    text += f"models:\n  - model: {a}\n    parameters: {{weight: 0.6}}\n  - model: {b}\n    parameters: {{weight: 0.4}}\n"
    if params:
        text += f"parameters: {params}\n"
    return text + F32


def _nuslerp(base: str | None, row_wise: bool, flatten: bool) -> tuple[str, str, str, str]:
    label = f"nuslerp base={'c' if base else 'none'} row_wise={row_wise} flatten={flatten}"
    params = f"{{nuslerp_row_wise: {str(row_wise).lower()}, nuslerp_flatten: {str(flatten).lower()}}}"
    return (label, "mergekit tests", "same", _two("nuslerp", base, params))


TESTS: list[tuple[str, str, str, str]] = [
    ("linear", "mergekit tests", "same", _two("linear")),
    ("slerp t=0.35", "mergekit tests", "same", _two("slerp", "{a}", "{t: 0.35}")),
    *[_nuslerp(base, rw, fl) for base in (None, "{c}") for rw in (False, True) for fl in (False, True)],
    ("nuslerp weights summing to zero", "mergekit tests", "same",
     _two("nuslerp", "{c}", "{nuslerp_row_wise: false, nuslerp_flatten: false}").replace("0.6", "-0.5").replace("0.4", "0.5")),
    ("task_arithmetic", "mergekit tests", "same", _two("task_arithmetic", "{c}")),
    ("breadcrumbs", "mergekit tests", "same", _two("breadcrumbs", "{c}")),
    ("ties density=0.3 (global)", "mergekit tests", "same", _two("ties", "{c}", "{density: 0.3}")),
    ("sce select_topk=0.5", "mergekit tests", "same", _two("sce", "{c}", "{select_topk: 0.5}")),
    ("ram", "mergekit tests", "same", _two("ram", "{c}")),
    ("ramplus_tl r=0.05 alpha=1", "mergekit tests", "same", _two("ramplus_tl", "{c}", "{r: 0.05, alpha: 1.0}")),
    ("multislerp", "mergekit tests", "same", _two("multislerp", "{c}")),
    ("dare_ties density=0.66 (global)", "mergekit tests", "random", _two("dare_ties", "{c}", "{density: 0.66}")),
    ("model_stock (weights unused)", "mergekit tests", "same", _two("model_stock", "{a}", a="{b}", b="{c}")),
    ("model_stock filter_wise", "mergekit tests", "same",
     _two("model_stock", "{a}", "{filter_wise: true}", a="{b}", b="{c}")),
    ("arcee_fusion", "mergekit tests", "same", _two("arcee_fusion", "{a}")),
    ("nearswap t=0.0001", "mergekit tests", "same", _two("nearswap", "{a}", "{t: 0.0001}")),
    ("della density=0.66 eps=0.05", "mergekit tests", "random",
     _two("della", "{c}", "{density: 0.66, epsilon: 0.05, lambda: 0.5}")),
    ("della epsilon=1.35 (invalid)", "mergekit tests", "refused",
     _two("della", "{c}", "{density: 0.66, epsilon: 1.35, lambda: 0.5}")),
    ("karcher max_iter=5", "mergekit tests", "same", _two("karcher", "{c}", "{max_iter: 5, tol: 1.0e-5}")),
    ("linear of one model", "mergekit tests", "same",
     "merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {weight: 1.0}\n" + F32),
]

EXAMPLES: list[tuple[str, str, str, str]] = [
    ("examples/linear.yml", "mergekit examples", "same", """
models:
  - model: {ft1}
    parameters: {weight: 1.0}
  - model: {ft2}
    parameters: {weight: 0.3}
  - model: {ft3}
    parameters: {weight: 0.5}
merge_method: linear
""" + F32),
    ("examples/ties.yml (density and weight gradients, filters)", "mergekit examples", "same", """
models:
  - model: {ft1}
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: {ft2}
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1]
  - model: {ft3}
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: {base}
parameters:
  normalize: true
  int8_mask: true
""" + F32),
    ("examples/gradient-slerp.yml (slice, filtered gradients)", "mergekit examples", "same", """
slices:
  - sources:
      - model: {ft1}
        layer_range: [0, 4]
      - model: {ft2}
        layer_range: [0, 4]
merge_method: slerp
base_model: {ft1}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
""" + F32),
    ("examples/bio-merge.yml", "mergekit examples", "same", """
models:
  - model: {ft1}
    parameters: {density: 0.5, weight: 0.5}
  - model: {ft2}
    parameters: {density: 0.5, weight: 0.5}
merge_method: ties
base_model: {base}
parameters: {normalize: false, int8_mask: true}
""" + F32),
    ("examples/arcee_fusion.yml", "mergekit examples", "same", """
models:
  - model: {base}
  - model: {ft1}
merge_method: arcee_fusion
base_model: {base}
""" + F32),
]


def _tuned(method: str, params: str = "", model_params: str = "{weight: 1.0}", n: int = 3) -> str:
    models = "".join(f"  - model: {{ft{i}}}\n    parameters: {model_params}\n" for i in range(1, n + 1))
    text = f"merge_method: {method}\nbase_model: {{base}}\nmodels:\n{models}"
    return text + (f"parameters: {params}\n" if params else "") + F32


METHODS: list[tuple[str, str, str, str]] = [
    ("breadcrumbs density=0.5 gamma=0.05", "methods on fine-tunes", "same",
     _tuned("breadcrumbs", model_params="{weight: 0.7, density: 0.5, gamma: 0.05}")),
    ("breadcrumbs rescale", "methods on fine-tunes", "same",
     _tuned("breadcrumbs", "{rescale: true}", "{weight: 0.7, density: 0.4, gamma: 0.1}")),
    ("breadcrumbs_ties", "methods on fine-tunes", "same",
     _tuned("breadcrumbs_ties", "{normalize: true}", "{weight: 1.0, density: 0.6, gamma: 0.02}")),
    ("della", "methods on fine-tunes", "random", _tuned("della", model_params="{weight: 1.0, density: 0.5, epsilon: 0.1}")),
    ("della_linear", "methods on fine-tunes", "random",
     _tuned("della_linear", model_params="{weight: 0.5, density: 0.5, epsilon: 0.1}")),
    ("sce select_topk=0.3", "methods on fine-tunes", "same", _tuned("sce", "{select_topk: 0.3}", "{}")),
    ("ram", "methods on fine-tunes", "same", _tuned("ram", model_params="{}")),
    ("ramplus_tl", "methods on fine-tunes", "same", _tuned("ramplus_tl", "{r: 0.1, alpha: 0.2}", "{}")),
    ("karcher", "methods on fine-tunes", "same", _tuned("karcher", model_params="{}")),
    ("multislerp weights 0.2/0.5/0.5", "methods on fine-tunes", "same",
     _tuned("multislerp", model_params="{weight: 0.5}").replace("{weight: 0.5}", "{weight: 0.2}", 1)),
    ("nuslerp row by row", "methods on fine-tunes", "same",
     _tuned("nuslerp", "{nuslerp_flatten: false}", "{weight: 0.3}", n=2)),
    ("nearswap t=0.005", "methods on fine-tunes", "same",
     "merge_method: nearswap\nbase_model: {base}\nmodels:\n  - model: {base}\n  - model: {ft1}\nparameters: {t: 0.005}\n" + F32),
    ("arcee_fusion", "methods on fine-tunes", "same",
     "merge_method: arcee_fusion\nbase_model: {base}\nmodels:\n  - model: {base}\n  - model: {ft2}\n" + F32),
]

SCOPES: list[tuple[str, str, str, str]] = [
    ("slerp t=[0, 0.5, 1] (head and norm on the gradient)", "parameter scopes", "same", """
merge_method: slerp
base_model: {ft1}
models: [{model: {ft1}}, {model: {ft2}}]
parameters: {t: [0, 0.5, 1]}
""" + F32),
    ("task_arithmetic weight gradient per model", "parameter scopes", "same",
     _tuned("task_arithmetic", model_params="{weight: [1, 0.2, 0.6]}")),
    ("ties density=0.3 global, weights per model", "parameter scopes", "same",
     _tuned("ties", "{density: 0.3, normalize: true}", "{weight: 0.8}")),
    ("dare_ties density global (random)", "parameter scopes", "random", _tuned("dare_ties", "{density: 0.5}", "{weight: 1.0}")),
    ("filter falling through to global weight", "parameter scopes", "same", """
merge_method: task_arithmetic
base_model: {base}
models:
  - model: {ft1}
    parameters:
      weight: [{filter: mlp, value: 0.9}]
  - model: {ft2}
    parameters: {weight: 0.4}
parameters: {weight: 0.2}
""" + F32),
    ("slice with t=0.2 beside global t=0.5", "parameter scopes", "same", """
slices:
  - sources:
      - {model: {ft1}, layer_range: [0, 4]}
      - {model: {ft2}, layer_range: [0, 4]}
    parameters: {t: 0.2}
merge_method: slerp
base_model: {ft1}
parameters: {t: 0.5}
""" + F32),
    ("two slices, each its own t and gradient", "parameter scopes", "same", """
slices:
  - sources:
      - {model: {ft1}, layer_range: [0, 2]}
      - {model: {ft2}, layer_range: [0, 2]}
    parameters: {t: 0.2}
  - sources:
      - {model: {ft1}, layer_range: [2, 4]}
      - {model: {ft2}, layer_range: [2, 4]}
    parameters: {t: [0.1, 0.9]}
merge_method: slerp
base_model: {ft1}
parameters: {t: 0.5}
""" + F32),
    ("slice sources with their own weights (ties)", "parameter scopes", "same", """
slices:
  - sources:
      - {model: {base}, layer_range: [0, 4]}
      - {model: {ft1}, layer_range: [0, 4], parameters: {weight: 0.3, density: 0.5}}
      - {model: {ft2}, layer_range: [0, 4], parameters: {weight: 0.9}}
    parameters: {density: 0.7}
merge_method: ties
base_model: {base}
""" + F32),
    ("weight on slerp models (unused, warned)", "parameter scopes", "same", """
merge_method: slerp
base_model: {ft1}
models:
  - model: {ft1}
    parameters: {weight: 1.0}
  - model: {ft2}
    parameters: {weight: 1.0}
parameters: {t: 0.3}
""" + F32),
    ("out_dtype bfloat16", "parameter scopes", "same", _tuned("ties", "{density: 0.5}").replace(F32, "dtype: float32\nout_dtype: bfloat16\n")),
]

SUITE = [*TESTS, *EXAMPLES, *METHODS, *SCOPES]
