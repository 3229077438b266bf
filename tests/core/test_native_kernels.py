"""Kernels kept as machine code give numba's bytes, load without numba, and a damaged file is ignored."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from merge_studio.core import kernels
from merge_studio.core.kernels import native
from merge_studio.core.methods.sparsify import keep_mask_array

pytest.importorskip("numba")
pytest.importorskip("llvmlite")


def inputs(n_models: int, dtype: torch.dtype, n: int = 5_003, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = (torch.randn(n, generator=gen) * 0.02).to(dtype)
    base[::97] = -0.0
    models = [(base.float() + torch.randn(n, generator=gen) * 0.004 * (i + 1)).to(dtype) for i in range(n_models)]
    for i, m in enumerate(models):
        m[i::13] = base[i::13]
    return models, base


def recorded(call) -> tuple[str, tuple]:
    """The kernel name and arguments a wrapper passes (its compiled kernel replaced by a recorder)."""
    seen: dict[str, tuple] = {}

    def compiled(name, key, warm, wait):
        def kernel(*args):
            seen["call"] = (name, args)
            raise kernels._Recorded

        return kernel

    original = kernels._compiled
    kernels._compiled = compiled
    try:
        call()
    except kernels._Recorded:
        pass
    finally:
        kernels._compiled = original
    return seen["call"]


def copies(args: tuple) -> tuple:
    return tuple(tuple(x.copy() for x in a) if isinstance(a, tuple) else a.copy() if isinstance(a, np.ndarray) else a
                 for a in args)


def numba_kernel(name: str):
    module, function = name.rsplit(".", 1)
    return getattr(__import__(f"merge_studio.core.kernels.{module}", fromlist=[function]), function)


CALLS = {
    "average of 2, bf16": lambda: kernels.weighted_sum_chunk(inputs(2, torch.bfloat16)[0], [1.0, 1.0], 2.0,
                                                             out_dtype=torch.bfloat16, want_metrics=True),
    "weighted sum of 3, f32 to bf16": lambda: kernels.weighted_sum_chunk(
        inputs(3, torch.float32)[0], [0.2, 0.5, 0.3], None, out_dtype=torch.bfloat16, want_metrics=False),
    "task arithmetic of 2": lambda: kernels.task_sum_chunk(*inputs(2, torch.bfloat16), [0.7, -0.4], lambda_=0.9,
                                                           normalize=True, out_dtype=torch.bfloat16, want_metrics=True),
    "ties of 2": lambda: kernels.ties_chunk(*inputs(2, torch.bfloat16), [0.004, 0.006], [1.0, 0.5], lambda_=1.0,
                                            normalize=True, count_consensus=False, out_dtype=torch.bfloat16,
                                            want_metrics=True),
    "dare-ties of 3, f32": lambda: kernels.ties_chunk(
        *inputs(3, torch.float32), [0.0] * 3, [1.0, 0.5, 0.8], lambda_=0.9, normalize=True, count_consensus=True,
        out_dtype=torch.float32, want_metrics=True,
        drops=[(keep_mask_array(5_003, 0.4, torch.Generator().manual_seed(i)), 0.4, True) for i in range(3)]),
    "count and gather": lambda: kernels.count_and_gather(*[t[0] if isinstance(t, list) else t for t in inputs(1, torch.bfloat16)],
                                                         0.002, 0.004, 5_003),
    "sample": lambda: kernels.sample_magnitudes(*[t[0] if isinstance(t, list) else t for t in inputs(1, torch.bfloat16)], 7),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_machine_code_loaded_without_numba_gives_numba_s_bytes(case):
    name, args = recorded(CALLS[case])
    expected_args = copies(args)
    expected = numba_kernel(name)(*expected_args)
    code, symbol, unresolved = native.build(name, copies(args), expected is not None)
    loaded = native.load(code, symbol, unresolved, list(native.describe(args)))
    got_args = copies(args)
    got = loaded(*got_args)
    if expected is not None:
        assert got == bool(expected)
    assert native.digest_of(got_args) == native.digest_of(expected_args)  # outputs, metrics and counts alike


def test_a_kept_kernel_loads_in_a_fresh_process_without_numba_and_a_damaged_one_is_ignored(tmp_path):
    env_cache = {"MERGE_STUDIO_CACHE_DIR": str(tmp_path)}
    script = textwrap.dedent("""
        import sys, time, torch
        from merge_studio.core import kernels
        x = [torch.full((8,), 0.5, dtype=torch.bfloat16)] * 2
        while (r := kernels.weighted_sum_chunk(x, [1.0, 1.0], 2.0, out_dtype=torch.bfloat16, want_metrics=False,
                                               wait=False)) is None:
            time.sleep(0.01)
        print(type(kernels._ready[next(iter(kernels._ready))]).__name__, "numba" in sys.modules, float(r[0][0]))
    """)

    def run() -> list[str]:
        import os

        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                              env={**os.environ, **env_cache}, check=True)
        return done.stdout.split()

    assert run()[2] == "0.5"  # first: compiled in a child, which keeps the machine code
    records = list((tmp_path / "kernels").glob("*.json"))
    assert len(records) == 1
    assert run() == ["NativeKernel", "False", "0.5"]  # then: loaded without numba
    code = records[0].with_suffix(".o")
    code.write_bytes(code.read_bytes()[:100])  # damaged: its checksum no longer matches
    assert run()[2] == "0.5"  # ignored and removed, so the child builds it again
    assert json.loads(records[0].read_text())["sha256"]
    assert run() == ["NativeKernel", "False", "0.5"]


def test_machine_code_that_does_not_reproduce_numba_is_not_kept_nor_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDIO_CACHE_DIR", str(tmp_path))
    name, args = recorded(CALLS["average of 2, bf16"])
    assert native.wanted(name, args)
    assert not native.build_and_keep(name, copies(args), "not numba's digest", True)
    assert native.load_cached(name, args) is None
    assert not native.wanted(name, args)  # the failure is remembered: no child starts for it again


def test_machine_code_refuses_arguments_it_was_not_built_for():
    name, args = recorded(CALLS["average of 2, bf16"])
    code, symbol, unresolved = native.build(name, copies(args), True)
    loaded = native.load(code, symbol, unresolved, list(native.describe(args)))
    wrong = list(copies(args))
    wrong[0] = tuple(a.astype(np.float32) for a in wrong[0])  # float32 where bfloat16 bits were expected
    with pytest.raises(TypeError, match="built for"):
        loaded(*wrong)
