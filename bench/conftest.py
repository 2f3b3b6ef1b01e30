"""Benchmarks: run with `pocv bench [--quick]` or `pytest bench --benchmark-only` (never part of the test run).

Each suite writes its figures to ``<results>/<name>.json`` (``bench/results`` unless the
``POCV_BENCH_OUT`` environment variable names another directory) with a ``machine`` block naming
the machine, the commit and the library versions, and ``python -m bench.report`` turns those
files into ``bench/REPORT.md`` with PNG plots.

``POCV_BENCH_QUICK=1`` (``pocv bench --quick``) asks every suite for its small version: fewer
sizes and repeats, the same figures. Each result records which one it was.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from pocv.store import atomic_write

OUT = Path(os.environ.get("POCV_BENCH_OUT") or Path(__file__).parent / "results")
QUICK_ENV = "POCV_BENCH_QUICK"
QUICK = os.environ.get(QUICK_ENV) == "1"
#: libraries whose versions every result names
LIBRARIES = ("torch", "numpy", "numba", "numba-cuda", "blake3", "solders", "solana", "pymerkle", "toploc", "ezkl",
             "pytest-benchmark", "matplotlib")


def quick(small: Any, full: Any) -> Any:
    """``small`` in a quick run, ``full`` otherwise."""
    return small if QUICK else full


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty",
                               "--abbrev=12"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _gpu(fp: dict[str, Any]) -> str | None:
    gpus = fp.get("gpus") or []
    if not gpus:
        return None
    g = gpus[0]
    mem = g.get("memory_total_bytes")
    return (f"{len(gpus)}x {g.get('name')} ({mem / 2**30:.0f} GiB, driver {fp.get('driver_version')}, "
            f"CUDA {fp.get('cuda_driver_version')})" if mem else f"{len(gpus)}x {g.get('name')}")


def machine() -> dict[str, Any]:
    """The block every result carries: host, GPU fingerprint (if any), commit, versions, mode, time."""
    import torch

    from pocv.device import fingerprint

    fp = fingerprint()
    host = fp.get("host", fp)
    return {"cpu": host.get("cpu") or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": _gpu(fp), "commit": _commit(), "quick": QUICK,
            "versions": _versions(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``<results>/<name>.json`` atomically (a killed run never leaves half a file)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    atomic_write(path, (json.dumps({"machine": machine(), **data}, indent=2) + "\n").encode())
    return path
