"""Recipe: validated on construction, round-trips through JSON, says what it is in words."""

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import RecipeError
from engine.recipe import (
    SCHEMA_FIELD, SCHEMA_VERSION, ActivationSpec, Calibration, Granularity, LayerOverride, Mode, Recipe, WeightSpec,
)
from engine.sweep import grid


def test_defaults_are_a_valid_weight_only_recipe():
    recipe = Recipe()
    assert recipe.mode is Mode.WEIGHT_ONLY and recipe.weights.bits == 8 and recipe.activations.bits is None


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: WeightSpec(bits=9), "weight bits must be 2-8"),
        (lambda: WeightSpec(bits=1), "weight bits must be 2-8"),
        (lambda: WeightSpec(4, Granularity.GROUP, group_size=24), "power of two"),
        (lambda: WeightSpec(4, "rows"), "weight granularity must be one of tensor, channel, group"),
        (lambda: ActivationSpec(bits=4), "activation bits must be none, 8 or 16"),
        (lambda: ActivationSpec(bits=8, calibration="median"), "calibration must be one of"),
        (lambda: ActivationSpec(bits=8, calibration_samples=0), "calibration samples"),
        (lambda: ActivationSpec(16, "entropy"), "entropy calibration is for 8-bit activations"),
        (lambda: Recipe(WeightSpec(8), ActivationSpec(8), Mode.WEIGHT_ONLY), "weight-only mode keeps activations"),
        (lambda: Recipe(WeightSpec(8), ActivationSpec(None), Mode.STATIC), "static mode quantizes activations"),
        (lambda: Recipe(WeightSpec(8), ActivationSpec(16), Mode.DYNAMIC), "dynamic mode"),
        (lambda: Recipe(WeightSpec(16), ActivationSpec(8), Mode.STATIC), "fp32 and fp16 recipes"),
        (lambda: LayerOverride(), "a node override sets keep_fp32, weights or activation_bits"),
        (lambda: LayerOverride(keep_fp32=True, weights=WeightSpec(4)), "keep_fp32 keeps the whole node float"),
        (lambda: LayerOverride(keep_fp32=True, activation_bits=16), "keep_fp32 keeps the whole node float"),
        (lambda: LayerOverride(keep_fp32="yes"), "keep_fp32 is true or false"),
        (lambda: LayerOverride(weights=WeightSpec(16)), "override's weight bits must be 2-8"),
        (lambda: LayerOverride(activation_bits=4), "activation bits must be 8 or 16; got 4"),
        (lambda: LayerOverride(activation_bits=True), "activation bits must be 8 or 16; got True"),
        (lambda: Recipe(overrides={"": LayerOverride(keep_fp32=True)}), "non-empty node names"),
        (lambda: Recipe(WeightSpec(8), ActivationSpec(8), Mode.DYNAMIC, {"n": LayerOverride(activation_bits=16)}),
         "node 'n' sets activation_bits, which only static mode has .*this recipe is dynamic"),
        (lambda: Recipe(WeightSpec(4, Granularity.GROUP, 32), overrides={"n": LayerOverride(activation_bits=8)}),
         "only static mode has .*this recipe is weight-only"),
        (lambda: Recipe(WeightSpec(8), ActivationSpec(16), Mode.STATIC, {"n": LayerOverride(activation_bits=16)}),
         "node 'n' asks for 16-bit activations, which the whole recipe already uses"),
        (lambda: Recipe(WeightSpec(8), ActivationSpec(8), Mode.STATIC, {"x" * 500: LayerOverride(activation_bits=8)}),
         "node 'x{77}\\.\\.\\.' asks for 8-bit"),
    ],
)
def test_inconsistent_recipes_are_rejected_with_a_clear_message(build, message):
    with pytest.raises(RecipeError, match=message):
        build()


weight_specs = st.builds(
    WeightSpec,
    bits=st.sampled_from(range(2, 9)),
    granularity=st.sampled_from(list(Granularity)),
    group_size=st.sampled_from([16, 32, 64, 128]),
    symmetric=st.booleans(),
)


@st.composite
def recipes(draw):
    mode = draw(st.sampled_from(list(Mode)))
    bits = {Mode.WEIGHT_ONLY: None, Mode.DYNAMIC: 8, Mode.STATIC: draw(st.sampled_from([8, 16]))}[mode]
    activations = ActivationSpec(
        bits=bits,
        calibration=draw(st.sampled_from([c for c in Calibration if (bits, c) != (16, Calibration.ENTROPY)])),
        calibration_samples=draw(st.integers(1, 1000)),
        symmetric=draw(st.booleans()),
    )
    names = draw(st.lists(st.text(min_size=1, max_size=12), max_size=3, unique=True))
    other_width = {8: 16, 16: 8}[bits] if mode is Mode.STATIC else None  # a node's own width: not the recipe's
    choices = [LayerOverride(keep_fp32=True), LayerOverride(weights=draw(weight_specs))]
    if other_width:
        choices += [LayerOverride(activation_bits=other_width),
                    LayerOverride(weights=draw(weight_specs), activation_bits=other_width)]
    overrides = {name: draw(st.sampled_from(choices)) for name in names}
    return Recipe(draw(weight_specs), activations, mode, overrides)


@given(recipes())
def test_json_round_trip_is_exact_and_the_key_is_stable(recipe):
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe
    assert again.key() == recipe.key()
    assert again.to_json() == recipe.to_json()


def test_override_order_does_not_change_the_key():
    a = Recipe(overrides={"x": LayerOverride(keep_fp32=True), "y": LayerOverride(weights=WeightSpec(4))})
    b = Recipe(overrides={"y": LayerOverride(weights=WeightSpec(4)), "x": LayerOverride(keep_fp32=True)})
    assert a.key() == b.key()
    assert a.key() != Recipe().key()


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "a recipe is a JSON object"),
        ('{"weights": {"bits": 4, "colour": 1}}', "unknown weights field"),
        ('{"speed": 1}', "unknown recipe field"),
        ('{"weights": {"bits": 11}}', "weight bits must be 2-8"),
    ],
)
def test_malformed_json_gives_a_one_line_error(text, message):
    with pytest.raises(RecipeError, match=message) as caught:
        Recipe.from_json(text)
    assert "\n" not in str(caught.value)


def test_descriptions_are_plain_words():
    assert Recipe.fp32().describe() == "Original model (fp32)"
    assert Recipe.fp16().short_name() == "fp16"
    w4 = Recipe(WeightSpec(4, Granularity.GROUP, 32), mode=Mode.WEIGHT_ONLY, overrides={"a": {"keep_fp32": True}})
    assert w4.describe() == (
        "4-bit weights in groups of 32 (symmetric), float activations, weight-only; 1 node kept float"
    )
    static = Recipe(WeightSpec(8, Granularity.TENSOR), ActivationSpec(8, "entropy", 64), Mode.STATIC)
    assert static.short_name() == "W8A8 static tensor entropy"
    assert "entropy calibration on 64 rows kept out of scoring" in static.describe()


def test_grids_leave_out_combinations_a_recipe_refuses():
    recipes = grid([8], ["channel"], [8, 16], ["minmax", "entropy"], include_reference=False)
    assert [(r.activations.bits, r.activations.calibration.value) for r in recipes] == [
        (8, "minmax"), (8, "entropy"), (16, "minmax")]


# -- schema versions --------------------------------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def test_recipe_json_carries_its_schema_version():
    data = json.loads(Recipe.fp16().to_json())
    assert data[SCHEMA_FIELD] == SCHEMA_VERSION == 1


def test_a_recipe_in_the_unversioned_first_format_still_loads_with_its_old_key():
    """Workspaces created before versioning store recipes like this fixture; their rows are keyed by the old key."""
    text = (FIXTURES / "recipe_unversioned.json").read_text().strip()
    assert SCHEMA_FIELD not in json.loads(text)
    recipe = Recipe.from_json(text)
    assert recipe.mode is Mode.STATIC and recipe.weights.bits == 4 and recipe.activations.calibration is Calibration.PERCENTILE
    assert recipe.overrides["/head/head.3/Gemm"].keep_fp32
    assert recipe.overrides["/conv1/Conv"].weights == WeightSpec(8, Granularity.CHANNEL)
    # The key is the sha256 of the configuration as the first format spelled it.
    assert recipe.key() == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert Recipe.from_json(recipe.to_json()) == recipe


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_a_schema_version_this_code_does_not_know_is_refused(version):
    data = {**Recipe.fp32().to_dict(), SCHEMA_FIELD: version}
    with pytest.raises(RecipeError, match="recipe schema version .* is not one this quantscope reads"):
        Recipe.from_dict(data)


# -- node overrides ---------------------------------------------------------------------------------------------

MIXED = Recipe(
    WeightSpec(8), ActivationSpec(8), Mode.STATIC,
    overrides={
        "/attention/Softmax": LayerOverride(keep_fp32=True),
        "/attention/Add": LayerOverride(keep_fp32=True),
        "/embed/Gather": LayerOverride(keep_fp32=True),
        "/attention/MatMul": LayerOverride(activation_bits=16),
        "/mlp/fc1/MatMul": LayerOverride(weights=WeightSpec(4), activation_bits=16),
    },
)


def test_node_overrides_are_said_in_plain_words_and_counted_in_the_short_name():
    assert MIXED.describe().endswith(
        "; 3 nodes kept float, 2 nodes at 16-bit activations, 1 layer with its own weight bits")
    assert MIXED.short_name() == "W8A8 static channel minmax +3 fp32 +2 A16 +1 W4"
    narrow = Recipe(WeightSpec(8), ActivationSpec(16), Mode.STATIC, {"n": LayerOverride(activation_bits=8)})
    assert narrow.describe().endswith("; 1 node at 8-bit activations") and narrow.short_name().endswith(" +1 A8")


def test_node_overrides_round_trip_through_json_with_only_the_fields_they_set():
    data = json.loads(MIXED.to_json())
    assert data["overrides"]["/attention/MatMul"] == {"activation_bits": 16}
    assert data["overrides"]["/attention/Softmax"] == {"keep_fp32": True}
    assert set(data["overrides"]["/mlp/fc1/MatMul"]) == {"activation_bits", "weights"}
    again = Recipe.from_json(MIXED.to_json())
    assert again == MIXED and again.key() == MIXED.key()
    assert again.overrides["/mlp/fc1/MatMul"] == LayerOverride(weights=WeightSpec(4), activation_bits=16)
    assert again.key() != Recipe(MIXED.weights, MIXED.activations, MIXED.mode).key()


def test_a_recipe_without_node_activation_bits_writes_the_json_it_always_wrote():
    """The new field is left out when unset, so old recipes keep their JSON, their key and schema version 1, and
    older quantscopes read every recipe that does not use it."""
    text = (FIXTURES / "recipe_unversioned.json").read_text().strip()
    recipe = Recipe.from_json(text)
    assert json.loads(recipe.to_json()) == {**json.loads(text), SCHEMA_FIELD: 1}
    assert "activation_bits" not in recipe.to_json()


@pytest.mark.parametrize(
    "override, message",
    [
        ({"activation_bits": 16, "colour": "red"}, "unknown override for 'n' field.*colour"),
        ({"activation_bits": 12}, "activation bits must be 8 or 16; got 12"),
        ({"activation_bits": "16"}, "activation bits must be 8 or 16; got '16'"),
        ({}, "a node override sets keep_fp32, weights or activation_bits"),
    ],
)
def test_malformed_node_overrides_in_json_give_a_one_line_error(override, message):
    data = {**Recipe(WeightSpec(8), ActivationSpec(8), Mode.STATIC).to_dict(), "overrides": {"n": override}}
    with pytest.raises(RecipeError, match=message) as caught:
        Recipe.from_dict(data)
    assert "\n" not in str(caught.value)
