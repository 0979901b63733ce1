"""Which precisions a sensitivity table compares: the candidates named by --bits, --granularity, --activations and
--calibration, as Recipes (the sweep's grid, without the fp32 reference every cell is compared with anyway)."""

from __future__ import annotations

from collections.abc import Iterable

from engine.errors import RecipeError
from engine.recipe import INTEGER_WEIGHT_BITS, ActivationSpec, Calibration, Granularity, Mode, Recipe, WeightSpec
from engine.sweep.grids import grid

DYNAMIC = "dynamic"  # --activations dynamic: 8-bit activations quantized at run time (8-bit weights only)
DEFAULT_BITS = (8, 4)
DEFAULT_ACTIVATIONS = (8,)  # static W8A8 and W4A8: where activation points exist to be found


def candidates(
    bits: Iterable[int] = DEFAULT_BITS,
    granularities: Iterable[Granularity | str] = (Granularity.CHANNEL,),
    activations: Iterable[int | str | None] = DEFAULT_ACTIVATIONS,
    calibrations: Iterable[Calibration | str] = (Calibration.MINMAX,),
    group_size: int = 128,
) -> list[Recipe]:
    """Every consistent combination: none -> weight-only, 8 or 16 -> static, `dynamic` -> W8 dynamic."""
    bits, granularities, activations = list(bits), list(granularities), list(activations)
    wrong = [b for b in bits if b not in INTEGER_WEIGHT_BITS]
    if wrong:
        raise RecipeError(f"sensitivity compares integer weight widths of 2-8 bits; got {wrong[0]}")
    static = [a for a in activations if a != DYNAMIC]
    recipes = grid(bits, granularities, static, calibrations, group_size, include_reference=False) if static else []
    if DYNAMIC in activations:
        if 8 not in bits:
            raise RecipeError("dynamic activations go with 8-bit weights: add 8 to --bits")
        recipes += [Recipe(WeightSpec(8, Granularity(granularity), group_size), ActivationSpec(8), Mode.DYNAMIC)
                    for granularity in granularities]
    if not recipes:
        raise RecipeError("no candidate precision: give --bits and --activations")
    return recipes
