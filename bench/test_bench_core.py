"""Core protocol costs, each a ratio measured side by side in one run.

(a) commitment overhead: time(Prover.run: steps + hashing + trace + signature) / time(bare steps)
(c) verifier cost / prover cost at n = 1000 steps, p = 0.999, f = 0.1 (k = 66; floor 0.066)

A quick run (POCV_BENCH_QUICK=1) takes fewer steps and repeats, and smaller states for (c).

    pytest bench/test_bench_core.py --benchmark-only -s
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from solders.keypair import Keypair

from bench.conftest import quick, write_result
from pocv import JobSpec, Prover, Verifier
from pocv.device import deterministic
from pocv.kernels import kernel_for, resolve_spec

pytestmark = pytest.mark.bench

OVERHEAD_STEPS = quick({"gemm-int8": 16, "mlp-sgd": 48}, {"gemm-int8": 48, "mlp-sgd": 128})
OVERHEAD_REPEATS = quick(3, 6)
#: verifier / prover at n = 1000: the kernels' defaults in the full run, smaller states in a quick one
VOP_PARAMS: dict[str, dict[str, int]] = quick({"gemm-int8": {"n": 1024, "layers": 2}, "mlp-sgd": {"batch": 1024}},
                                              {"gemm-int8": {}, "mlp-sgd": {}})
def _previous() -> dict[str, dict]:
    """Results already on file, so running one test updates its entry and keeps the others."""
    import json

    from bench.conftest import OUT

    try:
        old = json.loads((OUT / "core.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in old.items() if k != "machine" and isinstance(v, dict)}


RESULTS: dict[str, dict] = _previous()


def _bare(spec: JobSpec) -> float:
    k = kernel_for(spec)
    with deterministic():
        t0 = time.perf_counter()
        s = k.init_state(spec)
        for i in range(1, spec.steps + 1):
            s = k.step(s, i, spec)
        return time.perf_counter() - t0


def _proved(spec: JobSpec, key: Keypair) -> float:
    d = Path(tempfile.mkdtemp(prefix="pocv-bench-"))
    try:
        t0 = time.perf_counter()
        Prover(trace_dir=d / "t", key=key).run(spec)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("kernel", sorted(OVERHEAD_STEPS))
def test_commitment_overhead(benchmark, kernel: str) -> None:
    spec = resolve_spec(JobSpec(kernel=kernel, steps=OVERHEAD_STEPS[kernel], seed=1))
    key = Keypair()
    _bare(resolve_spec(JobSpec(kernel=kernel, steps=5, seed=1)))  # warm up
    bare, proved = [], []
    for _ in range(OVERHEAD_REPEATS):  # interleaved, so drift hits both sides alike
        bare.append(_bare(spec))
        proved.append(_proved(spec, key))
    ratio = min(proved) / min(bare)
    benchmark.extra_info.update(bare_s=min(bare), proved_s=min(proved), ratio=ratio)
    benchmark.pedantic(_proved, args=(spec, key), rounds=1, iterations=1)
    RESULTS[f"overhead/{kernel}"] = {"params": dict(spec.params), "steps": spec.steps, "bare_s": min(bare),
                                     "proved_s": min(proved), "ratio": ratio,
                                     "samples": {"bare_s": bare, "proved_s": proved}}
    write_result("core", RESULTS)
    print(f"\n{kernel} {dict(spec.params)}: run {min(bare):.3f} s, run+commit {min(proved):.3f} s, "
          f"overhead ratio {ratio:.4f} (target <= 1.05)")


@pytest.mark.parametrize("kernel", ["gemm-int8", "mlp-sgd"])
def test_verifier_over_prover(benchmark, kernel: str) -> None:
    spec = resolve_spec(JobSpec(kernel=kernel, steps=1000, seed=3, params=VOP_PARAMS[kernel]))
    wk, vk = Keypair(), Keypair()
    d = Path(tempfile.mkdtemp(prefix="pocv-bench-"))
    try:
        prover = Prover(trace_dir=d / "t", key=wk)
        t0 = time.perf_counter()
        commitment = prover.run(spec)
        t_prove = time.perf_counter() - t0
        verifier = Verifier(key=vk)
        challenge = verifier.challenge(commitment, beacon=secrets.token_bytes(32), confidence=0.999,
                                       cheat_fraction=0.1)
        response = prover.respond(challenge).to_bytes()
        times = []
        for _ in range(3):
            t1 = time.perf_counter()
            verdict = verifier.check(commitment, challenge, response)
            times.append(time.perf_counter() - t1)
        assert verdict.passed
        benchmark.pedantic(verifier.check, args=(commitment, challenge, response), rounds=1, iterations=1)
    finally:
        shutil.rmtree(d)
    ratio = min(times) / t_prove
    RESULTS[f"verifier_over_prover/{kernel}"] = {"params": dict(spec.params), "steps": 1000, "k": challenge.k,
                                                 "prover_s": t_prove, "verifier_s": min(times), "ratio": ratio,
                                                 "bundle_bytes": len(response)}
    write_result("core", RESULTS)
    print(f"\n{kernel}: prover {t_prove:.2f} s, verifier {min(times):.3f} s (k={challenge.k}), "
          f"ratio {ratio:.4f} (target <= 0.08, floor {challenge.k / 1000:.3f})")
