"""GPU figures, when this machine has a CUDA device (issue 6, suite "gpu"); skipped otherwise.

(a) device-to-host copy bandwidth (pinned and pageable) for state sizes 1-256 MiB: the cost of
    bringing a state to the host to hash it, against the on-device step time;
(b) per kernel (those with a CUDA path), the on-device step time, the copy of its state to the
    host, the host hash, and the ratio step / (copy + hash): above 1, committing every state
    costs less than the step itself on this GPU.

    pytest bench/test_bench_gpu.py --benchmark-only -s
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from bench.conftest import quick, write_result
from pocv.encoding import state_digest
from pocv.jobs import JobSpec
from pocv.kernels import get_kernel, kernel_for, kernel_names, resolve_spec

pytestmark = [pytest.mark.bench, pytest.mark.skipif(not torch.cuda.is_available(),
                                                    reason="no CUDA GPU on this machine: GPU figures need one")]

MIB = 1 << 20
SIZES = quick([MIB, 16 * MIB], [MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB])
REPEATS = quick(5, 20)
RESULTS: dict[str, Any] = {}


def _cuda_best(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // MIB}MiB")
def test_device_to_host(benchmark: Any, size: int) -> None:
    src = torch.randint(0, 255, (size,), dtype=torch.uint8, device="cuda")
    pinned = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    pageable = torch.empty(size, dtype=torch.uint8)
    t_pinned = _cuda_best(lambda: pinned.copy_(src, non_blocking=True))
    t_pageable = _cuda_best(lambda: pageable.copy_(src))
    t_hash = _cuda_best(lambda: state_digest({"x": pinned}))
    benchmark.pedantic(lambda: pinned.copy_(src), rounds=3, iterations=1)
    RESULTS[f"d2h/{size}"] = {"bytes": size, "pinned_gbps": size / t_pinned / 1e9,
                              "pageable_gbps": size / t_pageable / 1e9, "hash_gbps": size / t_hash / 1e9}
    write_result("gpu", RESULTS)
    assert torch.equal(pinned, src.cpu())


@pytest.mark.parametrize("kernel", [k for k in kernel_names() if "cuda" in get_kernel(k).devices])
def test_step_on_device(benchmark: Any, kernel: str) -> None:
    spec = resolve_spec(JobSpec(kernel=kernel, steps=1000, seed=1))
    k = kernel_for(spec)
    s = k.init_state(spec, "cuda")
    for i in range(1, 3):
        s = k.step(s, i, spec, "cuda")
    step_s = _cuda_best(lambda: k.step(s, 3, spec, "cuda"))
    host: dict[str, Any] = {}

    def to_host() -> None:
        host.update({n: t.cpu() if isinstance(t, torch.Tensor) else t for n, t in s.items()})

    copy_s = _cuda_best(to_host)
    hash_s = _cuda_best(lambda: state_digest(host))
    benchmark.pedantic(k.step, args=(s, 3, spec, "cuda"), rounds=3, iterations=1)
    RESULTS[f"step/{kernel}"] = {"params": dict(spec.params), "step_ms": step_s * 1e3, "copy_ms": copy_s * 1e3,
                                 "hash_ms": hash_s * 1e3, "step_over_commit": step_s / (copy_s + hash_s)}
    write_result("gpu", RESULTS)
    assert state_digest(host) == state_digest({n: t.cpu() for n, t in s.items() if isinstance(t, torch.Tensor)}
                                              | {n: t for n, t in s.items() if not isinstance(t, torch.Tensor)})
