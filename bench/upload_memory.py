"""Benchmark: what adding an uploaded model costs the server in memory, as a multiple of the model's size.

A generated MLP of about `--megabytes` MB is added to a fresh workspace with Workspace.add_model, as the dashboard
does after an upload: once as the bytes of one .onnx file, once as the bytes of a zipped model folder (model.onnx
plus its weights as external data). Each case runs in a process of its own that first holds the upload's bytes, as
Streamlit does; the figure is that process's peak resident memory (VmHWM, reset via /proc/self/clear_refs) minus its
resident memory before the upload existed. The dashboard's upload caption quotes these multiples
(dashboard/uploads.py, upload_memory_text).
Run: .venv/bin/python bench/upload_memory.py [--megabytes 200]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def measure(kind: str, megabytes: int) -> None:
    """In this process: build the upload, then add it; print 'kind upload_mb peak_increase_mb'."""
    sys.path.insert(0, str(ROOT))
    import onnx

    from engine.workspace import Workspace
    from tests.builders import mlp_model

    width = int((megabytes * 1e6 / 4 / 2) ** 0.5)  # two width x width layers
    before = _status_mb("VmRSS")
    with tempfile.TemporaryDirectory() as scratch:
        proto = mlp_model(width, depth=3)
        if kind == "onnx":
            upload = proto.SerializeToString()
        else:
            onnx.save(proto, f"{scratch}/model.onnx", save_as_external_data=True, location="model.onnx.data")
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.write(f"{scratch}/model.onnx", "model/model.onnx")
                archive.write(f"{scratch}/model.onnx.data", "model/model.onnx.data")
            upload = buffer.getvalue()
        del proto
        workspace = Workspace.open(f"{scratch}/workspace")
        Path("/proc/self/clear_refs").write_text("5")
        workspace.add_model(upload, f"model.{kind}", "bench")
        print(kind, len(upload) / 1e6, _status_mb("VmHWM") - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--measure", choices=["onnx", "zip"], help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.megabytes)
        return
    print(f"adding a generated model of about {args.megabytes} MB (peak memory over the process before the upload)")
    for kind, words in (("onnx", "one .onnx file"), ("zip", "a zipped folder with external data")):
        done = subprocess.run([sys.executable, __file__, "--measure", kind, "--megabytes", str(args.megabytes)],
                              capture_output=True, text=True, check=True)
        _, upload_mb, peak_mb = done.stdout.split()
        print(f"  {words:<36} upload {float(upload_mb):7.1f} MB   peak {float(peak_mb):7.1f} MB   "
              f"= {float(peak_mb) / float(upload_mb):.1f}x the upload")


if __name__ == "__main__":
    main()
