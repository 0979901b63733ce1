"""`quantscope` on the command line: inspect a model, sweep recipes, find its sensitive points, ship one, export
PyTorch to ONNX.

`sweep` prints the trade-off table; `sensitivity` the per-point table; `export`, `verify`, `gate` and `exports`
(engine.export.cli) bundle a recipe, check a bundle and gate a recipe in CI.

Bad input prints one line on stderr and exits with code 2; there is never a traceback for it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from engine import mixed, results, sensitivity
from engine.cli_options import add_data_options, add_scheduler_option, add_timing_options
from engine.errors import QuantscopeError, WorkspaceError
from engine.export import cli as export_cli
from engine.from_torch import DEFAULT_OPSET, EXAMPLE_DTYPES, export_from_torch
from engine.data import load_dataset
from engine.measure import capped_at
from engine.model import load_model
from engine.recipe import Granularity, Recipe
from engine.sweep import PRESETS, default_grid, grid
from engine.text import MB
from engine.workspace import JobState, Workspace

EXIT_BAD_INPUT = 2


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _named_file(text: str) -> tuple[str, Path]:
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise argparse.ArgumentTypeError(f"NAME=FILE, e.g. noisy=noisy.npz; got {text!r}")
    return name, Path(path)


def _activation_bits(text: str) -> int | None:
    return None if text.lower() in ("none", "float", "fp32") else int(text)


def _candidate_activations(text: str) -> int | str | None:
    return sensitivity.DYNAMIC if text.lower() == sensitivity.DYNAMIC else _activation_bits(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantscope", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="summarise a model: inputs, outputs, quantizable layers")
    inspect.add_argument("model", type=Path, help="an .onnx file, or a zip of a model folder (.onnx + external data)")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")

    run = commands.add_parser("sweep", help="quantize with many recipes and measure each artifact")
    run.add_argument("model", type=Path, help="an .onnx file, or a zip of a model folder (.onnx + external data)")
    run.add_argument("data", type=Path, help="validation data: .npz, .csv, .parquet or image-folder .zip")
    run.add_argument("--out", type=Path, help="directory for results.json, results.csv, artifacts/ when the job ends")
    grid_options = run.add_argument_group("grid (default: the standard grid of 10 recipes)")
    chosen_by = grid_options.add_mutually_exclusive_group()
    chosen_by.add_argument("--preset", choices=list(PRESETS),
                           help="the recipes of a goal, as on the dashboard's Sweep page, instead of a grid")
    chosen_by.add_argument("--weights", type=_csv(int), help="weight bits, e.g. 8,4,3 (16 = fp16)")
    grid_options.add_argument("--granularity", type=_csv(Granularity), default=[Granularity.CHANNEL],
                              help="tensor, channel and/or group (default channel)")
    grid_options.add_argument("--activations", type=_csv(_activation_bits), default=[None],
                              help="activation bits: none, 8, 16 (default none = weight-only)")
    grid_options.add_argument("--calibration", type=_csv(str), default=["minmax"],
                              help="minmax, percentile, entropy and/or mse (default minmax)")
    grid_options.add_argument("--group-size", type=int, default=128, help="elements per group (default 128)")
    grid_options.add_argument("--recipe", type=Path, action="append", default=[],
                              help="a recipe JSON file to add (repeatable)")
    add_timing_options(run)
    add_data_options(run)
    run.add_argument("--also", type=_named_file, action="append", default=[], metavar="NAME=FILE",
                     help="also score every recipe on this evaluation set (repeatable), e.g. noisy=noisy.npz")
    run.add_argument("--shift", action="append", default=[], metavar="KIND:LEVEL",
                     help="also score every recipe on a synthetic shift of the scored rows (repeatable): "
                          "noise, scale, brightness, contrast or dropout, e.g. noise:0.1")
    run.add_argument("--detach", action="store_true", help="print the job id and return; the job runs on")
    add_scheduler_option(run)

    torch_export = commands.add_parser(
        "from-torch", help="export your own PyTorch model to ONNX by running your code that builds it (needs torch)"
    )
    torch_export.add_argument("target", metavar="FILE.py:FACTORY",
                              help="your Python file and the function in it that returns the torch.nn.Module")
    torch_export.add_argument("--example-shape", type=_csv(int), required=True,
                              help="the shape of one example input, batch first, e.g. 1,3,224,224")
    torch_export.add_argument("--example-dtype", choices=EXAMPLE_DTYPES, default="float32",
                              help="the example input's number type (default float32)")
    torch_export.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    torch_export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    torch_export.add_argument("--dynamic-batch", action="store_true",
                              help="let the model take any batch size, not only the example's")

    sens = commands.add_parser("sensitivity", help="each weight and activation tensor quantized alone and left "
                               "out: which points of the model a recipe hurts")
    sens.add_argument("model", type=Path)
    sens.add_argument("data", type=Path, help="validation data: .npz, .csv, .parquet or image-folder .zip")
    sens.add_argument("--out", type=Path, required=True, help="directory for sensitivity.json and sensitivity.csv")
    sens.add_argument("--bits", type=_csv(int), default=list(sensitivity.DEFAULT_BITS),
                      help="candidate weight bits (default 8,4)")
    sens.add_argument("--granularity", type=_csv(Granularity), default=[Granularity.CHANNEL],
                      help="tensor, channel and/or group (default channel)")
    sens.add_argument("--activations", type=_csv(_candidate_activations),
                      default=list(sensitivity.DEFAULT_ACTIVATIONS),
                      help="none (weight-only), 8, 16 (static) and/or dynamic (default 8)")
    sens.add_argument("--calibration", type=_csv(str), default=["minmax"],
                      help="minmax, percentile, entropy and/or mse (default minmax)")
    add_timing_options(sens, batch=False)
    add_data_options(sens, slices=False)
    add_scheduler_option(sens)

    _add_mixed_parser(commands)

    jobs_command = commands.add_parser("jobs", help="list, show, cancel or resume sweep jobs in the workspace")
    jobs_actions = jobs_command.add_subparsers(dest="action", required=True)
    jobs_actions.add_parser("list", help="every job, newest first")
    for action, text in (("show", "a job's state and its results so far"), ("cancel", "stop a job and its processes"),
                         ("resume", "finish an interrupted, failed or cancelled job")):
        jobs_actions.add_parser(action, help=text).add_argument("job_id")

    export_cli.add_commands(commands)  # export, verify, gate, exports
    return parser


def recipes_from(args: argparse.Namespace) -> list[Recipe]:
    """--preset, else the --weights grid, plus any --recipe files; the default grid when none is given."""
    recipes = [Recipe.from_json(path.read_text()) for path in args.recipe]
    if args.preset:
        recipes = list(PRESETS[args.preset].recipes) + recipes
    elif args.weights:
        recipes = grid(args.weights, args.granularity, args.activations, args.calibration, args.group_size) + recipes
    return recipes or default_grid()


TABLE_COLUMNS = {
    results.NAME: "recipe",
    results.METRIC: "metric",
    results.SIZE_BYTES: "bytes",
    results.SIZE_RATIO: "x fp32",
    results.SINGLE_EXAMPLE.p50: "b1 p50 ms",
    results.SINGLE_EXAMPLE.p95: "b1 p95 ms",
    results.SINGLE_EXAMPLE.runs: "b1 runs",
    results.SINGLE_EXAMPLE.blocks: "b1 blocks",
    results.SINGLE_EXAMPLE.vs_fp32: "b1 x fp32",
    results.BATCH_N.p50: "bN p50 ms",
    results.RAM: "b1 RAM MB",
    results.SIMULATED: "simulated",
    results.PARETO_3D: "pareto",
    results.ERROR: "error",
}


def format_table(table: pd.DataFrame) -> str:
    columns = [c for c in TABLE_COLUMNS if c != results.ERROR or not results.failed_rows(table).empty]
    shown = table[columns].rename(columns=TABLE_COLUMNS)
    shown["b1 RAM MB"] = shown["b1 RAM MB"] / MB
    shown.insert(shown.columns.get_loc("b1 runs"), "b1 +-", [_precision_text(row) for _, row in table.iterrows()])
    for name in results.extra_set_names(table):
        shown.insert(shown.columns.get_loc("bytes"), f"{name} change",
                     [_set_change(row, name) for _, row in table.iterrows()])
    shown["simulated"] = shown["simulated"].map({True: "simulated"}).fillna("")
    shown["pareto"] = shown["pareto"].map({True: "*"}).fillna("")
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
    threads, batch = results.timed_batch_sizes(table)
    if threads is None:
        latency = "no row was timed"
    else:
        latency = f"onnxruntime, {threads} thread(s)" + (f", bN = batch {batch}" if batch is not None else "")
        timed = results.timed_rows(table)
        quantized = [not results.is_reference(row) for _, row in timed.iterrows()]  # fp32's says "timed alone"
        latency += f"; {timed[results.LATENCY_PROTOCOL][quantized if any(quantized) else slice(None)].iloc[0]}"
        latency += ("; b1 +- = the median's 95% interval, between sessions (! = stopped by the time cap first); "
                    "b1 x fp32 = the latency over fp32's timed in the same blocks, the figure to compare across runs")
    memory = results.timed_rows(table)[results.RAM_PROTOCOL].dropna()
    ram = f"; b1 RAM = {memory.iloc[0]}" if not memory.empty else ""
    return f"{text}\nmetric = {results.metric_name(table)}; latency: {latency}{ram}; * = on the 3-D Pareto front"


def _set_change(row: pd.Series, name: str) -> str:
    figures = row.get(results.EXTRA_SETS)
    if not isinstance(figures, dict) or name not in figures:
        return "-"
    return f"{figures[name][results.DELTA]:+.4g}"


def _precision_text(row: pd.Series) -> str:
    precision = results.latency_precision(row)
    if precision is None:
        return "-"
    capped = row.get(results.SINGLE_EXAMPLE.capped)
    return f"{precision:.1%}" + ("!" if isinstance(capped, bool | np.bool_) and capped else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "inspect":
            with tempfile.TemporaryDirectory(prefix="quantscope-inspect-") as scratch:  # where a zip is unpacked
                summary = load_model(args.model, scratch=Path(scratch)).summary
            print(json.dumps(summary.to_dict(), indent=2) if args.json else describe_summary(summary))
        elif args.command == "sweep":
            return sweep_as_job(args)
        elif args.command == "jobs":
            return jobs_command(args)
        elif args.command in export_cli.COMMANDS:
            return export_cli.run(args)
        elif args.command == "sensitivity":
            return sensitivity_command(args)
        elif args.command == "mixed":
            return mixed_command(args)
        elif args.command == "from-torch":
            model = export_from_torch(args.target, tuple(args.example_shape), args.out, args.example_dtype,
                                      args.opset, args.dynamic_batch)
            print(f"wrote {args.out}: {describe_summary(model.summary)}")
    except QuantscopeError as error:
        print(f"quantscope: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"quantscope: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def sensitivity_command(args: argparse.Namespace) -> int:
    """The sensitivity table of the model on the data, with a progress bar; its files in --out. With --scheduler
    it is computed by a job of the workspace on that Dask cluster."""
    if args.scheduler:
        return sensitivity_as_job(args)
    model = load_model(args.model)
    dataset = load_dataset(args.data, model.summary.inputs, label_column=args.label_column)
    calibration = None if args.calibration_data is None else load_dataset(
        args.calibration_data, model.summary.inputs, label_column=args.label_column)
    recipes = sensitivity.candidates(args.bits, args.granularity, args.activations, args.calibration)
    with tqdm(total=1, desc=args.model.name, unit="cell", file=sys.stderr, leave=False) as bar, \
            tempfile.TemporaryDirectory(prefix="quantscope-sensitivity-") as workdir:
        def progress(done: int, total: int, message: str) -> None:
            bar.total, bar.n = total, done
            bar.set_postfix_str(message[:60])

        table = sensitivity.sensitivity_table(model, dataset, recipes, Path(workdir), calibration, args.mask,
                                              args.threads, progress)
    return _wrote_table(table, args.out)


def sensitivity_as_job(args: argparse.Namespace) -> int:
    """The table computed by a sensitivity job of the workspace (here: on the --scheduler's cluster), followed."""
    workspace = Workspace.open()
    model, dataset, calibration = _add_job_inputs(workspace, args)
    job_id = workspace.submit_sensitivity(
        model.id, dataset.id, CLI_OWNER, bits=args.bits, granularities=[g.value for g in args.granularity],
        activations=args.activations, calibrations=args.calibration, threads=args.threads,
        calibration_dataset=calibration and calibration.id, mask=args.mask, scheduler=args.scheduler)
    if (code := followed_to_the_end(workspace, job_id, args.model.name, unit="candidate")) is not None:
        return code
    return _wrote_table(workspace.sensitivity(job_id), args.out)


def _wrote_table(table: sensitivity.SensitivityTable, out: Path) -> int:
    json_path, csv_path = table.write(out)
    print(table.describe())
    print(f"table: {json_path}, {csv_path}")
    if table.rows.empty:
        print("quantscope: nothing measured: no candidate was built with a point to quantize", file=sys.stderr)
        return EXIT_JOB_DID_NOT_FINISH
    return 0


# -- quantscope mixed: the measured mixed-precision curve and the point a budget chooses (engine.mixed) ---------


def _add_mixed_parser(commands) -> None:
    command = commands.add_parser("mixed", help="keep the nodes a recipe breaks precise, squeeze the rest: a curve of "
                                  "measured mixed-precision artifacts and the one that meets a budget")
    command.add_argument("model", type=Path)
    command.add_argument("data", type=Path, help="validation data: .npz, .csv, .parquet or image-folder .zip")
    command.add_argument("--out", type=Path, required=True,
                         help="directory for curve.json, curve.csv, chosen.json and artifacts/")
    command.add_argument("--bits", type=_csv(int), default=list(sensitivity.DEFAULT_BITS),
                         help="weight widths a layer may take, the fewest being the uniform start (default 8,4)")
    command.add_argument("--granularity", default=Granularity.CHANNEL.value, help="tensor or channel (default channel)")
    command.add_argument("--activations", type=_csv(_activation_bits), default=list(sensitivity.DEFAULT_ACTIVATIONS),
                         help="none (weight-only), 8 or 16 (static), or 8,16: 8 bits, a node's activations may move "
                         "to 16 (default 8)")
    budget = command.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-drop", type=float, metavar="D",
                        help="the largest drop of the primary metric from fp32, in its own units (0.01 = one point)")
    budget.add_argument("--max-size-ratio", type=float, metavar="R", help="the largest artifact bytes / fp32 bytes")
    budget.add_argument("--max-latency-ms", type=float, metavar="T", help="the largest median batch-1 latency (ms)")
    command.add_argument("--table", type=Path, help="the sensitivity.json of `quantscope sensitivity` on the same "
                         "model, data and candidates, instead of computing it")
    command.add_argument("--calibration", default="minmax", help="minmax, percentile, entropy or mse (default minmax)")
    add_timing_options(command)
    add_data_options(command, slices=False)
    add_scheduler_option(command)


def _budget(args: argparse.Namespace) -> mixed.Budget:
    return next(kind(value) for kind, value in ((mixed.MaxDrop, args.max_drop),
                                                (mixed.MaxSizeRatio, args.max_size_ratio),
                                                (mixed.MaxLatency, args.max_latency_ms)) if value is not None)


def mixed_command(args: argparse.Namespace) -> int:
    """Measure the curve the budget needs, with a progress bar; exit 1 naming the closest point when none meets it.
    With --scheduler it is measured by a job of the workspace, its sensitivity table on that Dask cluster."""
    budget = _budget(args)
    if args.scheduler:
        return mixed_as_job(args, budget)
    recipes = mixed.curve_candidates(args.bits, args.granularity, args.activations, args.calibration)
    model = load_model(args.model)
    dataset = load_dataset(args.data, model.summary.inputs, label_column=args.label_column)
    calibration = None if args.calibration_data is None else load_dataset(
        args.calibration_data, model.summary.inputs, label_column=args.label_column)
    table = None if args.table is None else mixed.read_table(args.table)
    if table is not None:
        mixed.check_table(table, model, recipes, dataset, calibration)
    with tqdm(total=1, desc=args.model.name, unit="step", file=sys.stderr, leave=False) as bar, \
            tempfile.TemporaryDirectory(prefix="quantscope-mixed-") as workdir:
        def progress(done: int, total: int, message: str) -> None:
            bar.total, bar.n = total, done
            bar.set_postfix_str(message[:60])

        curve = mixed.mixed_curve(model, dataset, recipes, budget, args.out, Path(workdir), table, calibration,
                                  args.mask, args.threads, args.batch, progress, protocol=capped_at(args.latency_cap))
    written = mixed.write_curve(curve, args.out)
    print(format_table(curve.rows))
    print(curve.ladder.describe())
    print(f"curve: {', '.join(str(path) for path in written)}")
    if curve.chosen is None:
        print(f"quantscope: {curve.verdict()}", file=sys.stderr)
        return EXIT_JOB_DID_NOT_FINISH
    print(curve.verdict())
    return 0


def mixed_as_job(args: argparse.Namespace, budget: mixed.Budget) -> int:
    """The curve measured by a mixed job of the workspace (its table on the --scheduler's cluster), followed; the
    files of the in-process command in --out, the artifacts copied there from the workspace's store."""
    if args.table is not None:
        raise WorkspaceError("--table goes without --scheduler: a job borrows the table of a finished sensitivity "
                             "job of the same candidates, or computes it on the cluster")
    workspace = Workspace.open()
    model, dataset, calibration = _add_job_inputs(workspace, args)
    job_id = workspace.submit_mixed(
        model.id, dataset.id, CLI_OWNER, bits=args.bits, granularity=args.granularity, activations=args.activations,
        calibration=args.calibration, threads=args.threads, batch=args.batch, mask=args.mask,
        calibration_dataset=calibration and calibration.id, max_drop=args.max_drop,
        max_size_ratio=args.max_size_ratio, max_latency_ms=args.max_latency_ms, latency_cap=args.latency_cap,
        scheduler=args.scheduler)
    if (code := followed_to_the_end(workspace, job_id, args.model.name, unit="step")) is not None:
        return code
    rows = workspace.results(job_id)
    written = mixed.export_points(rows, args.out)
    print(format_table(rows))
    print(f"curve: {', '.join(str(path) for path in written)}; job {job_id}")
    chosen = results.chosen_point(rows)
    verdict = mixed.budget_verdict(budget, chosen, None if chosen is not None else budget.closest(rows))
    if chosen is None:
        print(f"quantscope: {verdict}", file=sys.stderr)
        return EXIT_JOB_DID_NOT_FINISH
    print(verdict)
    return 0


# -- sweeps as jobs in the workspace ($QUANTSCOPE_HOME or ./workspace) -----------------------------------------

CLI_OWNER = "cli"
EXIT_JOB_DID_NOT_FINISH = 1
EXIT_INTERRUPTED = 130


def sweep_as_job(args: argparse.Namespace) -> int:
    """Submit the sweep as a job; with --detach print its id, otherwise follow it and print the table."""
    workspace = Workspace.open()
    recipes = recipes_from(args)
    model, dataset, calibration = _add_job_inputs(workspace, args)
    extra_sets = [(name, workspace.add_dataset(path, path.name, model.id, CLI_OWNER, label_column=args.label_column,
                                               slice_column=args.slice_column).id) for name, path in args.also]
    job_id = workspace.submit_sweep(model.id, dataset.id, recipes, CLI_OWNER, threads=args.threads,
                                    batch=args.batch, scheduler=args.scheduler,
                                    calibration_dataset_id=calibration and calibration.id, mask=args.mask,
                                    extra_sets=extra_sets, shifts=args.shift, latency_cap=args.latency_cap)
    if args.detach:
        print(job_id)
        return 0
    if (code := followed_to_the_end(workspace, job_id, args.model.name)) is not None:
        return code
    table = workspace.results(job_id)
    print(format_table(table))
    if args.out:
        results.export_results(table, workspace.model_file(model.id), args.out)
        print(f"results: {args.out / 'results.json'}, {args.out / 'results.csv'}")
    print(f"job {job_id}")
    return 0


def _add_job_inputs(workspace: Workspace, args: argparse.Namespace):
    """The command's model, data and calibration data (or None) added to the workspace, for a job."""
    slices = getattr(args, "slice_column", None)
    model = workspace.add_model(args.model, args.model.name, CLI_OWNER)
    dataset = workspace.add_dataset(args.data, args.data.name, model.id, CLI_OWNER,
                                    label_column=args.label_column, slice_column=slices)
    calibration = None if args.calibration_data is None else workspace.add_dataset(
        args.calibration_data, args.calibration_data.name, model.id, CLI_OWNER, label_column=args.label_column,
        slice_column=slices)
    return model, dataset, calibration


def followed_to_the_end(workspace, job_id: str, label: str, unit: str = "config") -> int | None:
    """Follow the job (`follow`); None once it is done, else the exit code, said on stderr: interrupted (the job
    goes on), or it ended without finishing."""
    try:
        job = follow(workspace, job_id, label, unit=unit)
    except KeyboardInterrupt:
        print(f"\njob {job_id} goes on in the background: quantscope jobs show {job_id}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if job.state is not JobState.DONE:
        print(f"quantscope: job {job_id} {job.state}: {job.error or job.message}", file=sys.stderr)
        return EXIT_JOB_DID_NOT_FINISH
    return None


def follow(workspace, job_id: str, label: str, unit: str = "config"):
    """A progress bar on stderr, fed by polling the job's row in SQLite, until the job ends."""
    with tqdm(total=1, desc=label, unit=unit, file=sys.stderr, leave=False) as bar:
        while True:
            job = workspace.wait(job_id, timeout=0.25)
            bar.total, bar.n = job.total, job.done
            bar.set_postfix_str(job.message)
            if job.is_finished:
                return job


def jobs_command(args: argparse.Namespace) -> int:
    workspace = Workspace.open()
    if args.action == "list":
        for job in workspace.jobs():
            print(f"{job.id}  {job.state:<11} {job.done:>3}/{job.total:<3} {_when(job.created)}  {job.owner:<12} "
                  f"{job.error or job.message}")
    elif args.action == "show":
        job = workspace.job(args.job_id)
        params = {key: value for key, value in job.params.items() if key != "recipes"}
        print(f"job {job.id} ({job.kind}, owner {job.owner}): {job.state}, {job.done} of {job.total} configurations")
        print(f"created {_when(job.created)}, started {_when(job.started)}, finished {_when(job.finished)}")
        print(f"parameters: {json.dumps(params)}")
        print(f"message: {job.message}" + (f"\nerror: {job.error}" if job.error else ""))
        if job.kind == "sensitivity":
            if job.state is JobState.DONE:
                print(workspace.sensitivity(job.id).describe())
        elif not (table := workspace.results(job.id)).empty:
            print(format_table(table))
    elif args.action == "cancel":
        workspace.cancel(args.job_id)
        print(f"job {args.job_id}: {workspace.job(args.job_id).state}")
    elif args.action == "resume":
        workspace.resume(args.job_id)
        print(f"job {args.job_id}: resumed; follow it with quantscope jobs show {args.job_id}")
    return 0


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


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
