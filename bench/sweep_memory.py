"""Sweep memory: the default sweep of a generated BERT-like text encoder as a job, its wall time and peak memory.

    python bench/sweep_memory.py [--layers 6] [--rows 256] [--baseline REV]

The model is tests/builders.text_encoder_model (input_ids and attention_mask -> last_hidden_state; 6 layers of
hidden size 512 weigh about 92 MB), the data 256 padded sequences of 64 tokens without labels, so every recipe is
scored on its fidelity over the real tokens. An empty workspace adds both and runs the default grid as a job,
with the default options (one worker per core, batch 1 and 32 timed). Its memory is the proportional set size
(PSS, from /proc/PID/smaps_rollup: a page shared by n processes counts 1/n in each) summed over every process of
the job, its runner, the runner's forkserver, the workers and the fresh processes that measure peak memory,
sampled every 0.1 s; printed are its peak, and each kind of process's own peak PSS.
With --baseline REV the same sweep also runs on git revision REV's code, in the same run, side by side.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from revisions import REPOSITORY, check_out  # bench/ is on the path of a script run from it; the engine is not
SAMPLE_SECONDS = 0.1
TIMEOUT_SECONDS = 3600


def side(model: Path, data: Path, home: Path) -> None:
    """In a process of its own, with whichever engine is on the path: the default sweep as a job in `home`."""
    from engine.sweep import default_grid
    from engine.workspace import Workspace

    workspace = Workspace.open(home)
    started = time.perf_counter()
    model_record = workspace.add_model(model, model.name, owner="bench")
    dataset = workspace.add_dataset(data, data.name, model_record.id, owner="bench")
    job_id = workspace.submit_sweep(model_record.id, dataset.id, default_grid(), owner="bench")
    job = workspace.wait(job_id, timeout=TIMEOUT_SECONDS)
    if job.state != "done":
        raise SystemExit(f"the job ended {job.state}: {job.error}")
    table = workspace.results(job_id)
    print(time.perf_counter() - started, table["error"].notna().sum() if "error" in table else 0)


def _pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))


def _kind(pid: int, runners: set[int]) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    if b"engine.jobs.runner" in command:
        runners.add(pid)
        return "runner"
    if b"peak_memory" in command:
        return "memory probe"
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return "forkserver" if parent in runners else "worker"


def job_processes(home: Path) -> list[int]:
    """Every process whose environment names this workspace: the job's runner passes it on to all it starts."""
    marker = f"QUANTSCOPE_HOME={home}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue  # exited, or not ours
    return found


class Sampler(threading.Thread):
    """Sums the PSS of the job's processes every SAMPLE_SECONDS until stopped; keeps the peaks."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home, self.peak, self.by_kind = home, 0, defaultdict(int)
        self.stopped = threading.Event()
        self._runners: set[int] = set()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            total = 0
            for pid in job_processes(self.home):
                try:
                    pss, kind = _pss_bytes(pid), _kind(pid, self._runners)
                except (OSError, StopIteration, IndexError, ValueError):
                    continue
                total += pss
                self.by_kind[kind] = max(self.by_kind[kind], pss)
            self.peak = max(self.peak, total)


def measured(model: Path, data: Path, home: Path, engine_tree: Path) -> tuple[float, int, dict[str, int], int]:
    """(wall seconds, peak summed PSS, peak PSS per kind of process, failed rows) of the sweep run by the engine
    in `engine_tree`."""
    sampler = Sampler(home.resolve())
    sampler.start()
    done = subprocess.run([sys.executable, __file__, "--side", str(model), str(data), str(home.resolve())],
                          env={**os.environ, "PYTHONPATH": str(engine_tree)}, cwd=engine_tree,
                          capture_output=True, text=True)
    sampler.stopped.set()
    sampler.join()
    if done.returncode != 0:
        raise SystemExit(f"the sweep failed: {done.stderr.strip().splitlines()[-1:]}")
    seconds, failed = done.stdout.split()
    return float(seconds), sampler.peak, dict(sampler.by_kind), int(failed)


def inputs(folder: Path, layers: int, rows: int) -> tuple[Path, Path]:
    """The generated model and its padded sequences, written to `folder`."""
    sys.path.insert(0, str(REPOSITORY))
    import numpy as np
    import onnx

    from tests.builders import padded_sequences, text_encoder_model

    onnx.save(text_encoder_model(layers=layers), folder / "text_encoder.onnx")
    ids, mask = padded_sequences(rows, 64, 8000)
    buffer = io.BytesIO()
    np.savez(buffer, input_ids=ids, attention_mask=mask)
    (folder / "sequences.npz").write_bytes(buffer.getvalue())
    return folder / "text_encoder.onnx", folder / "sequences.npz"


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB"


def report(label: str, seconds: float, peak: int, by_kind: dict[str, int], failed: int) -> None:
    kinds = ", ".join(f"{kind} {_gb(pss)}" for kind, pss in sorted(by_kind.items()))
    print(f"  {label:<14} wall {seconds:7.1f} s   peak summed PSS {_gb(peak)}   (largest of each: {kinds})"
          + (f"   {failed} rows failed" if failed else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--baseline", help="a git revision whose code runs the same sweep too, e.g. e54d9a7")
    parser.add_argument("--side", nargs=3, type=Path, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.side:
        side(*args.side)
        return
    with tempfile.TemporaryDirectory(prefix="quantscope-bench-") as scratch:
        scratch = Path(scratch)
        model, data = inputs(scratch, args.layers, args.rows)
        print(f"default sweep of a generated text encoder ({model.stat().st_size / 1e6:.1f} MB, {args.layers} layers) "
              f"on {args.rows} padded sequences of 64 tokens, {os.cpu_count()} cores:")
        sides = [("this checkout", REPOSITORY)]
        if args.baseline:
            sides.append((args.baseline, check_out(args.baseline, scratch)))
        figures = {}
        for label, tree in sides:
            figures[label] = measured(model, data, scratch / f"home-{len(figures)}", tree)
            report(label, *figures[label])
        if args.baseline:
            (this_seconds, this_peak, *_), (base_seconds, base_peak, *_) = figures.values()
            print(f"  {args.baseline} / this checkout: peak memory {base_peak / this_peak:.2f}x, "
                  f"wall time {base_seconds / this_seconds:.2f}x")


if __name__ == "__main__":
    main()
