"""Peak memory of answering and checking a challenge whose answer exceeds a memory budget
(issue 11 point 5: "neither side holds more than a bounded number of states"; suite "memory").

One job per comparison mode with 16 MiB states, challenged at the default k = 66 (p = 0.999,
f = 0.1): the exact kernel's answer opens every state whole (``whole=True``, a valid answer the
verifier judges the same, 1.56 GB: its default answer opens one state per run of consecutive
challenged steps, ~0.4 GB at 100 steps, under the budget), the tolerance kernel's s_(i-1) and
s_i (1.53 GB); both exceed MEMORY_BUDGET (1 GiB), set here as the memory a worker or verifier may
spend on one answer. ``pocv``'s worker writes the bundle as its states
come (``Prover.respond_to``) and the verifier reads it in place (a bundle file's states are read
when checked), each in its own child process, whose peak RSS (VmHWM: ``ru_maxrss`` would keep the
parent's peak across exec) is reported beside
the RSS of the same process before answering (torch and pocv imported, the job loaded) and the
state size: what answering adds should be a few states, not k.

    POCV_BENCH_OUT=DIR pytest bench/test_bench_memory.py --benchmark-only -s
    POCV_BENCH_QUICK=1 ...   # 4 MiB states, k = 24

Environment: ``POCV_BENCH_QUICK`` and ``POCV_BENCH_OUT`` as for every suite (bench/conftest.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair

from bench.conftest import quick, write_result
from pocv import JobSpec, Prover
from pocv.encoding import encoded_size
from pocv.kernels import kernel_for, resolve_spec

pytestmark = pytest.mark.bench

#: what a worker or a verifier may spend on one answer here; each answer below is larger
MEMORY_BUDGET = 1 << 30
N = quick(1024, 2048)  # 4 MiB / 16 MiB fp32 states
K = quick(24, 66)
STEPS = quick(40, 100)
JOBS = {
    "exact": {"kernel": "heat2d", "steps": STEPS, "seed": 5, "params": {"n": N, "substeps": 1}},
    "tolerance": {"kernel": "gemm-fp32", "steps": STEPS, "seed": 5, "params": {"n": N}},
}

_CHILD = r"""
import json, sys, time
from pathlib import Path
from solders.keypair import Keypair
from pocv import Prover, Verifier
from pocv.store import load_commitment

mode, trace, k, out, whole = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5] == "whole"
verifier = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
c = load_commitment(trace / "commitment.json")
ch = verifier.challenge(c, beacon=bytes([9]) * 32, k=k)
p = Prover(trace_dir=trace, key=Keypair.from_seed(bytes([1]) * 32))
def status(field):  # bytes; VmHWM is this process image's peak (ru_maxrss keeps the parent's across exec)
    line = next(x for x in open("/proc/self/status") if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024
base, base_peak = status("VmRSS"), status("VmHWM")
t0 = time.perf_counter()
if mode == "respond":
    with out.open("wb") as f:
        p.respond_to(ch, f, whole=whole)
    ok = True
else:
    with out.open("rb") as f:
        ok = verifier.check(c, ch, f).passed
print(json.dumps({"base_bytes": base, "base_peak_bytes": base_peak, "peak_bytes": status("VmHWM"),
                  "bundle_bytes": out.stat().st_size, "seconds": time.perf_counter() - t0, "passed": ok}))
"""

RESULTS: dict[str, Any] = {}


def _child(mode: str, trace: Path, out: Path, k: int = K, whole: bool = False) -> dict[str, Any]:
    """``whole``: the worker opens every state whole (the verifier reads whatever the file holds)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(trace), str(k), str(out),
                           "whole" if whole else "default"], capture_output=True,
                          text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", list(JOBS))
def test_answer_memory(benchmark: Any, mode: str) -> None:
    spec = resolve_spec(JobSpec.from_dict(JOBS[mode]))
    state = encoded_size(kernel_for(spec).schema(spec))
    work = Path(tempfile.mkdtemp(prefix="pocv-bench-memory-"))
    try:
        trace = work / "trace"
        t0 = time.perf_counter()
        Prover(trace_dir=trace, key=Keypair.from_seed(bytes([1]) * 32)).run(spec)
        run_s = time.perf_counter() - t0
        out, one = work / "response.pocv", work / "one.pocv"
        whole = mode == "exact"  # its default answer (one state per run of steps) fits the budget
        runs = {"worker": (_child("respond", trace, one, 1, whole), _child("respond", trace, out, K, whole)),
                "verifier": (_child("verify", trace, one, 1),
                             benchmark.pedantic(_child, args=("verify", trace, out), rounds=1, iterations=1))}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bundle = runs["worker"][1]["bundle_bytes"]
    assert runs["verifier"][1]["passed"], runs["verifier"][1]
    assert runs["verifier"][0]["passed"], runs["verifier"][0]
    entry: dict[str, Any] = {"kernel": spec.kernel, "params": dict(spec.params), "steps": spec.steps, "k": K,
                             "state_bytes": state, "bundle_bytes": bundle, "budget_bytes": MEMORY_BUDGET,
                             "run_s": run_s, "answer": "every state whole" if whole else "default"}
    for side, (r1, r) in runs.items():
        # what answering adds over the process before it, and what k steps add over one step
        added, over_one = r["peak_bytes"] - r["base_bytes"], r["peak_bytes"] - r1["peak_bytes"]
        entry[side] = {"base_bytes": r["base_bytes"], "base_peak_bytes": r["base_peak_bytes"], "peak_bytes": r["peak_bytes"], "peak_k1_bytes": r1["peak_bytes"],
                       "added_bytes": added, "added_states": added / state, "over_k1_states": over_one / state,
                       "seconds": r["seconds"], "within_budget": r["peak_bytes"] <= MEMORY_BUDGET}
        print(f"\n{mode} {spec.kernel} n={N}: {side} peak RSS {r['peak_bytes'] / 2**20:.0f} MiB for a "
              f"{bundle / 2**30:.2f} GiB answer (k = {K}), {r1['peak_bytes'] / 2**20:.0f} MiB at k = 1; before "
              f"answering {r['base_bytes'] / 2**20:.0f} MiB; +{added / state:.1f} states of {state / 2**20:.0f} MiB "
              f"in all, +{over_one / state:.1f} over k = 1; budget {MEMORY_BUDGET / 2**30:.0f} GiB")
    RESULTS[mode] = entry
    write_result("memory", {"budget_bytes": MEMORY_BUDGET, **RESULTS})
