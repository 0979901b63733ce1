"""What a measurement ran on: this machine's CPU and instruction sets, and the software that measured.

A latency means little without the CPU it was timed on (int8 kernels need VNNI or AMX to pay off), and a
metric is exact only for one onnxruntime: rows record both (engine.results.MACHINE, MEASURED_WITH), and
export bundles repeat them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import cache
from importlib import metadata
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
ROW_SHAPING_PACKAGES = ("quantscope", "onnxruntime", "onnx")
ENGINE_DIR = Path(__file__).resolve().parent
NOT_ROW_SHAPING = ("cli.py", "jobs/", "store/", "export/")  # code that moves rows around without computing them
# Instruction sets that decide which onnxruntime kernels run, in the order they were added to CPUs. x86: vector
# widths, fused multiply-add, the int8 dot products (VNNI) and matrix units (AMX); Arm: NEON, its int8 dot product,
# int8 matrix multiply and SVE.
KERNEL_INSTRUCTION_SETS = (
    "sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "i8mm", "sve", "sve2",
)


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's 'key : value' lines of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def machine(cpuinfo: str | None = None) -> dict:
    """{"cpu": model name, "instruction_sets": [...], "logical_cpus": n, "architecture": ...} of this machine, or
    of the given /proc/cpuinfo text."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:  # not Linux: the model name from the platform, no flags
            cpuinfo = ""
    fields = _cpuinfo_fields(cpuinfo)
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "cpu": fields.get("model name") or fields.get("Model") or platform.processor() or "unknown",
        "instruction_sets": [name for name in KERNEL_INSTRUCTION_SETS if name in flags],
        "logical_cpus": os.cpu_count(),
        "architecture": platform.machine(),
    }


@cache
def machine_json() -> str:
    """This machine, as the JSON text a timed row carries."""
    return json.dumps(machine(), sort_keys=True)


@cache
def engine_source_digest() -> str:
    """A digest of the engine code that computes rows: what changes them in an editable install, where the code
    changes without the version number."""
    digest = hashlib.sha256()
    for path in sorted(ENGINE_DIR.rglob("*.py")):
        name = path.relative_to(ENGINE_DIR).as_posix()
        if not name.startswith(NOT_ROW_SHAPING):
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@cache
def software() -> dict:
    """The versions that shape a measured row: quantscope, onnxruntime and onnx, and the engine's source digest."""
    return {**{name: metadata.version(name) for name in ROW_SHAPING_PACKAGES}, "engine_source": engine_source_digest()}


@cache
def software_json() -> str:
    """The software, as the JSON text every measured row carries."""
    return json.dumps(software(), sort_keys=True)


def describe_machine(figures: dict) -> str:
    """'Intel(R) Xeon(R) Processor (avx2, avx512_vnni, amx_int8), 2 logical CPUs'."""
    sets = ", ".join(figures.get("instruction_sets") or []) or "no vector extensions recorded"
    return f"{figures.get('cpu', 'unknown CPU')} ({sets}), {figures.get('logical_cpus')} logical CPUs"
