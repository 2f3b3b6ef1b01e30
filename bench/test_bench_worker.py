"""The worker's whole cost per kernel (issue 16, suite "worker"), side by side in one run.

For every built-in kernel at its default size (smaller states in a quick run):

(a) in-run commitment overhead: ``Prover.run`` (steps + hashing + trace + signature, with the
    committer thread and the default policy) / the bare steps, interleaved, best of repeats;
    also the synchronous committer (``background=False``) for comparison;
(b) answering: one run keeping every state (c = 1), then ``respond`` to one challenge of
    k = 66 as if only every c-th state were kept, c = 1, 2, 4, 8, 16 (a trace of every state
    holds every c-th one: the prover reads only checkpoints at multiples of c), with the disk
    each c would use; respond / run per c;
(b') one run at the default policy as it is: the states it kept (``auto`` is best effort: a state
    whose write would make the step wait for the disk is not kept), its disk, its respond / run;
(c) the worker's whole cost: (run + commit + respond) / bare run at the default policy (the
    respond of (b')), and the verifier's: checking that response / bare run.

    POCV_BENCH_QUICK=1 pytest bench/test_bench_worker.py --benchmark-only -s
    POCV_WORKER_STEPS=1000 pytest bench/test_bench_worker.py --benchmark-only -s   # the full figures

Environment: ``POCV_BENCH_QUICK`` and ``POCV_BENCH_OUT`` as for every suite (bench/conftest.py);
``POCV_WORKER_STEPS`` the steps of each job (default 40 quick, 200 full); ``POCV_WORKER_KERNELS``
a comma-separated list of kernels to measure (default every built-in kernel; the entries of the
others already on file are kept).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair

from bench.conftest import quick, write_result
from pocv import JobSpec, Prover, Verifier
from pocv.device import deterministic
from pocv.encoding import encoded_size
from pocv.errors import SpecError
from pocv.kernels import kernel_for, kernel_names, resolve_spec
from pocv.trace import DEFAULT_CHECKPOINT_POLICY, TraceStore, recompute_steps

pytestmark = pytest.mark.bench

STEPS = int(os.environ.get("POCV_WORKER_STEPS") or quick(40, 200))
REPEATS = quick(3, 3)
INTERVALS = (1, 2, 4, 8, 16)
#: quick sizes: a step of tens of ms on a 2-core VM without AVX-512 (where int8 matmuls run
#: ~100x slower than with VNNI, so gemm-int8 shrinks most)
QUICK_PARAMS: dict[str, dict[str, int]] = {
    "gemm-fp32": {"n": 512}, "gemm-fp32-exact": {"n": 512}, "gemm-int8": {"n": 256, "layers": 1},
    "heat2d": {"n": 256, "substeps": 64}, "mlp-sgd": {"batch": 256}}


def _previous() -> dict[str, Any]:
    """Entries already on file, so running one kernel updates its entry and keeps the others."""
    from bench.conftest import OUT

    try:
        old = json.loads((OUT / "worker.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in old.items() if k != "machine" and isinstance(v, dict)}


RESULTS: dict[str, Any] = _previous()


def _spec(kernel: str) -> JobSpec:
    params = quick(QUICK_PARAMS.get(kernel, {}), {})
    return resolve_spec(JobSpec(kernel=kernel, steps=STEPS, seed=1, params=params))


#: CPU seconds of this process (every thread), beside the wall clock: on a shared machine the
#: wall clock also counts the time other processes held the cores; CPU time does not, so
#: (run + commit CPU) / (bare CPU) is the overhead a busy machine would see, robust to the load
CPU: list[tuple[float, float]] = []


def _bare(spec: JobSpec) -> float:
    k = kernel_for(spec)
    with deterministic():
        t0, c0 = time.perf_counter(), time.process_time()
        s = k.init_state(spec)
        for i in range(1, spec.steps + 1):
            s = k.step(s, i, spec)
        CPU.append((0.0, time.process_time() - c0))
        return time.perf_counter() - t0


def _proved(spec: JobSpec, **kw: Any) -> float:
    d = Path(tempfile.mkdtemp(prefix="pocv-bench-"))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        Prover(trace_dir=d / "t", key=Keypair(), **kw).run(spec)
        CPU.append((1.0 if kw.get("background", True) else 2.0, time.process_time() - c0))
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(d)


def _disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _kernels() -> list[str]:
    wanted = [k.strip() for k in os.environ.get("POCV_WORKER_KERNELS", "").split(",") if k.strip()]
    unknown = sorted(set(wanted) - set(kernel_names()))
    if unknown:
        raise pytest.UsageError(f"POCV_WORKER_KERNELS names unknown kernels {unknown}; known: {kernel_names()}")
    return wanted or kernel_names()


@pytest.mark.parametrize("kernel", _kernels())
def test_worker_cost(benchmark: Any, kernel: str) -> None:
    try:
        spec = _spec(kernel)
    except SpecError as e:  # a kernel that needs artifacts (a model) has no job without them
        pytest.skip(f"{kernel}: no job at its default parameters without artifacts ({e})")
    k = kernel_for(spec)
    state_bytes = encoded_size(k.schema(spec))
    default_c = DEFAULT_CHECKPOINT_POLICY.interval(spec.steps, state_bytes)
    _bare(resolve_spec(JobSpec(kernel=kernel, steps=2, seed=1, params=dict(spec.params))))  # warm up
    bare, bg, sync = [], [], []
    CPU.clear()
    for _ in range(REPEATS):  # interleaved, so drift hits every side alike
        bare.append(_bare(spec))
        bg.append(_proved(spec))
        sync.append(_proved(spec, background=False))
    run_s = min(bg)
    cpu = {w: min(c for k_, c in CPU if k_ == w) for w in (0.0, 1.0, 2.0)}
    d = Path(tempfile.mkdtemp(prefix="pocv-bench-"))
    try:
        # (b') a run at the default policy as it is, and its answer: the states it kept (a
        # best-effort policy keeps fewer where the disk cannot keep up) and what answering costs
        t0 = time.perf_counter()
        dflt = Prover(trace_dir=d / "default", key=Keypair())
        dflt_commitment = dflt.run(spec)
        dflt_run_s = time.perf_counter() - t0
        dflt_kept = TraceStore.open(d / "default").checkpoints()
        dflt_challenge = Verifier(key=Keypair()).challenge(dflt_commitment, beacon=secrets.token_bytes(32))
        t0 = time.perf_counter()
        dflt.respond(dflt_challenge)
        dflt_respond_s = time.perf_counter() - t0
        default_run = {"run_s": dflt_run_s, "ratio": dflt_run_s / min(bare), "kept": len(dflt_kept),
                       "due": spec.steps // default_c + 1, "disk_bytes": _disk(d / "default"),
                       "respond_s": dflt_respond_s, "respond_over_run": dflt_respond_s / run_s}
        shutil.rmtree(d / "default")
        prover = Prover(trace_dir=d / "t", key=Keypair(), checkpoint="all")
        commitment = prover.run(spec)
        verifier = Verifier(key=Keypair())
        challenge = verifier.challenge(commitment, beacon=secrets.token_bytes(32))
        store_meta = d / "t" / "trace.json"
        meta = json.loads(store_meta.read_text())
        leaves_bytes = (d / "t" / "leaves.bin").stat().st_size
        per_c: dict[str, Any] = {}
        for c in INTERVALS:
            meta["checkpoint_every"] = c  # read only the checkpoints at multiples of c
            store_meta.write_text(json.dumps(meta))
            t0 = time.perf_counter()
            response = prover.respond(challenge)
            respond_s = time.perf_counter() - t0
            kept = len([j for j in TraceStore.open(d / "t").checkpoints() if j % c == 0])
            per_c[str(c)] = {"respond_s": respond_s, "respond_over_run": respond_s / run_s,
                             "disk_bytes": kept * state_bytes + leaves_bytes, "checkpoints": kept,
                             "expected_recomputed_steps": challenge.k * recompute_steps(c)}
        bundle = response.to_bytes()
        bundle_bytes = len(bundle)
        verify_s = []
        for _ in range(2):
            t0 = time.perf_counter()
            verdict = verifier.check(commitment, challenge, bundle)
            verify_s.append(time.perf_counter() - t0)
        assert verdict.passed, verdict
        benchmark.pedantic(prover.respond, args=(challenge,), rounds=1, iterations=1)
    finally:
        shutil.rmtree(d)
    # the worker's whole cost at the default policy: its answer from the states that run kept
    whole = (run_s + default_run["respond_s"]) / min(bare)
    RESULTS[f"worker/{kernel}"] = {
        "params": dict(spec.params), "mode": k.mode, "steps": spec.steps, "k": challenge.k, "state_bytes": state_bytes,
        "bare_s": min(bare), "run_s": run_s, "run_sync_s": min(sync), "ratio": run_s / min(bare),
        "ratio_sync": min(sync) / min(bare), "default_policy": DEFAULT_CHECKPOINT_POLICY.describe(),
        "default_c": default_c, "default_run": default_run, "respond": per_c, "whole_over_bare": whole,
        "bundle_bytes": bundle_bytes,
        "verify_s": min(verify_s), "verifier_over_bare": min(verify_s) / min(bare),
        "cpu_s": {"bare": cpu[0.0], "run": cpu[1.0], "run_sync": cpu[2.0]},
        "cpu_ratio": cpu[1.0] / cpu[0.0], "cpu_ratio_sync": cpu[2.0] / cpu[0.0],
        "samples": {"bare_s": bare, "run_s": bg, "run_sync_s": sync},
        # how shared the machine was (figures from a loaded machine are noisier, not biased: every
        # side is interleaved and the best of each kept)
        "load_avg_1m": os.getloadavg()[0], "cores": os.cpu_count()}
    write_result("worker", RESULTS)
    print(f"\n{kernel} {dict(spec.params)} n={spec.steps}: bare {min(bare):.3f} s, run+commit {run_s:.3f} s "
          f"(ratio {run_s / min(bare):.4f}; synchronous {min(sync) / min(bare):.4f}; CPU time "
          f"{cpu[1.0] / cpu[0.0]:.4f}); default c={default_c}; "
          + ", ".join(f"c={c}: respond/run {v['respond_over_run']:.3f} disk {v['disk_bytes'] / 2**20:.0f} MiB"
                      for c, v in per_c.items())
          + f"; default run kept {default_run['kept']} of {default_run['due']} states due, "
          f"{default_run['disk_bytes'] / 2**20:.0f} MiB, respond/run {default_run['respond_over_run']:.3f}; "
          f"whole/bare {whole:.3f}")
    assert run_s > 0
    assert all(v["respond_s"] > 0 for v in per_c.values())
