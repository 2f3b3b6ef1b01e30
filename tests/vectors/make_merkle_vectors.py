"""Regenerate tests/vectors/merkle.json: `python tests/vectors/make_merkle_vectors.py`.

The vectors come from the plain recursive definitions below (RFC 9162 section 2.1, one
``blake3`` library call per hash), not from ``pocv.merkle``, so the file is an independent
reference: ``tests/test_merkle.py`` checks the library against it and checks that this script
still produces exactly the stored file. Regenerate only for a deliberate change of the tree
(and change the key contexts' version with it).

Leaf values are ``blake3(i.to_bytes(8, "little")).digest()`` for i = 0, 1, 2, ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blake3 import blake3

LEAF_KEY_CONTEXT = "pocv 2026-11 merkle leaf v1"
NODE_KEY_CONTEXT = "pocv 2026-11 merkle node v1"
K_LEAF = blake3(b"", derive_key_context=LEAF_KEY_CONTEXT).digest()
K_NODE = blake3(b"", derive_key_context=NODE_KEY_CONTEXT).digest()

ROOT_SIZES = range(1, 21)
PROOFS = [(1, 0), (2, 0), (2, 1), (3, 2), (5, 4), (7, 3), (13, 12), (16, 9), (20, 0), (20, 17), (20, 19)]
MULTIPROOFS = [(1, [0]), (20, [0, 5, 6, 19]), (13, [2, 12]), (16, [0, 15]), (20, list(range(20)))]


def value(i: int) -> bytes:
    return blake3(i.to_bytes(8, "little")).digest()


def split(n: int) -> int:
    """Largest power of two strictly less than n >= 2."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(values: list[bytes]) -> bytes:
    """RFC 9162 MTH with keyed BLAKE3 leaf and node hashes."""
    if len(values) == 1:
        return blake3(values[0], key=K_LEAF).digest()
    k = split(len(values))
    return blake3(mth(values[:k]) + mth(values[k:]), key=K_NODE).digest()


def path(m: int, values: list[bytes]) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]): the audit path, leaf level first."""
    if len(values) == 1:
        return []
    k = split(len(values))
    if m < k:
        return [*path(m, values[:k]), mth(values[k:])]
    return [*path(m - k, values[k:]), mth(values[:k])]


def multiproof(indices: list[int], values: list[bytes]) -> list[bytes]:
    """Subtree hashes a left-to-right depth-first walk needs to rebuild the root from the leaves
    at ``indices``: for each split, the left part (its hash, or its own walk) then the right."""
    if len(values) == 1:
        return []
    k = split(len(values))
    left = [i for i in indices if i < k]
    right = [i - k for i in indices if i >= k]
    out = multiproof(left, values[:k]) if left else [mth(values[:k])]
    out += multiproof(right, values[k:]) if right else [mth(values[k:])]
    return out


def vectors() -> dict[str, Any]:
    vals = [value(i) for i in range(max(ROOT_SIZES))]
    return {
        "leaf_key_context": LEAF_KEY_CONTEXT,
        "node_key_context": NODE_KEY_CONTEXT,
        "k_leaf": K_LEAF.hex(),
        "k_node": K_NODE.hex(),
        "values": "blake3(i.to_bytes(8, 'little')).digest()",
        "roots": [{"size": n, "root": mth(vals[:n]).hex()} for n in ROOT_SIZES],
        "inclusion_proofs": [{"size": n, "index": i, "proof": [h.hex() for h in path(i, vals[:n])]} for n, i in PROOFS],
        "multiproofs": [
            {"size": n, "indices": idx, "proof": [h.hex() for h in multiproof(idx, vals[:n])]} for n, idx in MULTIPROOFS
        ],
    }


def render() -> str:
    return json.dumps(vectors(), indent=1) + "\n"


def main() -> None:
    out = Path(__file__).with_name("merkle.json")
    out.write_text(render())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
