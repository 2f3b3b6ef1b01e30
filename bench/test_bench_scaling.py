"""How the protocol's costs grow with the job length n and the confidence p (issue 6, suite "scaling").

(a) verifier cost / prover cost, measured side by side, for n in a range of job lengths and p in
    {0.9, 0.99, 0.999} at cheat fraction f = 0.1 (k = 22, 44, 66). One prover run per n; for each
    p a fresh challenge, the response, and the verifier's check (best of 3). The floor is k/n:
    the verifier recomputes k of the n steps.
(b) sizes as n grows: the signed commitment, the response bundle (opened states + multiproof)
    and the multiproof alone, from the same runs; and, without running a kernel, the multiproof
    for k = 66 challenges over trees of 10^2 .. 10^6 leaves (it grows with log n).

The kernel is gemm-int8 at n=512, one layer (2-3 ms a step, 256 KiB states on this machine), so a
3,000-step job runs in seconds; the ratios do not depend on the kernel beyond its step time.

    pytest bench/test_bench_scaling.py --benchmark-only -s
"""

from __future__ import annotations

import random
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
from pocv.bundle import Response
from pocv.challenge import sample_size
from pocv.kernels import resolve_spec
from pocv.merkle import multiproof_size

pytestmark = pytest.mark.bench

KERNEL = "gemm-int8"
PARAMS = {"n": 512, "layers": 1}
STEPS = quick([100, 300], [100, 300, 1000, 3000])
CONFIDENCES = (0.9, 0.99, 0.999)
CHEAT_FRACTION = 0.1
TREE_SIZES = [10**e for e in range(2, 7)]
RESULTS: dict[str, Any] = {}


@pytest.mark.parametrize("steps", STEPS)
def test_verifier_over_prover(benchmark: Any, steps: int) -> None:
    spec = resolve_spec(JobSpec(kernel=KERNEL, steps=steps, seed=5, params=PARAMS))
    d = Path(tempfile.mkdtemp(prefix="pocv-bench-"))
    try:
        prover = Prover(trace_dir=d / "t", key=Keypair())
        t0 = time.perf_counter()
        commitment = prover.run(spec)
        prover_s = time.perf_counter() - t0
        verifier = Verifier(key=Keypair())
        for p in CONFIDENCES:
            challenge = verifier.challenge(commitment, beacon=secrets.token_bytes(32), confidence=p,
                                           cheat_fraction=CHEAT_FRACTION)
            response = prover.respond(challenge)
            data = response.to_bytes()
            times = []
            for _ in range(3):
                t1 = time.perf_counter()
                verdict = verifier.check(commitment, challenge, data)
                times.append(time.perf_counter() - t1)
            assert verdict.passed, verdict
            verifier_s = min(times)
            RESULTS[f"ratio/n={steps}/p={p}"] = {
                "steps": steps, "p": p, "f": CHEAT_FRACTION, "k": challenge.k, "prover_s": prover_s,
                "verifier_s": verifier_s, "ratio": verifier_s / prover_s, "floor": min(challenge.k, steps) / steps,
                "commitment_bytes": len(commitment.to_json().encode()),
                "bundle_bytes": len(data), "proof_bytes": 32 * len(response.proof),
                "opened_states": len(response.states), "state_bytes": len(next(iter(response.states.values()))),
            }
            print(f"\nn={steps} p={p} k={challenge.k}: prover {prover_s:.2f} s, verifier {verifier_s:.3f} s, "
                  f"ratio {verifier_s / prover_s:.4f} (floor {min(challenge.k, steps) / steps:.4f}), "
                  f"bundle {len(data):,} B, proof {32 * len(response.proof):,} B")
        benchmark.pedantic(verifier.check, args=(commitment, challenge, data), rounds=1, iterations=1)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    RESULTS["params"] = {"kernel": KERNEL, **PARAMS}
    write_result("scaling", RESULTS)


def test_proof_sizes(benchmark: Any) -> None:
    """Multiproof hashes for k = 66 challenges (leaves 0, i-1, i) as the tree grows; no kernel runs."""
    k = sample_size(0.999, CHEAT_FRACTION)
    rng = random.Random(11)
    for n in TREE_SIZES:
        steps = n - 1  # the tree holds s_0 .. s_n
        rows = []
        for _ in range(20):
            idx = rng.sample(range(1, steps + 1), min(k, steps))
            leaves = Response.opened_leaves(sorted(idx))
            rows.append(multiproof_size(leaves, n))
        RESULTS[f"proof/{n}"] = {"leaves": n, "k": k, "hashes_mean": sum(rows) / len(rows), "hashes_max": max(rows),
                                 "bytes_mean": 32 * sum(rows) / len(rows)}
    benchmark.pedantic(multiproof_size, args=(Response.opened_leaves(list(range(1, k + 1))), TREE_SIZES[-1]),
                       rounds=3, iterations=1)
    write_result("scaling", RESULTS)
    assert RESULTS[f"proof/{TREE_SIZES[-1]}"]["hashes_mean"] > RESULTS[f"proof/{TREE_SIZES[0]}"]["hashes_mean"]
