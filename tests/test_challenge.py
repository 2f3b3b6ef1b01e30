"""Challenge derivation and sample size."""

from __future__ import annotations

import math

import pytest
from blake3 import blake3
from hypothesis import given
from hypothesis import strategies as st

from pocv.challenge import derive_indices, detection_probability, sample_size
from pocv.errors import InputError

B32 = st.binary(min_size=32, max_size=32)


def test_sample_size_matches_design_figure() -> None:
    assert sample_size(0.999, 0.1) == 66
    assert sample_size(0.99, 0.01) == math.ceil(math.log(0.01) / math.log(0.99))
    assert sample_size(0.5, 1.0) == 1


@given(st.floats(0.5, 0.99999), st.floats(0.001, 0.9))
def test_sample_size_is_the_smallest_k_reaching_p(p: float, f: float) -> None:
    k = sample_size(p, f)
    assert detection_probability(k, f) >= p - 1e-9
    if k > 1:
        assert detection_probability(k - 1, f) < p + 1e-9


@pytest.mark.parametrize(("p", "f"), [(0, 0.1), (1, 0.1), (0.9, 0), (0.9, 1.5), (-1, 0.1)])
def test_sample_size_rejects_nonsense(p: float, f: float) -> None:
    with pytest.raises(InputError):
        sample_size(p, f)


@given(B32, B32, B32, st.integers(1, 10_000), st.integers(1, 200))
def test_indices_distinct_sorted_in_range(job: bytes, root: bytes, beacon: bytes, n: int, k: int) -> None:
    idx = derive_indices(job, root, beacon, n, k)
    assert len(idx) == min(k, n)
    assert list(idx) == sorted(set(idx))
    assert all(1 <= i <= n for i in idx)
    assert derive_indices(job, root, beacon, n, k) == idx  # deterministic


def test_every_input_changes_the_indices() -> None:
    j, r, b = (blake3(bytes([x])).digest() for x in range(3))
    base = derive_indices(j, r, b, 100_000, 66)
    other = blake3(b"x").digest()
    assert derive_indices(other, r, b, 100_000, 66) != base
    assert derive_indices(j, other, b, 100_000, 66) != base
    assert derive_indices(j, r, other, 100_000, 66) != base


def test_indices_are_roughly_uniform() -> None:
    j, r = blake3(b"j").digest(), blake3(b"r").digest()
    counts = [0] * 10
    for t in range(400):
        for i in derive_indices(j, r, blake3(t.to_bytes(4, "little")).digest(), 1000, 25):
            counts[(i - 1) // 100] += 1
    # 10,000 draws, 1,000 expected per decile; 5 sigma is about 150
    assert all(abs(c - 1000) < 160 for c in counts), counts


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_beacon_must_be_32_bytes(bad: bytes) -> None:
    with pytest.raises(InputError, match="beacon must be 32 bytes"):
        derive_indices(bytes(32), bytes(32), bad, 10, 2)


def test_k_bounds() -> None:
    with pytest.raises(InputError):
        derive_indices(bytes(32), bytes(32), bytes(32), 10, 0)
    assert derive_indices(bytes(32), bytes(32), bytes(32), 10, 50) == tuple(range(1, 11))
