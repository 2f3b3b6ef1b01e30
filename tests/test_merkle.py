"""pocv.merkle against independent definitions, pymerkle, vectors on file and lying proofs.

How the shape is pinned down: ``Naive`` below is RFC 9162 section 2.1 written out recursively
(MTH, PATH, and the multiproof walk) over any leaf/node hash. With keyed BLAKE3 it is compared
with the library for every size 1..300; with SHA-256 and RFC 6962's 0x00/0x01 prefixes it is
compared with pymerkle 7.0 (an independent implementation of the same shape) for the same sizes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

import pocv.merkle as M
from pocv.errors import LimitExceeded, MalformedError, ProofError
from pocv.merkle import (
    DIGEST_SIZE,
    K_LEAF,
    K_NODE,
    MAX_MULTIPROOF_LEAVES,
    MAX_PROOF_HASHES,
    MAX_TREE_SIZE,
    IncrementalTree,
    MerkleTree,
    inclusion_proof_size,
    leaf_hash,
    merkle_root,
    multiproof_size,
    node_hash,
    verify_inclusion,
    verify_multiproof,
)

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
import make_merkle_vectors  # noqa: E402


def value(i: int) -> bytes:
    return blake3(i.to_bytes(8, "little")).digest()


VALUES = [value(i) for i in range(5001)]
SMALL_SIZES = range(1, 301)


# -- an independent reference ------------------------------------------------------------------


class Naive:
    """RFC 9162 MTH / PATH and the multiproof walk, recursive, memoised on leaf ranges."""

    def __init__(self, values: Sequence[bytes], leaf: Callable[[bytes], bytes], node: Callable[[bytes, bytes], bytes]):
        self.values, self.leaf, self.node = values, leaf, node
        self.mth = cache(self._mth)

    @staticmethod
    def split(n: int) -> int:
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    def _mth(self, lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return self.leaf(self.values[lo])
        mid = lo + self.split(hi - lo)
        return self.node(self.mth(lo, mid), self.mth(mid, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        mid = lo + self.split(hi - lo)
        if m < mid:
            return [*self.path(m, lo, mid), self.mth(mid, hi)]
        return [*self.path(m, mid, hi), self.mth(lo, mid)]

    def multiproof(self, indices: set[int], lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        mid = lo + self.split(hi - lo)
        left = {i for i in indices if i < mid}
        right = indices - left
        out = self.multiproof(left, lo, mid) if left else [self.mth(lo, mid)]
        out += self.multiproof(right, mid, hi) if right else [self.mth(mid, hi)]
        return out


def _b3_leaf(v: bytes) -> bytes:
    return blake3(v, key=K_LEAF).digest()


def _b3_node(left: bytes, right: bytes) -> bytes:
    return blake3(left + right, key=K_NODE).digest()


NAIVE = Naive(VALUES, _b3_leaf, _b3_node)


@cache
def tree(size: int) -> MerkleTree:
    return MerkleTree(VALUES[:size])


@pytest.fixture
def vector_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every level, however small, through the numpy compression, with threads from 64."""
    monkeypatch.setattr(M, "_VECTOR_MIN", 1)
    monkeypatch.setattr(M, "_THREAD_MIN", 64)


# -- keys and the numpy BLAKE3 compression -----------------------------------------------------


def test_keys_are_derived_from_distinct_contexts() -> None:
    assert blake3(b"", derive_key_context="pocv 2026-11 merkle leaf v1").digest() == K_LEAF
    assert blake3(b"", derive_key_context="pocv 2026-11 merkle node v1").digest() == K_NODE
    assert K_LEAF != K_NODE
    assert len(K_LEAF) == len(K_NODE) == DIGEST_SIZE


def _numpy_hashes(key: bytes, blocks: list[bytes], width: int) -> list[bytes]:
    rows = np.frombuffer(b"".join(blocks), M._U32).reshape(len(blocks), width // 4)
    out = np.empty((len(blocks), 8), M._U32)
    M._hash_rows(tuple(int(w) for w in np.frombuffer(key, M._U32)), rows, out)
    raw = out.tobytes()
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


blocks32 = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40)
blocks64 = st.lists(st.binary(min_size=64, max_size=64), min_size=1, max_size=40)
keys = st.one_of(st.just(K_LEAF), st.just(K_NODE), st.binary(min_size=32, max_size=32))


@settings(max_examples=100)
@given(key=keys, blocks=blocks32)
def test_numpy_compression_equals_blake3_on_32_byte_inputs(key: bytes, blocks: list[bytes]) -> None:
    assert _numpy_hashes(key, blocks, 32) == [blake3(b, key=key).digest() for b in blocks]


@settings(max_examples=100)
@given(key=keys, blocks=blocks64)
def test_numpy_compression_equals_blake3_on_64_byte_inputs(key: bytes, blocks: list[bytes]) -> None:
    assert _numpy_hashes(key, blocks, 64) == [blake3(b, key=key).digest() for b in blocks]


def test_numpy_compression_on_edge_words() -> None:
    """All-zero and all-one words (carries and rotations at their extremes), many at once."""
    rng = np.random.default_rng(7)
    blocks = [bytes(64), b"\xff" * 64, bytes(32) + b"\xff" * 32] + [rng.bytes(64) for _ in range(3000)]
    assert _numpy_hashes(K_NODE, blocks, 64) == [blake3(b, key=K_NODE).digest() for b in blocks]


def test_threaded_level_equals_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "_THREAD_MIN", 2)
    rows = np.frombuffer(b"".join(VALUES[:1001]), M._U32).reshape(1001, 8)
    one, two = np.empty((1001, 8), M._U32), np.empty((1001, 8), M._U32)
    M._hash_rows(M._LEAF_KEY_WORDS, rows, one)
    M._hash_rows_parallel(M._LEAF_KEY_WORDS, rows, two)
    assert one.tobytes() == two.tobytes() == b"".join(_b3_leaf(v) for v in VALUES[:1001])


def _root_in_child(data: bytes, out: Any) -> None:
    out.put(merkle_root(data))


@pytest.mark.skipif(not hasattr(os, "fork") or M._cores() < 2, reason="needs fork and two cores")
def test_threaded_build_works_in_a_forked_child() -> None:
    """The helper thread does not survive a fork; the child must not wait for it forever."""
    data = b"".join(value(i) for i in range(2 * M._THREAD_MIN))
    root = merkle_root(data)  # starts the helper thread in this process
    assert M._pool is not None
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_root_in_child, args=(data, out))
    child.start()
    try:
        assert out.get(timeout=60) == root
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


# -- roots and shape ---------------------------------------------------------------------------


def test_leaf_and_node_hash() -> None:
    assert leaf_hash(VALUES[0]) == _b3_leaf(VALUES[0])
    assert node_hash(VALUES[0], VALUES[1]) == _b3_node(VALUES[0], VALUES[1])
    with pytest.raises(MalformedError, match="leaf value has wrong size: expected 32 bytes, got 31"):
        leaf_hash(VALUES[0][:31])
    with pytest.raises(MalformedError, match="expected 32 bytes each, got 32 and 64"):
        node_hash(VALUES[0], VALUES[0] * 2)


def test_root_equals_naive_definition_for_every_size_to_300() -> None:
    for n in SMALL_SIZES:
        assert tree(n).root == NAIVE.mth(0, n), n
        assert tree(n).size == n


def test_root_equals_naive_definition_on_the_numpy_path(vector_path: None) -> None:
    for n in SMALL_SIZES:
        assert merkle_root(b"".join(VALUES[:n])) == NAIVE.mth(0, n), n


def test_numpy_and_per_call_paths_agree_on_a_larger_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 5001  # odd at several levels; crosses _VECTOR_MIN on the way up
    monkeypatch.setattr(M, "_THREAD_MIN", 1000)
    fast = M._build_levels(b"".join(VALUES[:n]), n)
    monkeypatch.setattr(M, "_VECTOR_MIN", 1 << 30)
    assert M._build_levels(b"".join(VALUES[:n]), n) == fast
    assert fast[-1] == NAIVE.mth(0, n)


def _pymerkle_tree(n: int) -> Any:
    from pymerkle import InmemoryTree

    t = InmemoryTree(algorithm="sha256")  # RFC 6962 0x00 / 0x01 prefixes: security is on by default
    for v in VALUES[:n]:
        t.append_entry(v)
    return t


def test_naive_definition_has_pymerkle_shape_for_every_size_to_300() -> None:
    """Roots of every size and the audit path of every leaf of every size (pymerkle indices
    start at 1; its path starts with the leaf's own hash)."""
    sha = Naive(VALUES, lambda v: sha256(b"\x00" + v).digest(), lambda a, b: sha256(b"\x01" + a + b).digest())
    pm = _pymerkle_tree(max(SMALL_SIZES))
    for n in SMALL_SIZES:
        assert pm.get_root(n) == sha.mth(0, n), n
        for i in range(n):
            assert pm.prove_inclusion(i + 1, n).path[1:] == sha.path(i, 0, n), (n, i)


def test_odd_node_is_promoted_not_duplicated() -> None:
    h = [_b3_leaf(v) for v in VALUES[:3]]
    assert tree(3).root == _b3_node(_b3_node(h[0], h[1]), h[2])
    assert tree(3).root != _b3_node(_b3_node(h[0], h[1]), _b3_node(h[2], h[2]))


def test_list_bytes_and_buffer_inputs_agree() -> None:
    vals = VALUES[:77]
    root = tree(77).root
    assert MerkleTree(b"".join(vals)).root == root
    assert MerkleTree(bytearray(b"".join(vals))).root == root
    assert merkle_root(memoryview(b"".join(vals))) == merkle_root(vals) == root


def test_vectors_on_file() -> None:
    vec = json.loads((VECTORS / "merkle.json").read_text())
    assert vec["k_leaf"] == K_LEAF.hex()
    assert vec["k_node"] == K_NODE.hex()
    assert [r["size"] for r in vec["roots"]] == list(range(1, 21))
    for r in vec["roots"]:
        assert merkle_root(VALUES[: r["size"]]).hex() == r["root"]
    for p in vec["inclusion_proofs"]:
        n, i, proof = p["size"], p["index"], [bytes.fromhex(h) for h in p["proof"]]
        assert tree(n).inclusion_proof(i) == proof
        verify_inclusion(tree(n).root, n, i, VALUES[i], proof)
    for p in vec["multiproofs"]:
        n, idx, proof = p["size"], p["indices"], [bytes.fromhex(h) for h in p["proof"]]
        assert tree(n).multiproof(idx) == proof
        verify_multiproof(tree(n).root, n, {i: VALUES[i] for i in idx}, proof)


def test_vectors_file_is_what_the_script_makes() -> None:
    assert (VECTORS / "merkle.json").read_text() == make_merkle_vectors.render()


# -- MerkleTree --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "empty tree: expected at least 1 leaf value, got 0"),
        (b"", "expected a positive multiple of 32 bytes, got 0"),
        (b"x" * 33, "expected a positive multiple of 32 bytes, got 33"),
        ([VALUES[0], VALUES[1][:31]], "leaf value 1 has wrong size: expected 32 bytes, got 31"),
        ([VALUES[0] * 2], "leaf value 0 has wrong size: expected 32 bytes, got 64"),
    ],
    ids=["empty-list", "empty-bytes", "ragged-bytes", "short-value", "long-value"],
)
def test_tree_refuses_malformed_values(values: Any, message: str) -> None:
    with pytest.raises(MalformedError, match=message):
        MerkleTree(values)
    with pytest.raises(MalformedError, match=message):
        merkle_root(values)


def test_tree_is_immutable_and_reads_back() -> None:
    t = tree(10)
    with pytest.raises(AttributeError):
        t.root = bytes(32)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        t.size = 3  # type: ignore[misc]
    assert [t.leaf_value(i) for i in range(10)] == VALUES[:10]
    assert [t.leaf_hash(i) for i in range(10)] == [_b3_leaf(v) for v in VALUES[:10]]
    with pytest.raises(ProofError, match=r"leaf index out of range: expected 0 <= index < 10, got 10"):
        t.leaf_value(10)
    for bad in (-1, 10, 2**64):
        with pytest.raises(ProofError, match=rf"leaf index out of range: expected 0 <= index < 10, got {bad}"):
            t.inclusion_proof(bad)


# -- inclusion proofs --------------------------------------------------------------------------


@pytest.mark.parametrize("list_level_max", [M._LIST_LEVEL_MAX, 0, 2], ids=["lists", "slices", "mixed"])
def test_every_proof_of_every_size_to_300_is_the_rfc_path_and_verifies(
    monkeypatch: pytest.MonkeyPatch, list_level_max: int
) -> None:
    """Proofs read small levels from lists and large ones by slicing: both ways, and mixed."""
    monkeypatch.setattr(M, "_LIST_LEVEL_MAX", list_level_max)
    for n in SMALL_SIZES:
        t, root = MerkleTree(VALUES[:n]), NAIVE.mth(0, n)
        for i in range(n):
            proof = t.inclusion_proof(i)
            assert proof == NAIVE.path(i, 0, n), (n, i)
            assert len(proof) == inclusion_proof_size(i, n)
            verify_inclusion(root, n, i, VALUES[i], proof)


def test_proofs_on_a_large_tree_with_numpy_levels() -> None:
    n = 5001
    t = MerkleTree(b"".join(VALUES[:n]))
    assert t.root == NAIVE.mth(0, n)
    for i in [*range(0, n, 97), *range(n - 70, n)]:
        proof = t.inclusion_proof(i)
        assert proof == NAIVE.path(i, 0, n), i
        verify_inclusion(t.root, n, i, VALUES[i], proof)


def _proof_size_by_walking(index: int, size: int) -> int:
    count, node, width = 0, index, size
    while width > 1:
        count += (node ^ 1) < width
        node, width = node >> 1, (width + 1) >> 1
    return count


@given(st.integers(1, MAX_TREE_SIZE).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_inclusion_proof_size_equals_a_level_walk(case: tuple[int, int]) -> None:
    index, size = case
    assert inclusion_proof_size(index, size) == _proof_size_by_walking(index, size)


def test_largest_tree_has_40_hash_proofs() -> None:
    assert inclusion_proof_size(0, MAX_TREE_SIZE) == 40
    assert inclusion_proof_size(MAX_TREE_SIZE - 1, MAX_TREE_SIZE) == 40
    with pytest.raises(ProofError, match=r"tree size out of range: expected 1 <= size <= 1099511627776, got"):
        inclusion_proof_size(0, MAX_TREE_SIZE + 1)


# A tree whose proofs for index 12345 have 17 hashes (16 in the left 2^16 subtree, 1 above).
BIG_N = 70_000
BIG_I = 12_345


@cache
def big_tree() -> MerkleTree:
    return MerkleTree(b"".join(value(i) for i in range(BIG_N)))


def _replace(proof: list[bytes], k: int, h: bytes) -> list[bytes]:
    return [*proof[:k], h, *proof[k + 1 :]]


def _flip(b: bytes, bit: int) -> bytes:
    return bytes([*b[: bit // 8], b[bit // 8] ^ (1 << bit % 8), *b[bit // 8 + 1 :]])


Args = tuple[bytes, int, int, bytes, list[bytes]]
# name -> (how a lying prover changes (root, size, index, value, proof), what the error must say)
BAD_INCLUSION: dict[str, tuple[Callable[[Args], Args], str]] = {
    "truncated": (lambda a: (*a[:4], a[4][:-1]), "inclusion proof has wrong size: expected 17 hashes, got 16"),
    "extended": (lambda a: (*a[:4], [*a[4], a[4][0]]), "inclusion proof has wrong size: expected 17 hashes, got 18"),
    "empty": (lambda a: (*a[:4], []), "inclusion proof has wrong size: expected 17 hashes, got 0"),
    "short-sibling": (
        lambda a: (*a[:4], _replace(a[4], 3, a[4][3][:31])),
        "inclusion proof hash 3 has wrong size: expected 32 bytes, got 31",
    ),
    "long-sibling": (
        lambda a: (*a[:4], _replace(a[4], 16, a[4][16] + b"\0")),
        "inclusion proof hash 16 has wrong size: expected 32 bytes, got 33",
    ),
    "short-value": (lambda a: (*a[:3], a[3][:31], a[4]), "leaf value has wrong size: expected 32 bytes, got 31"),
    "short-root": (lambda a: (a[0][:16], *a[1:]), "root has wrong size: expected 32 bytes, got 16"),
    "index-past-end": (
        lambda a: (a[0], a[1], BIG_N, *a[3:]),
        rf"leaf index out of range: expected 0 <= index < {BIG_N}, got {BIG_N}",
    ),
    "negative-index": (lambda a: (a[0], a[1], -1, *a[3:]), "leaf index out of range: expected 0 <= index < 70000"),
    "size-zero": (lambda a: (a[0], 0, *a[2:]), r"tree size out of range: expected 1 <= size <= 1099511627776, got 0"),
    "size-over-limit": (lambda a: (a[0], MAX_TREE_SIZE + 1, *a[2:]), "tree size out of range"),
    "size-shallower": (lambda a: (a[0], 65536, *a[2:]), "inclusion proof has wrong size: expected 16 hashes, got 17"),
    "neighbour-index": (lambda a: (a[0], a[1], a[2] + 1, *a[3:]), "inclusion proof does not lead to the root"),
    "neighbour-value": (lambda a: (*a[:3], value(BIG_I + 1), a[4]), "inclusion proof does not lead to the root"),
    "leaf-hash-as-value": (lambda a: (*a[:3], _b3_leaf(a[3]), a[4]), "inclusion proof does not lead to the root"),
    "swapped-siblings": (
        lambda a: (*a[:4], [a[4][1], a[4][0], *a[4][2:]]),
        "inclusion proof does not lead to the root",
    ),
    "reversed-path": (lambda a: (*a[:4], a[4][::-1]), "inclusion proof does not lead to the root"),
    "other-root": (lambda a: (tree(300).root, *a[1:]), "inclusion proof does not lead to the root"),
}


@pytest.mark.parametrize("name", sorted(BAD_INCLUSION))
def test_lying_inclusion_proof_is_refused(name: str) -> None:
    t = big_tree()
    honest: Args = (t.root, BIG_N, BIG_I, value(BIG_I), t.inclusion_proof(BIG_I))
    verify_inclusion(*honest)
    lie, message = BAD_INCLUSION[name]
    with pytest.raises(ProofError, match=message):
        verify_inclusion(*lie(honest))


@settings(max_examples=150)
@given(st.data())
def test_any_flipped_bit_is_refused(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 300), label="size")
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = tree(n).inclusion_proof(i)
    target = data.draw(st.integers(-1, len(proof) - 1), label="hash (-1: the value)")
    bit = data.draw(st.integers(0, 255), label="bit")
    val = VALUES[i]
    if target < 0:
        val = _flip(val, bit)
    else:
        proof = _replace(proof, target, _flip(proof[target], bit))
    with pytest.raises(ProofError, match="inclusion proof does not lead to the root"):
        verify_inclusion(tree(n).root, n, i, val, proof)


def _directions(index: int, size: int) -> list[bool]:
    """For each proof hash, whether it is hashed on the left: the shape a proof is checked in."""
    out, node, width = [], index, size
    while width > 1:
        if (node ^ 1) < width:
            out.append(bool(node & 1))
        node, width = node >> 1, (width + 1) >> 1
    return out


@settings(max_examples=150)
@given(st.data())
def test_wrong_index_or_size_is_refused(data: st.DataObject) -> None:
    """A proof checked under another (index, size) fails unless that claim has exactly the same
    path shape, in which case it proves the same leaf under the same root (as in RFC 9162: the
    size is bound by the signed commitment, not by the proof)."""
    n = data.draw(st.integers(2, 300), label="size")
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, 400), label="claimed size")
    j = data.draw(st.integers(0, m - 1), label="claimed index")
    if (j, m) == (i, n):
        return
    proof = tree(n).inclusion_proof(i)
    if _directions(j, m) == _directions(i, n):
        assert j == i  # the shape fixes the index; only a size can share it
        verify_inclusion(tree(n).root, m, j, VALUES[i], proof)
    else:
        with pytest.raises(ProofError, match="wrong size|does not lead to the root"):
            verify_inclusion(tree(n).root, m, j, VALUES[i], proof)


def test_inner_node_cannot_pass_for_a_leaf() -> None:
    """Second preimage: in a 4-leaf tree, present node(h0, h1) as leaf 0 of a 2-leaf tree."""
    h = [_b3_leaf(v) for v in VALUES[:4]]
    n01, n23 = _b3_node(h[0], h[1]), _b3_node(h[2], h[3])
    root = tree(4).root
    assert root == _b3_node(n01, n23)  # the payload below really is the tree's left child
    # Without domain separation (leaf and node both plain BLAKE3 of their bytes) it works:
    plain = [blake3(v).digest() for v in VALUES[:4]]
    plain_root = blake3(blake3(plain[0] + plain[1]).digest() + blake3(plain[2] + plain[3]).digest()).digest()
    forged_leaf = blake3(plain[0] + plain[1]).digest()  # leaf value plain[0] || plain[1]
    assert blake3(forged_leaf + blake3(plain[2] + plain[3]).digest()).digest() == plain_root
    # Here: the 64-byte children are not a leaf value, and a leaf never hashes like a node.
    with pytest.raises(ProofError, match="leaf value has wrong size: expected 32 bytes, got 64"):
        verify_inclusion(root, 2, 0, h[0] + h[1], [n23])
    assert blake3(h[0] + h[1], key=K_LEAF).digest() != n01
    # Nor does the node's own hash pass as a 32-byte value.
    with pytest.raises(ProofError, match="inclusion proof does not lead to the root"):
        verify_inclusion(root, 2, 0, n01, [n23])
    with pytest.raises(ProofError, match="inclusion proof does not lead to the root"):
        verify_inclusion(root, 2, 1, n23, [n01])


def test_proof_hashes_may_be_buffers() -> None:
    t = tree(9)
    proof = [bytearray(p) for p in t.inclusion_proof(4)]
    verify_inclusion(t.root, 9, 4, bytearray(VALUES[4]), proof)  # type: ignore[arg-type]


# -- multiproofs -------------------------------------------------------------------------------


@st.composite
def size_and_indices(draw: st.DrawFn, max_size: int = 3000) -> tuple[int, list[int]]:
    n = draw(st.integers(1, max_size))
    idx = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=min(n, 80)))
    return n, draw(st.permutations(sorted(idx)))


@cache
def tree_of(size: int) -> MerkleTree:
    return MerkleTree(b"".join(VALUES[:size]))


@settings(max_examples=150)
@given(size_and_indices())
def test_multiproof_verifies_and_has_the_predicted_length(case: tuple[int, list[int]]) -> None:
    n, idx = case
    t = tree_of(n)
    proof = t.multiproof(idx)
    assert len(proof) == multiproof_size(idx, n)
    assert len(proof) <= sum(inclusion_proof_size(i, n) for i in idx)
    verify_multiproof(t.root, n, {i: VALUES[i] for i in idx}, proof)


@settings(max_examples=150)
@given(size_and_indices(max_size=300))
def test_multiproof_is_the_naive_walk(case: tuple[int, list[int]]) -> None:
    n, idx = case
    assert tree(n).multiproof(idx) == NAIVE.multiproof(set(idx), 0, n)


def test_multiproof_of_one_leaf_holds_its_audit_path() -> None:
    for n in range(1, 80):
        for i in range(n):
            assert sorted(tree(n).multiproof([i])) == sorted(tree(n).inclusion_proof(i))


def test_multiproof_of_every_leaf_is_empty() -> None:
    n = 37
    assert tree(n).multiproof(range(n)) == []
    verify_multiproof(tree(n).root, n, dict(enumerate(VALUES[:n])), [])


def test_multiproof_shares_siblings() -> None:
    """66 and 256 challenges (each opening i-1 and i) out of 100,000 leaves, as in docs/protocol.md §5, §7.3."""
    rng = np.random.default_rng(1)
    for k in (66, 256):
        ch = rng.choice(np.arange(1, 100_000), size=k, replace=False)
        opened = sorted({0} | {int(i) for i in ch} | {int(i) - 1 for i in ch})
        total = sum(inclusion_proof_size(i, 100_000) for i in opened)
        assert multiproof_size(opened, 100_000) < 0.75 * total


Margs = tuple[bytes, int, dict[int, bytes], list[bytes]]
MULTI_IDX = [0, 5, 6, 19, 12344, 12345, 69999]


def _swap_values(a: Margs) -> Margs:
    vals = dict(a[2])
    vals[5], vals[6] = vals[6], vals[5]
    return (a[0], a[1], vals, a[3])


BAD_MULTIPROOF: dict[str, tuple[Callable[[Margs], Margs], type[Exception], str]] = {
    "extra-hash": (
        lambda a: (*a[:3], [*a[3], a[3][0]]),
        ProofError,
        r"multiproof has wrong size: expected 39 hashes, got 40",
    ),
    "missing-hash": (
        lambda a: (*a[:3], a[3][:-1]),
        ProofError,
        r"multiproof has wrong size: expected 39 hashes, got 38",
    ),
    "short-hash": (
        lambda a: (*a[:3], _replace(a[3], 2, a[3][2][:31])),
        ProofError,
        "multiproof hash 2 has wrong size: expected 32 bytes, got 31",
    ),
    "swapped-hashes": (
        lambda a: (*a[:3], [a[3][1], a[3][0], *a[3][2:]]),
        ProofError,
        "multiproof does not lead to the root",
    ),
    "flipped-hash": (
        lambda a: (*a[:3], _replace(a[3], 30, _flip(a[3][30], 100))),
        ProofError,
        "multiproof does not lead to the root",
    ),
    "swapped-values": (_swap_values, ProofError, "multiproof does not lead to the root"),
    "extra-leaf": (
        lambda a: (a[0], a[1], {**a[2], 7: value(7)}, a[3]),
        ProofError,
        "multiproof has wrong size: expected 38 hashes, got 39",
    ),
    "dropped-leaf": (
        lambda a: (a[0], a[1], {i: v for i, v in a[2].items() if i != 19}, a[3]),
        ProofError,
        "multiproof has wrong size: expected 36 hashes, got 39",
    ),
    "index-past-end": (
        lambda a: (a[0], a[1], {**a[2], BIG_N: value(0)}, a[3]),
        ProofError,
        rf"leaf index out of range: expected 0 <= index < {BIG_N}, got {BIG_N}",
    ),
    "non-int-index": (
        lambda a: (a[0], a[1], {**a[2], "5": value(0)}, a[3]),
        ProofError,
        "leaf index out of range: expected 0 <= index < 70000, got '5'",
    ),
    "no-leaves": (
        lambda a: (a[0], a[1], {}, a[3]),
        ProofError,
        "multiproof needs leaf indices: expected at least 1, got 0",
    ),
    "short-value": (
        lambda a: (a[0], a[1], {**a[2], 6: value(6)[:31]}, a[3]),
        ProofError,
        "leaf value 6 has wrong size: expected 32 bytes, got 31",
    ),
    "size-zero": (lambda a: (a[0], 0, *a[2:]), ProofError, "tree size out of range"),
    "short-root": (lambda a: (a[0][:31], *a[1:]), ProofError, "root has wrong size: expected 32 bytes, got 31"),
    "too-many-leaves": (
        lambda a: (a[0], MAX_TREE_SIZE, dict.fromkeys(range(MAX_MULTIPROOF_LEAVES + 1), value(0)), a[3]),
        LimitExceeded,
        rf"multiproof opens too many leaves: expected at most {MAX_MULTIPROOF_LEAVES}, got {MAX_MULTIPROOF_LEAVES + 1}",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_MULTIPROOF))
def test_lying_multiproof_is_refused(name: str) -> None:
    t = big_tree()
    honest: Margs = (t.root, BIG_N, {i: value(i) for i in MULTI_IDX}, t.multiproof(MULTI_IDX))
    assert len(honest[3]) == 39
    verify_multiproof(*honest)
    lie, error, message = BAD_MULTIPROOF[name]
    with pytest.raises(error, match=message):
        verify_multiproof(*lie(honest))


class _HugeProof(Sequence[bytes]):
    """Claims more hashes than the limit; any read of an element fails the test."""

    def __len__(self) -> int:
        return MAX_PROOF_HASHES + 1

    def __getitem__(self, i: Any) -> Any:
        raise AssertionError("the proof was read before its length was checked")

    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("the proof was read before its length was checked")


def test_oversize_multiproof_is_refused_before_reading() -> None:
    with pytest.raises(LimitExceeded, match=rf"multiproof has too many hashes: expected at most {MAX_PROOF_HASHES}"):
        verify_multiproof(tree(5).root, 5, {0: VALUES[0]}, _HugeProof())


@pytest.mark.parametrize(
    ("indices", "size", "message"),
    [
        ([3, 3], 20, "duplicate leaf index in multiproof: 3"),
        ([1, 20], 20, "leaf index out of range: expected 0 <= index < 20, got 20"),
        ([-1], 20, "leaf index out of range: expected 0 <= index < 20, got -1"),
        ([], 20, "multiproof needs leaf indices: expected at least 1, got 0"),
        ([0], 0, "tree size out of range"),
    ],
    ids=["duplicate", "past-end", "negative", "none", "empty-tree"],
)
def test_bad_multiproof_indices(indices: list[int], size: int, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        multiproof_size(indices, size)
    if size:
        with pytest.raises(ProofError, match=message):
            tree(size).multiproof(indices)


# -- IncrementalTree ---------------------------------------------------------------------------


def test_incremental_root_equals_tree_root_at_every_size_to_300() -> None:
    inc = IncrementalTree()
    for n in SMALL_SIZES:
        inc.append(VALUES[n - 1])
        assert inc.size == n
        assert inc.root() == tree(n).root, n
        assert len(inc._frontier) == n.bit_count()  # O(log n) state: one hash per set bit


@pytest.mark.parametrize("k", [1, 2, 3, 7, 64, 100, 255, 299])
def test_incremental_resume_equals(k: int) -> None:
    inc = IncrementalTree.from_values(VALUES[:k])
    assert inc.size == k
    assert inc.root() == tree(k).root
    for v in VALUES[k:300]:
        inc.append(v)
    assert inc.root() == tree(300).root


def test_incremental_resume_from_a_large_tree() -> None:
    inc = IncrementalTree.from_values(b"".join(VALUES[:4097]))  # numpy levels
    assert inc.root() == NAIVE.mth(0, 4097)
    for v in VALUES[4097:5001]:
        inc.append(v)
    assert inc.root() == NAIVE.mth(0, 5001)


def test_incremental_refuses_bad_input() -> None:
    inc = IncrementalTree()
    with pytest.raises(MalformedError, match="empty tree has no root: expected at least 1 leaf, got 0"):
        inc.root()
    with pytest.raises(MalformedError, match="leaf value has wrong size: expected 32 bytes, got 33"):
        inc.append(VALUES[0] + b"!")
    assert inc.size == 0
    with pytest.raises(MalformedError, match="empty tree"):
        IncrementalTree.from_values([])


# -- issue 16: the compiled path (numba) and batch verification ---------------------------------


def _tree_values(n: int) -> list[bytes]:
    return [blake3(i.to_bytes(8, "little") + b"jit").digest() for i in range(n)]


def _batch_items(tree: MerkleTree, values: list[bytes], picks: list[int]) -> list[tuple[int, bytes, list[bytes]]]:
    return [(i, values[i], tree.inclusion_proof(i)) for i in picks]


# the compiled variant compiles the numba path once per machine (cached after): slow
@pytest.mark.parametrize("jit_verify_min", [pytest.param(1, marks=pytest.mark.slow), 10**9], ids=["compiled", "loop"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_verify_inclusions_accepts_good_and_names_the_first_bad_item(monkeypatch, n: int, jit_verify_min: int) -> None:
    monkeypatch.setattr(M, "_JIT_VERIFY_MIN", jit_verify_min)
    values = _tree_values(n)
    tree = MerkleTree(values)
    picks = sorted({0, n - 1, n // 2, *range(0, n, max(1, n // 37))})
    items = _batch_items(tree, values, picks)
    M.verify_inclusions(tree.root, n, items)
    if n == 1:
        return
    j = len(items) // 2
    i, v, p = items[j]
    for bad, what in (((i, blake3(b"other").digest(), p), "does not lead"), ((i, v, p[:-1]), "wrong size"),
                      ((i, v[:31], p), "wrong size"), ((n, v, p), "out of range")):
        broken = [*items[:j], bad, *items[j + 1 :]]
        with pytest.raises(ProofError, match=what):
            M.verify_inclusions(tree.root, n, broken)
    with pytest.raises(ProofError, match="does not lead"):
        M.verify_inclusions(blake3(b"root").digest(), n, items)


@pytest.mark.slow  # compiles the numba path once per machine (cached after)
def test_compiled_tree_levels_equal_the_numpy_and_library_paths(monkeypatch) -> None:
    pytest.importorskip("numba")
    n = 5001
    values = _tree_values(n)
    data = b"".join(values)
    monkeypatch.setattr(M, "_JIT_MIN", 1)
    compiled = M._build_levels(data, n)
    monkeypatch.setattr(M, "_JIT_MIN", 1 << 62)
    assert M._build_levels(data, n) == compiled
    monkeypatch.setattr(M, "_VECTOR_MIN", 1 << 30)
    assert M._build_levels(data, n)[-1] == compiled[-1]
    items = _batch_items(MerkleTree(values), values, list(range(0, n, 7)))
    monkeypatch.setattr(M, "_JIT_VERIFY_MIN", 1)
    M.verify_inclusions(compiled[-1], n, items)


def test_verify_inclusions_refuses_values_that_are_not_bytes(monkeypatch) -> None:
    """32 characters of text are not a 32-byte value: a ProofError, not a TypeError."""
    monkeypatch.setattr(M, "_JIT_VERIFY_MIN", 1)
    n = 40
    tree = MerkleTree([blake3(bytes([i])).digest() for i in range(n)])
    items = [(i, tree.leaf_value(i), tree.inclusion_proof(i)) for i in range(n)]
    for j, bad in ((3, (3, "x" * 32, items[3][2])), (5, (5, items[5][1], ["y" * 32] * len(items[5][2])))):
        broken = list(items)
        broken[j] = bad
        with pytest.raises(ProofError):
            M.verify_inclusions(tree.root, n, broken)
