"""pocv.merkle against pymerkle 7.0 on the same 100,000 32-byte leaf values.

    pytest bench/test_bench_merkle.py --benchmark-only -s

The groups ``merkle-build-100k`` and ``merkle-proofs-1000`` are pytest-benchmark's own tables.
``test_ratios`` times both libraries side by side in one test (interleaved, best of several
rounds, so load on the shared cores hits both alike), prints the ratios, and writes them with
the multiproof sizes to bench/results/merkle_ratios.json. Targets (the bench's own; format in docs/protocol.md §5): build and
inclusion-proof generation each >= 20x faster than pymerkle.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from blake3 import blake3
from pymerkle import InmemoryTree

from bench.conftest import quick, write_result
from pocv.merkle import MerkleTree, inclusion_proof_size, multiproof_size, verify_inclusion, verify_multiproof

pytestmark = pytest.mark.bench

N = 100_000
VALUES = [blake3(i.to_bytes(8, "little")).digest() for i in range(N)]
DATA = b"".join(VALUES)
PROOF_INDICES = random.Random(7).sample(range(N), 1000)
TARGET = 20.0


def build_pymerkle() -> InmemoryTree:
    t = InmemoryTree(algorithm="sha256")
    for v in VALUES:
        t.append_entry(v)
    return t


def proofs_ours(tree: MerkleTree) -> None:
    for i in PROOF_INDICES:
        tree.inclusion_proof(i)


def proofs_pymerkle(tree: InmemoryTree) -> None:
    for i in PROOF_INDICES:
        tree.prove_inclusion(i + 1)  # pymerkle counts leaves from 1


@pytest.mark.benchmark(group="merkle-build-100k")
def test_build_ours_list(benchmark: Any) -> None:
    benchmark.pedantic(MerkleTree, args=(VALUES,), rounds=10, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="merkle-build-100k")
def test_build_ours_bytes(benchmark: Any) -> None:
    benchmark.pedantic(MerkleTree, args=(DATA,), rounds=10, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="merkle-build-100k")
def test_build_pymerkle(benchmark: Any) -> None:
    benchmark.pedantic(build_pymerkle, rounds=3, iterations=1)


@pytest.mark.benchmark(group="merkle-proofs-1000")
def test_proofs_ours(benchmark: Any) -> None:
    benchmark.pedantic(proofs_ours, args=(MerkleTree(VALUES),), rounds=20, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="merkle-proofs-1000")
def test_proofs_pymerkle(benchmark: Any) -> None:
    benchmark.pedantic(proofs_pymerkle, args=(build_pymerkle(),), rounds=5, iterations=1, warmup_rounds=1)


def verify_ours(tree: MerkleTree, proofs: list[tuple[int, list[bytes]]]) -> None:
    for i, proof in proofs:
        verify_inclusion(tree.root, N, i, VALUES[i], proof)


def verify_pymerkle(root: bytes, proofs: list[tuple[bytes, Any]]) -> None:
    from pymerkle import verify_inclusion as py_verify

    for base, proof in proofs:
        py_verify(base, root, proof)


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _multiproof_sizes(tree: MerkleTree, rng: random.Random, k: int) -> dict[str, int]:
    single = sorted(rng.sample(range(N), k))
    # what a response opens (docs/protocol.md §8): s_0, and s_{i-1}, s_i for each challenged i
    challenged = rng.sample(range(1, N), k)
    opened = sorted({0} | set(challenged) | {i - 1 for i in challenged})
    proof = tree.multiproof(opened)
    verify_multiproof(tree.root, N, {i: VALUES[i] for i in opened}, proof)
    return {
        "challenges": k,
        "multiproof_hashes": multiproof_size(single, N),
        "single_proofs_hashes": sum(inclusion_proof_size(i, N) for i in single),
        "opened_leaves": len(opened),
        "opened_multiproof_hashes": len(proof),
        "opened_single_proofs_hashes": sum(inclusion_proof_size(i, N) for i in opened),
    }


@pytest.mark.benchmark(group="merkle-ratios")
def test_ratios(benchmark: Any) -> None:
    ours_list, ours_bytes, theirs = [], [], []
    for _ in range(quick(2, 3)):  # interleaved, so drift hits both sides alike
        gc.collect()
        for _ in range(quick(3, 5)):
            ours_list.append(_best(lambda: MerkleTree(VALUES), 1))
            ours_bytes.append(_best(lambda: MerkleTree(DATA), 1))
        theirs.append(_best(build_pymerkle, 1))
    ours_tree, their_tree = MerkleTree(VALUES), build_pymerkle()
    assert ours_tree.root == MerkleTree(DATA).root
    assert their_tree.get_size() == ours_tree.size == N
    proofs_pymerkle(their_tree)  # warm pymerkle's subroot cache, as ours is warm
    p_ours, p_theirs = [], []
    for _ in range(quick(2, 3)):
        p_ours.append(_best(lambda: proofs_ours(ours_tree), 10) / len(PROOF_INDICES))
        p_theirs.append(_best(lambda: proofs_pymerkle(their_tree), 2) / len(PROOF_INDICES))
    # verification: each library checks its own proofs of the same 1,000 leaves
    ours_proofs = [(i, ours_tree.inclusion_proof(i)) for i in PROOF_INDICES]
    their_root = their_tree.get_state()
    their_proofs = [(their_tree.get_leaf(i + 1), their_tree.prove_inclusion(i + 1)) for i in PROOF_INDICES]
    v_ours, v_theirs = [], []
    for _ in range(quick(2, 3)):
        v_ours.append(_best(lambda: verify_ours(ours_tree, ours_proofs), 5) / len(PROOF_INDICES))
        v_theirs.append(_best(lambda: verify_pymerkle(their_root, their_proofs), 2) / len(PROOF_INDICES))
    build_ours, build_theirs = min(ours_list), min(theirs)
    proof_ours, proof_theirs = min(p_ours), min(p_theirs)
    verify_ours_s, verify_theirs_s = min(v_ours), min(v_theirs)
    rng = random.Random(11)
    result = {
        "leaves": N,
        "build_ms": {
            "ours_list": build_ours * 1e3,
            "ours_bytes": min(ours_bytes) * 1e3,
            "pymerkle": build_theirs * 1e3,
        },
        "build_ratio": build_theirs / build_ours,
        "build_ratio_bytes_input": build_theirs / min(ours_bytes),
        "proof_us": {"ours": proof_ours * 1e6, "pymerkle": proof_theirs * 1e6},
        "proof_ratio": proof_theirs / proof_ours,
        "verify_us": {"ours": verify_ours_s * 1e6, "pymerkle": verify_theirs_s * 1e6},
        "verify_ratio": verify_theirs_s / verify_ours_s,
        "target_ratio": TARGET,
        "multiproofs": [_multiproof_sizes(ours_tree, rng, k) for k in (64, 66, 256)],
    }
    result["targets_met"] = result["build_ratio"] >= TARGET and result["proof_ratio"] >= TARGET
    benchmark.extra_info.update(result)
    benchmark.pedantic(MerkleTree, args=(VALUES,), rounds=1, iterations=1)
    path = write_result("merkle_ratios", result)
    print(
        f"\nbuild {N} leaves: ours {build_ours * 1e3:.1f} ms (list), {min(ours_bytes) * 1e3:.1f} ms (bytes); "
        f"pymerkle {build_theirs * 1e3:.0f} ms; ratio {result['build_ratio']:.1f}x "
        f"({result['build_ratio_bytes_input']:.1f}x from bytes)"
    )
    print(
        f"inclusion proof: ours {proof_ours * 1e6:.2f} us, pymerkle {proof_theirs * 1e6:.1f} us; "
        f"ratio {result['proof_ratio']:.1f}x (target >= {TARGET:.0f}x)"
    )
    print(
        f"verify an inclusion proof: ours {verify_ours_s * 1e6:.2f} us, pymerkle {verify_theirs_s * 1e6:.1f} us; "
        f"ratio {result['verify_ratio']:.1f}x"
    )
    for m in result["multiproofs"]:
        print(
            f"multiproof, {m['challenges']} random leaves: {m['multiproof_hashes']} hashes vs "
            f"{m['single_proofs_hashes']} in single proofs; {m['challenges']} challenges opening "
            f"{m['opened_leaves']} leaves: {m['opened_multiproof_hashes']} vs {m['opened_single_proofs_hashes']}"
        )
    print(f"wrote {path}")


# -- issue 16: at 10^6 leaves, and verification against a plain loop ----------------------------

SCALE_N = quick(200_000, 1_000_000)
BUILD_TARGET = 40.0
VERIFY_TARGET = 5.0


def _plain_verify(root: bytes, size: int, items: list[tuple[int, bytes, list[bytes]]]) -> None:
    """The baseline: a plain Python loop of blake3 calls per proof (no shape checks at all)."""
    from pocv.merkle import K_LEAF, K_NODE

    for index, value, proof in items:
        h = blake3(value, key=K_LEAF).digest()
        node, count, it = index, size, iter(proof)
        while count > 1:
            if (node ^ 1) < count:
                s = next(it)
                h = blake3(s + h if node & 1 else h + s, key=K_NODE).digest()
            node, count = node >> 1, (count + 1) >> 1
        if h != root:
            raise AssertionError("plain loop: proof does not verify")


@pytest.mark.benchmark(group="merkle-scale")
def test_scale_and_verify(benchmark: Any) -> None:
    """Build, inclusion proofs and verification at SCALE_N leaves, pocv vs pymerkle, interleaved;
    verification also against a plain loop of blake3 calls (verify_inclusions folds a batch of
    proofs level by level in one compiled call; verify_inclusion is the one-proof API)."""
    from pocv.merkle import verify_inclusions

    values = [blake3(i.to_bytes(8, "little")).digest() for i in range(SCALE_N)]
    data = b"".join(values)
    idx = random.Random(9).sample(range(SCALE_N), 1000)

    def build_theirs() -> InmemoryTree:
        t = InmemoryTree(algorithm="sha256")
        for v in values:
            t.append_entry(v)
        return t

    MerkleTree(data)  # warm: load the compiled path once, as a long-running worker has
    ours_b, ours_l, theirs_b = [], [], []
    for _ in range(quick(2, 2)):
        gc.collect()
        for _ in range(3):
            ours_b.append(_best(lambda: MerkleTree(data), 1))
            ours_l.append(_best(lambda: MerkleTree(values), 1))
        theirs_b.append(_best(build_theirs, 1))
    ours, theirs = MerkleTree(data), build_theirs()
    for i in idx:
        theirs.prove_inclusion(i + 1)  # warm pymerkle's caches, as ours are warm
    p_ours = min(_best(lambda: [ours.inclusion_proof(i) for i in idx], 10) for _ in range(3)) / len(idx)
    p_theirs = min(_best(lambda: [theirs.prove_inclusion(i + 1) for i in idx], 2) for _ in range(2)) / len(idx)
    items = [(i, values[i], ours.inclusion_proof(i)) for i in idx]
    verify_inclusions(ours.root, SCALE_N, items)  # warm
    v_plain, v_batch, v_single = [], [], []
    for _ in range(quick(3, 5)):  # interleaved
        v_plain.append(_best(lambda: _plain_verify(ours.root, SCALE_N, items), 3) / len(idx))
        v_batch.append(_best(lambda: verify_inclusions(ours.root, SCALE_N, items), 3) / len(idx))
        v_single.append(_best(lambda: [verify_inclusion(ours.root, SCALE_N, i, v, p) for i, v, p in items], 3)
                        / len(idx))
    their_root = theirs.get_state()
    their_proofs = [(theirs.get_leaf(i + 1), theirs.prove_inclusion(i + 1)) for i in idx]
    v_theirs = _best(lambda: verify_pymerkle(their_root, their_proofs), 2) / len(idx)
    result = {
        "leaves": SCALE_N,
        "build_ms": {"ours_bytes": min(ours_b) * 1e3, "ours_list": min(ours_l) * 1e3, "pymerkle": min(theirs_b) * 1e3},
        "build_ratio": min(theirs_b) / min(ours_b), "build_ratio_list_input": min(theirs_b) / min(ours_l),
        "proof_us": {"ours": p_ours * 1e6, "pymerkle": p_theirs * 1e6}, "proof_ratio": p_theirs / p_ours,
        "verify_us": {"plain_loop": min(v_plain) * 1e6, "verify_inclusions": min(v_batch) * 1e6,
                      "verify_inclusion": min(v_single) * 1e6, "pymerkle": v_theirs * 1e6},
        "verify_batch_over_plain": min(v_plain) / min(v_batch),
        "verify_single_over_plain": min(v_plain) / min(v_single),
        "verify_batch_over_pymerkle": v_theirs / min(v_batch),
        "targets": {"build_ratio": BUILD_TARGET, "proof_ratio": BUILD_TARGET, "verify_batch_over_plain": VERIFY_TARGET},
        "samples": {"verify_plain_us": [x * 1e6 for x in v_plain], "verify_batch_us": [x * 1e6 for x in v_batch]},
    }
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "samples"})
    benchmark.pedantic(verify_inclusions, args=(ours.root, SCALE_N, items), rounds=3, iterations=1)
    write_result("merkle_scale", result)
    print(f"\n{SCALE_N:,} leaves: build ours {min(ours_b) * 1e3:.0f} ms (bytes), {min(ours_l) * 1e3:.0f} ms (list); "
          f"pymerkle {min(theirs_b) * 1e3:.0f} ms: {result['build_ratio']:.1f}x; proof {p_ours * 1e6:.2f} us vs "
          f"{p_theirs * 1e6:.1f} us: {result['proof_ratio']:.1f}x; verify per proof: plain loop "
          f"{min(v_plain) * 1e6:.2f} us, verify_inclusions {min(v_batch) * 1e6:.2f} us "
          f"({result['verify_batch_over_plain']:.1f}x), verify_inclusion {min(v_single) * 1e6:.2f} us, "
          f"pymerkle {v_theirs * 1e6:.1f} us")
    assert result["build_ratio"] > 0
