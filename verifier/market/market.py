"""Offers, job requests, reputations and matching, read from the job program's accounts.

A worker's offer is its worker account (OFFER writes it; only the program writes the
statistics beside it): mint, least price, bond range, accepted verifiers, the device fingerprint
hash and the hash of a :class:`Capabilities` document (device class and kernels). The document
itself travels off chain (``pocv market offer`` prints it and the embedded ledger keeps it); an
offer whose document the matcher has not been given does not qualify.

A consumer states a :class:`JobRequest`; :func:`match` picks the cheapest qualified worker, its
price divided by a trust estimate from the program's statistics. Matching is a pure function:
anyone can re-run it on the same accounts and get the same worker.

Reputation counts what self-dealing cannot buy cheaply (docs/market.md): a PASS counts once per
distinct consumer (the program keeps one pair record per (worker, consumer), whose rent the
consumer pays for good), a FAIL weighs as much as :data:`FAIL_WEIGHT` PASSes, and a new key has
trust 1/2, below any worker with one PASS from a consumer and no FAIL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from blake3 import blake3
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.errors import InputError, MalformedError
from pocv.market import jobprogram as J
from pocv.market.backend import Backend, TxOutcome
from pocv.market.escrow import pubkey_of, sign_and_send

MAX_KERNELS_PER_OFFER: Final = 8
MAX_NAME_CHARS: Final = 64
CAPABILITIES_CONTEXT: Final = "pocv 2026-11 worker capabilities v1"
#: A worker's trust is a Laplace estimate of its PASS rate; one FAIL costs as much as this many PASSes.
FAIL_WEIGHT: Final = 4


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a worker runs: its device class and kernels. On chain: only :meth:`digest`."""

    device_class: str  # e.g. "cpu", "h100"
    kernels: tuple[str, ...]  # kernel names ("gemm-int8") or refs ("gemm-int8@1")

    def __post_init__(self) -> None:
        if not 1 <= len(self.kernels) <= MAX_KERNELS_PER_OFFER:
            raise InputError(f"an offer lists 1..{MAX_KERNELS_PER_OFFER} kernels, got {len(self.kernels)}")
        for name in (self.device_class, *self.kernels):
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS or not name.isprintable() \
                    or "," in name:
                raise InputError(f"device class and kernel names are 1..{MAX_NAME_CHARS} printable characters "
                                 f"without commas, got {str(name)[:80]!r}")

    def canonical(self) -> bytes:
        return json.dumps({"device": self.device_class, "kernels": sorted(self.kernels)}, sort_keys=True,
                          separators=(",", ":")).encode()

    def digest(self) -> bytes:
        return bytes(blake3(self.canonical(), derive_key_context=CAPABILITIES_CONTEXT).digest())

    def supports(self, kernel: str) -> bool:
        name = kernel.split("@", 1)[0]
        return kernel in self.kernels or name in self.kernels

    def to_dict(self) -> dict[str, Any]:
        return {"device_class": self.device_class, "kernels": sorted(self.kernels)}

    @classmethod
    def from_dict(cls, d: object) -> Capabilities:
        if not isinstance(d, dict) or not isinstance(d.get("device_class"), str) or \
                not isinstance(d.get("kernels"), list):
            raise MalformedError(f"a capabilities document is {{device_class, kernels}}, got {str(d)[:80]!r}")
        return cls(device_class=d["device_class"], kernels=tuple(d["kernels"]))


@dataclass(frozen=True, kw_only=True)
class Offer:
    """A worker's offer as its worker account holds it, with the capabilities document if known."""

    worker: Pubkey
    terms: J.Offer
    capabilities: Capabilities | None = None

    @property
    def price(self) -> int:
        return self.terms.price

    def to_dict(self) -> dict[str, object]:
        t = self.terms
        return {"worker": str(self.worker), "mint": str(t.mint), "price": t.price, "min_bond": t.min_bond,
                "max_bond": t.max_bond, "verifiers": [str(v) for v in t.verifiers], "active": t.active,
                "fingerprint": t.fingerprint.hex(), "capabilities_hash": t.capabilities.hex(),
                "capabilities": self.capabilities.to_dict() if self.capabilities else None}


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    kernel: str  # name or name@version
    max_price: int
    min_bond: int = 0
    device_class: str | None = None  # None: any device
    verifier: Pubkey | None = None  # the verifier the consumer will name (None: any the worker accepts)
    confidence: float = 0.999  # detection probability the consumer wants from the verifier

    def __post_init__(self) -> None:
        if self.max_price <= 0 or self.min_bond < 0:
            raise InputError("max_price must be positive and min_bond non-negative")
        if not (isinstance(self.confidence, float | int) and math.isfinite(self.confidence)
                and 0 < self.confidence < 1):
            raise InputError(f"confidence must be in (0, 1), got {self.confidence!r}")


@dataclass(frozen=True, kw_only=True)
class Reputation:
    """A worker's record as the program keeps it in the worker account."""

    worker: Pubkey
    passes: int = 0
    fails: int = 0
    expired: int = 0  # paid by CLAIM: the verifier never answered
    lapsed: int = 0  # refunded by CLAIM: the worker never committed (any consumer can cause these)
    slashed: int = 0  # bond tokens lost
    value_settled: int = 0  # prices of PASSed jobs
    distinct_consumers: int = 0  # consumers with at least one PASS

    @classmethod
    def of(cls, acct: J.WorkerAccount) -> Reputation:
        return cls(worker=acct.worker, passes=acct.passes, fails=acct.fails, expired=acct.expired,
                   lapsed=acct.lapsed, slashed=acct.slashed, value_settled=acct.value_settled,
                   distinct_consumers=acct.distinct_consumers)

    @property
    def counted_passes(self) -> int:
        """PASSes counted once per distinct consumer: repeat jobs from one key add nothing."""
        return min(self.passes, self.distinct_consumers)

    @property
    def trust(self) -> float:
        """Laplace estimate of the PASS rate over distinct consumers, FAILs weighted: 0.5 for a new key."""
        c = self.counted_passes
        return (c + 1) / (c + FAIL_WEIGHT * self.fails + 2)

    def to_dict(self) -> dict[str, object]:
        return {"worker": str(self.worker), "passes": self.passes, "fails": self.fails, "expired": self.expired,
                "lapsed": self.lapsed, "slashed": self.slashed, "value_settled": self.value_settled,
                "distinct_consumers": self.distinct_consumers, "trust": round(self.trust, 6)}


@dataclass(frozen=True, kw_only=True)
class Match:
    offer: Offer
    bond: int  # the bond the terms will name: the request's minimum, raised to the offer's
    score: float  # price / trust: lower is better
    considered: int
    qualified: int


def qualifies(offer: Offer, request: JobRequest, mint: Pubkey | None = None) -> bool:
    t, caps = offer.terms, offer.capabilities
    return (t.active and caps is not None and caps.supports(request.kernel) and t.price <= request.max_price
            and t.max_bond >= request.min_bond and (mint is None or t.mint == mint)
            and (request.device_class is None or caps.device_class == request.device_class)
            and (request.verifier is None or request.verifier in t.verifiers))


def match(request: JobRequest, offers: Iterable[Offer], reputation: Mapping[Pubkey, Reputation], *,
          mint: Pubkey | None = None) -> Match | None:
    """Cheapest qualified worker, price divided by trust; ties by price, then by key (deterministic)."""
    pool = list(offers)
    ok = [o for o in pool if qualifies(o, request, mint)]
    if not ok:
        return None

    def score(o: Offer) -> float:
        return o.price / reputation.get(o.worker, Reputation(worker=o.worker)).trust

    best = min(ok, key=lambda o: (score(o), o.price, bytes(o.worker)))
    return Match(offer=best, bond=max(request.min_bond, best.terms.min_bond), score=score(best),
                 considered=len(pool), qualified=len(ok))


def publish_offer(backend: Backend, program: J.JobProgram, worker: Keypair, *, mint: Pubkey, price: int,
                  min_bond: int, max_bond: int, verifiers: tuple[Pubkey, ...], fingerprint: bytes,
                  capabilities: Capabilities, active: bool = True) -> tuple[Offer, TxOutcome]:
    """OFFER: create or update ``worker``'s account (one transaction, signed by the worker)."""
    terms = J.Offer(mint=mint, price=price, min_bond=min_bond, max_bond=max_bond, verifiers=verifiers,
                    fingerprint=fingerprint, capabilities=capabilities.digest(), active=active)
    out = sign_and_send(backend, [program.offer(pubkey_of(worker), terms)], [worker])
    return Offer(worker=pubkey_of(worker), terms=terms, capabilities=capabilities), out


def read_offer(backend: Backend, program: J.JobProgram, worker: Pubkey,
               book: Mapping[bytes, Capabilities] | None = None) -> tuple[Offer, Reputation] | None:
    """A worker's offer and record, from its account (None: it has never offered)."""
    acct = program.read_worker(backend, worker)
    if acct is None:
        return None
    caps = (book or {}).get(acct.offer.capabilities)
    return Offer(worker=worker, terms=acct.offer, capabilities=caps), Reputation.of(acct)


__all__ = ["FAIL_WEIGHT", "Capabilities", "JobRequest", "Match", "Offer", "Reputation", "match", "publish_offer",
           "qualifies", "read_offer"]
