"""weight_matching and merge_many as declared merge methods, on real checkpoint files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.arch import build_module, example_input
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.methods.registry import get_method
from merge_studio.core.methods.spec import ModelJobContext
from merge_studio.core.progress import drive
from merge_studio.core.rebasin.apply import apply_permutation
from merge_studio.core.rebasin.spec import spec_from_module
from merge_studio.errors import MethodError
from tests.core.rebasin.models import random_perms

ARCH = "zoo:mlp?hidden=16,16"


def _save(tmp_path, name, state):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _run(method_name, paths, ctx_arch=ARCH, **params):
    spec = get_method(method_name)
    checkpoints = [open_checkpoint(p) for p in paths]
    try:
        ctx = ModelJobContext(device=torch.device("cpu"), arch=ctx_arch)
        return drive(spec.merge_model(checkpoints, None, spec.params(**params), [], ctx))
    finally:
        for ck in checkpoints:
            ck.close()


def _outputs(state):
    model = build_module(ARCH, state).eval()
    with torch.no_grad():
        return model(example_input(ARCH, batch_size=4))


def test_weight_matching_at_alpha_one_returns_b_aligned_to_a_with_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    a, b = build_module(ARCH).state_dict(), build_module(ARCH).state_dict()
    out = _run("weight_matching", [_save(tmp_path, "a.safetensors", a), _save(tmp_path, "b.safetensors", b)], alpha=1.0)
    (merged,) = out.state_dicts
    assert torch.allclose(_outputs(merged), _outputs(b), atol=1e-5)
    assert any(not torch.equal(merged[k], b[k]) for k in b)
    recorded = json.loads(out.metadata["merge_studio.permutation"])
    assert set(recorded["groups"]) == {g["name"] for g in out.report["groups"]}
    assert out.metadata["merge_studio.arch"] == ARCH
    assert out.report["max_output_difference"] < 1e-9


def test_weight_matching_of_a_permuted_copy_interpolates_to_the_original(tmp_path):
    torch.manual_seed(1)
    module = build_module(ARCH)
    spec = spec_from_module(module, example_input(ARCH))
    a = module.state_dict()
    b = apply_permutation(spec, a, random_perms(spec, 4))
    out = _run("weight_matching", [_save(tmp_path, "a.safetensors", a), _save(tmp_path, "b.safetensors", b)], alpha=0.5)
    for name, tensor in a.items():
        assert torch.allclose(out.state_dicts[0][name], tensor, atol=1e-6)


def test_resetting_batchnorm_without_data_is_refused(tmp_path):
    arch = "zoo:vgg?widths=4,8"
    a, b = build_module(arch).state_dict(), build_module(arch).state_dict()
    paths = [_save(tmp_path, "a.safetensors", a), _save(tmp_path, "b.safetensors", b)]
    with pytest.raises(MethodError, match="needs evaluation data"):
        _run("weight_matching", paths, ctx_arch=arch, reset_bn=True)


def test_merge_many_of_permuted_copies_gives_back_the_original(tmp_path):
    torch.manual_seed(2)
    module = build_module(ARCH)
    spec = spec_from_module(module, example_input(ARCH))
    a = module.state_dict()
    paths = [_save(tmp_path, f"m{i}.safetensors", apply_permutation(spec, a, random_perms(spec, i))) for i in range(3)]
    out = _run("merge_many", paths, max_iterations=10)
    assert out.report["converged"]
    model = build_module(ARCH, out.state_dicts[0]).eval()
    reference = build_module(ARCH, a).eval()
    x = example_input(ARCH, batch_size=4)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_merge_many_of_independent_models_converges_and_reports_each_models_moves(tmp_path):
    torch.manual_seed(3)
    paths = [_save(tmp_path, f"m{i}.safetensors", build_module(ARCH).state_dict()) for i in range(3)]
    out = _run("merge_many", paths, max_iterations=20, seed=1)
    assert out.report["converged"] and out.report["rounds"] >= 2
    assert len(out.report["moved_fraction"]) == 3
    assert out.report["max_output_difference"] < 1e-9


def test_the_methods_are_declared_for_forms_and_recipes():
    wm, mm = get_method("weight_matching"), get_method("merge_many")
    assert wm.n_models == (2, 2) and wm.needs_arch and mm.needs_arch
    schema = wm.params.model_json_schema()["properties"]
    assert schema["alpha"]["maximum"] == 1.0 and schema["seed"]["per_layer"] is False
    with pytest.raises(ValueError):
        wm.params(alpha=1.5)


def test_a_recipe_runs_weight_matching_through_the_engine_and_records_the_permutation(tmp_path):
    from safetensors import safe_open

    from merge_studio.core.engine import run_merge
    from merge_studio.core.recipe import Recipe

    torch.manual_seed(4)
    paths = [_save(tmp_path, f"{n}.safetensors", build_module(ARCH).state_dict()) for n in ("a", "b")]
    out = tmp_path / "merged.safetensors"
    recipe = Recipe(
        method="weight_matching", models=[{"path": str(p)} for p in paths], params={"alpha": 0.5, "seed": 2},
        output=str(out), arch=ARCH, device="cpu",
    )
    result = run_merge(recipe)
    assert result.report["alpha"] == 0.5 and result.report["seed"] == 2
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert set(json.loads(meta["merge_studio.permutation"])["groups"]) == {"hidden.0", "hidden.1"}


def test_with_data_the_function_check_also_runs_on_real_inputs(tmp_path):
    arch = "zoo:mlp?hidden=16"
    torch.manual_seed(5)
    paths = [_save(tmp_path, f"{n}.safetensors", build_module(arch).state_dict()) for n in ("a", "b")]
    spec = get_method("weight_matching")
    checkpoints = [open_checkpoint(p) for p in paths]
    try:
        ctx = ModelJobContext(device=torch.device("cpu"), arch=arch, data={"source": "digits", "max_examples": 32})
        out = drive(spec.merge_model(checkpoints, None, spec.params(alpha=1.0), [], ctx))
    finally:
        for ck in checkpoints:
            ck.close()
    assert out.report["max_output_difference"] < 1e-9


def test_merge_many_re_estimates_batchnorm_statistics_on_the_data(tmp_path):
    arch = "zoo:vgg?widths=4,8"
    torch.manual_seed(6)
    states = [build_module(arch).state_dict() for _ in range(2)]
    paths = [_save(tmp_path, f"m{i}.safetensors", s) for i, s in enumerate(states)]
    spec = get_method("merge_many")
    checkpoints = [open_checkpoint(p) for p in paths]
    try:
        ctx = ModelJobContext(device=torch.device("cpu"), arch=arch, data={"source": "digits", "max_examples": 64})
        out = drive(spec.merge_model(checkpoints, None, spec.params(reset_bn=True, max_iterations=5), [], ctx))
    finally:
        for ck in checkpoints:
            ck.close()
    merged = out.state_dicts[0]
    mean_key = next(k for k in merged if k.endswith("running_mean"))
    assert out.report["reset_bn"] is True
    assert not torch.allclose(merged[mean_key], torch.zeros_like(merged[mean_key]))  # fresh models start at 0


def _run_with_data(method_name, paths, arch=ARCH, **params):
    spec = get_method(method_name)
    checkpoints = [open_checkpoint(p) for p in paths]
    try:
        ctx = ModelJobContext(device=torch.device("cpu"), arch=arch, data={"source": "digits", "max_examples": 200})
        return drive(spec.merge_model(checkpoints, None, spec.params(**params), [], ctx))
    finally:
        for ck in checkpoints:
            ck.close()


def test_activation_matching_of_a_permuted_copy_interpolates_to_the_original(tmp_path):
    torch.manual_seed(7)
    module = build_module(ARCH)
    spec = spec_from_module(module, example_input(ARCH))
    a = module.state_dict()
    b = apply_permutation(spec, a, random_perms(spec, 5))
    out = _run_with_data("activation_matching", [_save(tmp_path, "a.safetensors", a), _save(tmp_path, "b.safetensors", b)],
                         alpha=0.5, repair=False)
    assert out.report["method"] == "activation" and out.report["max_output_difference"] < 1e-9
    for name, tensor in a.items():
        assert torch.allclose(out.state_dicts[0][name], tensor, atol=1e-6)


def test_activation_matching_needs_data_and_says_so(tmp_path):
    paths = [_save(tmp_path, f"{n}.safetensors", build_module(ARCH).state_dict()) for n in ("a", "b")]
    assert get_method("activation_matching").needs_data
    with pytest.raises(MethodError, match="needs evaluation data"):
        _run("activation_matching", paths)


def test_the_auto_method_keeps_the_alignment_whose_merge_has_the_lower_loss_and_shows_both(tmp_path):
    torch.manual_seed(8)
    paths = [_save(tmp_path, f"{n}.safetensors", build_module(ARCH).state_dict()) for n in ("a", "b")]
    out = _run_with_data("rebasin_auto", paths, examples=100)
    candidates = out.report["candidates"]
    losses = {m: c["midpoint_loss"] for m, c in candidates.items()}
    assert set(losses) == {"weight", "activation"}
    assert out.report["method"] == min(losses, key=losses.get)
    assert all(0.0 <= g["agreement"] <= 1.0 for g in out.report["groups"])
    assert out.report["repair"] and out.report["repair_layers"]["layers"] == ["hidden.0", "hidden.1"]


def test_merge_many_by_activations_of_permuted_copies_gives_back_the_original(tmp_path):
    torch.manual_seed(9)
    module = build_module(ARCH)
    spec = spec_from_module(module, example_input(ARCH))
    a = module.state_dict()
    paths = [_save(tmp_path, f"m{i}.safetensors", apply_permutation(spec, a, random_perms(spec, i))) for i in range(3)]
    out = _run_with_data("merge_many", paths, matching="activation", max_iterations=5)
    assert out.report["converged"] and out.report["method"] == "activation"
    model, reference = build_module(ARCH, out.state_dicts[0]).eval(), build_module(ARCH, a).eval()
    x = example_input(ARCH, batch_size=4)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)  # all three found one common order
