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


# -- the digest's fast paths (issue 16 point 3): the same root as the reference, whatever the path


def _fast_path_states() -> list[dict[str, object]]:
    rng = np.random.default_rng(16)

    def raw(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, 256, n, dtype=np.uint8))

    return [
        {"x": raw(4096)},  # one chunk: one node over the header and chunk leaves
        {"x": raw(CHUNK_BYTES)},  # exactly one chunk
        {"x": raw(CHUNK_BYTES + 1)},  # one tensor, two chunks
        {"h": raw(4 * CHUNK_BYTES + 6).view(torch.bfloat16)},  # raw bits, five chunks
        {"m": torch.from_numpy(rng.integers(0, 2, 33, dtype=np.uint8)).bool()},
        {"s": torch.tensor(2.5, dtype=torch.float64)},  # 0-d
        {"n": np.array(1.5, dtype=np.float32)},  # 0-d numpy
        {"w": raw(64 * 4).view(torch.float32).reshape(8, 8), "b": torch.zeros(0, 3), "c": np.arange(5, dtype=np.int64)},
        {"e": torch.zeros(0, dtype=torch.int16)},  # no data: the root is the header leaf
        {"a": raw(CHUNK_BYTES - 3), "b": raw(5), "z": raw(2 * CHUNK_BYTES)},  # chunks never span tensors
    ]


@pytest.mark.parametrize("i", range(len(_fast_path_states())))
def test_every_path_of_state_digest_gives_the_reference_root(i: int) -> None:
    enc._LAYOUTS.clear()
    state = _fast_path_states()[i]
    want = naive_state_root(encode_state(state))
    for _ in range(3):  # the general path, then the cached layout's
        assert state_digest(state) == want
    # a new tensor of the same schema (a new address), and the same one changed in place: hashed again
    fresh = {k: (v.clone() if isinstance(v, torch.Tensor) else v.copy()) for k, v in state.items()}
    assert state_digest(fresh) == want
    for v in fresh.values():
        if v.dtype in (torch.bool, np.bool_) or not v.shape or not np.prod(v.shape):
            continue
        (v.view(torch.uint8) if isinstance(v, torch.Tensor) else v.view(np.uint8)).reshape(-1)[-1] ^= 1
        assert state_digest(fresh) == naive_state_root(encode_state(fresh)) != want
        break


def test_tensors_at_many_addresses_hash_their_own_bytes() -> None:
    """More tensors of one schema than the views kept per layout, alive at once and then freed and
    reallocated: each digest is of the tensor's own bytes."""
    enc._LAYOUTS.clear()
    tensors = [torch.full((1024,), float(i)) for i in range(3 * enc._MAX_VIEWS)]
    want = [naive_state_root(encode_state({"w": t})) for t in tensors]
    for _ in range(2):
        assert [state_digest({"w": t}) for t in tensors] == want
    for i in range(len(tensors)):  # free and reallocate: the allocator may reuse the addresses
        tensors[i] = torch.full((1024,), float(-i))
        assert state_digest({"w": tensors[i]}) == naive_state_root(encode_state({"w": tensors[i]}))


def test_a_tensor_without_memory_of_its_own_is_not_read_at_its_null_pointer() -> None:
    """torch's zero tensor has data_ptr() 0: reading it in place would crash the process."""
    enc._LAYOUTS.clear()
    state_digest({"z": torch.zeros(4)})  # caches the layout of a (4,) float32 state named z
    zero = torch._efficientzerotensor(4)
    assert zero.data_ptr() == 0
    try:
        got = state_digest({"z": zero})
    except RuntimeError:  # torch refuses to read it (the general path): refused, not crashed
        return
    assert got == state_digest({"z": torch.zeros(4)})


@pytest.mark.parametrize("threaded_from", [None, 1])
def test_digests_on_several_threads_at_once_are_each_their_states(monkeypatch: pytest.MonkeyPatch,
                                                                   threaded_from: int | None) -> None:
    """Each thread hashes with hashers of its own (they are reset and reused per hash); with every
    state hashed on the chunk threads too (threaded_from=1), the threads share one pool."""
    import threading  # reason: only this test starts threads

    if threaded_from is not None:
        monkeypatch.setattr(enc, "_THREADED_HASH_BYTES", threaded_from)
    enc._LAYOUTS.clear()
    rng = np.random.default_rng(3)
    sizes = [4096, 65536, CHUNK_BYTES + 7, 3 * CHUNK_BYTES]
    states_ = [{"x": torch.from_numpy(rng.integers(0, 256, sizes[i % 4], dtype=np.uint8))} for i in range(16)]
    want = [naive_state_root(encode_state(s)) for s in states_]
    errors: list[str] = []

    def work(k: int) -> None:
        for r in range(40):
            j = (k * 5 + r) % len(states_)
            if state_digest(states_[j]) != want[j]:
                errors.append(f"thread {k} round {r} state {j}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_an_unreadable_chunk_on_any_thread_raises_after_every_thread_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enc, "_THREADED_HASH_BYTES", 1)
    good = memoryview(np.zeros(4 * CHUNK_BYTES, dtype=np.uint8))
    strided = memoryview(np.zeros(8 * CHUNK_BYTES, dtype=np.uint8)[::2])  # not contiguous: BLAKE3 refuses it
    for datas in ([good, strided], [strided, good]):
        with pytest.raises(BufferError):
            enc._chunk_leaves(datas)
    assert enc._chunk_leaves([good, good]) == [chunk_leaf(bytes(CHUNK_BYTES))] * 8


@SETTINGS
@given(states(max_bytes=CHUNK_BYTES + 64), st.data())
def test_bytes_in_one_piece_and_in_two_digest_alike_canonical_or_not(state: dict[str, torch.Tensor],
                                                                     data: st.DataObject) -> None:
    """digest_encoded parses one piece in place (_split_whole), digest_pieces of several pieces
    streams them (_split): the same bytes accepted as canonical, the same digest, for canonical
    bytes and for bytes cut, extended or with a header byte changed."""
    raw = encode_state(state)
    header_end = len(raw) - sum(t.numel() * t.element_size() for t in state.values())
    variants = [raw, raw[:-1], raw + b"\0", raw[: data.draw(st.integers(0, len(raw)))]]
    at = data.draw(st.integers(0, max(0, min(header_end, len(raw)) - 1)))
    variants.append(raw[:at] + bytes([raw[at] ^ data.draw(st.sampled_from([1, 2, 0x80, 0xFF]))]) + raw[at + 1 :])
    for v in variants:
        cut = data.draw(st.integers(0, len(v)))
        assert digest_encoded(v) == digest_pieces([v[:cut], v[cut:]]) == digest_encoded(memoryview(v))
    assert digest_encoded(raw) == naive_state_root(raw)
