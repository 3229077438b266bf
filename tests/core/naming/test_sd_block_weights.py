"""Stable Diffusion checkpoints: recognised by their key layout, merged with block weights.

The expected results are computed here with an independent implementation of the
block mapping, written the way the A1111 merge-block-weighted extension and
supermerger write theirs (regular expressions on the key), not with our naming rule.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.engine import run_merge
from merge_studio.core.naming.base import naming_for
from merge_studio.core.naming.blocks import format_block_text, parse_block_text
from merge_studio.core.naming.presets import preset_for, sd_preset
from merge_studio.core.recipe import Recipe
from merge_studio.errors import RecipeError
from tests.sd_models import make_sd_checkpoint, make_sd_state

SD_IDS = ["BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12))]
XL_IDS = ["BASE", *(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9))]


def reference_block(key: str, xl: bool) -> str:
    """The tools' rule, written out independently: regexes on the whole key."""
    if "model.diffusion_model." not in key:
        return "BASE"
    n_in = 9 if xl else 12
    if "time_embed" in key or (xl and "label_emb" in key):
        return "IN00"
    if ".out." in key:
        return f"OUT{n_in - 1:02d}"
    for pattern, fmt in ((r"\.input_blocks\.(\d+)\.", "IN{:02d}"), (r"\.middle_block\.(\d+)\.", "M00"),
                         (r"\.output_blocks\.(\d+)\.", "OUT{:02d}")):
        m = re.search(pattern, key)
        if m:
            return fmt.format(int(m.group(1)))
    return "BASE"


@pytest.mark.parametrize("family, label, blocks", [
    ("sd1", "Stable Diffusion 1.x", 26), ("sd2", "Stable Diffusion 2.x", 26), ("sdxl", "Stable Diffusion XL", 20),
])
def test_single_file_checkpoints_are_recognised_with_their_parts_and_blocks(family, label, blocks):
    naming = naming_for({k: v.shape for k, v in make_sd_state(family).items()})
    assert naming.label == label
    assert len(naming.blocks) == blocks
    assert [p.key for p in naming.parts] == ["unet", "text_encoder", "vae"]
    assert naming.part_of("first_stage_model.decoder.conv_out.weight") == "vae"
    assert naming.part_of("model.diffusion_model.out.2.weight") == "unet"


def test_a_unet_without_text_encoder_is_told_apart_by_its_projection_shape():
    sd1 = {k: v.shape for k, v in make_sd_state("sd1", unet_only=True).items()}
    sd2 = {k: v.shape for k, v in make_sd_state("sd2", unet_only=True).items()}
    assert naming_for(sd1).label == "Stable Diffusion 1.x UNet"
    assert naming_for(sd2).label == "Stable Diffusion 2.x UNet"


def test_other_checkpoints_keep_the_generic_rule():
    assert naming_for(["model.layers.0.self_attn.q_proj.weight", "lm_head.weight"]).family == "generic"


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_every_tensor_lands_in_the_block_the_tools_put_it_in(family):
    state = make_sd_state(family)
    naming = naming_for({k: v.shape for k, v in state.items()})
    xl = family == "sdxl"
    wrong = {k: (naming.block_of(k), reference_block(k, xl)) for k in state
             if naming.block_of(k) != reference_block(k, xl)}
    assert not wrong
    assert {naming.block_of(k) for k in state} == set(XL_IDS if xl else SD_IDS)


def _mismatches(merged, expected) -> list[str]:
    """Keys whose merged tensor is not the expected one (cheaper than assert_close per key)."""
    return [k for k, v in expected.items() if not torch.allclose(merged[k], v, rtol=1e-5, atol=1e-6)]


def _merge(tmp_path, method, models, params, base=None, **extra):
    recipe = Recipe.model_validate({
        "method": method, "models": [{"path": str(m)} for m in models], "base": str(base) if base else None,
        "params": params, "output": str(tmp_path / "out.safetensors"), "hash_sources": False, **extra,
    })
    return load_file(str(run_merge(recipe).output))


def test_block_weighted_weighted_sum_matches_the_tools_mapping_on_sd1(tmp_path):
    a = make_sd_checkpoint(tmp_path / "a.safetensors", "sd1", seed=1, compact=True)
    b = make_sd_checkpoint(tmp_path / "b.safetensors", "sd1", seed=2, compact=True)
    weights = [round(0.04 * i, 2) for i in range(26)]  # a different value in every block
    merged = _merge(tmp_path, "weighted_sum", [a, b], {"t": {"blocks": format_block_text(weights)}})
    sa, sb = load_file(str(a)), load_file(str(b))
    by_block = dict(zip(SD_IDS, weights, strict=True))
    expected = {}
    for key, value in sa.items():
        t = by_block[reference_block(key, xl=False)]
        expected[key] = (1 - t) * value + t * sb[key] if value.is_floating_point() else value
    assert merged.keys() == expected.keys()
    assert not _mismatches(merged, expected)


def test_block_weighted_add_difference_matches_the_tools_mapping_on_sdxl(tmp_path):
    a, b, c = (make_sd_checkpoint(tmp_path / f"{n}.safetensors", "sdxl", seed=s, compact=True)
               for n, s in (("a", 1), ("b", 2), ("c", 3)))
    weights = [0.5, *[0.1 * i for i in range(1, 10)], 2.0, *[-0.1 * i for i in range(1, 10)]]
    merged = _merge(tmp_path, "add_difference", [a, b], {"alpha": {"blocks": weights}}, base=c)
    sa, sb, sc = (load_file(str(p)) for p in (a, b, c))
    by_block = dict(zip(XL_IDS, weights, strict=True))
    expected = {key: sa[key] + by_block[reference_block(key, xl=True)] * (sb[key] - sc[key])
                for key in sa if sa[key].is_floating_point()}
    assert not _mismatches(merged, expected)


def test_add_difference_is_task_arithmetic_with_c_as_base(tmp_path, make_checkpoint):
    a, b, c = (make_checkpoint(f"{n}.safetensors", seed=s) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    ours = _merge(tmp_path, "add_difference", [a, b], {"alpha": 0.7}, base=c)
    recipe = Recipe.model_validate({
        "method": "task_arithmetic", "base": str(c), "hash_sources": False, "output": str(tmp_path / "ta.safetensors"),
        "models": [{"path": str(a), "params": {"weight": 1.0}}, {"path": str(b), "params": {"weight": 0.7}}],
    })
    ta = load_file(str(run_merge(recipe).output))
    for key in ours:
        if ours[key].is_floating_point():
            torch.testing.assert_close(ours[key], ta[key], rtol=1e-5, atol=1e-6)


def test_twenty_five_values_leave_base_to_its_own_entry(tmp_path):
    a = make_sd_checkpoint(tmp_path / "a.safetensors", "sd1", seed=1, compact=True)
    b = make_sd_checkpoint(tmp_path / "b.safetensors", "sd1", seed=2, compact=True)
    merged = _merge(tmp_path, "lerp", [a, b], {"t": {"blocks": sd_preset("OUT_ONLY")[1:], "base": 0.25}})
    sa, sb = load_file(str(a)), load_file(str(b))
    vae = "first_stage_model.decoder.conv_out.weight"
    torch.testing.assert_close(merged[vae], 0.75 * sa[vae] + 0.25 * sb[vae])
    out = "model.diffusion_model.output_blocks.4.1.proj_in.weight"
    torch.testing.assert_close(merged[out], sb[out])
    inp = "model.diffusion_model.input_blocks.4.1.proj_in.weight"
    torch.testing.assert_close(merged[inp], sa[inp])


def test_a_block_count_that_does_not_fit_the_model_is_refused_before_reading(tmp_path):
    a = make_sd_checkpoint(tmp_path / "a.safetensors", "sdxl", seed=1)
    b = make_sd_checkpoint(tmp_path / "b.safetensors", "sdxl", seed=2)
    with pytest.raises(RecipeError, match="26 block weights given, but this model has 20 blocks"):
        _merge(tmp_path, "lerp", [a, b], {"t": {"blocks": sd_preset("GRAD_V")}})
    assert not (tmp_path / "out.safetensors").exists()


def test_block_weights_on_a_model_without_blocks_say_what_is_needed(tmp_path, make_checkpoint):
    a, b = make_checkpoint("a.safetensors", seed=1), make_checkpoint("b.safetensors", seed=2)
    with pytest.raises(RecipeError, match="no named blocks"):
        _merge(tmp_path, "lerp", [a, b], {"t": {"blocks": [0.5] * 26}})


def test_a_typo_in_the_text_form_names_the_value():
    with pytest.raises(RecipeError, match=r"params.t: block weight 3 \('O.5'\) is not a number"):
        Recipe.from_mapping({"method": "lerp", "models": [{"path": "a"}, {"path": "b"}],
                             "params": {"t": {"blocks": "0,1,O.5"}}})


def test_the_vae_and_text_encoder_can_be_kept_from_one_model(tmp_path):
    a = make_sd_checkpoint(tmp_path / "a.safetensors", "sd2", seed=1, compact=True)
    b = make_sd_checkpoint(tmp_path / "b.safetensors", "sd2", seed=2, compact=True)
    merged = _merge(tmp_path, "lerp", [a, b], {"t": 0.5}, part_sources={"vae": str(b), "text_encoder": 0})
    sa, sb = load_file(str(a)), load_file(str(b))
    for key, value in merged.items():
        if key.startswith("first_stage_model."):
            assert torch.equal(value, sb[key]), key
        elif key.startswith("cond_stage_model."):
            assert torch.equal(value, sa[key]), key
    unet = "model.diffusion_model.middle_block.1.proj_out.weight"
    torch.testing.assert_close(merged[unet], 0.5 * sa[unet] + 0.5 * sb[unet])


def test_keeping_a_part_the_model_does_not_have_is_refused(tmp_path):
    a = make_sd_checkpoint(tmp_path / "a.safetensors", "sd1", seed=1, unet_only=True)
    b = make_sd_checkpoint(tmp_path / "b.safetensors", "sd1", seed=2, unet_only=True)
    with pytest.raises(RecipeError, match="part 'vae', which these checkpoints do not have"):
        _merge(tmp_path, "lerp", [a, b], {"t": 0.5}, part_sources={"vae": 0})


def test_a_ckpt_file_is_read_through_the_safe_loader_and_recognised(tmp_path):
    path = make_sd_checkpoint(tmp_path / "v1-5.ckpt", "sd1", seed=1)
    ck = open_checkpoint(path)
    assert naming_for({n: i.shape for n, i in ck.infos.items()}).family == "sd1"
    assert "model.diffusion_model.input_blocks.0.0.weight" in ck


def test_presets_have_the_values_the_tools_ship():
    grad_v = sd_preset("GRAD_V")
    assert grad_v[:3] == [0.0, 1.0, pytest.approx(0.9166666667)]
    assert grad_v[13] == 0.0 and grad_v[-1] == 1.0
    assert sd_preset("SMOOTHSTEP")[2] == pytest.approx(0.00506365740740741)
    assert sd_preset("COSINE")[2] == pytest.approx(0.995722430686905)
    assert sd_preset("RING08_SOFT") == parse_block_text("0,0,0,0,0,0,0.5,1,1,1,0.5,0,0,0,0,0,0.5,1,1,1,0.5,0,0,0,0,0")
    xl = preset_for("OUT_ONLY", XL_IDS)
    assert xl == [0.0] * 11 + [1.0] * 9


def test_depth_runs_through_the_unet_blocks_in_order():
    naming = naming_for(list(make_sd_state("sd1")))
    d = naming.depths(["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.middle_block.1.norm.weight",
                       "model.diffusion_model.out.2.weight", "first_stage_model.quant_conv.weight"])
    assert list(d.values()) == [0.0, 0.5, 1.0, 0.0]


def test_block_weights_cannot_be_exported_to_mergekit_and_say_so():
    from merge_studio.core.mergekit_config import mergekit_from_recipe

    recipe = Recipe.from_mapping({"method": "weighted_average", "models": [{"path": "a"}, {"path": "b", "params": {
        "weight": {"blocks": [1.0] * 26}}}]})
    with pytest.raises(RecipeError, match="weight is given per UNet block, which mergekit cannot express"):
        mergekit_from_recipe(recipe)
