"""Typed, signed protocol records: Commitment, Challenge, Verdict (and keys).

Each signed record has one explicit function that builds the bytes that are signed
(``signing_bytes``), distinct from its JSON wire form (``to_json``/``from_json``); parsing
re-validates everything, so a record that exists is well-formed. Signatures are ed25519 by a
solders ``Keypair`` (the same key settles on Solana); a Solana CLI keypair file (a JSON array
of 64 integers) is a valid key file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from blake3 import blake3
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from verifier.errors import (
    InputError,
    LimitExceeded,
    MalformedError,
    SignatureError,
)
from verifier.jobs import MAX_STEPS, JobSpec

DIGEST_SIZE: Final = 32
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024  # a JSON record; a verdict of MAX_CHALLENGES fits easily
MAX_CHALLENGES: Final = 65_536  # indices in one challenge
MAX_DETAIL_BYTES: Final = 512  # reason text of one outcome
MAX_META_BYTES: Final = 64 * 1024  # fingerprint / environment JSON

COMMITMENT_DOMAIN: Final = b"pocv commitment v1\x00"
CHALLENGE_DOMAIN: Final = b"pocv challenge v1\x00"
VERDICT_DOMAIN: Final = b"pocv verdict v1\x00"
META_CONTEXT: Final = "pocv 2026-11 metadata v1"

#: Reason codes of a per-index outcome (a verdict PASSes only if every outcome is OK).
REASONS: Final = (
    "OK",  # the opened state recomputes (exact) or lies within the bound (tolerance)
    "MISMATCH",  # recomputed state differs / is outside the tolerance bound
    "BAD_PROOF",  # the openings do not lead to the committed root
    "BAD_STATE",  # a state of the wrong names, dtypes or shapes, or not canonical
    "MISSING",  # a challenged state was not opened
    "MALFORMED",  # the response bundle does not parse or exceeds a limit
    "WRONG_JOB",  # the response is for another job id, root or tree size
    "BAD_INIT",  # the opened s_0 is not the one the spec derives
    "REFUSED",  # no response (refusal or timeout)
)
_REASON_CODE: Final = {r: i for i, r in enumerate(REASONS)}

_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
_KERNEL_REF_RE: Final = re.compile(r"[a-z][a-z0-9\-]{0,63}@[0-9]{1,10}")


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
        raise MalformedError(f"{what}: expected 64 lowercase hex digits, got {str(value)[:80]!r}")
    return bytes.fromhex(value)


def parse_beacon(text: str) -> bytes:
    """A 32-byte beacon from 64 hex digits (an optional 0x prefix and upper case accepted)."""
    t = text.strip().lower()
    t = t.removeprefix("0x")
    if not _HEX64_RE.fullmatch(t):
        raise InputError(f"beacon must be 32 bytes as 64 hex digits, got {text[:80]!r} ({len(text)} chars)")
    return bytes.fromhex(t)


def _check_bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise MalformedError(f"{what}: expected {size} bytes, got {got}")
    return value


def meta_hash(meta: Mapping[str, Any]) -> bytes:
    """Digest of a metadata mapping (fingerprint, environment) through its canonical JSON."""
    text = json.dumps(dict(meta), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return bytes(blake3(text, derive_key_context=META_CONTEXT).digest())


def load_record_json(text: str | bytes, what: str, *, limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """Parse a JSON record of ``type`` ``what``: size-limited, an object, of the right type."""
    if not isinstance(text, str | bytes):
        raise MalformedError(f"{what}: expected JSON text, got {type(text).__name__}")
    if len(text) > limit:
        raise LimitExceeded(f"{what} is at most {limit} bytes, got {len(text)}")
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise MalformedError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise MalformedError(f"{what}: expected a JSON object, got {type(d).__name__}")
    if d.get("type") != what:
        raise MalformedError(f"expected a {what} record, got type {str(d.get('type'))[:40]!r}")
    return d


def _field(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in d:
        raise MalformedError(f"{what} is missing field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise MalformedError(f"{what}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def _pubkey(text: str, what: str) -> bytes:
    try:
        return bytes(Pubkey.from_string(text))
    except ValueError as e:
        raise MalformedError(f"{what} is not a base58 public key: {e}") from e


def _sig(text: str, what: str) -> bytes:
    if not re.fullmatch(r"[0-9a-f]{128}", text):
        raise MalformedError(f"{what}: expected 128 lowercase hex digits")
    return bytes.fromhex(text)


def _known_fields(d: Mapping[str, Any], what: str, derived: set[str]) -> None:
    """Refuse unknown fields and other versions (derived fields are cross-checked by the caller)."""
    if d.get("version") != 1:
        raise MalformedError(f"{what} version: expected 1, got {str(d.get('version'))[:20]}")
    known = {f.name for f in dataclasses.fields(_RECORDS[what])} | {"type", "version"} | derived
    unknown = set(d) - known
    if unknown:
        raise MalformedError(f"{what} has unknown fields {sorted(unknown)[:5]}")


def _meta(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedError(f"{what}: expected a JSON object, got {type(value).__name__}")
    try:  # exactly what meta_hash will hash: JSON-serializable and valid UTF-8 (no lone surrogates)
        size = len(json.dumps(dict(value), sort_keys=True, ensure_ascii=False).encode())
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as e:
        raise MalformedError(f"{what} is not canonical JSON: {e}") from e
    if size > MAX_META_BYTES:
        raise LimitExceeded(f"{what} is at most {MAX_META_BYTES} bytes of JSON, got {size}")
    return MappingProxyType(dict(value))


def _utf8(text: object, what: str, limit: int) -> bytes:
    if not isinstance(text, str):
        raise MalformedError(f"{what}: expected a string, got {type(text).__name__}")
    try:
        data = text.encode()
    except UnicodeEncodeError as e:
        raise MalformedError(f"{what} is not valid UTF-8 text: {e}") from e
    if len(data) > limit:
        raise LimitExceeded(f"{what} is at most {limit} bytes, got {len(data)}")
    return data


# -- keys ------------------------------------------------------------------------------------


def load_keypair(path: str | os.PathLike[str]) -> Keypair:
    """Load a Solana CLI keypair file (JSON array of 64 byte values)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(f"cannot read keypair file {str(p)!r}: {e.strerror}") from e
    try:
        values = json.loads(text)
        if not (isinstance(values, list) and len(values) == 64 and all(
            isinstance(v, int) and 0 <= v <= 255 for v in values)):
            raise ValueError("expected a JSON array of 64 integers 0..255")
        return Keypair.from_bytes(bytes(values))
    except ValueError as e:
        raise InputError(f"{str(p)!r} is not a Solana keypair file: {e}") from e


def save_keypair(key: Keypair, path: str | os.PathLike[str]) -> None:
    """Write ``key`` as a Solana CLI keypair file, atomically, readable by the owner only."""
    from verifier.store import atomic_write

    atomic_write(Path(path), json.dumps(list(bytes(key))).encode(), mode=0o600)


def _verify_sig(pubkey: bytes, signature: bytes, message: bytes, what: str) -> None:
    try:
        ok = Signature.from_bytes(signature).verify(Pubkey.from_bytes(pubkey), message)
    except ValueError as e:
        raise SignatureError(f"{what} signature is malformed: {e}") from e
    if not ok:
        raise SignatureError(f"{what} signature does not verify under {Pubkey.from_bytes(pubkey)}")


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

    def __post_init__(self) -> None:
        _check_bytes(self.root, DIGEST_SIZE, "commitment root")
        _check_bytes(self.worker, 32, "commitment worker key")
        _check_bytes(self.signature, 64, "commitment signature")
        object.__setattr__(self, "fingerprint", _meta(self.fingerprint, "fingerprint"))
        object.__setattr__(self, "environment", _meta(self.environment, "environment"))

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
        return b"".join((
            COMMITMENT_DOMAIN,
            self.job_id,
            self.root,
            struct.pack("<QB", self.steps, len(ref)),
            ref,
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
        key: Keypair,
        fingerprint: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> Commitment:
        unsigned = cls(spec=spec, root=root, worker=bytes(key.pubkey()),
                       fingerprint=fingerprint or {}, environment=environment or {})
        sig = bytes(key.sign_message(unsigned.signing_bytes()))
        return cls(spec=spec, root=root, worker=unsigned.worker, fingerprint=unsigned.fingerprint,
                   environment=unsigned.environment, signature=sig)

    def verify_signature(self) -> None:
        _verify_sig(self.worker, self.signature, self.signing_bytes(), "commitment")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "commitment",
            "version": 1,
            "job_id": self.job_id.hex(),
            "spec": self.spec.to_dict(),
            "root": self.root.hex(),
            "worker": str(Pubkey.from_bytes(self.worker)),
            "fingerprint": dict(self.fingerprint),
            "environment": dict(self.environment),
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Commitment:
        """Parse and check: the job id must match the spec and the signature must verify."""
        d = load_record_json(text, "commitment")
        _known_fields(d, "commitment", {"job_id"})
        spec = JobSpec.from_dict(_field(d, "spec", dict, "commitment"))
        job_id = _hex32(_field(d, "job_id", str, "commitment"), "commitment.job_id")
        if job_id != spec.job_id:
            from verifier.errors import MismatchError

            raise MismatchError(f"commitment job_id {job_id.hex()} is not the id of its spec "
                                f"({spec.job_id.hex()})")
        try:
            worker = bytes(Pubkey.from_string(_field(d, "worker", str, "commitment")))
        except ValueError as e:
            raise MalformedError(f"commitment.worker is not a base58 public key: {e}") from e
        sig_hex = _field(d, "signature", str, "commitment")
        if not re.fullmatch(r"[0-9a-f]{128}", sig_hex):
            raise MalformedError("commitment.signature: expected 128 lowercase hex digits")
        c = cls(
            spec=spec,
            root=_hex32(_field(d, "root", str, "commitment"), "commitment.root"),
            worker=worker,
            fingerprint=_field(d, "fingerprint", dict, "commitment"),
            environment=_field(d, "environment", dict, "commitment"),
            signature=bytes.fromhex(sig_hex),
        )
        c.verify_signature()
        return c


# -- challenge -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Challenge:
    """Steps to open, derived from (job id, root, beacon); see :mod:`verifier.challenge`.

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
    beacon_source: str = "verifier nonce"
    verifier: bytes = bytes(32)
    signature: bytes = bytes(64)

    def __post_init__(self) -> None:
        _check_bytes(self.job_id, DIGEST_SIZE, "challenge job_id")
        _check_bytes(self.root, DIGEST_SIZE, "challenge root")
        _check_bytes(self.beacon, 32, "challenge beacon")
        _check_bytes(self.verifier, 32, "challenge verifier key")
        _check_bytes(self.signature, 64, "challenge signature")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise MalformedError(f"challenge steps must be an integer in 1..{MAX_STEPS}, got {str(self.steps)[:40]}")
        idx = tuple(self.indices)
        if not 1 <= len(idx) <= MAX_CHALLENGES:
            raise LimitExceeded(f"a challenge has 1..{MAX_CHALLENGES} indices, got {len(idx)}")
        if any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= self.steps for i in idx):
            raise MalformedError(f"challenge indices must be integers in 1..{self.steps}")
        if len(set(idx)) != len(idx):
            raise MalformedError("challenge indices must be distinct")
        object.__setattr__(self, "indices", idx)
        for name in ("confidence", "cheat_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    0 <= v <= 1 and math.isfinite(float(v))):
                raise MalformedError(f"challenge {name} must be a number in [0, 1], got {str(v)[:40]}")
        _utf8(self.beacon_source, "challenge beacon_source", 200)

    @property
    def k(self) -> int:
        return len(self.indices)

    @property
    def detection(self) -> float:
        """Probability of catching a worker who faked ``cheat_fraction`` of steps, at least
        (1 when every step is checked)."""
        if self.k >= self.steps:
            return 1.0
        return 1.0 - (1.0 - self.cheat_fraction) ** self.k

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

    def signed(self, key: Keypair) -> Challenge:
        """This challenge, issued and signed by ``key``."""
        unsigned = dataclasses.replace(self, verifier=bytes(key.pubkey()), signature=bytes(64))
        return dataclasses.replace(unsigned, signature=bytes(key.sign_message(unsigned.signing_bytes())))

    def verify_signature(self, expected_verifier: bytes | None = None) -> None:
        if expected_verifier is not None and expected_verifier != self.verifier:
            raise SignatureError(
                f"challenge was issued by {Pubkey.from_bytes(self.verifier)}, not by this verifier "
                f"({Pubkey.from_bytes(expected_verifier)})")
        _verify_sig(self.verifier, self.signature, self.signing_bytes(), "challenge")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "challenge",
            "version": 1,
            "job_id": self.job_id.hex(),
            "root": self.root.hex(),
            "steps": self.steps,
            "beacon": self.beacon.hex(),
            "beacon_source": self.beacon_source,
            "confidence": self.confidence,
            "cheat_fraction": self.cheat_fraction,
            "detection": self.detection,
            "indices": list(self.indices),
            "verifier": str(Pubkey.from_bytes(self.verifier)),
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Challenge:
        """Parse and verify the issuer's signature."""
        d = load_record_json(text, "challenge")
        _known_fields(d, "challenge", {"detection"})
        indices = _field(d, "indices", list, "challenge")
        if len(indices) > MAX_CHALLENGES:
            raise LimitExceeded(f"a challenge has at most {MAX_CHALLENGES} indices, got {len(indices)}")
        ch = cls(
            job_id=_hex32(_field(d, "job_id", str, "challenge"), "challenge.job_id"),
            root=_hex32(_field(d, "root", str, "challenge"), "challenge.root"),
            steps=_field(d, "steps", int, "challenge"),
            beacon=_hex32(_field(d, "beacon", str, "challenge"), "challenge.beacon"),
            indices=tuple(indices),
            confidence=_field(d, "confidence", (int, float), "challenge"),
            cheat_fraction=_field(d, "cheat_fraction", (int, float), "challenge"),
            beacon_source=_field(d, "beacon_source", str, "challenge"),
            verifier=_pubkey(_field(d, "verifier", str, "challenge"), "challenge.verifier"),
            signature=_sig(_field(d, "signature", str, "challenge"), "challenge.signature"),
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
    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index <= MAX_STEPS:
            raise MalformedError(f"outcome index must be an integer in 0..{MAX_STEPS}, got {str(self.index)[:40]}")
        if not isinstance(self.reason, str) or self.reason not in _REASON_CODE:
            raise MalformedError(f"unknown reason {str(self.reason)[:40]!r}; expected one of {list(REASONS)}")
        _utf8(self.detail, "outcome detail", 1 << 20)
        if len(self.detail.encode()) > MAX_DETAIL_BYTES:
            object.__setattr__(self, "detail", self.detail.encode()[: MAX_DETAIL_BYTES - 3]
                               .decode(errors="ignore") + "...")

    @property
    def ok(self) -> bool:
        return self.reason == "OK"


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

    def __post_init__(self) -> None:
        _check_bytes(self.job_id, DIGEST_SIZE, "verdict job_id")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 0 <= self.steps <= MAX_STEPS:
            raise MalformedError(f"verdict steps must be an integer in 0..{MAX_STEPS}, got {str(self.steps)[:40]}")
        _check_bytes(self.root, DIGEST_SIZE, "verdict root")
        _check_bytes(self.beacon, 32, "verdict beacon")
        _check_bytes(self.verifier, 32, "verdict verifier key")
        _check_bytes(self.signature, 64, "verdict signature")
        if not isinstance(self.kernel, str) or not _KERNEL_REF_RE.fullmatch(self.kernel):
            raise MalformedError(f"verdict kernel must look like name@version, got {str(self.kernel)[:80]!r}")
        object.__setattr__(self, "outcomes", tuple(self.outcomes))
        if not all(isinstance(o, Outcome) for o in self.outcomes):
            raise MalformedError("verdict outcomes must be Outcome records")
        if not 1 <= len(self.outcomes) <= MAX_CHALLENGES:
            raise LimitExceeded(f"a verdict has 1..{MAX_CHALLENGES} outcomes, got {len(self.outcomes)}")
        f = self.cheat_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise MalformedError(f"verdict cheat_fraction must be in [0, 1], got {str(f)[:40]}")

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(o.index for o in self.outcomes)

    @property
    def detection(self) -> float:
        """Detection bound achieved: 1 - (1 - f)^k for the k steps actually checked (1 when
        every step of the job was checked)."""
        if self.steps and len(set(self.indices)) >= self.steps:
            return 1.0
        return 1.0 - (1.0 - self.cheat_fraction) ** len(self.outcomes)

    @property
    def failures(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

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
            struct.pack("<I", len(self.outcomes)),
        ]
        for o in self.outcomes:
            detail = o.detail.encode()
            parts.append(struct.pack("<QBH", o.index, _REASON_CODE[o.reason], len(detail)))
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
        key: Keypair,
        steps: int = 0,
    ) -> Verdict:
        unsigned = cls(job_id=job_id, root=root, beacon=beacon, kernel=kernel, outcomes=tuple(outcomes),
                       cheat_fraction=cheat_fraction, verifier=bytes(key.pubkey()), steps=steps)
        sig = bytes(key.sign_message(unsigned.signing_bytes()))
        return dataclasses.replace(unsigned, signature=sig)

    def verify_signature(self, expected_verifier: bytes | None = None) -> None:
        """Check the signature; with ``expected_verifier``, also that it is that verifier's."""
        if expected_verifier is not None and expected_verifier != self.verifier:
            raise SignatureError(
                f"verdict signed by {Pubkey.from_bytes(self.verifier)}, expected "
                f"{Pubkey.from_bytes(expected_verifier)}")
        _verify_sig(self.verifier, self.signature, self.signing_bytes(), "verdict")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "verdict",
            "version": 1,
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
            "outcomes": [{"index": o.index, "reason": o.reason, "detail": o.detail} for o in self.outcomes],
            "verifier": str(Pubkey.from_bytes(self.verifier)),
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Verdict:
        """Parse and verify the signature (and that ``result`` agrees with the outcomes)."""
        d = load_record_json(text, "verdict")
        _known_fields(d, "verdict", {"result", "detection", "checked", "failed"})
        raw = _field(d, "outcomes", list, "verdict")
        if len(raw) > MAX_CHALLENGES:
            raise LimitExceeded(f"a verdict has at most {MAX_CHALLENGES} outcomes, got {len(raw)}")
        outcomes = []
        for o in raw:
            if not isinstance(o, dict):
                raise MalformedError("verdict.outcomes: expected objects")
            outcomes.append(Outcome(_field(o, "index", int, "outcome"), _field(o, "reason", str, "outcome"),
                                    _field(o, "detail", str, "outcome")))
        v = cls(
            job_id=_hex32(_field(d, "job_id", str, "verdict"), "verdict.job_id"),
            root=_hex32(_field(d, "root", str, "verdict"), "verdict.root"),
            beacon=_hex32(_field(d, "beacon", str, "verdict"), "verdict.beacon"),
            kernel=_field(d, "kernel", str, "verdict"),
            outcomes=tuple(outcomes),
            cheat_fraction=_field(d, "cheat_fraction", (int, float), "verdict"),
            verifier=_pubkey(_field(d, "verifier", str, "verdict"), "verdict.verifier"),
            signature=_sig(_field(d, "signature", str, "verdict"), "verdict.signature"),
            steps=d.get("steps", 0),
        )
        v.verify_signature()
        if d.get("result") != ("PASS" if v.passed else "FAIL"):
            raise MalformedError(f"verdict.result {str(d.get('result'))[:20]!r} disagrees with its outcomes")
        derived = {"detection": v.detection, "checked": len(v.outcomes), "failed": len(v.failures)}
        for key, value in derived.items():
            if key in d and d[key] != value:
                raise MalformedError(f"verdict.{key} {str(d[key])[:20]} disagrees with its outcomes ({value})")
        return v


_RECORDS: Final[dict[str, type]] = {"commitment": Commitment, "challenge": Challenge, "verdict": Verdict}
