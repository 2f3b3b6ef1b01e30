"""Challenge derivation: beacon -> step indices, and the sample size for a detection target.

docs/protocol.md §7. The indices are a deterministic function of (job id, root, beacon), so
either side can recompute them, and the worker cannot predict them before the beacon exists.
Deriving them from the root alone is NOT sound (the worker could re-roll its commitment until
the challenges miss its fake steps); a beacon is always required.

PRF: seed = BLAKE3-derive_key(CHALLENGE_CONTEXT, job_id || root || beacon); the stream is
BLAKE3 keyed by the seed over a little-endian u64 counter (counter mode), read as u64 words.
Each word w is accepted when w < floor(2^64 / n) * n (no modulo bias) and maps to 1 + w mod n;
repeats are skipped until k distinct indices exist. They are returned sorted.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Final

from blake3 import blake3

from pocv.errors import InputError
from pocv.limits import MAX_CHALLENGES

CHALLENGE_CONTEXT: Final = "pocv 2026-11 challenge v1"
_WORDS_PER_BLOCK: Final = 64  # 512 bytes of PRF output per keyed call


def sample_size(confidence: float, cheat_fraction: float) -> int:
    """k = ceil(ln(1 - p) / ln(1 - f)): catch a worker who faked fraction f with probability p.

    With sampling without replacement the real detection is at least this (for any n).
    """
    if not (0 < confidence < 1):
        raise InputError(f"confidence p must be in (0, 1), got {confidence}")
    if not (0 < cheat_fraction <= 1):
        raise InputError(f"cheat fraction f must be in (0, 1], got {cheat_fraction}")
    if cheat_fraction == 1:
        return 1
    k = math.ceil(math.log1p(-confidence) / math.log1p(-cheat_fraction) - 1e-12)
    return max(1, k)


def detection_probability(k: int, cheat_fraction: float, steps: int = 0) -> float:
    """Probability that ``k`` distinct steps drawn uniformly from ``steps`` catch a worker who
    faked a fraction ``cheat_fraction`` of them, i.e. at least ``ceil(f * steps)`` steps.

    Exact (hypergeometric): ``1 - C(n - m, k) / C(n, k)`` with ``m = ceil(f n)``, which is at
    least the with-replacement bound ``1 - (1 - f)^k`` that sizes k. With ``steps=0`` (the job's
    length unknown) that bound is returned.
    """
    if steps <= 0:
        return 1.0 - (1.0 - cheat_fraction) ** k
    return _exact_detection(steps, math.ceil(cheat_fraction * steps - 1e-9), min(k, steps))


@functools.lru_cache(maxsize=1024)
def _exact_detection(n: int, m: int, k: int) -> float:
    if m <= 0:
        return 0.0
    if k > n - m:
        return 1.0
    miss = 1.0
    for j in range(k):  # C(n - m, k) / C(n, k) as a product of k ratios, each in [0, 1]
        miss *= (n - m - j) / (n - j)
    return 1.0 - miss


def challenge_seed(job_id: bytes, root: bytes, beacon: bytes) -> bytes:
    for name, v in (("job id", job_id), ("root", root), ("beacon", beacon)):
        if not isinstance(v, bytes) or len(v) != 32:
            got = f"{len(v)} bytes" if isinstance(v, bytes) else type(v).__name__
            raise InputError(f"challenge {name} must be 32 bytes, got {got}")
    return bytes(blake3(job_id + root + beacon, derive_key_context=CHALLENGE_CONTEXT).digest())


def derive_indices(job_id: bytes, root: bytes, beacon: bytes, steps: int, k: int) -> tuple[int, ...]:
    """k distinct step indices in 1..steps (all of them when k >= steps), sorted."""
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if not 1 <= k <= MAX_CHALLENGES:
        raise InputError(f"k must be in 1..{MAX_CHALLENGES}, got {k}")
    if k >= steps:
        return tuple(range(1, steps + 1))
    seed = challenge_seed(job_id, root, beacon)
    limit = ((1 << 64) // steps) * steps
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < k:
        block = blake3(struct.pack("<Q", counter), key=seed).digest(length=8 * _WORDS_PER_BLOCK)
        counter += 1
        for (w,) in struct.iter_unpack("<Q", block):
            if w < limit:
                chosen.add(1 + w % steps)
                if len(chosen) == k:
                    break
    return tuple(sorted(chosen))


def derive_chunks(job_id: bytes, root: bytes, beacon: bytes, leaf: int, count: int, m: int) -> tuple[int, ...]:
    """The chunks of state ``leaf`` (of ``count`` chunks) compared by sample when a job asks
    for ``m`` of them (docs/protocol.md §8.1): ``min(m, count)`` distinct chunk indices in
    0..count-1, sorted, from the challenge seed, so the worker learns them only with the
    challenge, after its commitment fixed every chunk."""
    if count < 1 or m < 1:
        raise InputError(f"a chunk sample needs count >= 1 and m >= 1, got count={count}, m={m}")
    if m >= count:
        return tuple(range(count))
    seed = challenge_seed(job_id, root, beacon)
    limit = ((1 << 64) // count) * count
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < m:  # messages of 22 bytes: never one of derive_indices' 8-byte counters
        block = blake3(b"chunks" + struct.pack("<QQ", leaf, counter), key=seed).digest(length=8 * _WORDS_PER_BLOCK)
        counter += 1
        for (w,) in struct.iter_unpack("<Q", block):
            if w < limit:
                chosen.add(w % count)
                if len(chosen) == m:
                    break
    return tuple(sorted(chosen))


def chunk_detection(m: int, count: int, bad: int = 1) -> float:
    """Probability that a sample of ``m`` of ``count`` chunks includes at least one of ``bad``
    chunks that differ (the catch rate of one challenged step compared by sample)."""
    return _exact_detection(count, bad, min(m, count)) if count > 0 else 0.0

