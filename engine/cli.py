"""`quantscope` on the command line: inspect a model, sweep recipes, print the trade-off table.

Bad input prints one line on stderr and exits with code 2; there is never a traceback for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from engine.dataset import load_dataset
from engine.errors import QuantscopeError
from engine.model import load_model
from engine.recipe import Granularity, Recipe
from engine.sweep import DEFAULT_LATENCY_BATCH, default_grid, grid, sweep, write_results

EXIT_BAD_INPUT = 2


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _activation_bits(text: str) -> int | None:
    return None if text.lower() in ("none", "float", "fp32") else int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantscope", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="summarise a model: inputs, outputs, quantizable layers")
    inspect.add_argument("model", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")

    run = commands.add_parser("sweep", help="quantize with many recipes and measure each artifact")
    run.add_argument("model", type=Path)
    run.add_argument("data", type=Path, help="validation data: .npz, .csv, .parquet or image-folder .zip")
    run.add_argument("--out", type=Path, required=True, help="directory for results.json, results.csv, artifacts/")
    grid_options = run.add_argument_group("grid (default: the standard grid of 10 recipes)")
    grid_options.add_argument("--weights", type=_csv(int), help="weight bits, e.g. 8,4,3 (16 = fp16)")
    grid_options.add_argument("--granularity", type=_csv(Granularity), default=[Granularity.CHANNEL],
                              help="tensor, channel and/or group (default channel)")
    grid_options.add_argument("--activations", type=_csv(_activation_bits), default=[None],
                              help="activation bits: none, 8, 16 (default none = weight-only)")
    grid_options.add_argument("--calibration", type=_csv(str), default=["minmax"],
                              help="minmax, percentile, entropy and/or mse (default minmax)")
    grid_options.add_argument("--group-size", type=int, default=128, help="elements per group (default 128)")
    grid_options.add_argument("--recipe", type=Path, action="append", default=[],
                              help="a recipe JSON file to add (repeatable)")
    run.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for latency (default 1)")
    run.add_argument("--batch", type=int, default=DEFAULT_LATENCY_BATCH, help="the larger latency batch size")
    run.add_argument("--label-column", help="label column of a CSV/Parquet file")
    run.add_argument("--slice-column", help="slice column of a CSV/Parquet file")

    demo = commands.add_parser("demo", help="sweep the sample models with the default grid and print the tables")
    demo.add_argument("--out", type=Path, default=Path("workspace/demo"))
    return parser


def recipes_from(args: argparse.Namespace) -> list[Recipe]:
    recipes = [Recipe.from_json(path.read_text()) for path in args.recipe]
    if args.weights:
        recipes = grid(args.weights, args.granularity, args.activations, args.calibration, args.group_size) + recipes
    return recipes or default_grid()


def _progress_bar(total_label: str):
    bar = tqdm(total=1, desc=total_label, unit="config", file=sys.stderr, leave=False)

    def update(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message)
        bar.refresh()

    return bar, update


TABLE_COLUMNS = {
    "name": "recipe",
    "metric": "metric",
    "size_bytes": "bytes",
    "size_ratio": "x fp32",
    "latency_b1_p50_ms": "b1 p50 ms",
    "latency_b1_p95_ms": "b1 p95 ms",
    "latency_bN_p50_ms": "bN p50 ms",
    "simulated": "simulated",
    "pareto_3d": "pareto",
    "error": "error",
}


def format_table(table: pd.DataFrame) -> str:
    columns = [c for c in TABLE_COLUMNS if c != "error" or table["error"].notna().any()]
    shown = table[columns].rename(columns=TABLE_COLUMNS)
    shown["simulated"] = shown["simulated"].map({True: "simulated"}).fillna("")
    shown["pareto"] = shown["pareto"].map({True: "*"}).fillna("")
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
    timed = table.dropna(subset=["threads"])
    if timed.empty:
        latency = "no row was timed"
    else:
        batch = timed["latency_batch"].dropna()
        latency = f"onnxruntime, {int(timed['threads'].iloc[0])} thread(s)"
        latency += f", bN = batch {int(batch.iloc[0])}" if not batch.empty else ""
    return f"{text}\nmetric = {table['metric_name'].iloc[0]}; latency: {latency}; * = on the 3-D Pareto front"


def run_sweep(model_path: Path, data_path: Path, out: Path, recipes: list[Recipe], **options) -> pd.DataFrame:
    model = load_model(model_path)
    dataset = load_dataset(
        data_path,
        model.summary.inputs,
        label_column=options.pop("label_column", None),
        slice_column=options.pop("slice_column", None),
    )
    bar, update = _progress_bar(model_path.name)
    with bar:
        table = sweep(model, dataset, recipes, out, progress=update, **options)
    write_results(table, out)
    return table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "inspect":
            summary = load_model(args.model).summary
            print(json.dumps(summary.to_dict(), indent=2) if args.json else describe_summary(summary))
        elif args.command == "sweep":
            table = run_sweep(
                args.model, args.data, args.out, recipes_from(args),
                threads=args.threads, batch=args.batch,
                label_column=args.label_column, slice_column=args.slice_column,
            )
            print(format_table(table))
            print(f"results: {args.out / 'results.json'}, {args.out / 'results.csv'}")
        elif args.command == "demo":
            from sample_models.catalog import SAMPLES

            for sample in SAMPLES.values():
                table = run_sweep(sample.model_path, sample.data_path, args.out / sample.name, default_grid())
                print(f"\n== {sample.name}: {sample.description}\n{format_table(table)}")
    except QuantscopeError as error:
        print(f"quantscope: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"quantscope: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def describe_summary(summary) -> str:
    lines = [f"opset {summary.opset}, {summary.params:,} parameters, {summary.bytes:,} bytes"]
    lines += [f"input  {spec.describe()}" for spec in summary.inputs]
    lines += [f"output {spec.describe()}" for spec in summary.outputs]
    lines.append(f"{len(summary.layers)} quantizable layers:")
    lines += [
        f"  {layer.name:<32} {layer.op_type:<14} {str(list(layer.weight_shape)):<20} {layer.weight_bytes:,} bytes"
        for layer in summary.layers
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
