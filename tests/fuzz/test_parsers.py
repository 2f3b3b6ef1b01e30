"""Hostile input: every parser lets only typed PocvError escape, and refuses absurd sizes before
allocating. Property tests (hypothesis, the CI profile: 200 examples each) over raw bytes and
over structure-aware mutations of valid inputs; the long run is ``python -m tests.fuzz.run``."""

from __future__ import annotations

import json
import random
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocv.bundle import Response
from pocv.encoding import decode_state
from pocv.errors import LimitExceeded, MalformedError, PocvError
from pocv.jobs import JobSpec
from pocv.merkle import MerkleTree, verify_inclusion, verify_multiproof
from pocv.records import Challenge, Commitment, Verdict
from pocv.store import load_response
from tests.fuzz.mutate import bundle_claiming, bundle_fields, mutate
from tests.fuzz.run import crash_name
from tests.fuzz.targets import TARGETS, check_seeds_parse, known_open, run_target, seeds

NAMES = sorted(TARGETS)


def assert_typed(name: str, data: bytes) -> None:
    exc = run_target(name, data)
    if exc is None:
        return
    crash = crash_name(name, exc)
    if known_open(crash):  # reported in BUGS-FOUND.md, tracked by test_regressions.py
        return
    raise AssertionError(f"{name}: untyped {crash}: {exc!r} on input {data[:200]!r}") from exc


def test_seeds_are_valid() -> None:
    check_seeds_parse()


@pytest.mark.parametrize("name", NAMES)
@given(data=st.binary(max_size=4096))
def test_random_bytes(name: str, data: bytes) -> None:
    assert_typed(name, data)


@pytest.mark.parametrize("name", NAMES)
@given(seed=st.integers(0, 2**64 - 1))
def test_structured_mutations(name: str, seed: int) -> None:
    rng = random.Random(seed)
    pool = [s for items in seeds().values() for s in items]
    assert_typed(name, mutate(name, rng.choice(seeds()[name]), rng, pool))


@given(field=st.sampled_from(["tree_size", "k", "m", "leaf0", "length0", "length1", "p", "index0"]),
       value=st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]))
def test_bundle_length_fields(field: str, value: int) -> None:
    """Each length/count field set to an interesting value: refused, or (a tree size, an index,
    a leaf that still parse) a different response, which the verifier then rejects (WRONG_JOB,
    MISSING, BAD_PROOF)."""
    data = seeds()["bundle"][0]
    size = next(s for _, s, n in bundle_fields(data) if n == field)
    forged = bundle_claiming(field, value % (1 << (8 * size)), data)
    try:
        r = Response.from_bytes(forged)
    except PocvError:
        return
    assert r != Response.from_bytes(data) or forged == data


@given(cut=st.integers(0, 2372))
def test_every_truncation_of_a_bundle_is_malformed(cut: int) -> None:
    data = seeds()["bundle"][0]
    with pytest.raises(MalformedError):
        Response.from_bytes(data[: cut % len(data)])


@given(bit=st.integers(0, 8 * 2373 - 1))
def test_any_flipped_bit_is_refused_or_fails_verification(bit: int) -> None:
    """A bit flip anywhere either stops the parser or changes what a verifier would check."""
    data = bytearray(seeds()["bundle"][0])
    bit %= 8 * len(data)
    data[bit // 8] ^= 1 << (bit % 8)
    try:
        r = Response.from_bytes(bytes(data))
    except PocvError:
        return
    good = Response.from_bytes(seeds()["bundle"][0])
    assert r != good


# -- sizes refused before allocation -----------------------------------------------------------


def _peak(fn) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        with pytest.raises(PocvError) as e:
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert isinstance(e.value, PocvError)


@pytest.mark.parametrize(("field", "error"), [("length0", LimitExceeded), ("tree_size", LimitExceeded),
                                              ("p", LimitExceeded), ("k", LimitExceeded)])
def test_bundle_claiming_2_to_40_bytes_is_refused_without_allocating(field: str, error: type) -> None:
    data = seeds()["bundle"][0]
    size = next(s for _, s, n in bundle_fields(data) if n == field)
    claim = 2**40 + 1 if field == "tree_size" else 2**40  # 2^40 leaves is the (valid) maximum
    forged = bundle_claiming(field, min(claim, (1 << (8 * size)) - 1), data)
    peak = _peak(lambda: Response.from_bytes(forged))
    assert peak < 256 * 1024, f"{field}: {peak} bytes allocated to refuse a 2^40 claim"
    with pytest.raises(error):
        Response.from_bytes(forged)


def test_state_length_claim_within_limit_but_beyond_the_file_is_refused_cheaply() -> None:
    data = seeds()["bundle"][0]
    forged = bundle_claiming("length0", 2**32 - 1, data)  # <= MAX_STATE_BYTES, but the file is 2 KiB
    assert _peak(lambda: Response.from_bytes(forged)) < 256 * 1024


def test_a_one_tebibyte_bundle_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.pocv"
    try:
        with path.open("wb") as f:
            f.truncate(2**40)  # sparse: no disk used
    except OSError as e:
        pytest.skip(f"no sparse files here: {e}")
    peak = _peak(lambda: load_response(path))
    assert peak < 256 * 1024
    with pytest.raises(LimitExceeded, match="at most"):
        load_response(path)


def test_state_claiming_2_to_40_elements_is_refused_without_allocating() -> None:
    forged = b"PCVS" + struct.pack("<BH", 1, 1) + b"\x01x" + bytes([9, 2]) + struct.pack("<2Q", 2**20, 2**20)
    assert _peak(lambda: decode_state(forged)) < 256 * 1024


def test_challenge_with_too_many_indices_is_limit_exceeded() -> None:
    d = json.loads(seeds()["challenge"][0])
    d["indices"] = list(range(1, 70_000))
    with pytest.raises(LimitExceeded):
        Challenge.from_json(json.dumps(d))


@pytest.mark.parametrize("cls", [Commitment, Challenge, Verdict, JobSpec])
def test_deep_nesting_and_huge_records_are_typed(cls) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PocvError):
        cls.from_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LimitExceeded):
        cls.from_json(b" " * (5 << 20))


# -- proofs of arbitrary shape --------------------------------------------------------------------

TREE = MerkleTree(b"".join(bytes([i]) * 32 for i in range(13)))


@given(size=st.integers(-2, 2**41), index=st.integers(-2, 2**41),
       proof=st.lists(st.binary(max_size=40), max_size=45), value=st.binary(min_size=0, max_size=40))
def test_verify_inclusion_arbitrary(size: int, index: int, proof: list[bytes], value: bytes) -> None:
    with pytest.raises(PocvError):
        verify_inclusion(TREE.root, size, index, value, proof)


@given(index=st.integers(0, 12), hash_=st.integers(0, 3), byte=st.integers(0, 31))
def test_a_flipped_sibling_never_verifies(index: int, hash_: int, byte: int) -> None:
    proof = TREE.inclusion_proof(index)
    hash_ %= len(proof)
    bad = [*proof]
    bad[hash_] = bad[hash_][:byte] + bytes([bad[hash_][byte] ^ 1]) + bad[hash_][byte + 1 :]
    verify_inclusion(TREE.root, 13, index, TREE.leaf_value(index), proof)
    with pytest.raises(PocvError, match="does not lead to the root"):
        verify_inclusion(TREE.root, 13, index, TREE.leaf_value(index), bad)
    # (An RFC 6962 root does not bind the tree size by itself -- leaf 0's path reads the same in
    # trees of 13 and 14 leaves -- so the size must come from the signed commitment, which is
    # what Verifier.check uses; a response claiming another size is WRONG_JOB, tested in
    # tests/soundness/test_attacks.py.)


@given(values=st.dictionaries(st.integers(-3, 40), st.binary(max_size=40), max_size=12),
       size=st.integers(-1, 50), proof=st.lists(st.binary(max_size=40), max_size=30))
def test_verify_multiproof_arbitrary(values: dict[int, bytes], size: int, proof: list[bytes]) -> None:
    try:
        verify_multiproof(TREE.root, size, values, proof)
    except PocvError:
        return
    # accepted: then it must really be an opening of TREE
    assert size == 13 and all(TREE.leaf_value(i) == v for i, v in values.items())
