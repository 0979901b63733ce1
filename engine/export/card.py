"""MODEL_CARD.md: an exported recipe as a Hugging Face model card.

YAML front matter (base_model_relation: quantized, library_name: onnx, tags, and the measured metrics in the
model-index layout the Hub reads), then what was quantized, how, and what it costs against the original.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from engine.formatting import metric_text, ratio_text, speed_text
from engine.metrics import METRICS
from engine.provenance import describe_machine
from engine.text import size_text

# The Hub's metric ids (those of the `evaluate` library) where one means the same as ours; the others keep ours.
HUB_METRIC_TYPES = {"top1": "accuracy", "macro_f1": "f1", "mae": "mae", "rmse": "rmse"}


def _tags(figures: dict) -> list[str]:
    settings = figures["recipe"]["settings"]
    bits, mode = settings["weights"]["bits"], settings["mode"]
    precision = {32: "fp32", 16: "fp16"}.get(bits, f"int{bits}" if bits in (4, 8) else f"{bits}-bit")
    tags = ["onnx", "quantized", "quantscope", precision, mode]
    if settings["activations"].get("bits"):
        tags.append(f"a{settings['activations']['bits']}")
    if not figures["model"]["deployable"]:
        tags.append("simulated")
    return tags


def front_matter(figures: dict) -> dict:
    metric = figures["metric"]
    validation = figures["data"]["validation"]
    hub_metrics = [
        {"type": HUB_METRIC_TYPES.get(name, name), "value": value, "name": METRICS[name].label}
        for name, value in metric["all"].items() if isinstance(value, int | float)  # "inf" (identical) is no number
    ]
    return {
        "base_model": Path(figures["base_model"]["name"]).stem,  # the Hub wants the original's id: set it to publish
        "base_model_relation": "quantized",
        "library_name": "onnx",
        "tags": _tags(figures),
        "model-index": [{
            "name": f"{Path(figures['base_model']['name']).stem}-{figures['recipe']['name']}",
            "results": [{
                "task": {"type": metric["task"], "name": metric["task"].capitalize()},
                "dataset": {"name": validation["file"], "type": Path(validation["file"]).stem,
                            "split": figures["scoring"]["scored_rows"]},
                "metrics": hub_metrics,
            }],
        }],
    }


def _costs(figures: dict) -> list[str]:
    metric, model, latency = figures["metric"], figures["model"], figures["latency"]
    estimate = " (estimated: packed integers)" if model["size_is_estimate"] else ""
    lines = [
        "| | This model | Original (fp32) | |",
        "|---|---|---|---|",
        f"| {metric['label']} | {metric_text(metric['name'], metric['value'])} | "
        f"{metric_text(metric['name'], metric['fp32'])} | {metric['change']} |",
        f"| File size | {size_text(model['size_bytes'])}{estimate} | "
        f"{size_text(figures['base_model']['size_bytes'])} | {ratio_text(model['size_ratio'])} |",
    ]
    single, original = latency.get("batch_1"), (latency.get("fp32") or {}).get("batch_1")
    if single:
        fp32_time = f"{original['p50_ms']:.3g} ms" if original else "-"
        speed = (speed_text(original["p50_ms"], single["p50_ms"]) or "-") if original else "-"
        lines.append(f"| Time per example (median) | {single['p50_ms']:.3g} ms | {fp32_time} | {speed} |")
    lines.append("")
    if "not_timed_because" in latency:
        lines.append(f"Not timed: {latency['not_timed_because']}.")
    else:
        machine = latency.get("machine")
        lines.append(f"Latency: onnxruntime on the CPU, {latency['threads']} thread(s), {latency['method']}"
                     + (f"; timed on {describe_machine(machine)}." if machine else "."))
    if metric["per_slice"]:
        lines += ["", f"{metric['label']} per slice of the data:", "", "| Slice | Examples | This model | Original |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {entry['rows']} | {metric_text(metric['name'], entry['value'])} | "
                  f"{metric_text(metric['name'], entry['fp32'])} |" for name, entry in metric["per_slice"].items()]
    return lines


def model_card(figures: dict) -> str:
    """The card for a bundle's figures (bundle.json's)."""
    recipe, model, scoring = figures["recipe"], figures["model"], figures["scoring"]
    base = figures["base_model"]
    warning = []
    if not model["deployable"]:
        nearest = model["nearest_real_recipe"] or {}
        instead = f" The nearest real recipe on the front is **{nearest['name']}**." if nearest.get("name") else ""
        warning = [f"> **Not deployable.** This recipe is {model['not_deployable_because']}.{instead}", ""]
    calibration = (f"Static activation ranges were calibrated on {scoring['calibration_source']}."
                   if scoring["calibration_source"] else "Nothing was calibrated.")
    lines = [
        "---",
        yaml.safe_dump(front_matter(figures), sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {Path(base['name']).stem}: {recipe['name']}",
        "",
        f"{recipe['description']}: a quantized copy of `{base['name']}`, built and measured by quantscope. To publish "
        "it on the Hugging Face Hub, set `base_model` above to the original's Hub id.",
        "",
        *warning,
        "## What was quantized",
        "",
        f"- Base model: `{base['name']}`, {base['size_bytes']:,} bytes, sha256 `{base['sha256']}`",
        f"- Weights and activations: {recipe['description']}",
        f"- Built by: {model['realiser']}",
        f"- Layers left in full precision: {', '.join(model['float_layers']) or 'none'}",
        f"- File: `{model['file']}`, {model['file_bytes']:,} bytes, sha256 `{model['sha256']}`",
        "",
        "## How",
        "",
        "The recipe (also in `recipe.json`):",
        "",
        "```json",
        json.dumps(recipe["settings"], indent=2),
        "```",
        "",
        f"{calibration} Every figure was measured on this file with onnxruntime, on {scoring['rows_scored']} examples "
        f"({scoring['scored_rows']}, `{figures['data']['validation']['file']}`), paired with the original on the same "
        "examples.",
        "",
        "## What it costs",
        "",
        *_costs(figures),
        "",
        "## Checking it",
        "",
        "`bundle.json` holds every figure and the sha256 of each file. `quantscope verify DIR DATA` re-evaluates the "
        "model in a fresh process and exits 0 only when its sha256 and its metric match exactly.",
        "",
    ]
    return "\n".join(lines)
