"""BLAKE3 Merkle commitments in RFC 6962 / 9162 shape (docs/protocol.md §5).

Tree shape (RFC 9162 section 2.1.1): for ``n >= 1`` leaves ``D[0:n]``::

    MTH(D[0:1]) = leaf_hash(D[0])
    MTH(D[0:n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of two < n

so an odd last node is promoted, never duplicated. The same tree, built bottom-up, pairs the
nodes of each level left to right and carries an unpaired last node up unchanged; that is how
:class:`MerkleTree` stores it (one ``bytes`` of ``32 * count`` per level).

Hashing (leaf/node domain separation, docs/protocol.md §5)::

    leaf_hash(v)    = BLAKE3-256 keyed with K_LEAF over v        (v: a 32-byte state digest)
    node_hash(l, r) = BLAKE3-256 keyed with K_NODE over l || r

with ``K_LEAF`` and ``K_NODE`` derived by BLAKE3's ``derive_key`` mode from two distinct context
strings. No leaf hash can be passed off as a node hash or the reverse without a BLAKE3 collision
between differently keyed instances.

Speed: every leaf and node hash is a single BLAKE3 compression (one chunk, one block of 32 or
64 bytes, flags CHUNK_START | CHUNK_END | ROOT | KEYED_HASH). :func:`_compress` runs that
compression on numpy uint32 columns, a whole tree level per call, and large levels are split
over two threads (numpy releases the GIL inside its loops). Small levels and all verification
use the ``blake3`` library one call per hash. The vectorized path is cross-checked against the
library in ``tests/test_merkle.py``.

Multiproofs: for a set of leaf indices, the hashes of the subtrees that hold none of them but
whose sibling holds some, each sent once, in the order a left-to-right depth-first walk over the
RFC 6962 split consumes them (a subtree's hash comes before anything from its right sibling).

Errors: a proof of the wrong shape or one that does not verify raises
:class:`~pocv.errors.ProofError` saying what was expected and what came; malformed leaf
values given to a tree raise :class:`~pocv.errors.MalformedError`; inputs over a named
limit raise :class:`~pocv.errors.LimitExceeded`.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, pairwise
from typing import Any, Final

import numpy as np
from blake3 import blake3

from pocv.errors import LimitExceeded, MalformedError, ProofError
from pocv.limits import DIGEST_SIZE

__all__ = [
    "DIGEST_SIZE",
    "K_LEAF",
    "K_NODE",
    "LEAF_KEY_CONTEXT",
    "MAX_INCLUSION_HASHES",
    "MAX_MULTIPROOF_LEAVES",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "NODE_KEY_CONTEXT",
    "IncrementalTree",
    "MerkleTree",
    "inclusion_proof_size",
    "keyed_fold",
    "keyed_levels",
    "keyed_proof",
    "keyed_root",
    "leaf_hash",
    "merkle_root",
    "multiproof_size",
    "node_hash",
    "verify_inclusion",
    "verify_inclusions",
    "verify_multiproof",
]


LEAF_KEY_CONTEXT: Final = "pocv 2026-11 merkle leaf v1"
NODE_KEY_CONTEXT: Final = "pocv 2026-11 merkle node v1"
#: BLAKE3 key of leaf hashes: ``blake3(b"", derive_key_context=LEAF_KEY_CONTEXT).digest()``.
K_LEAF: Final[bytes] = blake3(b"", derive_key_context=LEAF_KEY_CONTEXT).digest()
#: BLAKE3 key of inner-node hashes: ``blake3(b"", derive_key_context=NODE_KEY_CONTEXT).digest()``.
K_NODE: Final[bytes] = blake3(b"", derive_key_context=NODE_KEY_CONTEXT).digest()

#: Limits a hostile size, index set or proof cannot exceed (checked before any hashing).
#: 2^40 leaves (one per step) is far beyond any job; it caps an inclusion proof at 40 hashes,
#: so a claimed size cannot make a verifier loop or allocate without bound.
MAX_TREE_SIZE: Final = 1 << 40
#: The longest inclusion proof: the depth of a tree of MAX_TREE_SIZE leaves.
MAX_INCLUSION_HASHES: Final = (MAX_TREE_SIZE - 1).bit_length()
#: Leaves opened by one multiproof: a response opens s_0 and s_{i-1}, s_i for each of at most
#: challenge.MAX_CHALLENGES = 65,536 challenges (docs/protocol.md §8, §15), so 2^18 leaves suffice.
MAX_MULTIPROOF_LEAVES: Final = 1 << 18
#: Hashes in one multiproof. A multiproof is never longer than the individual proofs of its
#: leaves together, so no valid multiproof within MAX_MULTIPROOF_LEAVES is longer than this.
MAX_PROOF_HASHES: Final = MAX_MULTIPROOF_LEAVES * MAX_INCLUSION_HASHES

# -- numpy BLAKE3 compression ------------------------------------------------------------------

_U32: Final = np.dtype("<u4")
_U32Array = np.ndarray[Any, np.dtype[np.uint32]]

_IV: Final = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A)
_MSG_PERMUTATION: Final = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START: Final = 1 << 0
_CHUNK_END: Final = 1 << 1
_ROOT: Final = 1 << 3
_KEYED_HASH: Final = 1 << 4
_SINGLE_BLOCK_FLAGS: Final = _CHUNK_START | _CHUNK_END | _ROOT | _KEYED_HASH


def _message_schedule() -> tuple[tuple[int, ...], ...]:
    """Message word order of each of the 7 rounds (the permutation applied round after round)."""
    rounds = [tuple(range(16))]
    for _ in range(6):
        rounds.append(tuple(rounds[-1][p] for p in _MSG_PERMUTATION))
    return tuple(rounds)


_SCHEDULE: Final = _message_schedule()
# (a, b, c, d) state words of the 8 G calls of a round: 4 columns, then 4 diagonals.
_G_WORDS: Final = (
    (0, 4, 8, 12),
    (1, 5, 9, 13),
    (2, 6, 10, 14),
    (3, 7, 11, 15),
    (0, 5, 10, 15),
    (1, 6, 11, 12),
    (2, 7, 8, 13),
    (3, 4, 9, 14),
)
_LEAF_KEY_WORDS: Final = tuple(int(w) for w in np.frombuffer(K_LEAF, _U32))
_NODE_KEY_WORDS: Final = tuple(int(w) for w in np.frombuffer(K_NODE, _U32))

# Levels with fewer hashes than this go through the blake3 library one call per hash (about
# 0.6 us a call; the numpy path has a fixed cost of ~1,200 numpy calls a level).
_VECTOR_MIN: Final = 1024
# Levels of at most this many nodes are also kept as lists of hashes, for fast proofs.
_LIST_LEVEL_MAX: Final = 4096
# Levels with at least this many hashes are split over two threads.
_THREAD_MIN: Final = 32768


def _compress(key_words: tuple[int, ...], msg: _U32Array, block_len: int, out: _U32Array) -> None:
    """BLAKE3 compression of one single-block keyed hash per column, written to ``out``.

    ``msg`` is (w, N) uint32 message words (w = 8 for 32-byte blocks, whose upper 8 words are
    zero, or 16); ``out`` is an (N, 8) uint32 view that receives the 32-byte outputs,
    node-major. Chunk counter 0, flags CHUNK_START | CHUNK_END | ROOT | KEYED_HASH.
    """
    n = msg.shape[1]
    v = np.empty((16, n), _U32)
    t = np.empty(n, _U32)
    for i in range(8):
        v[i].fill(key_words[i])
    for i in range(4):
        v[8 + i].fill(_IV[i])
    v[12].fill(0)  # chunk counter, low and high words
    v[13].fill(0)
    v[14].fill(block_len)
    v[15].fill(_SINGLE_BLOCK_FLAGS)
    w = [v[i] for i in range(16)]
    m: list[_U32Array | None] = [msg[i] if i < msg.shape[0] else None for i in range(16)]
    add, xor, orr = np.add, np.bitwise_xor, np.bitwise_or
    shr, shl = np.right_shift, np.left_shift
    for order in _SCHEDULE:
        for g, (ia, ib, ic, id_) in enumerate(_G_WORDS):
            a, b, c, d = w[ia], w[ib], w[ic], w[id_]
            mx, my = m[order[2 * g]], m[order[2 * g + 1]]
            add(a, b, out=a)
            if mx is not None:  # a zero word (the tail of a 32-byte block) adds nothing
                add(a, mx, out=a)
            xor(d, a, out=d)
            shr(d, 16, out=t)
            shl(d, 16, out=d)
            orr(d, t, out=d)  # d = rotr(d ^ a, 16)
            add(c, d, out=c)
            xor(b, c, out=b)
            shr(b, 12, out=t)
            shl(b, 20, out=b)
            orr(b, t, out=b)  # b = rotr(b ^ c, 12)
            add(a, b, out=a)
            if my is not None:
                add(a, my, out=a)
            xor(d, a, out=d)
            shr(d, 8, out=t)
            shl(d, 24, out=d)
            orr(d, t, out=d)  # d = rotr(d ^ a, 8)
            add(c, d, out=c)
            xor(b, c, out=b)
            shr(b, 7, out=t)
            shl(b, 25, out=b)
            orr(b, t, out=b)  # b = rotr(b ^ c, 7)
    for i in range(8):
        xor(w[i], w[i + 8], out=out[:, i])


def _hash_rows(key_words: tuple[int, ...], rows: _U32Array, out: _U32Array) -> None:
    """Hash each row of ``rows`` ((N, 8) values or (N, 16) child pairs) into ``out`` (N, 8)."""
    msg = np.empty((rows.shape[1], rows.shape[0]), _U32)
    np.copyto(msg, rows.T)
    _compress(key_words, msg, 4 * rows.shape[1], out)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - non-Linux hosts


def _helper_pool() -> ThreadPoolExecutor | None:
    """One helper thread, made on first use, when there is a second core to run it on."""
    global _pool
    if _pool is None and _cores() > 1:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocv-merkle")
    return _pool


def _forget_pool_after_fork() -> None:
    """A forked child has no copy of the helper thread: a job sent to it would never run."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _hash_rows_parallel(key_words: tuple[int, ...], rows: _U32Array, out: _U32Array) -> None:
    n = rows.shape[0]
    jit = n >= _JIT_MIN
    pool = _helper_pool() if n >= _THREAD_MIN else None
    if pool is None:
        _hash_rows_fast(key_words, rows, out, jit)
        return
    half = n // 2
    job = pool.submit(_hash_rows_fast, key_words, rows[half:], out[half:], jit)
    _hash_rows_fast(key_words, rows[:half], out[:half], jit)
    job.result()


# -- compiled BLAKE3 compression (numba, loaded for large trees and batch verification) -------

#: Rows (hashes) of a tree level from which it goes through the compiled path when numba is
#: usable: loading numba and the cached machine code costs about a second once per process, so
#: only big trees take it. Below it the numpy path is fast enough.
_JIT_MIN: Final = 1 << 18
#: Proofs from which verify_inclusions folds them all in one compiled call.
_JIT_VERIFY_MIN: Final = 32
_IV_WORDS: Final = np.array(_IV, dtype=_U32)


def _schedule_table() -> np.ndarray[Any, np.dtype[np.int64]]:
    """(56, 6): state words a, b, c, d and message words x, y of each G call, round by round."""
    return np.array([(*_G_WORDS[g], order[2 * g], order[2 * g + 1]) for order in _SCHEDULE for g in range(8)],
                    dtype=np.int64)


_SCHEDULE_TABLE: Final = _schedule_table()


def _g_block(va: Any, vb: Any, vc: Any, vd: Any, mx: Any, my: Any, n: int) -> None:  # pragma: no cover - jitted
    """One G function on ``n`` columns (numba compiles this; LLVM vectorizes the loop)."""
    for j in range(n):
        a = va[j]
        b = vb[j]
        c = vc[j]
        d = vd[j]
        a = np.uint32(a + b + mx[j])
        d = np.uint32(d ^ a)
        d = np.uint32((d >> np.uint32(16)) | (d << np.uint32(16)))
        c = np.uint32(c + d)
        b = np.uint32(b ^ c)
        b = np.uint32((b >> np.uint32(12)) | (b << np.uint32(20)))
        a = np.uint32(a + b + my[j])
        d = np.uint32(d ^ a)
        d = np.uint32((d >> np.uint32(8)) | (d << np.uint32(24)))
        c = np.uint32(c + d)
        b = np.uint32(b ^ c)
        b = np.uint32((b >> np.uint32(7)) | (b << np.uint32(25)))
        va[j] = a
        vb[j] = b
        vc[j] = c
        vd[j] = d


def _hash_rows_block(key: Any, rows: Any, block_len: int, flags: int, sched: Any, iv: Any,
                     out: Any) -> None:  # pragma: no cover - jitted
    """Single-block keyed BLAKE3 of each row of ``rows`` ((N, 8) or (N, 16) uint32) into ``out``."""
    n, w = rows.shape
    B = 512  # columns per block: 16 state + 16 message rows of 512 words (64 KiB) stay in L1/L2
    V = np.empty((16, B), np.uint32)
    M = np.zeros((16, B), np.uint32)
    for start in range(0, n, B):
        m = min(B, n - start)
        for i in range(w):
            for j in range(m):
                M[i, j] = rows[start + j, i]
        for i in range(8):
            V[i, :m] = key[i]
        for i in range(4):
            V[8 + i, :m] = iv[i]
        V[12, :m] = 0
        V[13, :m] = 0
        V[14, :m] = block_len
        V[15, :m] = flags
        for s in range(sched.shape[0]):
            _g_jit(V[sched[s, 0]], V[sched[s, 1]], V[sched[s, 2]], V[sched[s, 3]], M[sched[s, 4]], M[sched[s, 5]], m)
        for j in range(m):
            for i in range(8):
                out[start + j, i] = V[i, j] ^ V[i + 8, j]


_g_jit: Any = None
_hash_rows_jit: Any = None
_fold_paths_jit: Any = None
_jit_state = {"tried": False}
_jit_lock = threading.Lock()


def _jitted() -> Any:
    """The compiled row hasher, or None where numba is unusable or ``POCV_NO_JIT=1``.

    Compiled once per machine (numba's cache, next to this module), loaded in ~0.1 s after that.
    """
    global _g_jit, _hash_rows_jit, _fold_paths_jit
    if _jit_state["tried"]:
        return _hash_rows_jit
    with _jit_lock:
        if not _jit_state["tried"]:
            _jit_state["tried"] = True
            if os.environ.get("POCV_NO_JIT") == "1":
                return None
            try:
                import numba  # heavy (~0.3 s): only trees of _JIT_MIN leaves and batch verification need it
            except ImportError:  # pragma: no cover - numba is a dependency
                return None
            _g_jit = numba.njit(nogil=True, cache=True)(_g_block)
            _hash_rows_jit = numba.njit(nogil=True, cache=True)(_hash_rows_block)
            _fold_paths_jit = numba.njit(nogil=True, cache=True)(_fold_paths)
    return _hash_rows_jit


def _hash_rows_fast(key_words: tuple[int, ...], rows: _U32Array, out: _U32Array, jit: bool) -> None:
    fn = _jitted() if jit else None
    if fn is None:
        _hash_rows(key_words, rows, out)
        return
    fn(np.array(key_words, dtype=_U32), rows, 4 * rows.shape[1], _SINGLE_BLOCK_FLAGS, _SCHEDULE_TABLE,
       _IV_WORDS, out)


def _fold_paths(key_leaf: Any, key_node: Any, size: int, idx: Any, vals: Any, hashes: Any, offs: Any, sched: Any,
                iv: Any, out: Any) -> None:  # pragma: no cover - jitted
    """The roots that inclusion proofs lead to, all proofs one tree level at a time: out[p] is
    the root from leaf idx[p] with value vals[p] and the audit path hashes[offs[p]:offs[p+1]]
    (lengths already checked). Each level's hashes are one block-hashed batch."""
    m = idx.shape[0]
    flags = 1 | 2 | 8 | 16
    _hash_rows_jit(key_leaf, vals, 32, flags, sched, iv, out)
    node = idx.copy()
    pos = offs[:m].copy()
    rows = np.empty((m, 16), np.uint32)
    tmp = np.empty((m, 8), np.uint32)
    which = np.empty(m, np.int64)
    count = size
    while count > 1:
        k = 0
        for p in range(m):
            if (node[p] ^ 1) < count:  # else the node is promoted: no sibling at this level
                q = pos[p]
                pos[p] = q + 1
                if node[p] & 1:
                    for w in range(8):
                        rows[k, w] = hashes[q, w]
                        rows[k, 8 + w] = out[p, w]
                else:
                    for w in range(8):
                        rows[k, w] = out[p, w]
                        rows[k, 8 + w] = hashes[q, w]
                which[k] = p
                k += 1
            node[p] = node[p] >> 1
        if k:
            _hash_rows_jit(key_node, rows[:k], 64, flags, sched, iv, tmp[:k])
            for t in range(k):
                for w in range(8):
                    out[which[t], w] = tmp[t, w]
        count = (count + 1) >> 1


# -- hashing one node at a time ----------------------------------------------------------------


def leaf_hash(value: bytes) -> bytes:
    """``BLAKE3(key=K_LEAF, value)`` of one 32-byte leaf value."""
    if len(value) != DIGEST_SIZE:
        raise MalformedError(f"leaf value has wrong size: expected {DIGEST_SIZE} bytes, got {len(value)}")
    return blake3(value, key=K_LEAF).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``BLAKE3(key=K_NODE, left || right)`` of two 32-byte child hashes."""
    if len(left) != DIGEST_SIZE or len(right) != DIGEST_SIZE:
        raise MalformedError(
            f"child hashes have wrong size: expected {DIGEST_SIZE} bytes each, got {len(left)} and {len(right)}"
        )
    return blake3(left + right, key=K_NODE).digest()


# -- building ----------------------------------------------------------------------------------


def _join_values(values: Sequence[bytes] | bytes | bytearray | memoryview) -> tuple[bytes, int]:
    """The leaf values as one ``bytes`` of ``32 * n`` and n; MalformedError if not that shape."""
    if isinstance(values, bytes | bytearray | memoryview):
        data = bytes(values)
        if not data or len(data) % DIGEST_SIZE:
            raise MalformedError(
                f"concatenated leaf values have wrong size: expected a positive multiple of "
                f"{DIGEST_SIZE} bytes, got {len(data)}"
            )
        n = len(data) // DIGEST_SIZE
    else:
        n = len(values)
        if n == 0:
            raise MalformedError("empty tree: expected at least 1 leaf value, got 0")
        if list(map(len, values)).count(DIGEST_SIZE) != n:
            bad = next(i for i, v in enumerate(values) if len(v) != DIGEST_SIZE)
            raise MalformedError(
                f"leaf value {bad} has wrong size: expected {DIGEST_SIZE} bytes, got {len(values[bad])}"
            )
        data = b"".join(values)
        if len(data) != DIGEST_SIZE * n:  # memoryviews of multi-byte items
            raise MalformedError(f"leaf values are not {DIGEST_SIZE}-byte strings")
    if n > MAX_TREE_SIZE:  # pragma: no cover - 32 TiB of values
        raise LimitExceeded(f"tree has too many leaves: expected at most {MAX_TREE_SIZE}, got {n}")
    return data, n


def _build_levels(data: bytes, n: int) -> list[bytes]:
    """All levels of the tree over ``n`` values in ``data``: leaf hashes first, root last."""
    levels: list[bytes] = []
    if n >= _VECTOR_MIN:
        level = np.empty((n, 8), _U32)
        _hash_rows_parallel(_LEAF_KEY_WORDS, np.frombuffer(data, _U32).reshape(n, 8), level)
        levels.append(level.tobytes())
        count = n
        while count // 2 >= _VECTOR_MIN:
            pairs = count // 2
            up = np.empty((pairs + (count & 1), 8), _U32)
            _hash_rows_parallel(_NODE_KEY_WORDS, level[: 2 * pairs].reshape(pairs, 16), up[:pairs])
            if count & 1:  # promote the odd last node
                up[pairs] = level[count - 1]
            levels.append(up.tobytes())
            level, count = up, pairs + (count & 1)
    else:
        key = K_LEAF
        levels.append(b"".join([blake3(data[i : i + 32], key=key).digest() for i in range(0, 32 * n, 32)]))
    cur = levels[-1]
    key = K_NODE
    while len(cur) > DIGEST_SIZE:
        end = (len(cur) >> 6) << 6
        up_bytes = b"".join([blake3(cur[i : i + 64], key=key).digest() for i in range(0, end, 64)])
        if end != len(cur):  # promote the odd last node
            up_bytes += cur[end:]
        levels.append(up_bytes)
        cur = up_bytes
    return levels


def merkle_root(values: Sequence[bytes] | bytes) -> bytes:
    """The root over 32-byte leaf values (a list, or one ``bytes`` of them concatenated)."""
    return _build_levels(*_join_values(values))[-1]


def _subtree_position(lo: int, hi: int) -> tuple[int, int]:
    """(level, position) where the bottom-up representation keeps MTH(D[lo:hi]).

    Valid for every [lo, hi) the RFC 6962 recursion visits: such a range starts at a multiple of
    the smallest power of two >= hi - lo, and ends at that boundary or at the tree's edge.
    """
    height = (hi - lo - 1).bit_length()
    return height, lo >> height


class MerkleTree:
    """A tree over 32-byte leaf values, kept whole so proofs are cheap slices. Immutable.

    ``values`` is a sequence of 32-byte values or, the fast path, one ``bytes`` of ``32 * n``.
    """

    __slots__ = ("_full_paths_below", "_levels", "_list_levels", "_size", "_slice_levels", "_values")

    def __init__(self, values: Sequence[bytes] | bytes) -> None:
        data, n = _join_values(values)
        self._values = data
        self._size = n
        self._levels = levels = _build_levels(data, n)
        # Proofs read siblings by slicing the big lower levels and by indexing the small upper
        # ones, kept also as lists of 32-byte hashes (a list index is ~3x cheaper than a slice).
        below_root = list(enumerate(levels[:-1]))
        self._slice_levels = tuple((h, lv) for h, lv in below_root if len(lv) > 32 * _LIST_LEVEL_MAX)
        self._list_levels = tuple(
            (h, [lv[i : i + 32] for i in range(0, len(lv), 32)])
            for h, lv in below_root
            if len(lv) <= 32 * _LIST_LEVEL_MAX
        )
        # Leaves below this index have a sibling at every level (nothing promoted on their path).
        full, count, height = n, n, 0
        while count > 1:
            if count & 1:
                full = min(full, (count - 1) << height)
            count, height = (count + 1) >> 1, height + 1
        self._full_paths_below = full

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    @property
    def root(self) -> bytes:
        """MTH over all leaves."""
        return self._levels[-1]

    def __repr__(self) -> str:
        return f"MerkleTree(size={self._size}, root={self.root.hex()})"

    def leaf_value(self, index: int) -> bytes:
        """The 32-byte value at leaf ``index``."""
        _check_index(index, self._size)
        return self._values[32 * index : 32 * index + 32]

    def leaf_hash(self, index: int) -> bytes:
        """``leaf_hash(leaf_value(index))``, as stored."""
        _check_index(index, self._size)
        return self._levels[0][32 * index : 32 * index + 32]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The RFC 9162 audit path of leaf ``index``: sibling hashes, leaf level first."""
        if 0 <= index < self._full_paths_below:  # the common case: a sibling at every level
            proof = [lv[(p := ((index >> h) ^ 1) << 5) : p + 32] for h, lv in self._slice_levels]
            proof += [lst[(index >> h) ^ 1] for h, lst in self._list_levels]
            return proof
        _check_index(index, self._size)
        proof = []
        for h, lv in self._slice_levels:
            p = ((index >> h) ^ 1) << 5
            if p < len(lv):  # no sibling where the node is promoted
                proof.append(lv[p : p + 32])
        for h, lst in self._list_levels:
            j = (index >> h) ^ 1
            if j < len(lst):
                proof.append(lst[j])
        return proof

    def multiproof(self, indices: Iterable[int]) -> list[bytes]:
        """Siblings for all ``indices`` at once, each shared node once (see the module doc)."""
        levels = self._levels
        proof = []
        for lo, hi in _multiproof_ranges(_sorted_indices(indices, self._size), self._size):
            height, pos = _subtree_position(lo, hi)
            proof.append(levels[height][32 * pos : 32 * pos + 32])
        return proof


class IncrementalTree:
    """A tree grown one leaf at a time, keeping only the roots of its maximal perfect subtrees
    (at most 40 hashes): the prover commits steps while the job runs."""

    __slots__ = ("_frontier", "_size")

    def __init__(self) -> None:
        self._frontier: list[bytes] = []  # perfect subtree roots, largest (leftmost) first
        self._size = 0

    @classmethod
    def from_values(cls, values: Sequence[bytes] | bytes) -> IncrementalTree:
        """The tree after appending ``values`` in order (to resume a job's commitment)."""
        data, n = _join_values(values)
        levels = _build_levels(data, n)
        tree = cls()
        offset = 0
        for height in range(n.bit_length() - 1, -1, -1):
            if n >> height & 1:
                pos = offset >> height
                tree._frontier.append(levels[height][32 * pos : 32 * pos + 32])
                offset += 1 << height
        tree._size = n
        return tree

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, value: bytes) -> None:
        """Add one 32-byte leaf value on the right."""
        if self._size >= MAX_TREE_SIZE:
            raise LimitExceeded(f"tree has too many leaves: expected at most {MAX_TREE_SIZE}")
        h = leaf_hash(value)
        frontier, n = self._frontier, self._size
        while n & 1:  # each trailing one bit of the old size is a subtree the new leaf completes
            h = blake3(frontier.pop() + h, key=K_NODE).digest()
            n >>= 1
        frontier.append(h)
        self._size += 1

    def root(self) -> bytes:
        """MTH over the leaves so far (the frontier folded right to left)."""
        if not self._frontier:
            raise MalformedError("empty tree has no root: expected at least 1 leaf, got 0")
        frontier = self._frontier
        r = frontier[-1]
        for h in reversed(frontier[:-1]):
            r = blake3(h + r, key=K_NODE).digest()
        return r


# -- trees over leaf hashes made elsewhere (a state's subtree, docs/protocol.md §4.1) ------------


def keyed_levels(leaf_hashes: Sequence[bytes], node_key: bytes) -> list[list[bytes]]:
    """All levels, leaf hashes first and the root last, of the RFC 6962 tree over ``leaf_hashes``
    (already hashed by the caller, in its own leaf domain) with inner nodes
    ``BLAKE3(key=node_key, l || r)``; an odd last node is promoted. Used for a state's subtree,
    whose leaves and nodes have keys of their own (pocv.encoding)."""
    if not leaf_hashes:
        raise MalformedError("empty tree: expected at least 1 leaf hash, got 0")
    level = list(leaf_hashes)
    levels = [level]
    while len(level) > 1:
        up = [blake3(level[i] + level[i + 1], key=node_key).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:  # promote the odd last node
            up.append(level[-1])
        levels.append(up)
        level = up
    return levels


def keyed_root(leaf_hashes: Sequence[bytes], node_key: bytes) -> bytes:
    """The root of :func:`keyed_levels` (computed level by level, nothing kept)."""
    if not leaf_hashes:
        raise MalformedError("empty tree: expected at least 1 leaf hash, got 0")
    level = list(leaf_hashes)
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [blake3(level[i] + level[i + 1], key=node_key).digest() for i in range(0, len(level) - 1, 2)]
        if odd is not None:
            level.append(odd)
    return level[0]


def keyed_proof(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The RFC 9162 audit path of leaf ``index`` in a tree kept by :func:`keyed_levels`."""
    _check_index(index, len(levels[0]))
    proof = []
    for lv in levels[:-1]:
        sib = index ^ 1
        if sib < len(lv):  # no sibling where the node is promoted
            proof.append(bytes(lv[sib]))
        index >>= 1
    return proof


def keyed_fold(leaf: bytes, index: int, size: int, proof: Sequence[bytes], node_key: bytes) -> bytes:
    """The root that the audit path ``proof`` leads to from leaf hash ``leaf`` at ``index`` of a
    tree of ``size`` leaves. Shapes are checked before anything is hashed (ProofError): the leaf
    hash's size, the index, the proof's length (:func:`inclusion_proof_size`) and each hash's
    size. The caller compares the result with the root it trusts."""
    _check_digest("leaf hash", leaf)
    _check_size(size)
    _check_index(index, size)
    _check_proof_hashes("inclusion proof", proof, inclusion_proof_size(index, size))
    r = bytes(leaf)
    it = iter(proof)
    node, count = index, size
    while count > 1:
        if (node ^ 1) < count:
            p = bytes(next(it))
            r = blake3(p + r if node & 1 else r + p, key=node_key).digest()
        node, count = node >> 1, (count + 1) >> 1
    return r


# -- proof shapes ------------------------------------------------------------------------------


def _check_size(size: int) -> None:
    if not isinstance(size, int) or not 1 <= size <= MAX_TREE_SIZE:
        raise ProofError(f"tree size out of range: expected 1 <= size <= {MAX_TREE_SIZE}, got {size!r}")


def _check_index(index: int, size: int) -> None:
    if not isinstance(index, int | np.integer) or not 0 <= index < size:
        raise ProofError(f"leaf index out of range: expected 0 <= index < {size}, got {index!r}")


def _sorted_indices(indices: Iterable[int], size: int) -> list[int]:
    """``indices`` sorted, after checking count, range and uniqueness."""
    _check_size(size)
    idx = list(indices)
    if not idx:
        raise ProofError("multiproof needs leaf indices: expected at least 1, got 0")
    if len(idx) > MAX_MULTIPROOF_LEAVES:
        raise LimitExceeded(
            f"multiproof opens too many leaves: expected at most {MAX_MULTIPROOF_LEAVES}, got {len(idx)}"
        )
    for i in idx:
        _check_index(i, size)
    idx = sorted(int(i) for i in idx)
    for a, b in pairwise(idx):
        if a == b:
            raise ProofError(f"duplicate leaf index in multiproof: {a}")
    return idx


def _split(width: int) -> int:
    """Largest power of two strictly less than ``width`` (>= 2)."""
    return 1 << ((width - 1).bit_length() - 1)


def _multiproof_ranges(idx: list[int], size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs make up the multiproof of sorted ``idx``, in consumption order."""
    out: list[tuple[int, int]] = []

    def walk(lo: int, hi: int, a: int, b: int) -> None:  # idx[a:b] lie in [lo, hi), a < b
        if hi - lo == 1:
            return
        mid = lo + _split(hi - lo)
        c = bisect_left(idx, mid, a, b)
        if c == a:
            out.append((lo, mid))
        else:
            walk(lo, mid, a, c)
        if c == b:
            out.append((mid, hi))
        else:
            walk(mid, hi, c, b)

    walk(0, size, 0, len(idx))
    return out


def inclusion_proof_size(index: int, size: int) -> int:
    """The number of hashes in the inclusion proof of leaf ``index`` in a tree of ``size``."""
    _check_size(size)
    _check_index(index, size)
    inner = (index ^ (size - 1)).bit_length()  # levels where the sibling lies inside the tree
    return inner + (index >> inner).bit_count()  # + the border levels that have a left sibling


def multiproof_size(indices: Iterable[int], size: int) -> int:
    """The number of hashes in the multiproof of ``indices`` in a tree of ``size``."""
    return len(_multiproof_ranges(_sorted_indices(indices, size), size))


# -- verification ------------------------------------------------------------------------------


def _check_digest(what: str, value: bytes) -> None:
    if len(value) != DIGEST_SIZE:
        raise ProofError(f"{what} has wrong size: expected {DIGEST_SIZE} bytes, got {len(value)}")


def _check_proof_hashes(what: str, proof: Sequence[bytes], expected: int) -> None:
    if len(proof) != expected:
        raise ProofError(f"{what} has wrong size: expected {expected} hashes, got {len(proof)}")
    for i, p in enumerate(proof):
        if len(p) != DIGEST_SIZE:
            raise ProofError(f"{what} hash {i} has wrong size: expected {DIGEST_SIZE} bytes, got {len(p)}")


def verify_inclusion(root: bytes, size: int, index: int, value: bytes, proof: Sequence[bytes]) -> None:
    """Check that ``value`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Raises ProofError. Shapes are checked before anything is hashed: (1) root, size, index and
    value; (2) the proof's length against :func:`inclusion_proof_size` and each hash's size.
    Then (3) the path is folded bottom-up and (4) compared with ``root``.
    """
    _check_digest("root", root)  # (1)
    _check_size(size)
    _check_index(index, size)
    _check_digest("leaf value", value)
    _check_proof_hashes("inclusion proof", proof, inclusion_proof_size(index, size))  # (2)
    r = blake3(value, key=K_LEAF).digest()  # (3)
    it = iter(proof)
    node, count = index, size
    while count > 1:
        if (node ^ 1) < count:  # else the node is promoted: no sibling at this level
            p = bytes(next(it))
            r = blake3(p + r if node & 1 else r + p, key=K_NODE).digest()
        node, count = node >> 1, (count + 1) >> 1
    if r != root:  # (4)
        raise ProofError(f"inclusion proof does not lead to the root: expected {bytes(root).hex()}, got {r.hex()}")


def verify_inclusions(root: bytes, size: int, items: Sequence[tuple[int, bytes, Sequence[bytes]]]) -> None:
    """:func:`verify_inclusion` for many ``(index, value, proof)`` of one tree at once.

    The same checks in the same order, shapes first for every item, then every path is folded;
    the ProofError names the first item that fails. From :data:`_JIT_VERIFY_MIN` proofs (and
    where numba is usable) all paths are folded level by level in one compiled call, each level
    one vectorized batch of BLAKE3 compressions, instead of a Python loop of hash calls.
    """
    _check_digest("root", root)
    _check_size(size)
    fn = _jitted() if len(items) >= _JIT_VERIFY_MIN else None
    if fn is None or _fold_paths_jit is None:
        for index, value, proof in items:
            verify_inclusion(root, size, index, value, proof)
        return
    indices, values, proofs = zip(*items, strict=True)  # C-level loops from here on: no Python per hash
    idx = np.array(indices)
    last = size - 1
    ok = idx.dtype.kind in "iu" and idx.ndim == 1 and bool((idx >= 0).all()) and bool((idx <= last).all())
    if ok:
        idx = idx.astype(np.int64)
        x = idx ^ last
        inner = np.where(x > 0, np.frexp(x.astype(np.float64))[1], 0)  # bit_length (size < 2^53)
        want = inner + np.bitwise_count(idx >> inner)  # inclusion_proof_size, all at once
        lens = list(map(len, chain.from_iterable(proofs)))
        ok = (list(map(len, values)).count(DIGEST_SIZE) == len(values)
              and lens.count(DIGEST_SIZE) == len(lens)
              and bool((np.fromiter(map(len, proofs), np.int64, len(proofs)) == want).all()))
    if ok:
        try:  # a value or hash that is not bytes (a str of 32 characters) is a shape error below
            flat = b"".join(chain.from_iterable(proofs)) or bytes(DIGEST_SIZE)
            joined_values = b"".join(values)
        except TypeError:
            ok = False
    if not ok:  # find and name the first bad item, exactly as verify_inclusion would
        for n_item, (index, value, proof) in enumerate(items):
            _check_index(index, size)
            _check_digest(f"leaf value of item {n_item}", value)
            _check_proof_hashes(f"inclusion proof of item {n_item}", proof, inclusion_proof_size(index, size))
        raise ProofError("inclusion proofs hold a value or hash that is not bytes")
    expected = want
    offs = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(expected, out=offs[1:])
    vals = np.frombuffer(joined_values, _U32).reshape(-1, 8)
    out = np.empty((len(items), 8), _U32)
    _fold_paths_jit(np.array(_LEAF_KEY_WORDS, _U32), np.array(_NODE_KEY_WORDS, _U32), size,
                    idx, vals,
                    np.frombuffer(flat, _U32).reshape(-1, 8), offs, _SCHEDULE_TABLE, _IV_WORDS, out)
    bad = np.flatnonzero((out != np.frombuffer(root, _U32)).any(axis=1))
    if bad.size:
        j = int(bad[0])
        raise ProofError(f"inclusion proof of item {j} (leaf {items[j][0]}) does not lead to the root: expected "
                         f"{bytes(root).hex()}, got {out[j].tobytes().hex()}")


def verify_multiproof(root: bytes, size: int, values: Mapping[int, bytes], proof: Sequence[bytes]) -> None:
    """Check that ``values`` (leaf index -> 32-byte value) are leaves of the tree with ``root``.

    Raises ProofError (LimitExceeded over the named limits). Shapes first: (1) root, size, every
    index and value; (2) the proof's length against :func:`multiproof_size` and each hash's
    size. Then (3) the root is recomputed by the same walk that defines the order and (4)
    compared with ``root``.
    """
    _check_digest("root", root)  # (1)
    if len(proof) > MAX_PROOF_HASHES:
        raise LimitExceeded(f"multiproof has too many hashes: expected at most {MAX_PROOF_HASHES}, got {len(proof)}")
    idx = _sorted_indices(values, size)
    for i in idx:
        _check_digest(f"leaf value {i}", values[i])
    _check_proof_hashes("multiproof", proof, len(_multiproof_ranges(idx, size)))  # (2)

    leaves = [blake3(values[i], key=K_LEAF).digest() for i in idx]  # (3)
    pos = 0

    def mth(lo: int, hi: int, a: int, b: int) -> bytes:  # idx[a:b] lie in [lo, hi), a < b
        nonlocal pos
        if hi - lo == 1:
            return leaves[a]
        mid = lo + _split(hi - lo)
        c = bisect_left(idx, mid, a, b)
        if c == a:
            left, pos = bytes(proof[pos]), pos + 1
        else:
            left = mth(lo, mid, a, c)
        if c == b:
            right, pos = bytes(proof[pos]), pos + 1
        else:
            right = mth(mid, hi, c, b)
        return blake3(left + right, key=K_NODE).digest()

    r = mth(0, size, 0, len(idx))
    if pos != len(proof):  # pragma: no cover - the length check above makes this unreachable
        raise ProofError(f"multiproof has unused hashes: expected {pos}, got {len(proof)}")
    if r != root:  # (4)
        raise ProofError(f"multiproof does not lead to the root: expected {bytes(root).hex()}, got {r.hex()}")
