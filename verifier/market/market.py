"""Offers, job requests and matching.

Workers publish :class:`Offer` memos on the market's board (an address derived from the mint;
see :func:`~pocv.market.escrow.board_address`). A consumer states a :class:`JobRequest`; the
matcher (:func:`match`) picks the cheapest qualified worker, its price weighted by its verdict
history as the indexer rebuilt it from the chain. Matching is a pure function: anyone can re-run
it on the same chain data and get the same worker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.errors import InputError
from pocv.market import memo as memos
from pocv.market.backend import Backend, TxOutcome
from pocv.market.escrow import board_address, sign_and_send
from pocv.market.programs import memo as memo_ix

MAX_KERNELS_PER_OFFER: Final = 8
#: A worker's trust is a Laplace estimate of its PASS rate; one FAIL costs as much as this many PASSes.
FAIL_WEIGHT: Final = 4


@dataclass(frozen=True, kw_only=True)
class Offer:
    worker: Pubkey
    device_class: str  # e.g. "cpu-x86", "h100"
    fingerprint: bytes  # 32-byte digest of the device fingerprint (pocv.records.meta_hash)
    price: int  # token base units per job
    bond: int
    kernels: tuple[str, ...]  # kernel names ("gemm-int8") or refs ("gemm-int8@1")

    def __post_init__(self) -> None:
        if len(self.fingerprint) != 32:
            raise InputError(f"offer fingerprint must be a 32-byte digest, got {len(self.fingerprint)} bytes")
        if not 1 <= len(self.kernels) <= MAX_KERNELS_PER_OFFER:
            raise InputError(f"an offer lists 1..{MAX_KERNELS_PER_OFFER} kernels, got {len(self.kernels)}")
        if self.price <= 0 or self.bond < 0:
            raise InputError(f"offer price must be positive and bond non-negative, got {self.price}, {self.bond}")
        self.memo()  # validates every field's characters

    def memo(self) -> memos.Memo:
        return memos.make("offer", dev=self.device_class, fp=memos.b58(self.fingerprint), price=self.price,
                          bond=self.bond, kernels=",".join(self.kernels))

    @classmethod
    def from_memo(cls, m: memos.Memo, worker: Pubkey) -> Offer:
        return cls(worker=worker, device_class=m.fields["dev"], fingerprint=m.digest("fp"), price=m.int("price"),
                   bond=m.int("bond"), kernels=tuple(m.fields["kernels"].split(",")))

    def supports(self, kernel: str) -> bool:
        name = kernel.split("@", 1)[0]
        return kernel in self.kernels or name in self.kernels

    def to_dict(self) -> dict[str, object]:
        return {"worker": str(self.worker), "device_class": self.device_class, "fingerprint": self.fingerprint.hex(),
                "price": self.price, "bond": self.bond, "kernels": list(self.kernels)}


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    kernel: str  # name or name@version
    max_price: int
    min_bond: int = 0
    device_class: str | None = None  # None: any device
    confidence: float = 0.999  # detection probability the consumer wants from the verifier

    def __post_init__(self) -> None:
        if self.max_price <= 0 or self.min_bond < 0:
            raise InputError("max_price must be positive and min_bond non-negative")
        if not (isinstance(self.confidence, float | int) and math.isfinite(self.confidence)
                and 0 < self.confidence < 1):
            raise InputError(f"confidence must be in (0, 1), got {self.confidence!r}")


@dataclass(frozen=True, kw_only=True)
class Reputation:
    worker: Pubkey
    passes: int = 0
    fails: int = 0
    timeouts: int = 0
    slashed: int = 0  # bond tokens lost

    @property
    def trust(self) -> float:
        """Laplace estimate of the PASS rate, FAILs weighted: 0.5 for a newcomer."""
        return (self.passes + 1) / (self.passes + FAIL_WEIGHT * self.fails + 2)

    def to_dict(self) -> dict[str, object]:
        return {"worker": str(self.worker), "passes": self.passes, "fails": self.fails, "timeouts": self.timeouts,
                "slashed": self.slashed, "trust": round(self.trust, 6)}


@dataclass(frozen=True, kw_only=True)
class Match:
    offer: Offer
    score: float  # price / trust: lower is better
    considered: int
    qualified: int


def qualifies(offer: Offer, request: JobRequest) -> bool:
    return (offer.supports(request.kernel) and offer.price <= request.max_price and offer.bond >= request.min_bond
            and (request.device_class is None or offer.device_class == request.device_class))


def match(request: JobRequest, offers: Iterable[Offer], reputation: Mapping[Pubkey, Reputation]) -> Match | None:
    """Cheapest qualified worker, price divided by trust; ties by price, then by key (deterministic)."""
    pool = list(offers)
    ok = [o for o in pool if qualifies(o, request)]
    if not ok:
        return None

    def score(o: Offer) -> float:
        return o.price / reputation.get(o.worker, Reputation(worker=o.worker)).trust

    best = min(ok, key=lambda o: (score(o), o.price, bytes(o.worker)))
    return Match(offer=best, score=score(best), considered=len(pool), qualified=len(ok))


def publish_offer(backend: Backend, offer: Offer, worker: Keypair, mint: Pubkey) -> TxOutcome:
    """One transaction: the offer memo, signed by the worker, naming the market's board."""
    if worker.pubkey() != offer.worker:
        raise InputError(f"an offer must be signed by its worker {offer.worker}, got {worker.pubkey()}")
    return sign_and_send(backend, [memo_ix(offer.memo().text(), (offer.worker,))], [worker], [board_address(mint)])
