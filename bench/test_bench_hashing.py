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

Each ratio compares cases timed in the same interleaved pass: memcpy, read, state_digest and
one-thread BLAKE3 first, then all-core BLAKE3 and state_digest again in a pass of their own
(rayon's workers spin on after a call and would take a core from the case timed next). At the
end (with ``-s``) a table puts digest / raw BLAKE3 of 4 KiB, 64 KiB, 1 MiB and 16 MiB side by side
with issue 16's targets.

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
from pocv.encoding import digest_threads, state_digest

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


#: issue 16's targets for state_digest / raw BLAKE3 on the same bytes: (size, reference, at least)
TARGETS = ((4 * KIB, "blake3_1thread", 0.5), (64 * KIB, "blake3_1thread", None),
           (1024 * KIB, "blake3_1thread", 0.9), (16 * KIB * KIB, "blake3_all_cores", 0.9))


@pytest.fixture(scope="module", autouse=True)
def _side_by_side() -> Any:
    """After the sizes ran: digest / raw BLAKE3 at the sizes issue 16 names, in one table."""
    yield
    lines = []
    for size, ref, target in TARGETS:
        entry = RESULTS.get(f"size/{size}")
        if entry is None:
            continue
        ratio = entry[f"digest_over_{ref}"]
        verdict = "" if target is None else f"  (target >= {target}: {'met' if ratio >= target else 'MISSED'})"
        lines.append(f"{size / KIB:>9,.0f} KiB  digest {entry['seconds']['state_digest'] * 1e6:10.2f} us  "
                     f"blake3 1 thread {entry['seconds']['blake3_1thread'] * 1e6:10.2f} us  "
                     f"all cores {entry['seconds']['blake3_all_cores'] * 1e6:10.2f} us  "
                     f"digest/1 thread {entry['digest_over_blake3_1thread']:.2f}  "
                     f"digest/all cores {entry['digest_over_blake3_all_cores']:.2f}  "
                     f"(digest on {entry['digest_threads']} thread(s)) vs {ref.removeprefix('blake3_')}{verdict}")
    if lines:
        print("\nstate_digest against raw BLAKE3 on the same bytes (issue 16):\n" + "\n".join(lines))


def _best(samplers: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Best time of each case over ``rounds`` interleaved rounds (load drift hits every case alike)."""
    best = {name: float("inf") for name in samplers}
    for s in samplers.values():  # warm caches, page in buffers
        s()
    for _ in range(rounds):
        for name, s in samplers.items():
            best[name] = min(best[name], s())
    return best


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
    rounds = _rounds(size)
    best = _best({k: v for k, v in samplers.items() if k != "blake3_all_cores"}, rounds)
    # all-core BLAKE3 in a pass of its own, beside the digest (which hashes on several threads from 16 MiB)
    cores = _best({"state_digest": samplers["state_digest"], "blake3_all_cores": samplers["blake3_all_cores"]},
                  rounds)
    best["blake3_all_cores"] = cores["blake3_all_cores"]
    benchmark.pedantic(state_digest, args=(state,), rounds=3, iterations=1)
    one_pass = best["state_digest"]
    best["state_digest"] = min(one_pass, cores["state_digest"])
    gbps = {name: _gbps(size, t) for name, t in best.items()}
    entry = {"bytes": size, "gbps": gbps, "seconds": best,
             "digest_over_memcpy": gbps["state_digest"] / gbps["memcpy"],
             "digest_over_read": gbps["state_digest"] / gbps["read"],
             # issue 16 targets: >= 0.5 of raw BLAKE3 (one thread) at 4 KiB, >= 0.9 from 1 MiB, and of
             # multi-threaded BLAKE3 from 16 MiB (where the digest itself hashes on all cores); each
             # ratio of two cases timed in the same pass
             "digest_over_blake3_1thread": best["blake3_1thread"] / one_pass,
             "digest_over_blake3_all_cores": cores["blake3_all_cores"] / cores["state_digest"],
             "digest_threads": digest_threads(size)}
    RESULTS[f"size/{size}"] = entry
    write_result("hashing", RESULTS)
    print(f"\n{size / KIB:>9,.0f} KiB: " + ", ".join(f"{k} {v:.2f} GB/s" for k, v in gbps.items())
          + f"; state_digest/memcpy {entry['digest_over_memcpy']:.2f}; state_digest/blake3 1 thread "
          f"{entry['digest_over_blake3_1thread']:.2f}, /all cores {entry['digest_over_blake3_all_cores']:.2f}")
    assert all(np.isfinite(list(gbps.values())))
