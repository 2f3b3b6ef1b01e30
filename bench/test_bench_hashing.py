"""State hashing against the host's memory bandwidth, 4 KiB to 256 MiB (issue 6, suite "hashing").

For each size, side by side in one run (interleaved, best of several rounds):

- ``memcpy``: ``np.copyto`` of the same bytes — the physical limit of the host: hashing must read
  every byte once, a copy reads and writes it once;
- ``read``: a sum over the bytes as uint64 words (numpy, one pass) — a read-only pass;
- ``state_digest``: pocv's commitment hash of a one-tensor state (canonical header + BLAKE3,
  threaded from 16 MiB pieces up);
- ``blake3 1 thread`` and ``blake3 all cores``: the library on the raw bytes.

Figures are GB/s and the ratio state_digest / memcpy (1.0 = hashing as fast as copying), and
(issue 16) state_digest / raw BLAKE3 on the same bytes. A timing sample processes at most 1 MiB
(small sizes loop), and small sizes get more rounds, so the best sample is one no other process
interrupted, on a shared machine too.

    pytest bench/test_bench_hashing.py --benchmark-only -s
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from blake3 import blake3

from bench.conftest import quick, write_result
from pocv.encoding import state_digest

pytestmark = pytest.mark.bench

KIB = 1024
SIZES = quick([4 * KIB, 64 * KIB, 1024 * KIB, 16 * KIB * KIB, 64 * KIB * KIB],
              [4 * KIB * 4**i for i in range(9)])  # 4 KiB, 16 KiB, ..., 256 MiB
#: bytes processed per timing sample: small sizes repeat in a loop so the clock's resolution does not matter
SAMPLE_BYTES = quick(16 * KIB * KIB, 64 * KIB * KIB)
ROUNDS = quick(5, 9)
RESULTS: dict[str, Any] = {}


#: the most bytes one timing sample processes: short samples, many rounds, the best kept, so a
#: shared machine's preemptions (which hit a long sample almost surely) drop out of the minimum
MAX_SAMPLE_BYTES = 1 << 20
#: rounds for the smallest sizes (as many as keep the bytes per case at ROUNDS * SAMPLE_BYTES)
MAX_ROUNDS = 200


def _rounds(size: int) -> int:
    per_sample = max(1, min(SAMPLE_BYTES, MAX_SAMPLE_BYTES) // size) * size
    return max(ROUNDS, min(MAX_ROUNDS, ROUNDS * SAMPLE_BYTES // per_sample))


def _timer(fn: Callable[[], object], size: int) -> Callable[[], float]:
    loops = max(1, min(SAMPLE_BYTES, MAX_SAMPLE_BYTES) // size)

    def sample() -> float:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        return (time.perf_counter() - t0) / loops

    return sample


def _gbps(size: int, seconds: float) -> float:
    return size / seconds / 1e9


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KIB}KiB")
def test_hash_vs_memcpy(benchmark: Any, size: int) -> None:
    rng = np.random.default_rng(size)
    src = rng.integers(0, 256, size, dtype=np.uint8)
    dst = np.empty_like(src)
    words = src.view(np.uint64)
    state = {"x": torch.from_numpy(src)}
    one = blake3(max_threads=1)
    cases: dict[str, Callable[[], object]] = {
        "memcpy": lambda: np.copyto(dst, src),
        "read": lambda: words.sum(),
        "state_digest": lambda: state_digest(state),
        "blake3_1thread": lambda: one.copy().update(src).digest(),
        "blake3_all_cores": lambda: blake3(src, max_threads=blake3.AUTO).digest(),
    }
    samplers = {name: _timer(fn, size) for name, fn in cases.items()}
    best = {name: float("inf") for name in cases}
    for s in samplers.values():  # warm caches, page in dst
        s()
    for _ in range(_rounds(size)):  # interleaved: load drift hits every case alike
        for name, s in samplers.items():
            best[name] = min(best[name], s())
    benchmark.pedantic(state_digest, args=(state,), rounds=3, iterations=1)
    gbps = {name: _gbps(size, t) for name, t in best.items()}
    entry = {"bytes": size, "gbps": gbps, "seconds": best,
             "digest_over_memcpy": gbps["state_digest"] / gbps["memcpy"],
             "digest_over_read": gbps["state_digest"] / gbps["read"],
             # issue 16 targets: >= 0.5 of raw BLAKE3 (one thread) at 4 KiB, >= 0.9 from 1 MiB, and of
             # multi-threaded BLAKE3 from 16 MiB (where the digest itself hashes on all cores)
             "digest_over_blake3_1thread": gbps["state_digest"] / gbps["blake3_1thread"],
             "digest_over_blake3_all_cores": gbps["state_digest"] / gbps["blake3_all_cores"]}
    RESULTS[f"size/{size}"] = entry
    write_result("hashing", RESULTS)
    print(f"\n{size / KIB:>9,.0f} KiB: " + ", ".join(f"{k} {v:.2f} GB/s" for k, v in gbps.items())
          + f"; state_digest/memcpy {entry['digest_over_memcpy']:.2f}; state_digest/blake3 1 thread "
          f"{entry['digest_over_blake3_1thread']:.2f}, /all cores {entry['digest_over_blake3_all_cores']:.2f}")
    assert all(np.isfinite(list(gbps.values())))
