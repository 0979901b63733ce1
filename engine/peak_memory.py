"""The peak memory an onnxruntime session takes, measured in a fresh process; and the session options every
measurement shares.

Why a fresh process: a long-lived worker has loaded models, built artifacts and freed memory its allocator keeps
resident; a session opened there reuses that memory and looks smaller than it is. So engine.measure starts this file
as a small server (it imports onnxruntime and numpy only, nothing of engine, and never opens a session itself), once
per process that measures, and for each measurement the server forks a child: a process that has done nothing yet,
started in milliseconds rather than the half second an interpreter and onnxruntime take to start. The child loads
the inputs, resets the kernel's peak-RSS counter (/proc/self/clear_refs "5"), opens the session, runs each batch size
RUNS_PER_BATCH times and reads its peak (VmHWM) after each. A figure is that peak minus the child's resident memory
just before the session was opened (interpreter, onnxruntime's library and the inputs): what loading the model and
running it costs. Linux only (/proc, fork); elsewhere the parent reports the figure as not measured.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnxruntime as ort

RUNS_PER_BATCH = 3  # onnxruntime plans its memory on the first runs: the peak settles by the third
STATUS = "/proc/self/status"
PEAK_RESET = "/proc/self/clear_refs"
RESET_PEAK = "5"  # what clear_refs takes to set VmHWM back to the current VmRSS


def session_options(threads: int) -> ort.SessionOptions:
    """A stated intra-op thread count, inter-op 1, sequential: how every artifact is timed and measured."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    return options


def _status_bytes(field: str) -> int:
    with open(STATUS) as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    raise OSError(f"{STATUS} has no {field}")


def session_peaks(artifact: str, feeds: list[dict[str, np.ndarray]], threads: int) -> list[int]:
    """Bytes above the process's resident memory before the session: its peak after loading `artifact` and running
    feeds[0], then after also running feeds[1], and so on (each figure includes the ones before)."""
    with open(PEAK_RESET, "w") as reset:
        reset.write(RESET_PEAK)
    before = _status_bytes("VmRSS")
    session = ort.InferenceSession(artifact, session_options(threads), providers=["CPUExecutionProvider"])
    first_output = [session.get_outputs()[0].name]  # what the latency runs compute
    peaks = []
    for feed in feeds:
        for _ in range(RUNS_PER_BATCH):
            session.run(first_output, feed)
        peaks.append(_status_bytes("VmHWM") - before)
    return peaks


def measure(request: dict) -> list[int]:
    """One measurement: request = {"artifact", "threads", "names": each feed's input names, "feeds": .npz files
    holding each feed's arrays in the same order (arr_0, arr_1...), so an input may have any name}."""
    feeds = []
    for feed_names, path in zip(request["names"], request["feeds"], strict=True):
        with np.load(path, allow_pickle=False) as arrays:
            feeds.append({name: arrays[f"arr_{index}"] for index, name in enumerate(feed_names)})
    return session_peaks(request["artifact"], feeds, int(request["threads"]))


def serve() -> None:
    """Read one JSON request per line on stdin; answer each with one JSON line on stdout, {"peaks": [...]} or
    {"error": "..."}, measured in a child forked for it. Ends when stdin closes (its parent has gone)."""
    for line in sys.stdin:
        readable, writable = os.pipe()
        child = os.fork()
        if child == 0:  # the measuring process
            os.close(readable)
            try:
                answer = {"peaks": measure(json.loads(line))}
            except BaseException as error:  # anything: the child must answer, then exit without cleaning up
                answer = {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"}
            with os.fdopen(writable, "w") as out:
                out.write(json.dumps(answer))
            os._exit(0)
        os.close(writable)
        with os.fdopen(readable) as answer:
            text = answer.read()
        _, status = os.waitpid(child, 0)
        if not text:  # killed before answering: the OOM killer, say
            text = json.dumps({"error": f"the measuring process ended with status {status}"})
        print(text, flush=True)


if __name__ == "__main__":
    serve()
