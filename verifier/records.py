"""Typed, signed protocol records: Commitment, Challenge, Verdict (docs/protocol.md §6).

Each signed record has one explicit function that builds the bytes that are signed
(``signing_bytes``), distinct from its JSON wire form (``to_json``/``from_json``); parsing
re-validates everything, so a record that exists is well-formed. Every record parses its fields
with the shared parsers of :mod:`pocv._fields` and signs and verifies through :mod:`pocv.keys`
(ed25519: the same key settles on Solana). Parsing imports no kernel, torch or solders.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pocv import _fields as F
from pocv.challenge import detection_probability
from pocv.errors import InputError, LimitExceeded, MalformedError, MismatchError, Reason, SignatureError
from pocv.jobs import JobSpec
from pocv.keys import Signer, b58encode, sign, verify
from pocv.limits import (
    BEACON_SIZE,
    DIGEST_SIZE,
    MAX_CHALLENGES,
    MAX_DETAIL_BYTES,
    MAX_STEPS,
    PUBKEY_SIZE,
    SIGNATURE_SIZE,
)

COMMITMENT_DOMAIN: Final = b"pocv commitment v2\x00"
#: commitment format 2 adds the kernel's provider (docs/protocol.md §6.2)
COMMITMENT_VERSION: Final = 2
#: the kernel's provider: "pocv" (a built-in kernel) or "distribution==version" (a plugin)
PROVIDER_RE: Final = re.compile(r"pocv|[A-Za-z0-9][A-Za-z0-9._:+!\-]{0,127}==[A-Za-z0-9][A-Za-z0-9._+!\-]{0,63}")
CHALLENGE_DOMAIN: Final = b"pocv challenge v2\x00"
CHALLENGE_VERSION: Final = 2

#: where a challenge's beacon came from, in a form a third party can check (docs/protocol.md §7.1):
#: ``nonce:<unix seconds>``  a verifier nonce drawn at that time, after the commitment was received;
#: ``slot:<s>:after:<c>``    the hash of chain slot s, after the slot c the commitment landed in;
#: ``dispute:<64 hex>``      a referee's fallback spot check in the dispute of that id.
BEACON_SOURCE_RE: Final = re.compile(r"nonce:[0-9]{1,12}|slot:[0-9]{1,20}:after:[0-9]{1,20}|dispute:[0-9a-f]{64}")
VERDICT_DOMAIN: Final = b"pocv verdict v2\x00"
VERDICT_VERSION: Final = 2

_KERNEL_REF_RE: Final = re.compile(r"[a-z][a-z0-9\-]{0,63}@[0-9]{1,10}")

meta_hash = F.meta_hash


def parse_beacon(text: str) -> bytes:
    """A 32-byte beacon from 64 hex digits (``0x`` and upper case accepted) or base58."""
    return F.parse_hash(text, "beacon")


def _fields_of(cls: type, *derived: str) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} | set(derived)


# -- commitment ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Commitment:
    """The worker's signed claim: "I ran ``spec`` and these are the Merkle root of my states"."""

    spec: JobSpec
    root: bytes
    worker: bytes  # ed25519 public key
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    signature: bytes = bytes(64)
    #: the distribution that provided the kernel the worker ran, with its version ("pocv": built in)
    provider: str = "pocv"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, JobSpec) or not self.spec.resolved:
            raise InputError("a commitment needs a resolved JobSpec (pocv.kernels.resolve_spec)")
        if not isinstance(self.provider, str) or not PROVIDER_RE.fullmatch(self.provider):
            raise MalformedError(f"commitment provider must be 'pocv' or 'distribution==version', "
                                 f"got {str(self.provider)[:80]!r}")
        F.fixed_bytes(self.root, DIGEST_SIZE, "commitment root")
        F.fixed_bytes(self.worker, PUBKEY_SIZE, "commitment worker key")
        F.fixed_bytes(self.signature, SIGNATURE_SIZE, "commitment signature")
        object.__setattr__(self, "fingerprint", F.meta(self.fingerprint, "fingerprint"))
        object.__setattr__(self, "environment", F.meta(self.environment, "environment"))

    @property
    def job_id(self) -> bytes:
        return self.spec.job_id

    @property
    def steps(self) -> int:
        return self.spec.steps

    @property
    def tree_size(self) -> int:
        """Leaves 0..steps: ``s_0`` is committed too."""
        return self.spec.steps + 1

    def signing_bytes(self) -> bytes:
        ref = self.spec.kernel_ref.encode()
        provider = self.provider.encode()
        return b"".join((
            COMMITMENT_DOMAIN,
            self.job_id,
            self.root,
            struct.pack("<QB", self.steps, len(ref)),
            ref,
            struct.pack("<B", len(provider)),
            provider,
            self.worker,
            meta_hash(self.fingerprint),
            meta_hash(self.environment),
        ))

    @classmethod
    def create(
        cls,
        *,
        spec: JobSpec,
        root: bytes,
        key: Signer,
        fingerprint: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        provider: str = "pocv",
    ) -> Commitment:
        unsigned = cls(spec=spec, root=root, worker=bytes(key.pubkey()),
                       fingerprint=fingerprint or {}, environment=environment or {}, provider=provider)
        sig = sign(key, unsigned.signing_bytes())
        return dataclasses.replace(unsigned, signature=sig)

    def verify_signature(self) -> None:
        verify(self.worker, self.signature, self.signing_bytes(), "commitment")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "commitment",
            "version": COMMITMENT_VERSION,
            "job_id": self.job_id.hex(),
            "spec": self.spec.to_dict(),
            "provider": self.provider,
            "root": self.root.hex(),
            "worker": b58encode(self.worker),
            "fingerprint": dict(self.fingerprint),
            "environment": dict(self.environment),
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Commitment:
        """Parse and check: the job id must match the spec and the signature must verify."""
        d = F.load_record_json(text, "commitment", version=COMMITMENT_VERSION)
        F.known_fields(d, "commitment", _fields_of(cls, "job_id"))
        spec = JobSpec.from_dict(F.get(d, "spec", dict, "commitment"))
        if not spec.resolved:
            raise MalformedError("commitment.spec: expected a resolved spec (a kernel version >= 1), got version 0")
        job_id = F.digest(F.get(d, "job_id", str, "commitment"), "commitment.job_id")
        if job_id != spec.job_id:
            raise MismatchError(f"commitment job_id {job_id.hex()} is not the id of its spec "
                                f"({spec.job_id.hex()})")
        c = cls(
            spec=spec,
            root=F.digest(F.get(d, "root", str, "commitment"), "commitment.root"),
            worker=F.pubkey(F.get(d, "worker", str, "commitment"), "commitment.worker"),
            fingerprint=F.get(d, "fingerprint", dict, "commitment"),
            environment=F.get(d, "environment", dict, "commitment"),
            signature=F.signature(F.get(d, "signature", str, "commitment"), "commitment.signature"),
            provider=F.get(d, "provider", str, "commitment"),
        )
        c.verify_signature()
        return c


# -- challenge -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Challenge:
    """Steps to open, derived from (job id, root, beacon); see :mod:`pocv.challenge`.

    Signed by the verifier that issued it: a verifier checks only responses to its own
    challenges, so a worker cannot hand it a challenge with a beacon of the worker's choosing.
    """

    job_id: bytes
    root: bytes
    steps: int
    beacon: bytes
    indices: tuple[int, ...]
    confidence: float  # p: probability of catching a worker who faked cheat_fraction of steps
    cheat_fraction: float  # f
    beacon_source: str = "nonce:0"
    verifier: bytes = bytes(32)
    signature: bytes = bytes(64)

    def __post_init__(self) -> None:
        F.fixed_bytes(self.job_id, DIGEST_SIZE, "challenge job_id")
        F.fixed_bytes(self.root, DIGEST_SIZE, "challenge root")
        F.fixed_bytes(self.beacon, BEACON_SIZE, "challenge beacon")
        F.fixed_bytes(self.verifier, PUBKEY_SIZE, "challenge verifier key")
        F.fixed_bytes(self.signature, SIGNATURE_SIZE, "challenge signature")
        F.integer(self.steps, 1, MAX_STEPS, "challenge steps")
        idx = tuple(self.indices)
        if not 1 <= len(idx) <= MAX_CHALLENGES:
            raise LimitExceeded(f"a challenge has 1..{MAX_CHALLENGES} indices, got {len(idx)}")
        if any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= self.steps for i in idx):
            raise MalformedError(f"challenge indices must be integers in 1..{self.steps}")
        if len(set(idx)) != len(idx):
            raise MalformedError("challenge indices must be distinct")
        object.__setattr__(self, "indices", idx)
        F.fraction(self.confidence, "challenge confidence")
        F.fraction(self.cheat_fraction, "challenge cheat_fraction")
        if not isinstance(self.beacon_source, str) or not BEACON_SOURCE_RE.fullmatch(self.beacon_source):
            raise MalformedError(f"challenge beacon_source must be nonce:<unix seconds>, slot:<s>:after:<c> or "
                                 f"dispute:<id>, got {str(self.beacon_source)[:80]!r}")
        if self.beacon_source.startswith("slot:"):
            _, slot, _, after = self.beacon_source.split(":")
            if int(slot) <= int(after):
                raise MalformedError(f"challenge beacon slot {slot} is not after the commit slot {after}")

    @property
    def k(self) -> int:
        return len(self.indices)

    @property
    def detection(self) -> float:
        """The exact probability that these k distinct steps catch a worker who faked a
        fraction ``cheat_fraction`` of the job's steps (1 when every step is checked)."""
        if self.k >= self.steps:
            return 1.0
        return detection_probability(self.k, self.cheat_fraction, self.steps)

    def signing_bytes(self) -> bytes:
        source = self.beacon_source.encode()
        return b"".join((
            CHALLENGE_DOMAIN,
            self.job_id,
            self.root,
            struct.pack("<Q", self.steps),
            self.beacon,
            struct.pack("<dd", float(self.confidence), float(self.cheat_fraction)),
            struct.pack("<B", len(source)),
            source,
            self.verifier,
            struct.pack(f"<I{len(self.indices)}Q", len(self.indices), *self.indices),
        ))

    def signed(self, key: Signer) -> Challenge:
        """This challenge, issued and signed by ``key``."""
        unsigned = dataclasses.replace(self, verifier=bytes(key.pubkey()), signature=bytes(SIGNATURE_SIZE))
        return dataclasses.replace(unsigned, signature=sign(key, unsigned.signing_bytes()))

    def verify_signature(self, expected_verifier: bytes | None = None) -> None:
        if expected_verifier is not None and expected_verifier != self.verifier:
            raise SignatureError(
                f"challenge was issued by {b58encode(self.verifier)}, not by this verifier "
                f"({b58encode(expected_verifier)})")
        verify(self.verifier, self.signature, self.signing_bytes(), "challenge")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "challenge",
            "version": CHALLENGE_VERSION,
            "job_id": self.job_id.hex(),
            "root": self.root.hex(),
            "steps": self.steps,
            "beacon": self.beacon.hex(),
            "beacon_source": self.beacon_source,
            "confidence": self.confidence,
            "cheat_fraction": self.cheat_fraction,
            "detection": self.detection,
            "indices": list(self.indices),
            "verifier": b58encode(self.verifier),
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Challenge:
        """Parse and verify the issuer's signature."""
        d = F.load_record_json(text, "challenge", version=CHALLENGE_VERSION)
        F.known_fields(d, "challenge", _fields_of(cls, "detection"))
        indices = F.get(d, "indices", list, "challenge")
        if len(indices) > MAX_CHALLENGES:
            raise LimitExceeded(f"a challenge has at most {MAX_CHALLENGES} indices, got {len(indices)}")
        ch = cls(
            job_id=F.digest(F.get(d, "job_id", str, "challenge"), "challenge.job_id"),
            root=F.digest(F.get(d, "root", str, "challenge"), "challenge.root"),
            steps=F.get(d, "steps", int, "challenge"),
            beacon=F.digest(F.get(d, "beacon", str, "challenge"), "challenge.beacon"),
            indices=tuple(indices),
            confidence=F.get(d, "confidence", (int, float), "challenge"),
            cheat_fraction=F.get(d, "cheat_fraction", (int, float), "challenge"),
            beacon_source=F.get(d, "beacon_source", str, "challenge"),
            verifier=F.pubkey(F.get(d, "verifier", str, "challenge"), "challenge.verifier"),
            signature=F.signature(F.get(d, "signature", str, "challenge"), "challenge.signature"),
        )
        ch.verify_signature()
        if d.get("detection") != ch.detection:
            raise MalformedError(f"challenge.detection {d.get('detection')!r} is not what its k and f give")
        return ch


# -- verdict ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the verifier found at one challenged step."""

    index: int
    reason: Reason
    detail: str = ""

    def __post_init__(self) -> None:
        F.integer(self.index, 0, MAX_STEPS, "outcome index")
        if not isinstance(self.reason, str) or self.reason not in Reason.__members__:
            raise MalformedError(f"unknown reason {str(self.reason)[:40]!r}; "
                                 f"expected one of {[r.value for r in Reason]}")
        object.__setattr__(self, "reason", Reason(self.reason))
        F.utf8(self.detail, "outcome detail", 1 << 20)
        object.__setattr__(self, "detail", F.clip(self.detail, MAX_DETAIL_BYTES))

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The verifier's signed PASS/FAIL for one (job id, root, beacon)."""

    job_id: bytes
    root: bytes
    beacon: bytes
    kernel: str  # name@version
    outcomes: tuple[Outcome, ...]
    cheat_fraction: float
    verifier: bytes  # ed25519 public key
    signature: bytes = bytes(64)
    steps: int = 0  # steps of the job (0: not recorded); every step checked means detection 1
    #: BLAKE3 of the response bundle's body that was judged (zeros: no bundle, e.g. refused)
    bundle: bytes = bytes(DIGEST_SIZE)
    #: whether that bundle carried the committing worker's valid signature
    bundle_signed: bool = False

    def __post_init__(self) -> None:
        F.fixed_bytes(self.job_id, DIGEST_SIZE, "verdict job_id")
        F.integer(self.steps, 0, MAX_STEPS, "verdict steps")
        F.fixed_bytes(self.root, DIGEST_SIZE, "verdict root")
        F.fixed_bytes(self.beacon, BEACON_SIZE, "verdict beacon")
        F.fixed_bytes(self.verifier, PUBKEY_SIZE, "verdict verifier key")
        F.fixed_bytes(self.signature, SIGNATURE_SIZE, "verdict signature")
        if not isinstance(self.kernel, str) or not _KERNEL_REF_RE.fullmatch(self.kernel):
            raise MalformedError(f"verdict kernel must look like name@version, got {str(self.kernel)[:80]!r}")
        object.__setattr__(self, "outcomes", tuple(self.outcomes))
        if not all(isinstance(o, Outcome) for o in self.outcomes):
            raise MalformedError("verdict outcomes must be Outcome records")
        if not 1 <= len(self.outcomes) <= MAX_CHALLENGES:
            raise LimitExceeded(f"a verdict has 1..{MAX_CHALLENGES} outcomes, got {len(self.outcomes)}")
        seen: set[int] = set()
        for o in self.outcomes:  # a verdict must not overstate what was checked
            if o.index in seen:
                raise MalformedError(f"verdict lists step {o.index} twice: each outcome is a distinct step")
            if o.index == 0 and o.ok:
                raise MalformedError("verdict outcome 0 (the commitment as a whole) can only be a failure")
            if not 0 <= o.index <= (self.steps or MAX_STEPS):
                raise MalformedError(f"verdict outcome index {o.index} is outside 1..{self.steps or MAX_STEPS}")
            seen.add(o.index)
        F.fraction(self.cheat_fraction, "verdict cheat_fraction")
        F.fixed_bytes(self.bundle, DIGEST_SIZE, "verdict bundle digest")
        if not isinstance(self.bundle_signed, bool):
            raise MalformedError(f"verdict bundle_signed must be a bool, got {type(self.bundle_signed).__name__}")

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(o.index for o in self.outcomes)

    @property
    def detection(self) -> float:
        """The detection the checked steps achieve: the exact probability that k distinct steps
        catch a worker who faked ``cheat_fraction`` of the job (1 when every step was checked);
        with ``steps`` unrecorded (0), the bound ``1 - (1 - f)^k``."""
        k = sum(o.index >= 1 for o in self.outcomes)  # distinct steps (0: the commitment as a whole)
        if self.steps and k >= self.steps:
            return 1.0
        return detection_probability(k, self.cheat_fraction, self.steps)

    @property
    def failures(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    @property
    def is_evidence(self) -> bool:
        """Whether this verdict holds against the worker: a PASS, a FAIL on a bundle the
        committing worker signed, a referee's pinned verdict, or a refusal (no bundle came). A FAIL on an unsigned or
        mis-signed bundle may be a relay's corruption: a transport failure to retry."""
        return (self.passed or self.bundle_signed or self.pinned
                or all(o.reason is Reason.REFUSED for o in self.failures))

    @property
    def pinned(self) -> bool:
        """A referee's verdict (a dispute's first divergent step, or an equivocation): the step
        was pinned against the worker's own signed roots, not sampled (f = 1, steps unrecorded).
        Its openings are tied to the signed root by Merkle proofs (docs/protocol.md §11, §13.3)."""
        return self.cheat_fraction == 1 and self.steps == 0

    def signing_bytes(self) -> bytes:
        ref = self.kernel.encode()
        parts = [
            VERDICT_DOMAIN,
            self.job_id,
            self.root,
            self.beacon,
            struct.pack("<B", 1 if self.passed else 0),
            struct.pack("<B", len(ref)),
            ref,
            struct.pack("<dQ", float(self.cheat_fraction), self.steps),
            self.verifier,
            self.bundle,
            struct.pack("<B", 1 if self.bundle_signed else 0),
            struct.pack("<I", len(self.outcomes)),
        ]
        for o in self.outcomes:
            detail = o.detail.encode()
            parts.append(struct.pack("<QBH", o.index, o.reason.code, len(detail)))
            parts.append(detail)
        return b"".join(parts)

    @classmethod
    def create(
        cls,
        *,
        job_id: bytes,
        root: bytes,
        beacon: bytes,
        kernel: str,
        outcomes: Sequence[Outcome],
        cheat_fraction: float,
        key: Signer,
        steps: int = 0,
        bundle: bytes = bytes(DIGEST_SIZE),
        bundle_signed: bool = False,
    ) -> Verdict:
        verdict = cls(job_id=job_id, root=root, beacon=beacon, kernel=kernel, outcomes=tuple(outcomes),
                      cheat_fraction=cheat_fraction, verifier=bytes(key.pubkey()), steps=steps, bundle=bundle,
                      bundle_signed=bundle_signed)
        # every field is checked once, above; the signature (64 bytes from sign) goes into the new
        # record before anyone else holds it (dataclasses.replace would check them all again)
        object.__setattr__(verdict, "signature", sign(key, verdict.signing_bytes()))
        return verdict

    def verify_signature(self, expected_verifier: bytes | None = None) -> None:
        """Check the signature; with ``expected_verifier``, also that it is that verifier's."""
        if expected_verifier is not None and expected_verifier != self.verifier:
            raise SignatureError(
                f"verdict signed by {b58encode(self.verifier)}, expected {b58encode(expected_verifier)}")
        verify(self.verifier, self.signature, self.signing_bytes(), "verdict")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "verdict",
            "version": VERDICT_VERSION,
            "result": "PASS" if self.passed else "FAIL",
            "job_id": self.job_id.hex(),
            "root": self.root.hex(),
            "beacon": self.beacon.hex(),
            "kernel": self.kernel,
            "cheat_fraction": self.cheat_fraction,
            "steps": self.steps,
            "detection": self.detection,
            "checked": len(self.outcomes),
            "failed": len(self.failures),
            "outcomes": [{"index": o.index, "reason": o.reason.value, "detail": o.detail} for o in self.outcomes],
            "verifier": b58encode(self.verifier),
            "bundle": self.bundle.hex(),
            "bundle_signed": self.bundle_signed,
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Verdict:
        """Parse and verify the signature (and that ``result`` agrees with the outcomes)."""
        d = F.load_record_json(text, "verdict", version=VERDICT_VERSION)
        F.known_fields(d, "verdict", _fields_of(cls, "result", "detection", "checked", "failed"))
        raw = F.get(d, "outcomes", list, "verdict")
        if len(raw) > MAX_CHALLENGES:
            raise LimitExceeded(f"a verdict has at most {MAX_CHALLENGES} outcomes, got {len(raw)}")
        outcomes = []
        for o in raw:
            if not isinstance(o, dict):
                raise MalformedError("verdict.outcomes: expected objects")
            outcomes.append(Outcome(F.get(o, "index", int, "outcome"), F.get(o, "reason", str, "outcome"),
                                    F.get(o, "detail", str, "outcome")))
        v = cls(
            job_id=F.digest(F.get(d, "job_id", str, "verdict"), "verdict.job_id"),
            root=F.digest(F.get(d, "root", str, "verdict"), "verdict.root"),
            beacon=F.digest(F.get(d, "beacon", str, "verdict"), "verdict.beacon"),
            kernel=F.get(d, "kernel", str, "verdict"),
            outcomes=tuple(outcomes),
            cheat_fraction=F.get(d, "cheat_fraction", (int, float), "verdict"),
            verifier=F.pubkey(F.get(d, "verifier", str, "verdict"), "verdict.verifier"),
            signature=F.signature(F.get(d, "signature", str, "verdict"), "verdict.signature"),
            steps=d.get("steps", 0),
            bundle=F.digest(F.get(d, "bundle", str, "verdict"), "verdict.bundle"),
            bundle_signed=F.get(d, "bundle_signed", bool, "verdict"),
        )
        v.verify_signature()
        if d.get("result") != ("PASS" if v.passed else "FAIL"):
            raise MalformedError(f"verdict.result {str(d.get('result'))[:20]!r} disagrees with its outcomes")
        derived = {"detection": v.detection, "checked": len(v.outcomes), "failed": len(v.failures)}
        for key, value in derived.items():
            if key in d and d[key] != value:
                raise MalformedError(f"verdict.{key} {str(d[key])[:20]} disagrees with its outcomes ({value})")
        return v


__all__ = ["BEACON_SOURCE_RE", "CHALLENGE_DOMAIN", "CHALLENGE_VERSION", "COMMITMENT_DOMAIN", "COMMITMENT_VERSION",
           "VERDICT_DOMAIN",
           "VERDICT_VERSION", "Challenge", "Commitment", "Outcome", "Verdict", "meta_hash", "parse_beacon"]
