"""Kernel costs, each measured side by side in one run (issue 4, "Benchmarks").

(a) step time per kernel at its default parameters on this device, beside the time to hash the
    state (compute should dominate hashing by > 20x for the commitment overhead to stay <= 5%);
(b) cost of exactness: gemm-fp32-exact's fixed-order numba product vs the vendor float32 matmul
    (torch/MKL) at 512^3, same threads (target: within 4x);
(c) Freivalds check vs recomputing the step at 1024^3 (target: <= 5% of the recompute, which is
    the step plus the elementwise comparison the verifier would do instead), with warm caches and
    with caches evicted before each call (both sides alike).

    pytest bench/test_bench_kernels.py --benchmark-only -s
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from bench.conftest import quick, write_result
from pocv.encoding import state_digest
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, kernel_names, resolve_spec

pytestmark = pytest.mark.bench

RESULTS: dict[str, Any] = {}
REPEATS = quick(5, 15)


def _best(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _interleaved(a: Callable[[], object], b: Callable[[], object], repeats: int = REPEATS) -> tuple[float, float]:
    """Best times of a and b, measured alternately so load drift hits both alike."""
    a()
    b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return min(ta), min(tb)


@pytest.mark.parametrize("kernel", kernel_names())
def test_step_time(benchmark, kernel: str) -> None:
    spec = resolve_spec(JobSpec(kernel=kernel, steps=1000, seed=1))
    k = kernel_for(spec)
    s = k.init_state(spec)
    for i in range(1, 3):
        s = k.step(s, i, spec)
    step_s = _best(lambda: k.step(s, 3, spec))
    hash_s = _best(lambda: state_digest(s))
    nbytes = sum(t.numel() * t.element_size() if isinstance(t, torch.Tensor) else t.nbytes for t in s.values())
    benchmark.extra_info.update(step_ms=step_s * 1e3, hash_ms=hash_s * 1e3, state_bytes=nbytes)
    benchmark.pedantic(k.step, args=(s, 3, spec), rounds=3, iterations=1)
    RESULTS[f"step/{kernel}"] = {"params": dict(spec.params), "mode": k.mode, "step_ms": step_s * 1e3,
                                 "hash_ms": hash_s * 1e3, "state_bytes": nbytes,
                                 "compute_over_hash": step_s / hash_s}
    write_result("kernels", RESULTS)
    print(f"\n{kernel} {dict(spec.params)}: step {step_s * 1e3:.2f} ms, hash {hash_s * 1e3:.3f} ms "
          f"({nbytes / 1e6:.2f} MB), compute/hash {step_s / hash_s:.1f}x")


@pytest.mark.parametrize("threads", [1, 2])
def test_cost_of_exactness_512(benchmark, threads: int) -> None:
    import numba

    from pocv.kernels.gemm_fp32_exact import gemm_f32_ordered

    n = 512
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    w = rng.standard_normal((n, n)).astype(np.float32)
    ta, tw = torch.from_numpy(a), torch.from_numpy(w)
    old_t, old_n = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        exact_s, vendor_s = _interleaved(lambda: gemm_f32_ordered(a, w), lambda: ta @ tw, repeats=quick(10, 30))
        benchmark.pedantic(gemm_f32_ordered, args=(a, w), rounds=5, iterations=1)
    finally:
        torch.set_num_threads(old_t)
        numba.set_num_threads(old_n)
    ratio = exact_s / vendor_s
    benchmark.extra_info.update(exact_ms=exact_s * 1e3, vendor_ms=vendor_s * 1e3, ratio=ratio)
    RESULTS[f"exactness_512/{threads}threads"] = {"exact_ms": exact_s * 1e3, "torch_mkl_ms": vendor_s * 1e3,
                                                  "ratio": ratio}
    write_result("kernels", RESULTS)
    print(f"\n512^3 at {threads} thread(s): fixed-order numba {exact_s * 1e3:.2f} ms, torch/MKL "
          f"{vendor_s * 1e3:.2f} ms, ratio {ratio:.2f}x (target <= 4x)")
    assert 0 < ratio < float("inf")  # the 4x target is marked met/missed in the report, not asserted


#: a read of this many bytes between timed calls evicts the caches (the "cold" figures)
FLUSH_BYTES = 128 * 1024 * 1024


@pytest.mark.parametrize("threads", [1, 2])
def test_freivalds_vs_recompute_1024(benchmark, threads: int) -> None:
    """Freivalds' check vs recompute + compare, each timed with warm caches ("hot": the states were
    just decoded) and after a 128 MiB read evicted them ("cold"), the same treatment on both sides."""
    import numba

    spec = resolve_spec(JobSpec(kernel="gemm-fp32", steps=10, seed=2, params={"n": 1024}))
    k = kernel_for(spec)
    s = k.init_state(spec)
    claimed = k.step(s, 1, spec)
    assert k.verify_step(s, claimed, 1, spec).ok
    big = np.ones(FLUSH_BYTES // 8)

    def fr() -> object:
        return k.verify_step(s, claimed, 1, spec)

    def rc() -> object:
        return k.verify_step_recompute(s, claimed, 1, spec)

    def best(fn: Callable[[], object], before: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(REPEATS):
            before()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    old_t, old_n = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        step_s = _best(lambda: k.step(s, 1, spec))
        for cache, before in (("hot", lambda: None), ("cold", big.sum)):
            fr_s, re_s = best(fr, before), best(rc, before)
            ratio = fr_s / re_s
            RESULTS[f"freivalds_1024/{threads}threads-{cache}"] = {
                "freivalds_ms": fr_s * 1e3, "recompute_and_compare_ms": re_s * 1e3, "step_only_ms": step_s * 1e3,
                "ratio": ratio, "ratio_vs_step_only": fr_s / step_s, "vectors": k.freivalds_vectors, "caches": cache}
            print(f"\n1024^3 at {threads} thread(s), {cache} caches: Freivalds ({k.freivalds_vectors} vectors) "
                  f"{fr_s * 1e3:.2f} ms, recompute+compare {re_s * 1e3:.2f} ms (step alone {step_s * 1e3:.2f} ms): "
                  f"ratio {ratio:.3f} ({fr_s / step_s:.3f} of the bare step); target <= 0.05")
            assert 0 < ratio < float("inf")  # the 5% target is marked met/missed in the report, not asserted
        benchmark.pedantic(fr, rounds=5, iterations=1)
    finally:
        torch.set_num_threads(old_t)
        numba.set_num_threads(old_n)
    write_result("kernels", RESULTS)
