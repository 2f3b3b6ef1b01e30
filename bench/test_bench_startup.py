"""Start-up cost of the CLI, side by side with a bare Python (issue 10's light-import targets).

Each figure is a whole process, measured in one run beside ``python -c pass``: wall time (median
of several runs) and peak RSS (``ru_maxrss`` of the child). ``pocv verify`` of a small gemm-int8
job is measured whole and split into its imports (``python -c "import pocv.cli._core,
pocv.check, pocv.kernels.gemm_int8"``) and the rest. Writes ``<results>/startup.json``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.conftest import OUT, QUICK, machine, quick, write_result

RUNS = quick(3, 9)
TARGET_HELP_RATIO = 5.0  # pocv --help within 5x of python -c pass
TARGET_HELP_RSS_MIB = 60.0


def _measure(cmd: list[str], runs: int = RUNS, env: dict[str, str] | None = None) -> dict[str, float]:
    times, peak = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(cmd, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - t0)
        assert done.returncode in (0, 1), done.stderr.decode()[-400:]
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    return {"seconds": statistics.median(times), "min_seconds": min(times)}


def _peak_rss_mib(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Peak RSS of one run of ``cmd`` alone, through a fresh intermediate process."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=env, check=True)
    return int(done.stdout.strip()) / 1024


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("startup")
    pocv = [sys.executable, "-m", "pocv"]
    env = {**os.environ, "POCV_CHALLENGE_BOOK": str(d / "book")}
    for who in ("worker", "verifier"):
        subprocess.run([*pocv, "keygen", "-o", d / f"{who}.json"], check=True, capture_output=True)
    (d / "job.json").write_text(json.dumps({"kernel": "gemm-int8", "steps": 64, "seed": 1,
                                            "params": {"n": 64, "layers": 1}}))
    subprocess.run([*pocv, "run", d / "job.json", "--trace", d / "t", "-k", d / "worker.json", "-q",
                    "-o", d / "c.json"], check=True, capture_output=True, env=env)
    subprocess.run([*pocv, "challenge", d / "c.json", "--beacon", "random", "-k", d / "verifier.json",
                    "-o", d / "ch.json"], check=True, capture_output=True, env=env)
    subprocess.run([*pocv, "respond", d / "t", d / "ch.json", "-k", d / "worker.json", "-q", "-o", d / "r.pocv"],
                   check=True, capture_output=True, env=env)
    return {"dir": d, "env": env}  # type: ignore[dict-item]


def test_startup(benchmark: Any, job: dict[str, Any]) -> None:
    d, env = job["dir"], job["env"]
    py = [sys.executable]
    pocv = [str(Path(sys.executable).with_name("pocv"))]
    cases = {
        "python -c pass": [*py, "-c", "pass"],
        "pocv --help": [*pocv, "--help"],
        "pocv --version": [*pocv, "--version"],
        "pocv keygen": [*pocv, "keygen", "-o", str(d / "k.json")],
        "pocv verify (small gemm-int8)": [*pocv, "verify", str(d / "c.json"), str(d / "ch.json"), str(d / "r.pocv"),
                                          "-k", str(d / "verifier.json"), "-q", "-o", str(d / "v.json")],
        "imports of pocv verify": [*py, "-c", "import pocv.cli._core, pocv.check, pocv.kernels.gemm_int8"],
    }
    figures: dict[str, dict[str, float]] = {}
    for name, cmd in cases.items():
        if name == "pocv keygen":
            (d / "k.json").unlink(missing_ok=True)
            figures[name] = _measure(cmd, runs=1, env=env)
            (d / "k.json").unlink(missing_ok=True)
        else:
            figures[name] = _measure(cmd, env=env)
        if name != "pocv keygen":
            figures[name]["peak_rss_mib"] = _peak_rss_mib(cmd, env=env)
    benchmark.pedantic(lambda: subprocess.run(cases["pocv --help"], capture_output=True), rounds=1, iterations=1)
    base = figures["python -c pass"]["seconds"]
    ratios = {name: f["seconds"] / base for name, f in figures.items()}
    verify = figures["pocv verify (small gemm-int8)"]["seconds"]
    imports = figures["imports of pocv verify"]["seconds"]
    result = {
        "machine": machine(),
        "quick": QUICK,
        "figures": figures,
        "ratio_to_bare_python": ratios,
        "verify_import_share": imports / verify,
        "targets": {"help_ratio_max": TARGET_HELP_RATIO, "help_rss_mib_max": TARGET_HELP_RSS_MIB},
        "met": {"help_ratio": ratios["pocv --help"] <= TARGET_HELP_RATIO,
                "help_rss": figures["pocv --help"]["peak_rss_mib"] <= TARGET_HELP_RSS_MIB},
    }
    write_result("startup", result)
    print(json.dumps(result, indent=2))
    assert (OUT / "startup.json").is_file()
