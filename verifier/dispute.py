"""Bisection disputes between two commitments of the same job (DESIGN.md section 6).

Two workers committed to the same job id with different roots. Both trees have ``n + 1``
leaves (``s_0 .. s_n``) and the same shape, so a referee can find the *first* step where they
part by binary search on the leaf index, each round asking both parties to open one leaf with
an inclusion proof, and then recompute that single step from the state both agree on.

The round predicate (why the first divergence, and why it is monotone)::

    Q(m) = "leaves 0..m of A and B are identical"

An inclusion proof of leaf ``m`` carries, as its *left* siblings, the hashes of subtrees that
exactly cover leaves ``0..m-1`` (RFC 9162's split). Once both proofs verify against their
roots, ``Q(m)`` holds iff the two leaf values and all left siblings are equal (otherwise a
BLAKE3 collision). ``Q`` is monotone (true up to the first divergence, false after it), and
``Q(n)`` is false because the roots differ, so the search

    (1) lo = 0, hi = n
    (2) while hi - lo > 1: m = (lo + hi) // 2; both open leaf m; Q(m) ? lo = m : hi = m
    (3) the step round: both open s_0, s_{hi-1}, s_hi with their states (one multiproof each,
        as a response bundle answering the single index hi)
    (4) the referee checks each s_0 against the one it derives from the spec (BAD_INIT), then
        recomputes step hi once from the agreed s_{hi-1} and compares each party's s_hi by the
        kernel's mode: exact names the party whose state differs, tolerance the one outside
        the bound; both within the bound says so (two honest workers on different hardware
        differ bitwise from step 1), and the caller falls back to spot-checking each party

finds the first divergent step ``i = hi`` in at most ``ceil(log2 n)`` bisection rounds (exactly
``ceil(log2 n)`` when ``n`` is a power of two, and never fewer than ``floor(log2 n)``: a
binary search over ``n`` candidates cannot take the same number of rounds on every path when
``n`` is not a power of two) plus one step round with one recomputed step.

A party that does not answer (``None``), or whose opening does not verify, loses at once.

The outcome is a :class:`DisputeOutcome` signed by the referee (both roots, every round, the
step, the case, who lied) and, for each party found lying, an ordinary signed
:class:`~pocv.records.Verdict` (FAIL, one outcome at the step) for that party's root, which
the market settles like any other verdict. Its ``beacon`` field holds the dispute id
``BLAKE3-derive_key(DISPUTE_ID_CONTEXT, job_id || root_a || root_b)`` and its
``cheat_fraction`` is 1: the step was pinned, not sampled.

Equivocation (one worker signing two roots for one job id) needs no bisection: the two signed
commitments are the evidence (:func:`detect_equivocation`).

The referee side (:class:`Dispute`) is pure: typed records in, typed records out, no I/O. The
party side (:func:`answer_query`) reads the party's own trace. Every record has a JSON wire
form for running the rounds across processes through files (``pocv dispute``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from blake3 import blake3
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from pocv.bundle import Response
from pocv.encoding import decode_state, digest_encoded, state_digest
from pocv.errors import (
    EvidenceError,
    InputError,
    LimitExceeded,
    MalformedError,
    MismatchError,
    ProofError,
    SignatureError,
)
from pocv.jobs import MAX_STEPS
from pocv.kernels import kernel_for
from pocv.merkle import DIGEST_SIZE, MerkleTree, verify_inclusion, verify_multiproof
from pocv.records import MAX_DETAIL_BYTES, Commitment, Outcome, Verdict, load_record_json

if TYPE_CHECKING:
    from pocv.prover import Prover

__all__ = [
    "CASES",
    "MAX_DISPUTE_RECORD_BYTES",
    "MAX_DISPUTE_ROUNDS",
    "Dispute",
    "DisputeOutcome",
    "DisputeResult",
    "Equivocation",
    "Opening",
    "Query",
    "Round",
    "answer_query",
    "detect_equivocation",
    "dispute_id",
    "max_rounds",
    "run_local",
]

DISPUTE_ID_CONTEXT: Final = "pocv 2026-11 dispute id v1"
OUTCOME_DOMAIN: Final = b"pocv dispute outcome v1\x00"
#: Bisection rounds of the largest job: steps <= MAX_STEPS = 2^32 gives at most 32.
MAX_DISPUTE_ROUNDS: Final = (MAX_STEPS - 1).bit_length()
#: One query, opening, session or outcome as JSON. The largest is a session or outcome of
#: MAX_DISPUTE_ROUNDS rounds (~ 150 bytes of hex each) plus two commitments (<= 2 x 130 KiB
#: with their metadata): 1 MiB is ample and bounds what a referee parses.
MAX_DISPUTE_RECORD_BYTES: Final = 1 << 20
#: Hashes in one inclusion proof of a job's tree (steps + 1 <= 2^32 + 1 leaves).
MAX_OPENING_HASHES: Final = MAX_STEPS.bit_length()

Party = Literal["A", "B"]
PARTIES: Final[tuple[Party, Party]] = ("A", "B")

#: How a dispute ended (the ``case`` of a :class:`DisputeOutcome`).
CASES: Final = (
    "exact-mismatch",  # exact kernel: the liar's s_i is not the recomputed one
    "outside-bound",  # tolerance kernel: the liar's s_i is outside the calibrated bound
    "both-within-bound",  # tolerance kernel: both within the bound: spot-check each party instead
    "bad-init",  # a party's s_0 is not the state the spec derives
    "bad-state",  # a party opened a state of the wrong names, dtypes or shapes
    "bad-opening",  # a party's opening does not verify against its root (or is for another job)
    "refused",  # a party did not answer a round
    "inconclusive",  # exact kernel, both states accepted although their digests differ (never seen)
)
_CASE_CODE: Final = {c: i for i, c in enumerate(CASES)}
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
_HEX128_RE: Final = re.compile(r"[0-9a-f]{128}")


# -- small parsing helpers ---------------------------------------------------------------------


def _load(text: str | bytes, what: str) -> dict[str, Any]:
    d = load_record_json(text, what, limit=MAX_DISPUTE_RECORD_BYTES)
    if d.get("version") != 1:
        raise MalformedError(f"{what} version: expected 1, got {str(d.get('version'))[:40]!r}")
    return d


def _get(d: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in d:
        raise MalformedError(f"{what} is missing field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise MalformedError(f"{what}.{key}: expected {kind.__name__}, got {type(v).__name__}")
    return v


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int, what: str) -> int:
    v: int = _get(d, key, int, what)
    if not lo <= v <= hi:
        raise MalformedError(f"{what}.{key}: expected an integer in {lo}..{hi}, got {v}")
    return v


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
        raise MalformedError(f"{what}: expected 64 lowercase hex digits, got {str(value)[:80]!r}")
    return bytes.fromhex(value)


def _digest(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != DIGEST_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise MalformedError(f"{what}: expected {DIGEST_SIZE} bytes, got {got}")
    return value


def _pubkey(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not 32 <= len(value) <= 44:
        raise MalformedError(f"{what}: expected a base58 public key, got {str(value)[:80]!r}")
    try:
        return bytes(Pubkey.from_string(value))
    except ValueError as e:
        raise MalformedError(f"{what} is not a base58 public key: {e}") from e


def _commitment(value: object, what: str) -> Commitment:
    if not isinstance(value, dict):
        raise MalformedError(f"{what}: expected a commitment object, got {type(value).__name__}")
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError) as e:  # pragma: no cover - came from json.loads
        raise MalformedError(f"{what} cannot be re-serialized: {e}") from e
    return Commitment.from_json(text)


def _clip(detail: str) -> str:
    raw = detail.encode(errors="replace")
    if len(raw) <= MAX_DETAIL_BYTES:
        return detail.encode(errors="replace").decode()
    return raw[: MAX_DETAIL_BYTES - 3].decode(errors="ignore") + "..."


def dispute_id(job_id: bytes, root_a: bytes, root_b: bytes) -> bytes:
    """``BLAKE3-derive_key(DISPUTE_ID_CONTEXT, job_id || root_a || root_b)``: names a dispute."""
    for name, v in (("job id", job_id), ("root A", root_a), ("root B", root_b)):
        _digest(v, name)
    return bytes(blake3(job_id + root_a + root_b, derive_key_context=DISPUTE_ID_CONTEXT).digest())


def max_rounds(steps: int) -> int:
    """``ceil(log2 steps)``: the most bisection rounds a job of ``steps`` steps can take."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must be an integer in 1..{MAX_STEPS}, got {steps!r}")
    return (steps - 1).bit_length()


def _left_siblings(index: int, size: int, proof: Sequence[bytes]) -> list[bytes]:
    """The hashes of ``proof`` (leaf ``index`` of ``size``) whose subtrees lie left of the leaf.

    They cover leaves ``0 .. index-1`` exactly; the walk mirrors ``verify_inclusion``'s.
    """
    out: list[bytes] = []
    it = iter(proof)
    node, count = index, size
    while count > 1:
        if (node ^ 1) < count:
            p = next(it)
            if node & 1:
                out.append(bytes(p))
        node, count = node >> 1, (count + 1) >> 1
    return out


# -- the records of a round --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Query:
    """What the referee asks both parties in one round.

    ``kind == "bisect"``: open leaf ``leaves[0]`` (its 32-byte value and inclusion proof).
    ``kind == "step"``: answer the single challenged index ``step`` with a response bundle that
    opens the states ``s_0``, ``s_{step-1}`` and ``s_step`` (``leaves``) with one multiproof.
    """

    job_id: bytes
    root_a: bytes
    root_b: bytes
    tree_size: int
    round: int
    kind: Literal["bisect", "step"]
    leaves: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("job_id", "root_a", "root_b"):
            _digest(getattr(self, name), f"query {name}")
        if isinstance(self.tree_size, bool) or not isinstance(self.tree_size, int) or not (
                2 <= self.tree_size <= MAX_STEPS + 1):
            raise MalformedError(f"query tree_size must be in 2..{MAX_STEPS + 1}, got {self.tree_size!r}")
        if isinstance(self.round, bool) or not isinstance(self.round, int) or not (
                0 <= self.round <= MAX_DISPUTE_ROUNDS):
            raise MalformedError(f"query round must be in 0..{MAX_DISPUTE_ROUNDS}, got {self.round!r}")
        leaves = tuple(self.leaves)
        object.__setattr__(self, "leaves", leaves)
        if any(isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < self.tree_size for j in leaves):
            raise MalformedError(f"query leaves must be integers in 0..{self.tree_size - 1}")
        if self.kind == "bisect":
            if len(leaves) != 1 or leaves[0] == 0:
                raise MalformedError(f"a bisect query opens one leaf in 1..{self.tree_size - 2}, got {leaves}")
        elif self.kind == "step":
            if not leaves or leaves != tuple(Response.opened_leaves([leaves[-1]])) or leaves[-1] < 1:
                raise MalformedError(f"a step query opens s_0, s_(i-1) and s_i, got leaves {leaves}")
        else:
            raise MalformedError(f"query kind must be 'bisect' or 'step', got {str(self.kind)[:40]!r}")

    @property
    def step(self) -> int:
        """The step index a step query challenges (the last leaf)."""
        return self.leaves[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "dispute-query", "version": 1, "job_id": self.job_id.hex(),
                "root_a": self.root_a.hex(), "root_b": self.root_b.hex(), "tree_size": self.tree_size,
                "round": self.round, "kind": self.kind, "leaves": list(self.leaves)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Query:
        d = _load(text, "dispute-query")
        leaves = _get(d, "leaves", list, "dispute-query")
        if len(leaves) > 3:
            raise MalformedError(f"a dispute query opens at most 3 leaves, got {len(leaves)}")
        kind = _get(d, "kind", str, "dispute-query")
        if kind not in ("bisect", "step"):
            raise MalformedError(f"query kind must be 'bisect' or 'step', got {kind[:40]!r}")
        return cls(job_id=_hex(d.get("job_id"), "dispute-query.job_id"),
                   root_a=_hex(d.get("root_a"), "dispute-query.root_a"),
                   root_b=_hex(d.get("root_b"), "dispute-query.root_b"),
                   tree_size=_get(d, "tree_size", int, "dispute-query"),
                   round=_get(d, "round", int, "dispute-query"), kind=kind, leaves=tuple(leaves))


@dataclass(frozen=True, kw_only=True)
class Opening:
    """A party's answer to a bisect query: one leaf value and its inclusion proof."""

    job_id: bytes
    root: bytes
    tree_size: int
    leaf: int
    value: bytes
    proof: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _digest(self.job_id, "opening job_id")
        _digest(self.root, "opening root")
        _digest(self.value, "opening value")
        if isinstance(self.tree_size, bool) or not isinstance(self.tree_size, int) or not (
                2 <= self.tree_size <= MAX_STEPS + 1):
            raise MalformedError(f"opening tree_size must be in 2..{MAX_STEPS + 1}, got {self.tree_size!r}")
        if isinstance(self.leaf, bool) or not isinstance(self.leaf, int) or not 0 <= self.leaf < self.tree_size:
            raise MalformedError(f"opening leaf must be in 0..{self.tree_size - 1}, got {self.leaf!r}")
        proof = tuple(self.proof)
        if len(proof) > MAX_OPENING_HASHES:
            raise LimitExceeded(f"an inclusion proof has at most {MAX_OPENING_HASHES} hashes, got {len(proof)}")
        for j, p in enumerate(proof):
            _digest(p, f"opening proof hash {j}")
        object.__setattr__(self, "proof", proof)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "dispute-opening", "version": 1, "job_id": self.job_id.hex(), "root": self.root.hex(),
                "tree_size": self.tree_size, "leaf": self.leaf, "value": self.value.hex(),
                "proof": [p.hex() for p in self.proof]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Opening:
        d = _load(text, "dispute-opening")
        proof = _get(d, "proof", list, "dispute-opening")
        if len(proof) > MAX_OPENING_HASHES:
            raise LimitExceeded(f"an inclusion proof has at most {MAX_OPENING_HASHES} hashes, got {len(proof)}")
        return cls(job_id=_hex(d.get("job_id"), "dispute-opening.job_id"),
                   root=_hex(d.get("root"), "dispute-opening.root"),
                   tree_size=_get(d, "tree_size", int, "dispute-opening"),
                   leaf=_get(d, "leaf", int, "dispute-opening"),
                   value=_hex(d.get("value"), "dispute-opening.value"),
                   proof=tuple(_hex(p, f"dispute-opening.proof[{j}]") for j, p in enumerate(proof)))


@dataclass(frozen=True)
class Round:
    """One bisection round as the referee recorded it."""

    leaf: int
    agree: bool  # Q(leaf): leaves 0..leaf identical in both trees
    value_a: bytes
    value_b: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"leaf": self.leaf, "agree": self.agree, "value_a": self.value_a.hex(),
                "value_b": self.value_b.hex()}

    @classmethod
    def from_dict(cls, d: object, tree_size: int) -> Round:
        if not isinstance(d, dict):
            raise MalformedError(f"dispute round: expected an object, got {type(d).__name__}")
        agree = _get(d, "agree", bool, "dispute round")
        return cls(_int(d, "leaf", 1, tree_size - 2, "dispute round"), agree,
                   _hex(d.get("value_a"), "dispute round.value_a"), _hex(d.get("value_b"), "dispute round.value_b"))


def _replay(rounds: Sequence[Round], steps: int) -> tuple[int, int]:
    """(lo, hi) after ``rounds``; MalformedError if a round is not the one the search asks."""
    if len(rounds) > MAX_DISPUTE_ROUNDS:
        raise LimitExceeded(f"a dispute has at most {MAX_DISPUTE_ROUNDS} rounds, got {len(rounds)}")
    lo, hi = 0, steps
    for r, rnd in enumerate(rounds):
        if hi - lo <= 1:
            raise MalformedError(f"dispute round {r}: the search had already ended at step {hi}")
        m = (lo + hi) // 2
        if rnd.leaf != m:
            raise MalformedError(f"dispute round {r}: expected leaf {m}, got {rnd.leaf}")
        if rnd.agree and rnd.value_a != rnd.value_b:
            raise MalformedError(f"dispute round {r}: recorded agreement on different leaf values")
        lo, hi = (m, hi) if rnd.agree else (lo, m)
    return lo, hi


# -- the outcome -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DisputeOutcome:
    """The referee's signed finding: both roots, every round, the step, the case, the liars."""

    job_id: bytes
    kernel: str  # name@version
    steps: int
    root_a: bytes
    root_b: bytes
    worker_a: bytes
    worker_b: bytes
    rounds: tuple[Round, ...]
    step: int  # the first divergent step (0: the dispute ended before one was found)
    case: str
    liars: tuple[Party, ...]
    detail: str
    referee: bytes
    signature: bytes = bytes(64)

    def __post_init__(self) -> None:
        for name in ("job_id", "root_a", "root_b", "worker_a", "worker_b", "referee"):
            _digest(getattr(self, name), f"dispute outcome {name}")
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise MalformedError("dispute outcome signature: expected 64 bytes")
        if not isinstance(self.kernel, str) or not re.fullmatch(r"[a-z][a-z0-9\-]{0,63}@\d{1,10}", self.kernel):
            raise MalformedError(f"dispute outcome kernel: expected name@version, got {str(self.kernel)[:80]!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise MalformedError(f"dispute outcome steps must be in 1..{MAX_STEPS}, got {self.steps!r}")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or not 0 <= self.step <= self.steps:
            raise MalformedError(f"dispute outcome step must be in 0..{self.steps}, got {self.step!r}")
        if self.case not in _CASE_CODE:
            raise MalformedError(f"dispute outcome case: expected one of {list(CASES)}, got {str(self.case)[:40]!r}")
        liars = tuple(self.liars)
        if any(p not in PARTIES for p in liars) or list(liars) != sorted(set(liars)):
            raise MalformedError(f"dispute outcome liars: expected a sorted subset of {PARTIES}, got {liars}")
        if (self.case == "both-within-bound") != (not liars):
            raise MalformedError(f"dispute outcome case {self.case!r} disagrees with liars {liars}")
        object.__setattr__(self, "liars", liars)
        rounds = tuple(self.rounds)
        _replay(rounds, self.steps)
        object.__setattr__(self, "rounds", rounds)
        if not isinstance(self.detail, str):
            raise MalformedError("dispute outcome detail: expected a string")
        object.__setattr__(self, "detail", _clip(self.detail))

    @property
    def dispute_id(self) -> bytes:
        return dispute_id(self.job_id, self.root_a, self.root_b)

    def root_of(self, party: Party) -> bytes:
        return self.root_a if party == "A" else self.root_b

    def signing_bytes(self) -> bytes:
        ref, detail = self.kernel.encode(), self.detail.encode()
        parts = [OUTCOME_DOMAIN, self.job_id, self.root_a, self.root_b, self.worker_a, self.worker_b,
                 struct.pack("<B", len(ref)), ref,
                 struct.pack("<QQBBH", self.steps, self.step, _CASE_CODE[self.case],
                             sum(1 << PARTIES.index(p) for p in self.liars), len(detail)), detail,
                 self.referee, struct.pack("<I", len(self.rounds))]
        for r in self.rounds:
            parts.append(struct.pack("<QB", r.leaf, int(r.agree)) + r.value_a + r.value_b)
        return b"".join(parts)

    def sign(self, key: Keypair) -> DisputeOutcome:
        unsigned = DisputeOutcome(**{**self._fields(), "referee": bytes(key.pubkey())})
        sig = bytes(key.sign_message(unsigned.signing_bytes()))
        return DisputeOutcome(**{**unsigned._fields(), "signature": sig})

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "job_id", "kernel", "steps", "root_a", "root_b", "worker_a", "worker_b", "rounds", "step",
            "case", "liars", "detail", "referee", "signature")}

    def verify_signature(self, expected_referee: bytes | None = None) -> None:
        if expected_referee is not None and expected_referee != self.referee:
            raise SignatureError(f"dispute outcome signed by {Pubkey.from_bytes(self.referee)}, expected "
                                 f"{Pubkey.from_bytes(expected_referee)}")
        try:
            ok = Signature.from_bytes(self.signature).verify(Pubkey.from_bytes(self.referee), self.signing_bytes())
        except ValueError as e:  # pragma: no cover - 64 bytes always parse
            raise SignatureError(f"dispute outcome signature is malformed: {e}") from e
        if not ok:
            raise SignatureError(f"dispute outcome signature does not verify under {Pubkey.from_bytes(self.referee)}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "dispute-outcome", "version": 1, "dispute_id": self.dispute_id.hex(),
                "job_id": self.job_id.hex(), "kernel": self.kernel, "steps": self.steps,
                "root_a": self.root_a.hex(), "root_b": self.root_b.hex(),
                "worker_a": str(Pubkey.from_bytes(self.worker_a)), "worker_b": str(Pubkey.from_bytes(self.worker_b)),
                "rounds": [r.to_dict() for r in self.rounds], "bisection_rounds": len(self.rounds),
                "step": self.step, "case": self.case, "liars": list(self.liars), "detail": self.detail,
                "referee": str(Pubkey.from_bytes(self.referee)), "signature": self.signature.hex()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DisputeOutcome:
        """Parse, re-validate and verify the referee's signature."""
        d = _load(text, "dispute-outcome")
        steps = _int(d, "steps", 1, MAX_STEPS, "dispute-outcome")
        raw_rounds = _get(d, "rounds", list, "dispute-outcome")
        if len(raw_rounds) > MAX_DISPUTE_ROUNDS:
            raise LimitExceeded(f"a dispute has at most {MAX_DISPUTE_ROUNDS} rounds, got {len(raw_rounds)}")
        if steps < 2 and raw_rounds:
            raise MalformedError(f"a job of {steps} steps has no bisection rounds")
        liars = _get(d, "liars", list, "dispute-outcome")
        if len(liars) > 2:
            raise MalformedError("dispute-outcome.liars: at most two parties")
        sig_hex = _get(d, "signature", str, "dispute-outcome")
        if not _HEX128_RE.fullmatch(sig_hex):
            raise MalformedError("dispute-outcome.signature: expected 128 lowercase hex digits")
        o = cls(job_id=_hex(d.get("job_id"), "dispute-outcome.job_id"),
                kernel=_get(d, "kernel", str, "dispute-outcome"), steps=steps,
                root_a=_hex(d.get("root_a"), "dispute-outcome.root_a"),
                root_b=_hex(d.get("root_b"), "dispute-outcome.root_b"),
                worker_a=_pubkey(d.get("worker_a"), "dispute-outcome.worker_a"),
                worker_b=_pubkey(d.get("worker_b"), "dispute-outcome.worker_b"),
                rounds=tuple(Round.from_dict(r, steps + 1) for r in raw_rounds),
                step=_get(d, "step", int, "dispute-outcome"), case=_get(d, "case", str, "dispute-outcome"),
                liars=tuple(liars), detail=_get(d, "detail", str, "dispute-outcome"),
                referee=_pubkey(d.get("referee"), "dispute-outcome.referee"), signature=bytes.fromhex(sig_hex))
        o.verify_signature()
        return o


# -- the referee -------------------------------------------------------------------------------

Answer = Opening | Response | bytes | None


class Dispute:
    """The referee's state machine for one dispute (pure: records in, records out).

    Usage: ``d = Dispute.open(a, b)``; while not ``d.done``: ``q = d.query()``, hand
    ``q`` to both parties, ``d.submit(answer_a, answer_b)``; then ``d.finish(key)`` gives the
    signed outcome and the FAIL verdicts. ``to_json``/``from_json`` keep the session in a file
    between rounds (the rounds are replayed on load, so an edited session cannot skip one).
    """

    def __init__(self, a: Commitment, b: Commitment, *, device: str = "cpu",
                 rounds: Sequence[Round] = ()) -> None:
        a.verify_signature()
        b.verify_signature()
        if a.job_id != b.job_id:
            raise MismatchError(f"commitments are for different jobs: {a.job_id.hex()[:16]}... and "
                                f"{b.job_id.hex()[:16]}...")
        if a.root == b.root:
            raise MismatchError(f"both commitments have root {a.root.hex()[:16]}...: nothing to dispute")
        self.a, self.b = a, b
        self.device = device
        self.rounds: list[Round] = list(rounds)
        self.lo, self.hi = _replay(self.rounds, a.steps)
        self._result: tuple[str, tuple[Party, ...], int, str, tuple[Outcome | None, Outcome | None]] | None = None

    @classmethod
    def open(cls, a: Commitment, b: Commitment, *, device: str = "cpu") -> Dispute:
        """Start a dispute: both signatures verify, same job id, different roots."""
        return cls(a, b, device=device)

    @property
    def id(self) -> bytes:
        return dispute_id(self.a.job_id, self.a.root, self.b.root)

    @property
    def tree_size(self) -> int:
        return self.a.tree_size

    @property
    def done(self) -> bool:
        return self._result is not None

    def commitment(self, party: Party) -> Commitment:
        return self.a if party == "A" else self.b

    def query(self) -> Query:
        """The next round's query: a bisect query while the range is wider than one step."""
        if self._result is not None:
            raise InputError("the dispute is resolved; there is no next query")
        if self.hi - self.lo > 1:
            kind: Literal["bisect", "step"] = "bisect"
            leaves: tuple[int, ...] = ((self.lo + self.hi) // 2,)
        else:
            kind, leaves = "step", tuple(Response.opened_leaves([self.hi]))
        return Query(job_id=self.a.job_id, root_a=self.a.root, root_b=self.b.root, tree_size=self.tree_size,
                     round=len(self.rounds), kind=kind, leaves=leaves)

    # -- (2) a bisect round --------------------------------------------------------------------

    def submit(self, answer_a: Answer, answer_b: Answer) -> Query | None:
        """Take both parties' answers to :meth:`query`; return the next query, or None when resolved.

        ``None`` for a party means it did not answer in time: it loses. An answer that does not
        verify against the party's root loses too.
        """
        q = self.query()
        if q.kind == "step":
            self._step_round(q, answer_a, answer_b)
            return None
        m = q.leaves[0]
        values: dict[Party, bytes] = {}
        lefts: dict[Party, list[bytes]] = {}
        failed: dict[Party, tuple[str, str]] = {}
        for party, ans in zip(PARTIES, (answer_a, answer_b)):
            try:
                op = self._check_opening(party, m, ans)
            except _Lost as e:
                failed[party] = (e.reason, e.detail)
                continue
            values[party] = op.value
            lefts[party] = _left_siblings(m, self.tree_size, op.proof)
        if failed:
            self._lose(failed, m)
            return None
        agree = values["A"] == values["B"] and lefts["A"] == lefts["B"]
        self.rounds.append(Round(m, agree, values["A"], values["B"]))
        self.lo, self.hi = (m, self.hi) if agree else (self.lo, m)
        return self.query()

    def _check_opening(self, party: Party, leaf: int, ans: Answer) -> Opening:
        c = self.commitment(party)
        if ans is None:
            raise _Lost("REFUSED", f"party {party} did not open leaf {leaf}")
        if isinstance(ans, bytes):
            try:
                ans = Opening.from_json(ans)
            except EvidenceError as e:
                raise _Lost("MALFORMED", f"party {party}'s opening does not parse: {e}") from e
        if not isinstance(ans, Opening):
            raise _Lost("MALFORMED", f"party {party} answered a bisect query with a {type(ans).__name__}")
        if (ans.job_id, ans.root, ans.tree_size, ans.leaf) != (c.job_id, c.root, c.tree_size, leaf):
            raise _Lost("BAD_PROOF", f"party {party}'s opening is not leaf {leaf} of its own tree "
                                     f"(job id, root, tree size or leaf differ)")
        try:
            verify_inclusion(c.root, c.tree_size, leaf, ans.value, ans.proof)
        except ProofError as e:
            raise _Lost("BAD_PROOF", f"party {party}'s opening of leaf {leaf}: {e}") from e
        return ans

    # -- (3), (4) the step round ---------------------------------------------------------------

    def _step_round(self, q: Query, answer_a: Answer, answer_b: Answer) -> None:
        i = q.step
        spec = self.a.spec
        kernel = kernel_for(spec)
        opened: dict[Party, Response] = {}
        failed: dict[Party, tuple[str, str]] = {}
        for party, ans in zip(PARTIES, (answer_a, answer_b)):
            try:
                opened[party] = self._check_step_answer(party, q, ans)
            except _Lost as e:
                failed[party] = (e.reason, e.detail)
        if failed:
            self._lose(failed, i)
            return
        # (4a) s_0 re-derived from the spec
        s0 = state_digest(kernel.init_state(spec, self.device))
        bad_init = {p: ("BAD_INIT", f"party {p}'s s_0 is not the state the spec derives")
                    for p in PARTIES if digest_encoded(opened[p].states[0]) != s0}
        if bad_init:
            self._lose(bad_init, i, case="bad-init")
            return
        if digest_encoded(opened["A"].states[i]) == digest_encoded(opened["B"].states[i]):
            raise MalformedError(f"both parties' verified s_{i} are equal, so step {i} is not where they part: "
                                 "the dispute session was altered")
        prev_a, prev_b = (digest_encoded(opened[p].states[i - 1]) for p in PARTIES)
        if prev_a != prev_b:  # pragma: no cover - Q(i-1) held, or i-1 = 0 and both s_0 are the spec's
            raise MismatchError(f"parties disagree on s_{i - 1} although the search says they agree")
        # (4b) the agreed state, then each party's claim
        try:
            prev = decode_state(opened["A"].states[i - 1])
        except EvidenceError as e:
            self._lose({p: ("BAD_STATE", f"agreed s_{i - 1}: {e}") for p in PARTIES}, i, case="bad-state")
            return
        why = kernel.check_schema(prev, spec)
        if why is not None:
            self._lose({p: ("BAD_STATE", f"agreed s_{i - 1}: {why}") for p in PARTIES}, i, case="bad-state")
            return
        claims: dict[Party, Any] = {}
        bad_state: dict[Party, tuple[str, str]] = {}
        for p in PARTIES:
            try:
                claims[p] = decode_state(opened[p].states[i])
            except EvidenceError as e:
                bad_state[p] = ("BAD_STATE", f"party {p}'s s_{i}: {e}")
                continue
            why = kernel.check_schema(claims[p], spec)
            if why is not None:
                bad_state[p] = ("BAD_STATE", f"party {p}'s s_{i}: {why}")
        if bad_state:
            self._lose(bad_state, i, case="bad-state")
            return
        expected = kernel.step(prev, i, spec, self.device)  # the one recomputed step
        mismatch: dict[Party, tuple[str, str]] = {}
        notes: list[str] = []
        for p in PARTIES:
            cmp = kernel.compare(expected, claims[p], spec)
            if kernel.mode == "tolerance":
                notes.append(f"{p}: worst ratio {cmp.worst_ratio:.3g}")
            if not cmp.ok:
                mismatch[p] = ("MISMATCH", f"party {p}'s s_{i} is not step {i} of the agreed s_{i - 1}: "
                                           f"{cmp.detail}")
        if mismatch:
            self._lose(mismatch, i, case="exact-mismatch" if kernel.mode == "exact" else "outside-bound")
            return
        if kernel.mode == "tolerance":
            why_both = (f"both parties' s_{i} lie within the bound of {spec.kernel_ref} at the first divergent "
                        f"step ({'; '.join(notes)}): spot-check each party on its own trace")
            self._result = ("both-within-bound", (), i, why_both, (None, None))
        else:
            self._lose({p: ("MISMATCH", f"s_{i} accepted for both parties although their digests differ")
                        for p in PARTIES}, i, case="inconclusive")

    def _check_step_answer(self, party: Party, q: Query, ans: Answer) -> Response:
        c = self.commitment(party)
        i = q.step
        if ans is None:
            raise _Lost("REFUSED", f"party {party} did not open the states of step {i}")
        if isinstance(ans, bytes):
            try:
                ans = Response.from_bytes(ans)
            except EvidenceError as e:
                raise _Lost("MALFORMED", f"party {party}'s step bundle does not parse: {e}") from e
        if not isinstance(ans, Response):
            raise _Lost("MALFORMED", f"party {party} answered the step query with a {type(ans).__name__}")
        if (ans.job_id, ans.root, ans.tree_size) != (c.job_id, c.root, c.tree_size):
            raise _Lost("BAD_PROOF", f"party {party}'s step bundle is for another job id, root or tree size")
        if ans.indices != (i,) or tuple(ans.states) != q.leaves:
            raise _Lost("MISSING", f"party {party}'s step bundle opens {list(ans.states)} for {list(ans.indices)}, "
                                   f"expected {list(q.leaves)} for [{i}]")
        digests = {j: digest_encoded(s) for j, s in ans.states.items()}
        try:
            verify_multiproof(c.root, c.tree_size, digests, ans.proof)
        except ProofError as e:
            raise _Lost("BAD_PROOF", f"party {party}'s step bundle: {e}") from e
        for r, rnd in enumerate(self.rounds):
            # A leaf opened twice cannot change short of a collision: both openings verified
            # against the same root. A contradiction means the recorded session was altered.
            if rnd.leaf in digests and digests[rnd.leaf] != (rnd.value_a if party == "A" else rnd.value_b):
                raise MalformedError(f"dispute session round {r} records another value for party {party}'s "
                                     f"leaf {rnd.leaf} than its verified step bundle: the session was altered")
        return ans

    def _lose(self, failed: Mapping[Party, tuple[str, str]], index: int, *, case: str | None = None) -> None:
        if case is None:
            reasons = {r for r, _ in failed.values()}
            case = "refused" if reasons == {"REFUSED"} else "bad-opening"
        liars = tuple(p for p in PARTIES if p in failed)
        outcomes = tuple(Outcome(index, *failed[p]) if p in failed else None for p in PARTIES)
        detail = "; ".join(failed[p][1] for p in liars)
        self._result = (case, liars, index, detail, (outcomes[0], outcomes[1]))

    # -- the result ----------------------------------------------------------------------------

    def finish(self, key: Keypair) -> tuple[DisputeOutcome, tuple[Verdict, ...]]:
        """The signed outcome and one signed FAIL verdict per liar (for its root)."""
        if self._result is None:
            raise InputError(f"the dispute is not resolved yet: next is round {len(self.rounds)}")
        case, liars, index, detail, outcomes = self._result
        spec = self.a.spec
        outcome = DisputeOutcome(job_id=self.a.job_id, kernel=spec.kernel_ref, steps=spec.steps,
                                 root_a=self.a.root, root_b=self.b.root, worker_a=self.a.worker,
                                 worker_b=self.b.worker, rounds=tuple(self.rounds), step=index, case=case,
                                 liars=liars, detail=detail, referee=bytes(key.pubkey())).sign(key)
        verdicts = []
        for p, o in zip(PARTIES, outcomes):
            if o is not None:
                verdicts.append(Verdict.create(job_id=self.a.job_id, root=self.commitment(p).root, beacon=self.id,
                                               kernel=spec.kernel_ref, outcomes=[o], cheat_fraction=1.0, key=key))
        return outcome, tuple(verdicts)

    # -- the session file ----------------------------------------------------------------------

    def to_json(self) -> str:
        if self._result is not None:
            raise InputError("a resolved dispute is kept as its outcome, not as a session")
        return json.dumps({"type": "dispute-session", "version": 1, "dispute_id": self.id.hex(),
                           "device": self.device, "commitment_a": self.a.to_dict(),
                           "commitment_b": self.b.to_dict(), "rounds": [r.to_dict() for r in self.rounds]},
                          indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Dispute:
        d = _load(text, "dispute-session")
        a = _commitment(d.get("commitment_a"), "dispute-session.commitment_a")
        b = _commitment(d.get("commitment_b"), "dispute-session.commitment_b")
        raw = _get(d, "rounds", list, "dispute-session")
        if len(raw) > MAX_DISPUTE_ROUNDS:
            raise LimitExceeded(f"a dispute has at most {MAX_DISPUTE_ROUNDS} rounds, got {len(raw)}")
        if a.steps < 2 and raw:
            raise MalformedError(f"a job of {a.steps} steps has no bisection rounds")
        device = _get(d, "device", str, "dispute-session")
        if device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d{1,3}", device):
            raise MalformedError(f"dispute-session.device: expected cpu, cuda or cuda:N, got {device[:40]!r}")
        return cls(a, b, device=device, rounds=[Round.from_dict(r, a.tree_size) for r in raw])


class _Lost(Exception):
    """A party's answer that loses the dispute (internal: becomes an outcome, never escapes)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- the party side ----------------------------------------------------------------------------


def answer_query(prover: Prover, query: Query, *, device: str | None = None) -> Opening | Response:
    """Answer ``query`` from ``prover``'s trace: an :class:`Opening` or a step bundle.

    Refuses (:class:`MismatchError`) a query for another job or for neither of its roots.
    """
    from pocv.store import TraceStore

    c = prover.commitment()
    if query.job_id != c.job_id or c.root not in (query.root_a, query.root_b):
        raise MismatchError(f"query is for job {query.job_id.hex()[:16]}... roots {query.root_a.hex()[:16]}.../"
                            f"{query.root_b.hex()[:16]}...; this trace holds root {c.root.hex()[:16]}...")
    if query.tree_size != c.tree_size:
        raise MismatchError(f"query says {query.tree_size} leaves, this trace has {c.tree_size}")
    if query.kind == "step":
        states, proof = prover.open(list(query.leaves), device=device)
        return Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=(query.step,),
                        states=states, proof=tuple(proof))
    from pocv.errors import StorageError

    leaves = TraceStore.open(prover.trace_dir).read_leaves()
    if len(leaves) != DIGEST_SIZE * c.tree_size:
        raise StorageError(f"trace holds {len(leaves) // DIGEST_SIZE} leaves, the commitment {c.tree_size}")
    tree = MerkleTree(leaves)
    if tree.root != c.root:
        raise StorageError("trace leaves do not give the committed root: the trace is corrupt")
    m = query.leaves[0]
    return Opening(job_id=c.job_id, root=c.root, tree_size=c.tree_size, leaf=m, value=tree.leaf_value(m),
                   proof=tuple(tree.inclusion_proof(m)))


@dataclass(frozen=True)
class DisputeResult:
    """What :func:`run_local` found: the signed outcome, the FAIL verdicts, and (case
    ``both-within-bound`` with a beacon) the spot-check verdicts of each party."""

    outcome: DisputeOutcome
    verdicts: tuple[Verdict, ...]
    spot_checks: tuple[Verdict, ...] = ()


def run_local(
    prover_a: Prover,
    prover_b: Prover,
    *,
    key: Keypair,
    device: str = "cpu",
    workdir: str | os.PathLike[str] | None = None,
    beacon: bytes | None = None,
    confidence: float = 0.999,
    cheat_fraction: float = 0.1,
) -> DisputeResult:
    """Run a whole dispute between two local traces, as the referee and both parties.

    With ``workdir`` every record goes through a file there (``session.json``,
    ``query-RR.json``, ``answer-RR-A.json`` or ``.pocv``, ...) and is parsed back, exactly as
    the ``pocv dispute`` commands exchange them between processes. If the kernel is in
    tolerance mode and both parties are within the bound at the first divergent step, each
    party is spot-checked on its own trace with ``beacon`` (when given).
    """
    from pocv.store import atomic_write

    d = Dispute.open(prover_a.commitment(), prover_b.commitment(), device=device)
    wd = Path(workdir) if workdir is not None else None

    def via_file(name: str, data: bytes) -> bytes:
        if wd is None:
            return data
        atomic_write(wd / name, data, durable=False)
        return (wd / name).read_bytes()

    while not d.done:
        r = len(d.rounds)
        if wd is not None:
            d = Dispute.from_json(via_file("session.json", d.to_json().encode()))
        q = Query.from_json(via_file(f"query-{r:02d}.json", d.query().to_json().encode()))
        answers: list[bytes] = []
        for party, prover in zip(PARTIES, (prover_a, prover_b)):
            ans = answer_query(prover, q, device=None)
            raw = ans.to_json().encode() if isinstance(ans, Opening) else ans.to_bytes()
            ext = "json" if isinstance(ans, Opening) else "pocv"
            answers.append(via_file(f"answer-{r:02d}-{party}.{ext}", raw))
        d.submit(answers[0], answers[1])
    outcome, verdicts = d.finish(key)
    via_file("outcome.json", outcome.to_json().encode())
    spot: list[Verdict] = []
    if outcome.case == "both-within-bound" and beacon is not None:
        from pocv.check import Verifier

        v = Verifier(key=key, device=device)
        for prover in (prover_a, prover_b):
            c = prover.commitment()
            ch = v.challenge(c, beacon=beacon, confidence=confidence, cheat_fraction=cheat_fraction,
                             beacon_source="dispute fallback")
            spot.append(v.check(c, ch, prover.respond(ch)))
    return DisputeResult(outcome, verdicts, tuple(spot))


# -- equivocation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equivocation:
    """Evidence that one worker signed two different roots for one job id."""

    first: Commitment
    second: Commitment

    @property
    def worker(self) -> bytes:
        return self.first.worker

    @property
    def job_id(self) -> bytes:
        return self.first.job_id

    def to_json(self) -> str:
        return json.dumps({"type": "equivocation", "version": 1, "first": self.first.to_dict(),
                           "second": self.second.to_dict()}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Equivocation:
        d = _load(text, "equivocation")
        return detect_equivocation(_commitment(d.get("first"), "equivocation.first"),
                                   _commitment(d.get("second"), "equivocation.second"))

    def verdicts(self, key: Keypair) -> tuple[Verdict, Verdict]:
        """A signed FAIL verdict for each of the two roots (either may be the bonded one)."""
        out = []
        for c in (self.first, self.second):
            other = self.second if c is self.first else self.first
            o = Outcome(0, "MISMATCH", f"equivocation: worker {Pubkey.from_bytes(self.worker)} also signed root "
                                       f"{other.root.hex()} for this job")
            out.append(Verdict.create(job_id=self.job_id, root=c.root,
                                      beacon=dispute_id(self.job_id, self.first.root, self.second.root),
                                      kernel=c.spec.kernel_ref, outcomes=[o], cheat_fraction=1.0, key=key))
        return out[0], out[1]


def detect_equivocation(first: Commitment, second: Commitment) -> Equivocation:
    """Evidence if ``first`` and ``second`` are validly signed by the same worker for the same job
    id with different roots; otherwise raise (SignatureError / MismatchError)."""
    first.verify_signature()
    second.verify_signature()
    if first.worker != second.worker:
        raise MismatchError("not an equivocation: the commitments are by different workers")
    if first.job_id != second.job_id:
        raise MismatchError("not an equivocation: the commitments are for different jobs")
    if first.root == second.root:
        raise MismatchError("not an equivocation: both commitments have the same root")
    return Equivocation(first, second)
