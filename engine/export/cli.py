"""The export commands of `quantscope`: export, verify, gate, exports list|get. engine.cli adds them and
dispatches here; bad input raises QuantscopeError, which engine.cli prints as one line with exit code 2.

    quantscope export MODEL DATA --recipe R.json --out DIR      measure the recipe as a sweep would, write the bundle
    quantscope export --from-job JOB --row RECIPE_KEY --out DIR  a sweep row's stored artifact and figures
    quantscope verify DIR DATA [--reference FP32.onnx]          exit 0 verified, 1 not, 2 bad input
    quantscope gate MODEL DATA --recipe R.json --max-drop D ... exit 0 pass, 1 fail, 2 error
    quantscope exports list | get ID --out DIR                  the workspace's export history
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

from engine.cli_options import add_data_options, add_timing_options
from engine.errors import QuantscopeError
from engine.export import history
from engine.export.gate import ERROR, Limits, Verdict, gate, write_verdict
from engine.export.sources import MeasureOptions, measure_for_export, source_from_job
from engine.export.verify import verify
from engine.formatting import metric_text, ratio_text
from engine.measure import ADAPTIVE
from engine.recipe import Recipe
from engine.text import size_text

COMMANDS = ("export", "verify", "gate", "exports")
CLI_OWNER = "cli"  # as engine.cli records its sweeps


class UsageError(QuantscopeError):
    """Arguments that do not go together."""


def _measuring_options(parser: argparse.ArgumentParser, timing: bool = True) -> None:
    """How to read the data and measure, as `quantscope sweep` takes them."""
    add_data_options(parser)
    add_timing_options(parser, batch=timing)


def add_commands(commands) -> None:
    """Add export, verify, gate and exports to `quantscope`'s subcommands."""
    export = commands.add_parser("export", help="write a bundle: the measured model, its recipe, figures, report "
                                                "and model card")
    export.add_argument("model", type=Path, nargs="?", help="the ONNX model (with DATA and --recipe)")
    export.add_argument("data", type=Path, nargs="?", help="validation data: .npz, .csv, .parquet or image .zip")
    export.add_argument("--recipe", type=Path, help="the recipe JSON to build and measure, as a sweep would")
    export.add_argument("--from-job", metavar="JOB", help="export a row of this sweep job instead")
    export.add_argument("--row", metavar="RECIPE_KEY", help="the job's row: its recipe key (or the recipe's name)")
    export.add_argument("--out", type=Path, required=True, help="the bundle's directory")
    _measuring_options(export)

    check = commands.add_parser("verify", help="check a bundle: same model bytes and the same metric, recomputed")
    check.add_argument("bundle", type=Path, metavar="DIR")
    check.add_argument("data", type=Path, metavar="DATA", help="the validation data the bundle was measured on")
    check.add_argument("--reference", type=Path, metavar="FP32.onnx",
                       help="the original model: needed when the metric compares with it (data without labels); "
                            "with it, fidelity is checked too")
    check.add_argument("--no-latency", dest="latency", action="store_false", help="do not time the model again")

    ci = commands.add_parser("gate", help="build and measure a recipe and pass or fail it against limits (for CI)")
    ci.add_argument("model", type=Path)
    ci.add_argument("data", type=Path)
    ci.add_argument("--recipe", type=Path, required=True)
    ci.add_argument("--max-drop", type=float, required=True,
                    help="the largest allowed drop of the metric against fp32, in its units (0.01 = 1 point)")
    ci.add_argument("--metric", help="the metric to gate on (default: the primary one, e.g. top1 or mae)")
    ci.add_argument("--max-size-ratio", type=float, help="the largest allowed artifact size over fp32's")
    ci.add_argument("--max-latency-ratio", type=float,
                    help="the largest allowed median latency over fp32's, timed interleaved in the same run")
    ci.add_argument("--verdict", type=Path, metavar="FILE", help="also write the verdict as JSON")
    _measuring_options(ci, timing=False)

    history_command = commands.add_parser("exports", help="the bundles exported from this workspace")
    actions = history_command.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every export, newest first")
    get = actions.add_parser("get", help="write a past export's bundle again")
    get.add_argument("export_id")
    get.add_argument("--out", type=Path, required=True)


def _options(args: argparse.Namespace) -> MeasureOptions:
    return MeasureOptions(args.label_column, args.slice_column, args.calibration_data, args.mask, args.threads,
                          getattr(args, "batch", None), getattr(args, "latency_cap", ADAPTIVE.cap_seconds))


def _recipe(path: Path) -> Recipe:
    return Recipe.from_json(Path(path).read_text())


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS; its exit code."""
    if args.command == "export":
        return _export(args)
    if args.command == "verify":
        verification = verify(args.bundle, args.data, args.reference, args.latency)
        print(verification.line)
        for note in verification.notes:
            print(f"  {note}")
        return verification.code
    if args.command == "gate":
        limits = Limits(args.max_drop, args.metric, args.max_size_ratio, args.max_latency_ratio)
        try:
            recipe = _recipe(args.recipe)
        except (QuantscopeError, OSError) as error:
            recipe, failure = None, error
        verdict = gate(args.model, args.data, recipe, limits, _options(args), progress=True) if recipe else \
            _bad_recipe_verdict(args.recipe, failure)
        print(verdict.line)
        if args.verdict:
            write_verdict(verdict, args.verdict)
        return verdict.code
    return _exports(args)


def _bad_recipe_verdict(path: Path, error: Exception) -> Verdict:
    reason = str(error) if isinstance(error, QuantscopeError) else f"{error.strerror or error}: {path}"
    return Verdict(ERROR, f"ERROR {path}: {reason}")


def _export(args: argparse.Namespace) -> int:
    from engine.workspace import Workspace

    workspace = Workspace.open()
    if args.from_job:
        if args.model or args.data or args.recipe or not args.row:
            raise UsageError("--from-job JOB takes --row RECIPE_KEY and --out, and no MODEL, DATA or --recipe")
        record = history.export_bundle(workspace, source_from_job(workspace, args.from_job, args.row), args.out,
                                       CLI_OWNER)
    else:
        if not (args.model and args.data and args.recipe) or args.row:
            raise UsageError("export MODEL DATA --recipe R.json --out DIR, "
                             "or export --from-job JOB --row KEY --out DIR")
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".quantscope-export-", dir=args.out.parent) as workdir:
            measured = measure_for_export(args.model, args.data, _recipe(args.recipe), Path(workdir), _options(args),
                                          progress=True)
            record = history.export_bundle(workspace, measured.source, args.out, CLI_OWNER)
    print(_summary(record.figures, args.out) + f"; export {record.id} in the workspace's history")
    if not record.figures["model"]["deployable"]:
        print(f"quantscope: warning: not deployable: {_nearest_text(record.figures)}", file=sys.stderr)
    return 0


def _nearest_text(figures: dict) -> str:
    nearest = figures["model"]["nearest_real_recipe"] or {}
    if nearest.get("name"):
        return f"this recipe is simulated; the nearest real recipe on the front is {nearest['name']}"
    return f"this recipe is simulated; {nearest.get('why', 'no real recipe was measured')}"


def _summary(figures: dict, out: Path) -> str:
    metric, model = figures["metric"], figures["model"]
    single = figures["latency"].get("batch_1")
    latency = f", {single['p50_ms']:.3g} ms per example" if single else ""
    size = (f"estimated {ratio_text(model['size_ratio'])} fp32 if packed" if model["size_is_estimate"]
            else f"{ratio_text(model['size_ratio'])} fp32")
    return (f"wrote {out}: {model['file']} ({size_text(model['file_bytes'])}, {size}, "
            f"sha256 {model['sha256'][:12]}), {metric['name']} {metric_text(metric['name'], metric['value'])} "
            f"(fp32 {metric_text(metric['name'], metric['fp32'])}){latency}")


def _exports(args: argparse.Namespace) -> int:
    from engine.workspace import Workspace

    workspace = Workspace.open()
    if args.action == "list":
        for record in workspace.exports():
            metric = record.figures["metric"]
            when = datetime.datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
            source = f"job {record.job_id}" if record.job_id else "measured for export"
            print(f"{record.id}  {when}  {record.owner:<12} {record.figures['base_model']['name']}: {record.name}  "
                  f"{metric['name']} {metric_text(metric['name'], metric['value'])}  "
                  f"{size_text(record.figures['model']['file_bytes'])}  sha256 {record.model_sha256[:12]}  {source}")
        return 0
    files = history.write_files(workspace, args.export_id, args.out)
    print(f"wrote {args.out}: {', '.join(files)}")
    return 0

