"""Bisection disputes between two commitments of the same job (docs/protocol.md §11).

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
        judges each party's s_hi from the agreed s_{hi-1} with the kernel's one rule
        (``Kernel.judge``): exact kernels name the party whose state differs, tolerance
        kernels the one outside the bound; both accepted says so (two honest workers on
        different hardware differ bitwise from step 1), and the caller falls back to
        spot-checking each party

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

Step (4) judges each party's ``s_i`` with the kernel's one rule, :meth:`Kernel.judge
<pocv.kernels.base.Kernel.judge>` -- the rule the spot check (:mod:`pocv.check`) applies -- so
a state the spot check accepts is never named the lie here, and one it rejects loses. When the
rule accepts both parties' states (tolerance kernels, or a near-tie token of
``hf-causal-lm`` chosen either way within the calibrated noise) the case is ``both-within-bound``
and nobody is named.

This module is the records and the pure referee: :class:`Dispute` takes records or their
bytes and returns records, with no files, no prover and no trace. A party answers a
:class:`Query` from its own trace with :meth:`pocv.prover.Prover.answer`
(:func:`pocv.prover.answer_query`); :func:`run_dispute` plays every round between two answer
callables, optionally passing each record through an ``exchange`` hook (the CLI writes them
to files there). Every record has a JSON wire form for running the rounds across processes
(``pocv dispute``).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from blake3 import blake3

from pocv import _fields as F
from pocv.bundle import Response
from pocv.encoding import State, decode_state, digest_encoded, state_digest
from pocv.errors import (
    EvidenceError,
    InputError,
    LimitExceeded,
    MalformedError,
    MismatchError,
    ProofError,
    ProviderMismatch,
    Reason,
    SignatureError,
)
from pocv.kernels import kernel_for
from pocv.kernels.base import Kernel
from pocv.kernels.params import ArtifactSource, use_artifacts
from pocv.keys import Signer, b58encode, sign, verify
from pocv.limits import DIGEST_SIZE, MAX_DETAIL_BYTES, MAX_STEPS, PUBKEY_SIZE, SIGNATURE_SIZE
from pocv.merkle import verify_inclusion, verify_multiproof
from pocv.records import Commitment, Outcome, Verdict

__all__ = [
    "CASES",
    "DISPUTE_ID_CONTEXT",
    "MAX_DISPUTE_RECORD_BYTES",
    "MAX_DISPUTE_ROUNDS",
    "OUTCOME_DOMAIN",
    "PARTIES",
    "Answer",
    "AnswerFn",
    "Dispute",
    "DisputeOutcome",
    "DisputeResult",
    "Equivocation",
    "Exchange",
    "Opening",
    "Party",
    "Query",
    "Round",
    "detect_equivocation",
    "dispute_id",
    "max_rounds",
    "run_dispute",
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
#: The longest reason text of a dispute outcome before clipping (longer text is refused).
_MAX_DETAIL_INPUT: Final = 1 << 20

Party = Literal["A", "B"]
PARTIES: Final[tuple[Party, Party]] = ("A", "B")

#: How a dispute ended (the ``case`` of a :class:`DisputeOutcome`).
CASES: Final = (
    "exact-mismatch",  # exact kernel: the liar's s_i is not the recomputed one
    "outside-bound",  # tolerance kernel: the liar's s_i is outside the calibrated bound
    "both-within-bound",  # the kernel's rule accepts both parties' s_i: spot-check each party instead
    "bad-init",  # a party's s_0 is not the state the spec derives
    "bad-state",  # a party opened a state of the wrong names, dtypes or shapes
    "bad-opening",  # a party's opening does not verify against its root (or is for another job)
    "refused",  # a party did not answer a round
    "inconclusive",  # kept for the wire code; the referee no longer produces it
)
_CASE_CODE: Final = {c: i for i, c in enumerate(CASES)}
_KERNEL_REF_RE: Final = re.compile(r"[a-z][a-z0-9\-]{0,63}@[0-9]{1,10}")
_DEVICE_RE: Final = re.compile(r"cpu|cuda|cuda:[0-9]{1,3}")


# -- helpers -------------------------------------------------------------------------------------


def _load(text: str | bytes, what: str, allowed: set[str]) -> dict[str, Any]:
    d = F.load_record_json(text, what, limit=MAX_DISPUTE_RECORD_BYTES)
    F.known_fields(d, what, allowed)
    return d


def _tree_size(value: object, what: str) -> int:
    return F.integer(value, 2, MAX_STEPS + 1, what)


def _commitment(value: object, what: str) -> Commitment:
    if not isinstance(value, dict):
        raise MalformedError(f"{what}: expected a commitment object, got {type(value).__name__}")
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError) as e:  # pragma: no cover - came from json.loads
        raise MalformedError(f"{what} cannot be re-serialized: {e}") from e
    return Commitment.from_json(text)


def _text(detail: str) -> str:
    """``detail`` as valid UTF-8 text (an error message may quote a lone surrogate it was given)."""
    return detail.encode(errors="replace").decode()


def dispute_id(job_id: bytes, root_a: bytes, root_b: bytes) -> bytes:
    """``BLAKE3-derive_key(DISPUTE_ID_CONTEXT, job_id || root_a || root_b)``: names a dispute."""
    for name, v in (("job id", job_id), ("root A", root_a), ("root B", root_b)):
        F.fixed_bytes(v, DIGEST_SIZE, name)
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
            F.fixed_bytes(getattr(self, name), DIGEST_SIZE, f"query {name}")
        _tree_size(self.tree_size, "query tree_size")
        F.integer(self.round, 0, MAX_DISPUTE_ROUNDS, "query round")
        leaves = tuple(self.leaves)
        object.__setattr__(self, "leaves", leaves)
        for j in leaves:
            F.integer(j, 0, self.tree_size - 1, "query leaf")
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
        what = "dispute-query"
        d = _load(text, what, {"job_id", "root_a", "root_b", "tree_size", "round", "kind", "leaves"})
        leaves = F.get(d, "leaves", list, what)
        if len(leaves) > 3:
            raise MalformedError(f"a dispute query opens at most 3 leaves, got {len(leaves)}")
        kind = F.get(d, "kind", str, what)
        if kind not in ("bisect", "step"):
            raise MalformedError(f"query kind must be 'bisect' or 'step', got {kind[:40]!r}")
        return cls(job_id=F.digest(F.get(d, "job_id", str, what), f"{what}.job_id"),
                   root_a=F.digest(F.get(d, "root_a", str, what), f"{what}.root_a"),
                   root_b=F.digest(F.get(d, "root_b", str, what), f"{what}.root_b"),
                   tree_size=F.get(d, "tree_size", int, what),
                   round=F.get(d, "round", int, what), kind=kind, leaves=tuple(leaves))


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
        F.fixed_bytes(self.job_id, DIGEST_SIZE, "opening job_id")
        F.fixed_bytes(self.root, DIGEST_SIZE, "opening root")
        F.fixed_bytes(self.value, DIGEST_SIZE, "opening value")
        _tree_size(self.tree_size, "opening tree_size")
        F.integer(self.leaf, 0, self.tree_size - 1, "opening leaf")
        proof = tuple(self.proof)
        if len(proof) > MAX_OPENING_HASHES:
            raise LimitExceeded(f"an inclusion proof has at most {MAX_OPENING_HASHES} hashes, got {len(proof)}")
        for j, p in enumerate(proof):
            F.fixed_bytes(p, DIGEST_SIZE, f"opening proof hash {j}")
        object.__setattr__(self, "proof", proof)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "dispute-opening", "version": 1, "job_id": self.job_id.hex(), "root": self.root.hex(),
                "tree_size": self.tree_size, "leaf": self.leaf, "value": self.value.hex(),
                "proof": [p.hex() for p in self.proof]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Opening:
        what = "dispute-opening"
        d = _load(text, what, {"job_id", "root", "tree_size", "leaf", "value", "proof"})
        proof = F.get(d, "proof", list, what)
        if len(proof) > MAX_OPENING_HASHES:
            raise LimitExceeded(f"an inclusion proof has at most {MAX_OPENING_HASHES} hashes, got {len(proof)}")
        return cls(job_id=F.digest(F.get(d, "job_id", str, what), f"{what}.job_id"),
                   root=F.digest(F.get(d, "root", str, what), f"{what}.root"),
                   tree_size=F.get(d, "tree_size", int, what),
                   leaf=F.get(d, "leaf", int, what),
                   value=F.digest(F.get(d, "value", str, what), f"{what}.value"),
                   proof=tuple(F.digest(p, f"{what}.proof[{j}]") for j, p in enumerate(proof)))


@dataclass(frozen=True)
class Round:
    """One bisection round as the referee recorded it."""

    leaf: int
    agree: bool  # Q(leaf): leaves 0..leaf identical in both trees
    value_a: bytes
    value_b: bytes

    def __post_init__(self) -> None:
        F.integer(self.leaf, 1, MAX_STEPS - 1, "dispute round leaf")
        if not isinstance(self.agree, bool):
            raise MalformedError(f"dispute round agree: expected a bool, got {type(self.agree).__name__}")
        F.fixed_bytes(self.value_a, DIGEST_SIZE, "dispute round value_a")
        F.fixed_bytes(self.value_b, DIGEST_SIZE, "dispute round value_b")

    def to_dict(self) -> dict[str, Any]:
        return {"leaf": self.leaf, "agree": self.agree, "value_a": self.value_a.hex(),
                "value_b": self.value_b.hex()}

    @classmethod
    def from_dict(cls, d: object, tree_size: int) -> Round:
        what = "dispute round"
        if not isinstance(d, dict):
            raise MalformedError(f"{what}: expected an object, got {type(d).__name__}")
        F.known_fields(d, what, {"leaf", "agree", "value_a", "value_b"})
        return cls(F.integer(F.get(d, "leaf", int, what), 1, tree_size - 2, f"{what}.leaf"),
                   F.get(d, "agree", bool, what),
                   F.digest(F.get(d, "value_a", str, what), f"{what}.value_a"),
                   F.digest(F.get(d, "value_b", str, what), f"{what}.value_b"))


def _replay(rounds: Sequence[Round], steps: int) -> tuple[int, int]:
    """(lo, hi) after ``rounds``; MalformedError if a round is not the one the search asks."""
    if len(rounds) > MAX_DISPUTE_ROUNDS:
        raise LimitExceeded(f"a dispute has at most {MAX_DISPUTE_ROUNDS} rounds, got {len(rounds)}")
    lo, hi = 0, steps
    for r, rnd in enumerate(rounds):
        if not isinstance(rnd, Round):
            raise MalformedError(f"dispute round {r}: expected a Round, got {type(rnd).__name__}")
        if hi - lo <= 1:
            raise MalformedError(f"dispute round {r}: the search had already ended at step {hi}")
        m = (lo + hi) // 2
        if rnd.leaf != m:
            raise MalformedError(f"dispute round {r}: expected leaf {m}, got {rnd.leaf}")
        if rnd.agree and rnd.value_a != rnd.value_b:
            raise MalformedError(f"dispute round {r}: recorded agreement on different leaf values")
        lo, hi = (m, hi) if rnd.agree else (lo, m)
    return lo, hi


def _rounds(value: object, steps: int, what: str) -> tuple[Round, ...]:
    if not isinstance(value, list):
        raise MalformedError(f"{what}.rounds: expected list, got {type(value).__name__}")
    if len(value) > MAX_DISPUTE_ROUNDS:
        raise LimitExceeded(f"a dispute has at most {MAX_DISPUTE_ROUNDS} rounds, got {len(value)}")
    if steps < 2 and value:
        raise MalformedError(f"a job of {steps} steps has no bisection rounds")
    return tuple(Round.from_dict(r, steps + 1) for r in value)


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
    signature: bytes = bytes(SIGNATURE_SIZE)

    def __post_init__(self) -> None:
        for name in ("job_id", "root_a", "root_b"):
            F.fixed_bytes(getattr(self, name), DIGEST_SIZE, f"dispute outcome {name}")
        for name in ("worker_a", "worker_b", "referee"):
            F.fixed_bytes(getattr(self, name), PUBKEY_SIZE, f"dispute outcome {name}")
        F.fixed_bytes(self.signature, SIGNATURE_SIZE, "dispute outcome signature")
        if not isinstance(self.kernel, str) or not _KERNEL_REF_RE.fullmatch(self.kernel):
            raise MalformedError(f"dispute outcome kernel: expected name@version, got {str(self.kernel)[:80]!r}")
        F.integer(self.steps, 1, MAX_STEPS, "dispute outcome steps")
        F.integer(self.step, 0, self.steps, "dispute outcome step")
        if not isinstance(self.case, str) or self.case not in _CASE_CODE:
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
        F.utf8(self.detail, "dispute outcome detail", _MAX_DETAIL_INPUT)
        object.__setattr__(self, "detail", F.clip(self.detail, MAX_DETAIL_BYTES))

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

    def sign(self, key: Signer) -> DisputeOutcome:
        """This outcome, signed by ``key`` as the referee."""
        unsigned = DisputeOutcome(**{**self._fields(), "referee": bytes(key.pubkey()),
                                     "signature": bytes(SIGNATURE_SIZE)})
        return DisputeOutcome(**{**unsigned._fields(), "signature": sign(key, unsigned.signing_bytes())})

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "job_id", "kernel", "steps", "root_a", "root_b", "worker_a", "worker_b", "rounds", "step",
            "case", "liars", "detail", "referee", "signature")}

    def verify_signature(self, expected_referee: bytes | None = None) -> None:
        if expected_referee is not None and expected_referee != self.referee:
            raise SignatureError(f"dispute outcome signed by {b58encode(self.referee)}, expected "
                                 f"{b58encode(expected_referee)}")
        verify(self.referee, self.signature, self.signing_bytes(), "dispute outcome")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "dispute-outcome", "version": 1, "dispute_id": self.dispute_id.hex(),
                "job_id": self.job_id.hex(), "kernel": self.kernel, "steps": self.steps,
                "root_a": self.root_a.hex(), "root_b": self.root_b.hex(),
                "worker_a": b58encode(self.worker_a), "worker_b": b58encode(self.worker_b),
                "rounds": [r.to_dict() for r in self.rounds], "bisection_rounds": len(self.rounds),
                "step": self.step, "case": self.case, "liars": list(self.liars), "detail": self.detail,
                "referee": b58encode(self.referee), "signature": self.signature.hex()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DisputeOutcome:
        """Parse, re-validate and verify the referee's signature."""
        what = "dispute-outcome"
        d = _load(text, what, {*cls._field_names(), "dispute_id", "bisection_rounds"})
        steps = F.integer(F.get(d, "steps", int, what), 1, MAX_STEPS, f"{what}.steps")
        rounds = _rounds(F.get(d, "rounds", list, what), steps, what)
        liars = F.get(d, "liars", list, what)
        if len(liars) > 2:
            raise MalformedError(f"{what}.liars: at most two parties")
        o = cls(job_id=F.digest(F.get(d, "job_id", str, what), f"{what}.job_id"),
                kernel=F.get(d, "kernel", str, what), steps=steps,
                root_a=F.digest(F.get(d, "root_a", str, what), f"{what}.root_a"),
                root_b=F.digest(F.get(d, "root_b", str, what), f"{what}.root_b"),
                worker_a=F.pubkey(F.get(d, "worker_a", str, what), f"{what}.worker_a"),
                worker_b=F.pubkey(F.get(d, "worker_b", str, what), f"{what}.worker_b"),
                rounds=rounds, step=F.get(d, "step", int, what), case=F.get(d, "case", str, what),
                liars=tuple(liars), detail=F.get(d, "detail", str, what),
                referee=F.pubkey(F.get(d, "referee", str, what), f"{what}.referee"),
                signature=F.signature(F.get(d, "signature", str, what), f"{what}.signature"))
        o.verify_signature()
        derived = {"dispute_id": o.dispute_id.hex(), "bisection_rounds": len(o.rounds)}
        for name, value in derived.items():
            if name in d and d[name] != value:
                raise MalformedError(f"{what}.{name} {str(d[name])[:70]} disagrees with the record ({value})")
        return o

    @staticmethod
    def _field_names() -> set[str]:
        return {"job_id", "kernel", "steps", "root_a", "root_b", "worker_a", "worker_b", "rounds", "step",
                "case", "liars", "detail", "referee", "signature"}


# -- the referee -------------------------------------------------------------------------------

#: A party's answer: a parsed record, its bytes (JSON opening or response bundle), or None
#: (no answer in time: the party loses).
Answer = Opening | Response | bytes | None
#: (case, liars, step, detail, the outcome for each party's verdict)
_Result = tuple[str, tuple[Party, ...], int, str, tuple[Outcome | None, Outcome | None]]


class _Lost(Exception):
    """A party's answer that loses the dispute (internal: becomes an outcome, never escapes)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Dispute:
    """The referee's state machine for one dispute (pure: records in, records out).

    Usage: ``d = Dispute.open(a, b)``; while not ``d.done``: ``q = d.query()``, hand
    ``q`` to both parties, ``d.submit(answer_a, answer_b)``; then ``d.finish(key)`` gives the
    signed outcome and the FAIL verdicts. ``to_json``/``from_json`` give the session as text
    to keep between rounds (the rounds are replayed on load, so an edited session cannot skip
    one). :func:`run_dispute` drives the whole loop.
    """

    def __init__(self, a: Commitment, b: Commitment, *, device: str = "cpu",
                 rounds: Sequence[Round] = (), artifacts: ArtifactSource | None = None) -> None:
        a.verify_signature()
        b.verify_signature()
        if a.job_id != b.job_id:
            raise MismatchError(f"commitments are for different jobs: {a.job_id.hex()[:16]}... and "
                                f"{b.job_id.hex()[:16]}...")
        if a.root == b.root:
            raise MismatchError(f"both commitments have root {a.root.hex()[:16]}...: nothing to dispute")
        if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
            raise InputError(f"the referee's device is cpu, cuda or cuda:N, got {str(device)[:40]!r}")
        self.a, self.b = a, b
        self.device = device
        self.artifacts = artifacts  # the referee's own store (None: the store in use, use_artifacts)
        self.notes: list[str] = []  # what the referee should know (a party named another provider)
        self.rounds: list[Round] = list(rounds)
        self.lo, self.hi = _replay(self.rounds, a.steps)
        self._result: _Result | None = None

    @classmethod
    def open(cls, a: Commitment, b: Commitment, *, device: str = "cpu",
             artifacts: ArtifactSource | None = None) -> Dispute:
        """Start a dispute: both signatures verify, same job id, different roots, and this
        referee can judge the job (:meth:`installed_kernel`) before any round is played."""
        d = cls(a, b, device=device, artifacts=artifacts)
        d.installed_kernel()
        return d

    def installed_kernel(self) -> Kernel:
        """(0) The kernel this referee installed for the job, which must be the one at least one
        party ran: its provider (distribution and version) named by a commitment, else
        ProviderMismatch naming both (a note in :attr:`notes` when only one party names it).
        Then every artifact the job references must be in the referee's store with its hash
        (ArtifactError) and a calibrated kernel's record present (NotCalibrated). Checked when a
        dispute opens and again before the step round runs the kernel."""
        spec = self.a.spec
        kernel = kernel_for(spec)
        named = sorted({self.a.provider, self.b.provider})
        if kernel.provider not in named:
            raise ProviderMismatch(f"the commitments' kernel {spec.kernel_ref} comes from {' and '.join(named)}, but "
                                   f"this referee has {spec.kernel_ref} from {kernel.provider} installed: a referee "
                                   f"runs only the code it installed; install {named[0]} to referee this dispute")
        self.notes = [f"a commitment (root {c.root.hex()[:16]}...) names kernel provider {c.provider}; the referee "
                      f"judges with its installed {kernel.provider}" for c in (self.a, self.b)
                      if c.provider != kernel.provider]
        with use_artifacts(self.artifacts):
            kernel.require(spec)
        return kernel

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
        failed: dict[Party, tuple[Reason, str]] = {}
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
            raise _Lost(Reason.REFUSED, f"party {party} did not open leaf {leaf}")
        if isinstance(ans, bytes):
            try:
                ans = Opening.from_json(ans)
            except EvidenceError as e:
                raise _Lost(Reason.MALFORMED, f"party {party}'s opening does not parse: {e}") from e
        if not isinstance(ans, Opening):
            raise _Lost(Reason.MALFORMED, f"party {party} answered a bisect query with a {type(ans).__name__}")
        if (ans.job_id, ans.root, ans.tree_size, ans.leaf) != (c.job_id, c.root, c.tree_size, leaf):
            raise _Lost(Reason.BAD_PROOF, f"party {party}'s opening is not leaf {leaf} of its own tree "
                                          f"(job id, root, tree size or leaf differ)")
        try:
            verify_inclusion(c.root, c.tree_size, leaf, ans.value, ans.proof)
        except ProofError as e:
            raise _Lost(Reason.BAD_PROOF, f"party {party}'s opening of leaf {leaf}: {e}") from e
        return ans

    # -- (3), (4) the step round ---------------------------------------------------------------

    def _step_round(self, q: Query, answer_a: Answer, answer_b: Answer) -> None:
        kernel = self.installed_kernel()  # (0) again: a session read back was never checked here
        with use_artifacts(self.artifacts):
            self._judge_step(kernel, q, answer_a, answer_b)

    def _judge_step(self, kernel: Kernel, q: Query, answer_a: Answer, answer_b: Answer) -> None:
        i = q.step
        spec = self.a.spec
        opened: dict[Party, Response] = {}
        failed: dict[Party, tuple[Reason, str]] = {}
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
        bad_init = {p: (Reason.BAD_INIT, f"party {p}'s s_0 is not the state the spec derives")
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
        # (4b) the agreed state, then each party's claim, judged by the kernel's one rule
        try:
            prev = decode_state(opened["A"].states[i - 1])
        except EvidenceError as e:
            self._lose({p: (Reason.BAD_STATE, f"agreed s_{i - 1}: {e}") for p in PARTIES}, i, case="bad-state")
            return
        judged: dict[Party, tuple[Reason, str]] = {}
        notes: list[str] = []
        for p in PARTIES:
            try:
                claimed: State = decode_state(opened[p].states[i])
            except EvidenceError as e:
                judged[p] = (Reason.BAD_STATE, f"party {p}'s s_{i}: {e}")
                continue
            result = kernel.judge(prev, claimed, i, spec, self.device)
            if kernel.mode == "tolerance":
                notes.append(f"{p}: worst ratio {result.worst_ratio:.3g}")
            if result.bad_state:
                judged[p] = (Reason.BAD_STATE, f"party {p}'s s_{i}: {result.detail}")
            elif not result.ok:
                judged[p] = (Reason.MISMATCH, f"party {p}'s s_{i} is not step {i} of the agreed s_{i - 1}: "
                                              f"{result.detail}")
        if judged:
            if any(r is Reason.BAD_STATE for r, _ in judged.values()):
                case = "bad-state"
            else:
                case = "exact-mismatch" if kernel.mode == "exact" else "outside-bound"
            self._lose(judged, i, case=case)
            return
        # The rule accepts both states: two honest workers of a tolerance kernel (or a near-tie
        # token). Neither is named; the caller spot-checks each party on its own trace.
        why = "; ".join(notes) or "both accepted"
        self._result = ("both-within-bound", (), i,
                        f"both parties' s_{i} are accepted by {spec.kernel_ref}'s rule at the first divergent step "
                        f"({why}): spot-check each party on its own trace", (None, None))

    def _check_step_answer(self, party: Party, q: Query, ans: Answer) -> Response:
        c = self.commitment(party)
        i = q.step
        if ans is None:
            raise _Lost(Reason.REFUSED, f"party {party} did not open the states of step {i}")
        if isinstance(ans, bytes):
            try:
                ans = Response.from_bytes(ans)
            except EvidenceError as e:
                raise _Lost(Reason.MALFORMED, f"party {party}'s step bundle does not parse: {e}") from e
        if not isinstance(ans, Response):
            raise _Lost(Reason.MALFORMED, f"party {party} answered the step query with a {type(ans).__name__}")
        if (ans.job_id, ans.root, ans.tree_size) != (c.job_id, c.root, c.tree_size):
            raise _Lost(Reason.BAD_PROOF, f"party {party}'s step bundle is for another job id, root or tree size")
        if ans.indices != (i,) or tuple(ans.states) != q.leaves:
            raise _Lost(Reason.MISSING, f"party {party}'s step bundle opens {list(ans.states)} for "
                                        f"{list(ans.indices)}, expected {list(q.leaves)} for [{i}]")
        digests = {j: digest_encoded(s) for j, s in ans.states.items()}
        try:
            verify_multiproof(c.root, c.tree_size, digests, ans.proof)
        except EvidenceError as e:  # ProofError, or a proof over a named limit
            raise _Lost(Reason.BAD_PROOF, f"party {party}'s step bundle: {e}") from e
        for r, rnd in enumerate(self.rounds):
            # A leaf opened twice cannot change short of a collision: both openings verified
            # against the same root. A contradiction means the recorded session was altered.
            if rnd.leaf in digests and digests[rnd.leaf] != (rnd.value_a if party == "A" else rnd.value_b):
                raise MalformedError(f"dispute session round {r} records another value for party {party}'s "
                                     f"leaf {rnd.leaf} than its verified step bundle: the session was altered")
        return ans

    def _lose(self, failed: Mapping[Party, tuple[Reason, str]], index: int, *, case: str | None = None) -> None:
        if case is None:
            reasons = {r for r, _ in failed.values()}
            case = "refused" if reasons == {Reason.REFUSED} else "bad-opening"
        liars = tuple(p for p in PARTIES if p in failed)
        outcomes = tuple(Outcome(index, failed[p][0], _text(failed[p][1])) if p in failed else None
                         for p in PARTIES)
        detail = _text("; ".join(failed[p][1] for p in liars))
        self._result = (case, liars, index, detail, (outcomes[0], outcomes[1]))

    # -- the result ----------------------------------------------------------------------------

    def finish(self, key: Signer) -> tuple[DisputeOutcome, tuple[Verdict, ...]]:
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

    # -- the session record --------------------------------------------------------------------

    def to_json(self) -> str:
        if self._result is not None:
            raise InputError("a resolved dispute is kept as its outcome, not as a session")
        return json.dumps({"type": "dispute-session", "version": 1, "dispute_id": self.id.hex(),
                           "device": self.device, "commitment_a": self.a.to_dict(),
                           "commitment_b": self.b.to_dict(), "rounds": [r.to_dict() for r in self.rounds]},
                          indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, *, artifacts: ArtifactSource | None = None) -> Dispute:
        what = "dispute-session"
        d = _load(text, what, {"dispute_id", "device", "commitment_a", "commitment_b", "rounds"})
        a = _commitment(d.get("commitment_a"), f"{what}.commitment_a")
        b = _commitment(d.get("commitment_b"), f"{what}.commitment_b")
        rounds = _rounds(F.get(d, "rounds", list, what), a.steps, what)
        device = F.get(d, "device", str, what)
        if not _DEVICE_RE.fullmatch(device):
            raise MalformedError(f"{what}.device: expected cpu, cuda or cuda:N, got {device[:40]!r}")
        session = cls(a, b, device=device, rounds=rounds, artifacts=artifacts)
        if "dispute_id" in d and d["dispute_id"] != session.id.hex():
            raise MalformedError(f"{what}.dispute_id {str(d['dispute_id'])[:70]} is not the id of its commitments")
        return session


# -- the whole dispute, between two answer callables ---------------------------------------------

#: A party: answers a query (an Opening, a step Response, their bytes, or None for no answer).
AnswerFn = Callable[[Query], Answer]
#: Passes one record through a channel and returns what came out: ``exchange(name, data)``;
#: names are ``session.json``, ``query-RR.json``, ``answer-RR-A.json`` / ``.pocv``, ``outcome.json``.
Exchange = Callable[[str, bytes], bytes]


@dataclass(frozen=True)
class DisputeResult:
    """What :func:`run_dispute` found: the signed outcome, the FAIL verdicts, and (case
    ``both-within-bound`` with a ``spot_check``) the spot-check verdict of each party."""

    outcome: DisputeOutcome
    verdicts: tuple[Verdict, ...]
    spot_checks: tuple[Verdict, ...] = ()


def _answer_bytes(ans: Answer) -> tuple[bytes, str] | None:
    if ans is None:
        return None
    if isinstance(ans, Opening):
        return ans.to_json().encode(), "json"
    if isinstance(ans, Response):
        return ans.to_bytes(), "pocv"
    return bytes(ans), "pocv" if not bytes(ans).lstrip().startswith(b"{") else "json"


def run_dispute(
    a: Commitment,
    b: Commitment,
    answer_a: AnswerFn,
    answer_b: AnswerFn,
    *,
    key: Signer,
    device: str = "cpu",
    exchange: Exchange | None = None,
    spot_check: Callable[[Commitment], Verdict] | None = None,
    artifacts: ArtifactSource | None = None,
) -> DisputeResult:
    """Play a whole dispute between the parties of commitments ``a`` and ``b`` as the referee.

    ``answer_a``/``answer_b`` answer each :class:`Query` (``Prover.answer`` of a local trace,
    or a call to a remote party); None is no answer. With ``exchange`` every record (session,
    query, answers, outcome) is serialized, passed through ``exchange(name, data)`` and parsed
    back from what it returns, exactly as ``pocv dispute`` exchanges them between processes.
    When the kernel's rule accepts both parties' states (``both-within-bound``),
    ``spot_check(commitment)`` (if given) is called for each party and its verdicts returned.
    ``artifacts`` is the referee's own store (see :meth:`Dispute.installed_kernel`). Touches no
    file itself.
    """

    def via(name: str, data: bytes) -> bytes:
        return data if exchange is None else exchange(name, data)

    d = Dispute.open(a, b, device=device, artifacts=artifacts)
    while not d.done:
        r = len(d.rounds)
        if exchange is not None:
            d = Dispute.from_json(via("session.json", d.to_json().encode()), artifacts=artifacts)
        q = Query.from_json(via(f"query-{r:02d}.json", d.query().to_json().encode()))
        answers: list[Answer] = []
        for party, answer in zip(PARTIES, (answer_a, answer_b)):
            ans = answer(q)
            raw = _answer_bytes(ans) if exchange is not None else None
            answers.append(ans if raw is None else via(f"answer-{r:02d}-{party}.{raw[1]}", raw[0]))
        d.submit(answers[0], answers[1])
    outcome, verdicts = d.finish(key)
    outcome = DisputeOutcome.from_json(via("outcome.json", outcome.to_json().encode()))
    spot: tuple[Verdict, ...] = ()
    if outcome.case == "both-within-bound" and spot_check is not None:
        spot = (spot_check(a), spot_check(b))
    return DisputeResult(outcome, verdicts, spot)


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
        d = _load(text, "equivocation", {"first", "second"})
        return detect_equivocation(_commitment(d.get("first"), "equivocation.first"),
                                   _commitment(d.get("second"), "equivocation.second"))

    def verdicts(self, key: Signer) -> tuple[Verdict, Verdict]:
        """A signed FAIL verdict for each of the two roots (either may be the bonded one)."""
        out = []
        for c in (self.first, self.second):
            other = self.second if c is self.first else self.first
            o = Outcome(0, Reason.MISMATCH, f"equivocation: worker {b58encode(self.worker)} also signed root "
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
