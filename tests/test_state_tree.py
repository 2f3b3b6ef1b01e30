"""A state's subtree (docs/protocol.md §4.1): header and chunk leaves, chunk proofs.

Property tests: every chunk of any state opens and verifies against the state digest; any
flipped bit (in the chunk, a proof hash or the root), a wrong index, a truncated or padded
proof, a chunk of another length and a chunk of another state are refused with ProofError.
The digest is cross-checked against the naive definition in tests/state_tree_ref.py.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pocv.encoding as enc
from pocv.encoding import (
    CHUNK_BYTES,
    K_CHUNK,
    K_HEADER,
    K_STATE_NODE,
    ChunkLayout,
    StateTree,
    chunk_leaf,
    digest_encoded,
    digest_pieces,
    encode_state,
    encoded_pieces,
    state_digest,
    state_schema,
    verify_chunk,
)
from pocv.errors import EncodingError, MalformedError, ProofError
from pocv.merkle import K_LEAF, K_NODE
from tests.state_tree_ref import leaves as ref_leaves
from tests.state_tree_ref import naive_state_root

DTYPES = {"uint8": torch.uint8, "int16": torch.int16, "float32": torch.float32, "float64": torch.float64,
          "bfloat16": torch.bfloat16}


@st.composite
def states(draw: st.DrawFn, max_bytes: int = 3 * CHUNK_BYTES) -> dict[str, torch.Tensor]:
    """1..4 tensors whose sizes straddle chunk boundaries (data from a drawn seed)."""
    names = draw(st.lists(st.text("abcxyz_.-", min_size=1, max_size=6), min_size=1, max_size=4, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = {}
    for name in names:
        dt = draw(st.sampled_from(sorted(DTYPES)))
        item = torch.empty(0, dtype=DTYPES[dt]).element_size()
        near = draw(st.sampled_from([0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 2 * CHUNK_BYTES + 3]))
        n = max(0, near // item + draw(st.integers(-2, 2))) if near else draw(st.integers(0, 40))
        n = min(n, max_bytes // item // len(names))
        raw = rng.integers(0, 256, n * item, dtype=np.uint8)
        out[name] = torch.from_numpy(raw).view(DTYPES[dt]).clone() if n else torch.empty(0, dtype=DTYPES[dt])
    return out


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(states())
def test_every_chunk_opens_and_the_digest_is_the_naive_root(state: dict[str, torch.Tensor]) -> None:
    data = encode_state(state)
    tree = StateTree(data)
    layout = ChunkLayout.from_schema(state_schema(state))
    assert tree.layout == layout
    assert tree.root == state_digest(state) == digest_encoded(data) == digest_pieces(encoded_pieces(state))
    assert tree.root == naive_state_root(data)
    assert layout.size == len(ref_leaves(data))
    # the chunks tile every tensor's data, none longer than CHUNK_BYTES, none empty
    assert all(0 < n <= CHUNK_BYTES for _, _, n in layout.chunks)
    assert sum(n for _, _, n in layout.chunks) + len(layout.header) == len(data) == layout.total
    for c in range(len(layout.chunks)):
        verify_chunk(tree.root, layout, c, layout.chunk_of(data, c), tree.chunk_proof(c))


def _multi_chunk() -> tuple[bytes, StateTree, ChunkLayout]:
    state = {"a": torch.arange(CHUNK_BYTES // 2, dtype=torch.float32),  # 2 chunks
             "b": torch.arange(5, dtype=torch.int64),
             "c": torch.arange(CHUNK_BYTES + 7, dtype=torch.uint8)}  # 2 chunks, the last 7 bytes
    data = encode_state(state)
    return data, StateTree(data), ChunkLayout.from_schema(state_schema(state))


DATA, TREE, LAYOUT = _multi_chunk()


@SETTINGS
@given(st.data())
def test_any_flipped_bit_is_refused(d: st.DataObject) -> None:
    c = d.draw(st.integers(0, len(LAYOUT.chunks) - 1))
    chunk, proof = bytearray(LAYOUT.chunk_of(DATA, c)), TREE.chunk_proof(c)
    where = d.draw(st.sampled_from(["chunk", "proof", "root"]))
    root = bytearray(TREE.root)
    if where == "chunk":
        bit = d.draw(st.integers(0, 8 * len(chunk) - 1))
        chunk[bit // 8] ^= 1 << (bit % 8)
    elif where == "proof":
        j = d.draw(st.integers(0, len(proof) - 1))
        bit = d.draw(st.integers(0, 255))
        h = bytearray(proof[j])
        h[bit // 8] ^= 1 << (bit % 8)
        proof = [*proof[:j], bytes(h), *proof[j + 1 :]]
    else:
        bit = d.draw(st.integers(0, 255))
        root[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProofError, match="do not lead to the state root"):
        verify_chunk(bytes(root), LAYOUT, c, bytes(chunk), proof)


@SETTINGS
@given(st.data())
def test_a_wrong_index_is_refused(d: st.DataObject) -> None:
    c = d.draw(st.integers(0, len(LAYOUT.chunks) - 1))
    other = d.draw(st.integers(0, len(LAYOUT.chunks) - 1).filter(lambda x: x != c))
    chunk = LAYOUT.chunk_of(DATA, c)
    with pytest.raises(ProofError):  # the proof of another index, or this proof at another index
        verify_chunk(TREE.root, LAYOUT, c, chunk, TREE.chunk_proof(other))
    with pytest.raises(ProofError):
        verify_chunk(TREE.root, LAYOUT, other, chunk, TREE.chunk_proof(c))


@pytest.mark.parametrize("index", [-1, 5, 1 << 40, True, 1.0])
def test_an_index_outside_the_layout_is_refused(index: object) -> None:
    with pytest.raises(ProofError, match="chunk index out of range"):
        verify_chunk(TREE.root, LAYOUT, index, LAYOUT.chunk_of(DATA, 0), TREE.chunk_proof(0))  # type: ignore[arg-type]
    with pytest.raises(ProofError, match="chunk index out of range"):
        TREE.chunk_proof(index)  # type: ignore[arg-type]


@pytest.mark.parametrize("c", range(4))
def test_truncated_padded_or_reshaped_proofs_are_refused(c: int) -> None:
    chunk, proof = LAYOUT.chunk_of(DATA, c), TREE.chunk_proof(c)
    for bad, match in ((proof[:-1], "wrong size: expected"), ([*proof, proof[0]], "wrong size: expected"),
                       ([], "wrong size: expected"), ([*proof[:-1], proof[-1][:31]], "has wrong size"),
                       ([*proof[:-1], proof[-1] + b"\0"], "has wrong size")):
        with pytest.raises(ProofError, match=match):
            verify_chunk(TREE.root, LAYOUT, c, chunk, bad)
    with pytest.raises(ProofError, match="wrong size"):  # a truncated or extended chunk
        verify_chunk(TREE.root, LAYOUT, c, chunk[:-1], proof)
    with pytest.raises(ProofError, match="wrong size"):
        verify_chunk(TREE.root, LAYOUT, c, chunk + b"\0", proof)
    with pytest.raises(ProofError, match="state root has wrong size"):
        verify_chunk(TREE.root[:31], LAYOUT, c, chunk, proof)


def test_a_chunk_of_another_state_is_refused() -> None:
    other_state = {"a": torch.arange(CHUNK_BYTES // 2, dtype=torch.float32) + 1,
                   "b": torch.arange(5, dtype=torch.int64),
                   "c": torch.arange(CHUNK_BYTES + 7, dtype=torch.uint8)}
    other_data = encode_state(other_state)
    other = StateTree(other_data)
    assert other.layout == LAYOUT and other.root != TREE.root
    # chunk 0 differs: its proof from the other state leads to the other root, never to this one
    with pytest.raises(ProofError, match="do not lead"):
        verify_chunk(TREE.root, LAYOUT, 0, LAYOUT.chunk_of(other_data, 0), other.chunk_proof(0))
    with pytest.raises(ProofError, match="do not lead"):
        verify_chunk(TREE.root, LAYOUT, 0, LAYOUT.chunk_of(other_data, 0), TREE.chunk_proof(0))
    # chunk 2 is the same bytes in both states: it verifies against each root with that root's proof only
    verify_chunk(TREE.root, LAYOUT, 2, LAYOUT.chunk_of(other_data, 2), TREE.chunk_proof(2))
    with pytest.raises(ProofError, match="do not lead"):
        verify_chunk(TREE.root, LAYOUT, 2, LAYOUT.chunk_of(other_data, 2), other.chunk_proof(2))


def test_domains_are_separated() -> None:
    keys = {K_HEADER, K_CHUNK, K_STATE_NODE, K_LEAF, K_NODE}
    assert len(keys) == 5
    # a header laid out as a chunk does not give the header leaf, nor a chunk the same bytes' node
    assert chunk_leaf(LAYOUT.header) != LAYOUT.header_leaf()
    left, right = chunk_leaf(b"x"), chunk_leaf(b"y")
    assert chunk_leaf(left + right) != blake3(left + right, key=K_STATE_NODE).digest()
    # the digest of bytes that are not a canonical encoding lies in a domain of its own
    assert digest_encoded(b"PCVS") == blake3(b"PCVS", derive_key_context=enc.STATE_CONTEXT).digest()
    assert digest_encoded(DATA[:-1]) != digest_encoded(DATA) and digest_encoded(DATA + b"\0") != digest_encoded(DATA)


def test_the_state_tree_refuses_bytes_that_are_not_a_state() -> None:
    with pytest.raises(MalformedError):
        StateTree(DATA[:-1])
    with pytest.raises(EncodingError):
        ChunkLayout.from_schema({"x": ("complex64", (2,))})
    with pytest.raises(EncodingError):
        ChunkLayout.from_schema({"bad name": ("float32", (2,))})


def test_chunks_hashed_on_threads_give_the_same_root(monkeypatch: pytest.MonkeyPatch) -> None:
    want = naive_state_root(DATA)
    monkeypatch.setattr(enc, "_THREADED_HASH_BYTES", 1)
    assert digest_encoded(DATA) == want
    assert state_digest({"x": torch.arange(3 * CHUNK_BYTES // 4, dtype=torch.float32)}) == naive_state_root(
        encode_state({"x": torch.arange(3 * CHUNK_BYTES // 4, dtype=torch.float32)}))


def test_pieces_that_cut_through_a_tensor_give_the_same_root() -> None:
    cuts = [0, 3, 20, 100, CHUNK_BYTES, CHUNK_BYTES + 50, len(DATA)]
    pieces = [DATA[a:b] for a, b in pairwise(cuts)]
    assert digest_pieces(pieces) == digest_encoded(DATA) == naive_state_root(DATA)
    assert digest_pieces([memoryview(p) for p in pieces]) == naive_state_root(DATA)
