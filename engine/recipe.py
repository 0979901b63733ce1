"""The Recipe: the one way a quantization configuration travels, from UI form to job to artifact to report.

A Recipe is validated when it is built and round-trips through JSON. Per-node overrides (LayerOverride) are
keyed by ONNX node name, in the spirit of torchao's configs and onnxruntime's TensorQuantOverrides; the names
are checked against the model when the recipe is realised.

The JSON carries `schema_version` (SCHEMA_VERSION). JSON without one is the first format, which workspaces
created before versioning hold; it reads as version 1. A newer version than this code knows is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from engine.errors import RecipeError
from engine.text import counted, quoted

SCHEMA_VERSION = 1
SCHEMA_FIELD = "schema_version"
FLOAT32_BITS = 32  # the original model, untouched: the reference every other row is compared with
FLOAT16_BITS = 16  # weights and compute in half precision
INTEGER_WEIGHT_BITS = tuple(range(2, 9))
WEIGHT_BITS = (*INTEGER_WEIGHT_BITS, FLOAT16_BITS, FLOAT32_BITS)
ACTIVATION_BITS = (None, 8, 16)


class Granularity(str, Enum):
    TENSOR = "tensor"  # one scale for the whole weight
    CHANNEL = "channel"  # one scale per output channel
    GROUP = "group"  # one scale per block of `group_size` input elements of each output channel


class Mode(str, Enum):
    STATIC = "static"  # weights and activations quantized, activation ranges calibrated ahead of time
    DYNAMIC = "dynamic"  # weights quantized, activation ranges computed at run time per batch
    WEIGHT_ONLY = "weight-only"  # weights stored quantized, compute in float


class Calibration(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


def _enum(enum_type: type[Enum], value: Any, what: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum_type)
        raise RecipeError(f"{what} must be one of {choices}; got {value!r}") from None


@dataclass(frozen=True)
class WeightSpec:
    bits: int = 8
    granularity: Granularity = Granularity.CHANNEL
    group_size: int = 128
    symmetric: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", _enum(Granularity, self.granularity, "weight granularity"))
        if self.bits not in WEIGHT_BITS:
            raise RecipeError(f"weight bits must be 2-8, 16 (fp16) or 32 (fp32); got {self.bits!r}")
        if self.granularity is Granularity.GROUP:
            size = self.group_size
            if not isinstance(size, int) or size < 16 or size & (size - 1):
                raise RecipeError(f"group size must be a power of two of at least 16; got {size!r}")

    @property
    def is_float(self) -> bool:
        return self.bits in (FLOAT16_BITS, FLOAT32_BITS)

    def describe(self) -> str:
        if self.bits == FLOAT32_BITS:
            return "original fp32 weights"
        if self.bits == FLOAT16_BITS:
            return "fp16 weights"
        where = {
            Granularity.TENSOR: "per tensor",
            Granularity.CHANNEL: "per channel",
            Granularity.GROUP: f"in groups of {self.group_size}",
        }[self.granularity]
        kind = "symmetric" if self.symmetric else "asymmetric"
        return f"{self.bits}-bit weights {where} ({kind})"


def calibration_applies(activation_bits: int | None, calibration: Calibration | str) -> bool:
    """Entropy calibration clips by comparing 2^(bits-1) levels with a 2048-bin histogram: at 16 bits no
    clipped range is a candidate, so it would be minmax under another name."""
    return not (activation_bits == 16 and Calibration(calibration) is Calibration.ENTROPY)


@dataclass(frozen=True)
class ActivationSpec:
    bits: int | None = None
    calibration: Calibration = Calibration.MINMAX
    calibration_samples: int = 128
    symmetric: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration", _enum(Calibration, self.calibration, "calibration"))
        if self.bits not in ACTIVATION_BITS:
            raise RecipeError(f"activation bits must be none, 8 or 16; got {self.bits!r}")
        if not isinstance(self.calibration_samples, int) or not 1 <= self.calibration_samples <= 100_000:
            raise RecipeError(f"calibration samples must be 1-100000; got {self.calibration_samples!r}")
        if not calibration_applies(self.bits, self.calibration):
            raise RecipeError("entropy calibration is for 8-bit activations: at 16 bits it keeps the full range, "
                              "which is minmax")

    def describe(self, mode: Mode) -> str:
        if self.bits is None:
            return "float activations"
        if mode is Mode.DYNAMIC:
            return f"{self.bits}-bit activations (ranges computed at run time)"
        return (f"{self.bits}-bit activations ({self.calibration.value} calibration on {self.calibration_samples} "
                "rows kept out of scoring)")


NODE_ACTIVATION_BITS = (8, 16)


@dataclass(frozen=True)
class LayerOverride:
    """What one node, named as in the ONNX graph, does differently from the rest of the recipe.

    - keep_fp32: the node stays float, and so do the activation tensors it reads and writes (any node: a weight
      layer, an Add, a Softmax, a MatMul of two activations). Its weights, if any, are not quantized. (Dynamic
      mode quantizes activations for each reading node at run time: there the node reads float.)
    - weights: other weight settings for a weight layer (2-8 bits).
    - activation_bits: in static mode, the node reads and writes its quantized activations at 8 or 16 bits
      while the rest of the model keeps the recipe's width. It may go with `weights`.
    """

    keep_fp32: bool = False
    weights: WeightSpec | None = None
    activation_bits: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", WeightSpec(**self.weights))
        if not isinstance(self.keep_fp32, bool):
            raise RecipeError(f"keep_fp32 is true or false; got {self.keep_fp32!r}")
        if not (self.keep_fp32 or self.weights is not None or self.activation_bits is not None):
            raise RecipeError("a node override sets keep_fp32, weights or activation_bits")
        if self.keep_fp32 and (self.weights is not None or self.activation_bits is not None):
            raise RecipeError("keep_fp32 keeps the whole node float: it takes no weights or activation_bits")
        if self.weights is not None and self.weights.bits not in INTEGER_WEIGHT_BITS:
            raise RecipeError(f"a node override's weight bits must be 2-8; got {self.weights.bits}")
        if self.activation_bits is not None and (isinstance(self.activation_bits, bool)
                                                 or self.activation_bits not in NODE_ACTIVATION_BITS):
            raise RecipeError(f"a node override's activation bits must be 8 or 16; got {self.activation_bits!r}")


@dataclass(frozen=True)
class Recipe:
    weights: WeightSpec = field(default_factory=WeightSpec)
    activations: ActivationSpec = field(default_factory=ActivationSpec)
    mode: Mode = Mode.WEIGHT_ONLY
    overrides: dict[str, LayerOverride] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", WeightSpec(**self.weights))
        if isinstance(self.activations, dict):
            object.__setattr__(self, "activations", ActivationSpec(**self.activations))
        object.__setattr__(self, "mode", _enum(Mode, self.mode, "mode"))
        overrides = {}
        for name, override in dict(self.overrides).items():
            if not isinstance(name, str) or not name:
                raise RecipeError("node overrides are keyed by non-empty node names")
            overrides[name] = LayerOverride(**override) if isinstance(override, dict) else override
        object.__setattr__(self, "overrides", dict(sorted(overrides.items())))
        self._check_mode()
        self._check_node_activation_bits()

    def _check_mode(self) -> None:
        act = self.activations.bits
        if self.weights.is_float and (self.mode is not Mode.WEIGHT_ONLY or act is not None or self.overrides):
            raise RecipeError("fp32 and fp16 recipes are weight-only, with float activations and no overrides")
        if self.mode is Mode.WEIGHT_ONLY and act is not None:
            raise RecipeError(f"weight-only mode keeps activations in float; got {act}-bit activations")
        if self.mode is Mode.STATIC and act is None:
            raise RecipeError("static mode quantizes activations: choose 8 or 16 bits")
        if self.mode is Mode.DYNAMIC and act != 8:
            raise RecipeError("dynamic mode quantizes activations to 8 bits at run time; set activations to 8")

    def _check_node_activation_bits(self) -> None:
        for name, override in self.overrides.items():
            bits = override.activation_bits
            if bits is None:
                continue
            if self.mode is not Mode.STATIC:
                raise RecipeError(f"node {quoted(name)} sets activation_bits, which only static mode has "
                                  f"(its activation ranges are calibrated); this recipe is {self.mode.value}")
            if bits == self.activations.bits:
                raise RecipeError(f"node {quoted(name)} asks for {bits}-bit activations, which the whole recipe "
                                  "already uses; drop its activation_bits")

    # -- identity and words -------------------------------------------------------------------------

    @classmethod
    def fp32(cls) -> Recipe:
        return cls(weights=WeightSpec(bits=FLOAT32_BITS))

    @classmethod
    def fp16(cls) -> Recipe:
        return cls(weights=WeightSpec(bits=FLOAT16_BITS))

    @property
    def is_reference(self) -> bool:
        return self.weights.bits == FLOAT32_BITS

    def describe(self) -> str:
        """The recipe in plain words, for hover text, tables and reports."""
        if self.weights.is_float:
            return "Original model (fp32)" if self.is_reference else "Half precision (fp16)"
        text = f"{self.weights.describe()}, {self.activations.describe(self.mode)}"
        if self.mode is Mode.WEIGHT_ONLY:
            text += ", weight-only"
        if self.overrides:
            overrides = self.overrides.values()
            kept = sum(o.keep_fp32 for o in overrides)
            parts = [f"{counted(kept, 'node')} kept float"] if kept else []
            for bits in NODE_ACTIVATION_BITS:
                if n := sum(o.activation_bits == bits for o in overrides):
                    parts.append(f"{counted(n, 'node')} at {bits}-bit activations")
            if n := sum(o.weights is not None for o in overrides):
                parts.append(f"{counted(n, 'layer')} with {'its' if n == 1 else 'their'} own weight bits")
            text += "; " + ", ".join(parts)
        return text

    def short_name(self) -> str:
        """A compact label such as 'W4A8 static channel' or 'fp16'."""
        if self.weights.is_float:
            return "fp32" if self.is_reference else "fp16"
        act = f"A{self.activations.bits}" if self.activations.bits else ""
        gran = self.weights.granularity.value
        if self.weights.granularity is Granularity.GROUP:
            gran += f"{self.weights.group_size}"
        name = f"W{self.weights.bits}{act} {self.mode.value} {gran}"
        if self.mode is Mode.STATIC:
            name += f" {self.activations.calibration.value}"
        return name + "".join(f" +{n} {label}" for label, n in self._override_tally().items())

    def _override_tally(self) -> dict[str, int]:
        """How many nodes have each kind of override, by compact label, e.g. {'fp32': 3, 'A16': 2, 'W4': 1}."""
        labels: list[str] = []
        for override in self.overrides.values():
            labels += ["fp32"] if override.keep_fp32 else []
            labels += [f"A{override.activation_bits}"] if override.activation_bits else []
            labels += [f"W{override.weights.bits}"] if override.weights else []
        tally = Counter(labels)
        order = ["fp32", *(f"A{bits}" for bits in NODE_ACTIVATION_BITS), *(f"W{bits}" for bits in INTEGER_WEIGHT_BITS)]
        return {label: tally[label] for label in order if tally[label]}

    def key(self) -> str:
        """A stable id: equal recipes have equal keys, across processes, runs and schema versions (the key hashes
        the configuration, not the version that spells it, so rows stored before versioning keep their keys)."""
        content = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def slug(self) -> str:
        """A file-name-safe label, unique per recipe."""
        safe = "".join(c if c.isalnum() else "-" for c in self.short_name().lower())
        return f"{safe}-{self.key()[:8]}"

    # -- JSON -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {SCHEMA_FIELD: SCHEMA_VERSION, **self._content()}

    def _content(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        data = plain(asdict(self))
        data["overrides"] = {
            name: {k: v for k, v in override.items() if v not in (None, False)}
            for name, override in data["overrides"].items()
        }
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError("a recipe is a JSON object")
        data = dict(data)
        version = data.pop(SCHEMA_FIELD, 1)  # the first format had no version field
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
            raise RecipeError(f"recipe schema version {version!r} is not one this quantscope reads "
                              f"(1 to {SCHEMA_VERSION}); a newer quantscope wrote it?")
        _reject_unknown(cls, data, "recipe")
        _reject_unknown(WeightSpec, data.get("weights", {}), "weights")
        _reject_unknown(ActivationSpec, data.get("activations", {}), "activations")
        for name, override in data.get("overrides", {}).items():
            _reject_unknown(LayerOverride, override, f"override for {name!r}")
            _reject_unknown(WeightSpec, override.get("weights") or {}, f"override weights for {name!r}")
        try:
            return cls(**data)
        except TypeError as error:
            raise RecipeError(f"malformed recipe: {error}") from None

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise RecipeError(f"recipe is not valid JSON: {error.msg} at line {error.lineno}") from None
        return cls.from_dict(data)


def _reject_unknown(cls: type, data: Any, what: str) -> None:
    if not isinstance(data, dict):
        raise RecipeError(f"{what} must be a JSON object")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise RecipeError(f"unknown {what} field(s): {', '.join(sorted(unknown))}")
