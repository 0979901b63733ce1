"""The options every measuring command of `quantscope` takes alike (sweep, sensitivity, mixed, export, gate):
how to read the data, what calibrates, what fidelity counts, how latency is timed, and where a job computes. One
home, so that a flag means the same in every command."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.jobs.executor import cpu_count
from engine.masking import AUTO, NO_MASK
from engine.measure import ADAPTIVE, capped_at
from engine.sweep import DEFAULT_LATENCY_BATCH


def thread_count(text: str) -> int:
    """--threads: a number, or 'all' for every core this process may use."""
    if text.lower() == "all":
        return cpu_count()
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a thread count or 'all'; got {text!r}") from None


def latency_cap(text: str) -> float:
    """--latency-cap: seconds of timing per artifact and batch size."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seconds; got {text!r}") from None
    try:
        capped_at(seconds)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return seconds


def add_data_options(parser: argparse.ArgumentParser, slices: bool = True) -> None:
    """--label-column (and --slice-column where the command breaks figures down by slice), --calibration-data,
    --mask-input / --no-mask."""
    parser.add_argument("--label-column", help="label column of a CSV/Parquet file")
    if slices:
        parser.add_argument("--slice-column", help="slice column of a CSV/Parquet file")
    parser.add_argument("--calibration-data", type=Path,
                        help="data for static recipes to calibrate on (same formats); without it, the validation "
                             "set's first rows calibrate and are left out of scoring for every recipe")
    masking = parser.add_mutually_exclusive_group()
    masking.add_argument("--mask-input", dest="mask", metavar="NAME", default=AUTO,
                         help="the attention-mask input whose 0 positions fidelity ignores (default: detected)")
    masking.add_argument("--no-mask", dest="mask", action="store_const", const=NO_MASK,
                         help="fidelity counts every output position, padding included")


def add_timing_options(parser: argparse.ArgumentParser, batch: bool = True) -> None:
    """--threads, and --batch / --no-batch and --latency-cap where the command times artifacts itself."""
    parser.add_argument("--threads", type=thread_count, default=1,
                        help="onnxruntime intra-op threads: a number, or 'all' for every core (default 1)")
    if batch:
        sizes = parser.add_mutually_exclusive_group()
        sizes.add_argument("--batch", type=int, default=DEFAULT_LATENCY_BATCH,
                           help=f"also time batches of this size (default {DEFAULT_LATENCY_BATCH})")
        sizes.add_argument("--no-batch", dest="batch", action="store_const", const=None,
                           help="time single examples only")
        parser.add_argument("--latency-cap", type=latency_cap, default=ADAPTIVE.cap_seconds, metavar="SECONDS",
                            help="time each artifact for at most this long per batch size, in blocks of fresh "
                                 f"sessions until its median's 95%% interval is within "
                                 f"+-{ADAPTIVE.target_precision * 100:g}%% (default {ADAPTIVE.cap_seconds:g})")


def add_scheduler_option(parser: argparse.ArgumentParser) -> None:
    """--scheduler: the job's heavy tasks on a Dask cluster (engine.jobs.executor.DaskExecutor)."""
    parser.add_argument("--scheduler", help="a Dask scheduler (tcp://host:8786) to build and measure on, as a job in "
                                            "the workspace; default: this machine")
