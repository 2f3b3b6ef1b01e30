"""The response bundle: a worker's answer to a challenge, as one self-contained binary file.

Format 4 (all integers little-endian; no pickle, nothing executable)::

    magic        8 bytes  b"POCVRSP\\x00"
    version      u16      4
    flags        u16      0 (reserved; must be zero)
    job_id       32 bytes
    root         32 bytes
    tree_size    u64      steps + 1 (leaves s_0 .. s_steps)
    k            u32      number of challenged steps, 1..MAX_CHALLENGES
    indices      u64[k]   the challenged steps, strictly ascending, each in 1..steps
    m            u32      number of states opened whole, 0..2k+1
    m times:
      leaf       u64      leaf index, strictly ascending, in 0..steps
      length     u64      byte length of the state, <= MAX_STATE_BYTES
      state      bytes    canonical state encoding (pocv.encoding)
    p            u32      number of multiproof hashes, <= MAX_PROOF_HASHES
    proof        p * 32 bytes, in pocv.merkle's multiproof order, over every opened leaf
    v            u32      number of leaves opened by their value alone, 0..2k+1-m
    v times:
      leaf       u64      leaf index, strictly ascending, in 0..steps, not opened whole
      value      32 bytes the committed leaf value (the state digest)
    c            u32      number of leaves opened in chunks (a sample of s_i, §8.1), 0..k
    c times:
      leaf       u64      strictly ascending, a challenged step's leaf opened by value
      n          u32      chunks opened, 1..MAX_SAMPLE_CHUNKS
      n times:
        index    u32      chunk index in the state's subtree, strictly ascending
        length   u32      <= CHUNK_BYTES
        data     bytes
        q        u8       hashes of the chunk's audit path in the state's subtree, <= 64
        path     q * 32 bytes
    -- the body ends here; the trailer signs it --
    worker       32 bytes ed25519 public key of the worker (the commitment's)
    signature    64 bytes over BUNDLE_DOMAIN || BLAKE3(body)
    (end of file: trailing bytes are an error)

The worker signs what it sends, so a relay that corrupts a bundle breaks the signature: a FAIL
on a bundle that is not signed by the committing worker is a transport failure to retry, not
evidence against the worker. The verdict names the digest of the body it judged.

The opened leaves are ``{0} | {i-1, i for each challenged i}``, each either whole (its canonical
bytes) or by its leaf value (docs/protocol.md §8): ``s_0`` is always opened so the verifier can
check it against the one it derives from the spec (its value suffices: the verifier has
``s_0`` itself); an honest worker opens ``s_{i-1}`` whole and, for an exact kernel, ``s_i`` by
value (the verifier recomputes ``s_i`` and compares its digest), for a tolerance kernel whole
(:func:`whole_leaves`). For an exact kernel a run of consecutive challenged steps opens only the
state before the run: each later ``s_{i-1}`` is the verifier's own, recomputed and matched bit
for bit against its committed leaf at step ``i - 1``. Every count and length is
checked against a named limit and against the bytes actually left in the file before anything
is allocated, so a bundle claiming 2^40 bytes is refused at once.

A verifier reads with :class:`Expected`, which holds what its own challenge requires, and every
count is bounded by that before anything it counts is read (docs/protocol.md §8): the file size
by the largest honest answer, the indices by the challenge's, each opened leaf by the set the
challenge opens (a state that was not asked for is refused before its bytes are read), each
state's length by the job's exact state size, and the proof count by the exact multiproof size
of the leaves opened. An honest bundle is read in one pass holding at most its 2k+1 states.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import BinaryIO, Final, Protocol

from blake3 import blake3

from pocv.errors import (
    EvidenceError,
    InputError,
    LimitExceeded,
    MalformedError,
    MismatchError,
    ProofError,
    StorageError,
)
from pocv.keys import Signer, sign, verify
from pocv.limits import DIGEST_SIZE, MAX_CHALLENGES, MAX_SAMPLE_CHUNKS, MAX_STATE_BYTES, PUBKEY_SIZE, SIGNATURE_SIZE
from pocv.merkle import MAX_PROOF_HASHES, MAX_TREE_SIZE, multiproof_size

MAGIC: Final = b"POCVRSP\x00"
BUNDLE_VERSION: Final = 4
BUNDLE_DOMAIN: Final = b"pocv bundle v4\x00"
#: the signature trailer: worker public key and signature
TRAILER_BYTES: Final = PUBKEY_SIZE + SIGNATURE_SIZE
#: The largest bundle accepted: every challenged pair of states at the largest state size
#: would be far more; 64 GiB bounds what a verifier will ever read from one worker.
MAX_BUNDLE_BYTES: Final = 64 << 30
#: the longest audit path of a chunk in a state's subtree (2^64 leaves)
MAX_CHUNK_PATH: Final = 64
#: a chunk's length in a bundle (pocv.encoding.CHUNK_BYTES, restated: this module loads no torch)
MAX_CHUNK_BYTES: Final = 256 << 10
#: one chunk opened: (chunk index, its bytes, its audit path in the state's subtree)
ChunkOpening = tuple[int, bytes, tuple[bytes, ...]]


@dataclass(frozen=True, kw_only=True)
class Expected:
    """What the verifier knows before reading a bundle: checked as soon as the header is read."""

    job_id: bytes
    root: bytes
    tree_size: int
    state_bytes: int  # every state of this job encodes to exactly this many bytes
    #: the challenged steps, when the verifier reads a response to its own challenge
    indices: tuple[int, ...] | None = None
    #: chunks per challenged s_i the job compares by sample (JobSpec.sample_chunks; 0: none)
    sample_chunks: int = 0

    def max_bundle_bytes(self) -> int:  # the parser's bound; answer_bytes_bound is the spec's
        """The size of the largest honest answer to this challenge (header, indices, the
        2k+1 states and the longest multiproof), or MAX_BUNDLE_BYTES without indices."""
        if self.indices is None:
            return MAX_BUNDLE_BYTES
        k = len(self.indices)
        leaves = Response.opened_leaves(self.indices)
        header = len(MAGIC) + 4 + 32 + DIGEST_SIZE + 8 + 4 + 8 * k + 4 + 4
        states = len(leaves) * (16 + self.state_bytes)
        return header + states + DIGEST_SIZE * multiproof_size(leaves, self.tree_size) + _values_bytes(len(leaves)) \
            + _chunks_bytes(k, self.sample_chunks, self.state_bytes) + TRAILER_BYTES


def answer_bytes_bound(k: int, state_bytes: int, tree_size: int) -> int:
    """An upper bound on an honest answer to any k-step challenge of a job: 2k+1 states and the
    longest multiproof they can need. Spec validation and the parser's exact bound
    (:meth:`Expected.max_bundle_bytes`) use the same layout arithmetic."""
    opened = min(2 * k + 1, tree_size)
    header = len(MAGIC) + 4 + 32 + DIGEST_SIZE + 8 + 4 + 8 * k + 4 + 4
    proof = DIGEST_SIZE * opened * max(1, (tree_size - 1).bit_length())
    return header + opened * (16 + state_bytes) + proof + _values_bytes(opened) + 4 + TRAILER_BYTES


def _chunks_bytes(k: int, sample: int, state_bytes: int) -> int:
    """The chunk section's size at most: its count and, per challenged step, ``sample`` chunks
    (no more bytes of data than a state) with the longest audit paths."""
    if not sample:
        return 4
    return 4 + k * (12 + sample * (9 + MAX_CHUNK_PATH * DIGEST_SIZE) + min(state_bytes, sample * MAX_CHUNK_BYTES))


def _values_bytes(opened: int) -> int:
    """The value section's size at most: its count and, at most, every opened leaf by value."""
    return 4 + opened * (8 + DIGEST_SIZE)


def whole_leaves(indices: tuple[int, ...] | list[int], exact: bool, *, chain: bool = False) -> set[int]:
    """The leaves an honest worker opens whole in a response to ``indices`` (the rest of
    :meth:`Response.opened_leaves` by value): ``s_{i-1}`` for each challenged ``i``, and ``s_i``
    too unless ``exact`` (s_i by value: an exact kernel, or a tolerance kernel's s_i compared by
    a sample of its chunks); never ``s_0``, which the verifier derives itself.

    ``chain`` (exact kernels only, docs/protocol.md §8): a run of consecutive challenged steps
    opens only the state before the run, so ``s_{i-1}`` is left out where ``i - 1`` is itself
    challenged (the verifier recomputed it from ``s_{i-2}`` and matched the committed leaf bit
    for bit). Sound only where that match is bit-exact: never for a tolerance kernel, whether it
    compares whole states or a sample of chunks."""
    if chain and not exact:
        raise InputError("chained openings are only for states compared bit for bit (exact kernels)")
    out = {i - 1 for i in indices}
    if not exact:
        out |= set(indices)
    elif chain:
        out -= set(indices)
    out.discard(0)
    return out


def challenge_runs(indices: Iterable[int]) -> list[tuple[int, ...]]:
    """The runs of consecutive steps in ascending ``indices``: (1, 2, 3, 7, 9, 10) gives
    [(1, 2, 3), (7,), (9, 10)]. An exact kernel's answer opens the state before each run whole
    (none before a run from step 1), and a step that fails leaves the rest of its run unjudged
    (docs/protocol.md §8, §9 (8))."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][-1] == i - 1:
            out[-1].append(i)
        else:
            out.append([i])
    return [tuple(r) for r in out]


def answer_size(indices: Sequence[int], tree_size: int, state_bytes: int, whole: Iterable[int]) -> int:
    """The exact size in bytes of a response to ``indices`` that opens ``whole`` whole (each
    ``state_bytes`` long) and the rest of :meth:`Response.opened_leaves` by value, with no
    chunk openings, trailer included: a function of the indices, the state size and the
    multiproof alone (bench/test_bench_bytes.py checks it against real bundles)."""
    leaves = Response.opened_leaves(list(indices))
    m = len(set(whole))
    header = len(MAGIC) + 4 + 32 + DIGEST_SIZE + 8 + 4 + 8 * len(indices) + 4
    return (header + m * (16 + state_bytes) + 4 + DIGEST_SIZE * multiproof_size(leaves, tree_size)
            + _values_bytes(len(leaves) - m) + 4 + TRAILER_BYTES)


@dataclass(frozen=True, kw_only=True)
class Response:
    job_id: bytes
    root: bytes
    tree_size: int
    indices: tuple[int, ...]
    states: Mapping[int, bytes]  # leaf index -> canonical state bytes (opened whole)
    proof: tuple[bytes, ...]  # the multiproof over every opened leaf (whole and by value)
    #: leaf index -> committed leaf value, for leaves opened by value alone (not in ``states``)
    values: Mapping[int, bytes] = dataclasses.field(default_factory=dict)
    #: leaf index -> the chunks of that state opened with their audit paths (a tolerance
    #: kernel's s_i compared by sample, §8.1); each such leaf is also opened by value
    chunks: Mapping[int, tuple[ChunkOpening, ...]] = dataclasses.field(default_factory=dict)
    #: the signing worker's public key and its signature of the body (zeros: unsigned)
    worker: bytes = bytes(PUBKEY_SIZE)
    signature: bytes = bytes(SIGNATURE_SIZE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", tuple(self.indices))
        object.__setattr__(self, "proof", tuple(self.proof))
        if not isinstance(self.states, FileStates):  # a bundle's states left in its file stay there
            object.__setattr__(self, "states", MappingProxyType(dict(sorted(self.states.items()))))
        object.__setattr__(self, "values", MappingProxyType(dict(sorted(self.values.items()))))
        both = set(self.states) & set(self.values)
        if both:
            raise MalformedError(f"leaves opened both whole and by value: {sorted(both)[:8]}")
        object.__setattr__(self, "chunks", MappingProxyType({j: tuple(c) for j, c in sorted(self.chunks.items())}))
        loose = set(self.chunks) - set(self.values)
        if loose:
            raise MalformedError(f"leaves opened in chunks must be opened by value: {sorted(loose)[:8]}")
        for j, v in self.values.items():
            if len(v) != DIGEST_SIZE:
                raise MalformedError(f"leaf value {j} has wrong size: expected {DIGEST_SIZE} bytes, got {len(v)}")

    def opened(self) -> list[int]:
        """Every leaf this response opens, whole or by value, ascending."""
        return sorted({*self.states, *self.values})

    def leaf_values(self) -> dict[int, bytes]:
        """Every opened leaf's value: the digest of each whole state, and the values sent."""
        if isinstance(self.states, FileStates):  # digested once, while the bundle was read
            out = self.states.digests()
        else:
            from pocv.encoding import digest_encoded  # reason: encoding loads torch; light commands import bundle

            out = {j: digest_encoded(data) for j, data in self.states.items()}
        out.update(self.values)
        return out

    @staticmethod
    def opened_leaves(indices: tuple[int, ...] | list[int]) -> list[int]:
        """The leaves a response to ``indices`` opens: 0 and i-1, i for each i."""
        out = {0}
        for i in indices:
            out.add(i - 1)
            out.add(i)
        return sorted(out)

    # -- writing ---------------------------------------------------------------------------

    def write_to(self, f: Sink) -> None:
        w = self._writer(f)
        w.end_body(self.proof, self.values, self.chunks)
        w.trailer(self.worker, self.signature)

    def digest(self) -> bytes:
        """BLAKE3 of the body (everything but the trailer): what the worker signs and the
        verdict names."""
        known = self.__dict__.get("_digest")
        if known is not None:
            return bytes(known)
        return self._writer(NullSink()).end_body(self.proof, self.values, self.chunks)

    def signed(self, key: Signer) -> Response:
        """This bundle signed by ``key`` (the committing worker)."""
        signature = sign(key, BUNDLE_DOMAIN + self.digest())
        return dataclasses.replace(self, worker=bytes(key.pubkey()), signature=signature)

    def signed_by(self, worker: bytes, digest: bytes | None = None) -> bool:
        """Whether the trailer is ``worker``'s valid signature of this body."""
        return signature_ok(worker, self.worker, self.signature, digest or self.digest())

    def _writer(self, f: Sink) -> BundleWriter:
        """A writer on ``f`` that has written this body up to the proof."""
        w = BundleWriter(f, job_id=self.job_id, root=self.root, tree_size=self.tree_size, indices=self.indices,
                         whole=list(self.states))
        for leaf, data in self.states.items():
            w.state(leaf, data)
        return w

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write_to(buf)
        return buf.getvalue()

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, *, expect: Expected | None = None) -> Response:
        return _parse(io.BytesIO(data), len(data), expect)

    @classmethod
    def read_from(cls, f: BinaryIO, size: int | None = None, *, expect: Expected | None = None,
                  lazy: bool = False) -> Response:
        """Read a bundle from a binary file object, streamed: with ``expect``, another job's
        bundle is refused (MismatchError) and any state of another size (LimitExceeded) before
        the states are read. ``size`` defaults to the bytes left in a seekable file.

        ``lazy``: leave the whole states in the file (``f`` must be a real file, kept open by the
        response): each is read once here, one at a time, to hash the body and take its digest,
        and read again when :attr:`states` is asked for it (:class:`FileStates`), so reading
        and checking a bundle holds a bounded number of states, whatever its size."""
        if size is None:
            try:
                here = f.tell()
                size = f.seek(0, io.SEEK_END) - here
                f.seek(here)
            except (OSError, ValueError) as e:
                raise InputError(f"a bundle read from a stream needs its size: {e}") from e
        return _parse(f, size, expect, lazy=lazy)


class Sink(Protocol):
    """Where a :class:`BundleWriter` writes: anything with a binary ``write`` (a file, a pipe,
    a socket's writer, the worker service's answer buffer)."""

    def write(self, data: bytes | memoryview, /) -> int: ...


class NullSink:
    """A write-only sink that drops what is written (a :class:`BundleWriter` still hashes it)."""

    def write(self, data: bytes | memoryview) -> int:
        return len(data)


@dataclass(frozen=True, kw_only=True)
class BundleSummary:
    """What a bundle written by :class:`BundleWriter` holds, without its states."""

    job_id: bytes
    root: bytes
    indices: tuple[int, ...]
    states: int  # leaves opened whole
    values: int  # leaves opened by value
    proof_hashes: int
    size: int  # bytes written, trailer included
    digest: bytes  # BLAKE3 of the body: what the worker signed and a verdict names
    tree_size: int  # leaves of the committed tree
    worker: bytes  # the signer's public key (the trailer's first part)
    signature: bytes  # its signature of the body's digest (the trailer's second part)


class BundleWriter:
    """Writes a response bundle as its parts come: the header, then each whole state in
    ascending leaf order as soon as it exists, then the multiproof and the leaf values, then
    the trailer; the body is hashed as it is written. A worker answering a challenge holds one
    state at a time, never the bundle (docs/protocol.md §8).

    ``whole``: the leaves that will be opened whole (their count is in the header); each must
    then be given to :meth:`state`, in ascending order, before :meth:`end_body`.
    """

    def __init__(self, f: Sink, *, job_id: bytes, root: bytes, tree_size: int,
                 indices: Iterable[int], whole: Iterable[int]) -> None:
        self._f = f
        self._hash = blake3()
        self.size = 0
        self._job_id, self._root, self._tree_size = job_id, root, tree_size
        self._indices = tuple(indices)
        self._whole = sorted(whole)
        self._next = 0
        self._proof = self._values = 0
        self._digest: bytes | None = None
        self._put(MAGIC + struct.pack("<HH", BUNDLE_VERSION, 0) + job_id + root
                  + struct.pack(f"<QI{len(self._indices)}Q", tree_size, len(self._indices), *self._indices)
                  + struct.pack("<I", len(self._whole)))

    def _put(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._f.write(data)
        self.size += len(data) if isinstance(data, bytes) else data.nbytes

    def state(self, leaf: int, data: bytes | bytearray | memoryview) -> None:
        """Write the next whole state (its canonical bytes)."""
        if self._next >= len(self._whole) or self._whole[self._next] != leaf:
            expected = self._whole[self._next] if self._next < len(self._whole) else "none"
            raise InputError(f"bundle writer: expected state {expected} next, got {leaf}")
        view = memoryview(data).cast("B")
        self._put(struct.pack("<QQ", leaf, view.nbytes))
        self._put(view)
        self._next += 1

    def end_body(self, proof: Iterable[bytes], values: Mapping[int, bytes],
                 chunks: Mapping[int, Sequence[ChunkOpening]] | None = None) -> bytes:
        """Write the multiproof, the leaf values and the chunk openings; returns the body's digest."""
        if self._next != len(self._whole):
            raise InputError(f"bundle writer: {len(self._whole) - self._next} whole states not written")
        proof = tuple(proof)
        self._put(struct.pack("<I", len(proof)) + b"".join(proof))
        self._put(struct.pack("<I", len(values)) + b"".join(struct.pack("<Q", leaf) + values[leaf]
                                                            for leaf in sorted(values)))
        chunks = chunks or {}
        self._put(struct.pack("<I", len(chunks)))
        for leaf in sorted(chunks):
            opened = chunks[leaf]
            self._put(struct.pack("<QI", leaf, len(opened)))
            for index, data, path in opened:
                self._put(struct.pack("<II", index, len(data)))
                self._put(data)
                self._put(struct.pack("<B", len(path)) + b"".join(path))
        self._proof, self._values = len(proof), len(values)
        self._digest = bytes(self._hash.digest())
        return self._digest

    def trailer(self, worker: bytes, signature: bytes) -> None:
        """Write the trailer (the signature is not checked here)."""
        if self._digest is None:
            raise InputError("bundle writer: the body is not complete")
        self._f.write(worker + signature)
        self.size += len(worker) + len(signature)

    def sign(self, key: Signer) -> BundleSummary:
        """Sign the body with ``key`` (the committing worker), write the trailer, summarise."""
        if self._digest is None:
            raise InputError("bundle writer: the body is not complete")
        worker, signature = bytes(key.pubkey()), sign(key, BUNDLE_DOMAIN + self._digest)
        self.trailer(worker, signature)
        return BundleSummary(job_id=self._job_id, root=self._root, indices=self._indices, states=len(self._whole),
                             values=self._values, proof_hashes=self._proof, size=self.size, digest=self._digest,
                             tree_size=self._tree_size, worker=worker, signature=signature)


class FileStates(Mapping[int, bytes]):
    """The whole states of a bundle read in place (:meth:`Response.read_from` with ``lazy``):
    each is read from the bundle's file when asked for, never all at once, and checked against
    the digest taken while the bundle was read, so a file changed since cannot pass for the
    worker's answer (StorageError: the reader's own file changed, not the worker's fault)."""

    def __init__(self, f: BinaryIO, spans: dict[int, tuple[int, int, bytes]]) -> None:
        self._f = f  # kept open as long as the states are
        self._fd = f.fileno()
        self._spans = dict(sorted(spans.items()))  # leaf -> (offset, length, state digest)

    def __getitem__(self, leaf: int) -> bytes:
        offset, length, digest = self._spans[leaf]
        parts: list[bytes] = []
        got = 0
        while got < length:
            part = os.pread(self._fd, length - got, offset + got)
            if not part:
                raise StorageError(f"the bundle file ended inside state {leaf}: it changed while being checked")
            parts.append(part)
            got += len(part)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        from pocv.encoding import digest_encoded  # reason: encoding loads torch; light commands import bundle

        if digest_encoded(data) != digest:
            raise StorageError(f"state {leaf} of the bundle file changed while being checked")
        return data

    def __iter__(self) -> Iterator[int]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def __contains__(self, leaf: object) -> bool:
        return leaf in self._spans

    def digests(self) -> dict[int, bytes]:
        """Each state's digest (its leaf value), as taken while the bundle was read."""
        return {leaf: span[2] for leaf, span in self._spans.items()}


def signature_ok(expected: bytes, worker: bytes, signature: bytes, digest: bytes) -> bool:
    """Whether ``signature`` by ``worker`` (which must be ``expected``) signs ``digest``."""
    if worker != expected:
        return False
    try:
        verify(worker, signature, BUNDLE_DOMAIN + digest, "bundle")
    except EvidenceError:
        return False
    return True


def probe_signature(data: bytes | BinaryIO, size: int) -> tuple[bytes, bytes, bytes] | None:
    """(body digest, worker, signature) of raw bundle bytes that may not parse, read in
    bounded chunks; None if there is no room for a trailer. A file object is read from its
    current position and left where it was."""
    if size < TRAILER_BYTES:
        return None
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        body, trailer = raw[: size - TRAILER_BYTES], raw[size - TRAILER_BYTES : size]
        return bytes(blake3(body).digest()), trailer[:PUBKEY_SIZE], trailer[PUBKEY_SIZE:]
    start = data.tell()
    try:
        h, left = blake3(), size - TRAILER_BYTES
        while left:
            chunk = data.read(min(left, 1 << 20))
            if not chunk:
                return None
            h.update(chunk)
            left -= len(chunk)
        trailer = data.read(TRAILER_BYTES)
        if len(trailer) != TRAILER_BYTES:
            return None
        return bytes(h.digest()), trailer[:PUBKEY_SIZE], trailer[PUBKEY_SIZE:]
    finally:
        data.seek(start)


class _Reader:
    """Reads the body, hashing every byte it hands out (the digest the trailer signs)."""

    def __init__(self, f: BinaryIO, size: int, pos: int = 0) -> None:
        self.f = f
        self.left = size
        self.pos = pos  # the file offset of the next byte (used by a lazy read)
        self.hash = blake3()

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise MalformedError(f"bundle truncated: expected {n} bytes of {what}, got {self.left}")
        out = self.f.read(n)
        if len(out) != n:  # pragma: no cover - the file shrank while being read
            raise MalformedError(f"bundle truncated: expected {n} bytes of {what}, got {len(out)}")
        self.left -= n
        self.pos += n
        self.hash.update(out)
        return out

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])


def _parse(f: BinaryIO, size: int, expect: Expected | None = None, *, lazy: bool = False) -> Response:
    if size > MAX_BUNDLE_BYTES:
        raise LimitExceeded(f"a bundle is at most {MAX_BUNDLE_BYTES} bytes, got {size}")
    if expect is not None and size > expect.max_bundle_bytes():
        raise LimitExceeded(f"an honest answer to this challenge is at most {expect.max_bundle_bytes()} bytes, "
                            f"the bundle has {size}")
    if size < TRAILER_BYTES:
        raise MalformedError(f"bundle truncated: expected at least the {TRAILER_BYTES}-byte signature trailer, "
                             f"got {size} bytes")
    spans: dict[int, tuple[int, int, bytes]] = {}
    if lazy:
        from pocv.encoding import digest_encoded  # reason: encoding loads torch; light commands import bundle

        try:
            f.fileno()
            start = f.tell()
        except (OSError, ValueError, AttributeError) as e:
            raise InputError(f"a bundle read in place needs a real, seekable file: {e}") from e
    r = _Reader(f, size - TRAILER_BYTES, start if lazy else 0)
    magic = r.take(len(MAGIC), "magic")
    if magic != MAGIC:
        raise MalformedError(f"not a pocv response bundle: expected magic {MAGIC!r}, got {magic!r}")
    version, flags = struct.unpack("<HH", r.take(4, "version"))
    if version != BUNDLE_VERSION:
        raise MalformedError(f"bundle version: expected {BUNDLE_VERSION}, got {version}")
    if flags:
        raise MalformedError(f"bundle flags: expected 0, got {flags:#x}")
    job_id = r.take(32, "job id")
    root = r.take(DIGEST_SIZE, "root")
    tree_size = r.u64("tree size")
    if not 2 <= tree_size <= MAX_TREE_SIZE:
        raise LimitExceeded(f"bundle tree size must be in 2..{MAX_TREE_SIZE}, got {tree_size}")
    if expect is not None and (job_id, root, tree_size) != (expect.job_id, expect.root, expect.tree_size):
        raise MismatchError("response is for another job id, root or tree size")
    max_state = MAX_STATE_BYTES if expect is None else expect.state_bytes
    k = r.u32("index count")
    if not 1 <= k <= MAX_CHALLENGES:
        raise LimitExceeded(f"bundle index count must be in 1..{MAX_CHALLENGES}, got {k}")
    if expect is not None and expect.indices is not None and k != len(expect.indices):
        raise MismatchError(f"response answers {k} steps, the challenge asks {len(expect.indices)}")
    indices = struct.unpack(f"<{k}Q", r.take(8 * k, "indices"))
    if expect is not None and expect.indices is not None and tuple(indices) != tuple(expect.indices):
        raise MismatchError("response answers other indices than the challenge")
    wanted = None if expect is None or expect.indices is None else set(Response.opened_leaves(expect.indices))
    prev = 0
    for i in indices:
        if not prev < i < tree_size:
            raise MalformedError(f"bundle indices must ascend strictly within 1..{tree_size - 1}; "
                                 f"got {i} after {prev}")
        prev = i
    m = r.u32("state count")
    if not 0 <= m <= 2 * k + 1:
        raise LimitExceeded(f"bundle state count must be in 0..{2 * k + 1} for {k} indices, got {m}")
    states: dict[int, bytes] = {}
    last = -1
    for _ in range(m):
        leaf = r.u64("leaf index")
        if not last < leaf < tree_size:
            raise MalformedError(f"bundle leaf indices must ascend strictly within 0..{tree_size - 1}; "
                                 f"got {leaf} after {last}")
        last = leaf
        if wanted is not None and leaf not in wanted:
            raise MalformedError(f"response opens leaf {leaf}, which the challenge does not ask for")
        length = r.u64("state length")
        if length > max_state:
            raise LimitExceeded(f"a state of this job is at most {max_state} bytes, bundle claims {length}")
        if lazy:  # one state in memory at a time: hashed here, read again when checked
            at = r.pos
            spans[leaf] = (at, length, digest_encoded(r.take(length, f"state {leaf}")))
        else:
            states[leaf] = r.take(length, f"state {leaf}")
    p = r.u32("proof length")
    if p > MAX_PROOF_HASHES:
        raise LimitExceeded(f"a multiproof has at most {MAX_PROOF_HASHES} hashes, bundle claims {p}")
    if wanted is not None:  # bounded by the longest multiproof of the leaves the challenge opens
        most = len(wanted) * max(1, (tree_size - 1).bit_length())
        if p > most:
            raise ProofError(f"multiproof has wrong size: expected at most {most} hashes for the {len(wanted)} "
                             f"leaves the challenge opens, got {p}")
    raw = r.take(DIGEST_SIZE * p, "proof")
    proof = tuple(raw[j : j + DIGEST_SIZE] for j in range(0, len(raw), DIGEST_SIZE))
    v = r.u32("leaf value count")
    if not 0 <= v <= 2 * k + 1 - m:
        raise LimitExceeded(f"bundle leaf value count must be in 0..{2 * k + 1 - m} for {k} indices and {m} whole "
                            f"states, got {v}")
    values: dict[int, bytes] = {}
    last = -1
    for _ in range(v):
        leaf = r.u64("leaf index")
        if not last < leaf < tree_size:
            raise MalformedError(f"bundle leaf values must ascend strictly within 0..{tree_size - 1}; "
                                 f"got {leaf} after {last}")
        last = leaf
        if leaf in states or leaf in spans:
            raise MalformedError(f"response opens leaf {leaf} both whole and by value")
        if wanted is not None and leaf not in wanted:
            raise MalformedError(f"response opens leaf {leaf}, which the challenge does not ask for")
        values[leaf] = r.take(DIGEST_SIZE, f"value of leaf {leaf}")
    c = r.u32("chunk opening count")
    if not 0 <= c <= k:
        raise LimitExceeded(f"bundle chunk opening count must be in 0..{k} for {k} indices, got {c}")
    sample = MAX_SAMPLE_CHUNKS if expect is None else expect.sample_chunks
    if c and not sample:
        raise MalformedError("response opens chunks, but this job compares whole states")
    chunks: dict[int, tuple[ChunkOpening, ...]] = {}
    last = -1
    for _ in range(c):
        leaf = r.u64("leaf index")
        if not last < leaf < tree_size:
            raise MalformedError(f"bundle chunk openings must ascend strictly within 0..{tree_size - 1}; "
                                 f"got {leaf} after {last}")
        last = leaf
        if leaf not in values:
            raise MalformedError(f"response opens chunks of leaf {leaf}, which it does not open by value")
        n = r.u32("chunk count")
        if not 1 <= n <= sample:
            raise LimitExceeded(f"a state opens 1..{sample} chunks, bundle claims {n} for leaf {leaf}")
        opened: list[ChunkOpening] = []
        prev_index = -1
        for _ in range(n):
            index, length = struct.unpack("<II", r.take(8, "chunk index and length"))
            if index <= prev_index:
                raise MalformedError(f"chunk indices of leaf {leaf} must ascend strictly; got {index} after "
                                     f"{prev_index}")
            prev_index = index
            if length > MAX_CHUNK_BYTES:
                raise LimitExceeded(f"a chunk is at most {MAX_CHUNK_BYTES} bytes, bundle claims {length}")
            data = r.take(length, f"chunk {index} of leaf {leaf}")
            q = r.take(1, "chunk path length")[0]
            if q > MAX_CHUNK_PATH:
                raise LimitExceeded(f"a chunk's audit path has at most {MAX_CHUNK_PATH} hashes, bundle claims {q}")
            raw_path = r.take(DIGEST_SIZE * q, "chunk path")
            opened.append((index, data, tuple(raw_path[j : j + DIGEST_SIZE] for j in range(0, len(raw_path),
                                                                                          DIGEST_SIZE))))
        chunks[leaf] = tuple(opened)
    if not states and not values and not spans:
        raise MalformedError("bundle opens no leaf")
    if expect is not None:  # the exact size follows from the leaves opened
        need = multiproof_size([*states, *spans, *values], tree_size)
        if p != need:
            raise ProofError(f"multiproof has wrong size: expected {need} hashes for the {m + len(values)} "
                             f"opened leaves, got {p}")
    if r.left:
        raise MalformedError(f"bundle has {r.left} trailing bytes")
    digest = bytes(r.hash.digest())
    trailer = f.read(TRAILER_BYTES)
    if len(trailer) != TRAILER_BYTES:  # pragma: no cover - the file shrank while being read
        raise MalformedError("bundle truncated: no signature trailer")
    response = Response(job_id=job_id, root=root, tree_size=tree_size, indices=tuple(indices),
                        states=FileStates(f, spans) if lazy else states, proof=proof, values=values, chunks=chunks,
                        worker=trailer[:PUBKEY_SIZE], signature=trailer[PUBKEY_SIZE:])
    object.__setattr__(response, "_digest", digest)  # computed while reading: saves a second pass
    return response
