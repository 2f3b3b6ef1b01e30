"""Every job's history and every worker's offer and record, from the job program alone.

Sources: ``getSignaturesForAddress(program)`` lists every transaction that invoked the program;
``getTransaction`` gives each one's instructions and logs. Only successful transactions count
(a failed one changed nothing), and the program has already checked every signer, state,
deadline and amount, so the history is the program's own: POST (the terms, from its instruction
data), COMMIT (the root), and the settlement the program logged (``pocv: PASSED | FAILED |
REFUNDED | EXPIRED``). Offers and reputations are read from the worker accounts themselves, never
reconstructed: the program alone writes the statistics.

A local SQLite file can cache the decoded transactions, so a refresh fetches only transactions it
has not seen; the cache can always be deleted and rebuilt from the chain. v0 transactions are read
like legacy ones (their static keys: the program's instructions name no looked-up account that
the index needs, and a transaction whose job account comes from a lookup table is reported as an
anomaly).
"""

from __future__ import annotations

import json
import re
import sqlite3
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from solders.pubkey import Pubkey

from pocv.errors import ChainError, EvidenceError, PocvError
from pocv.market import jobprogram as J
from pocv.market.backend import Backend, TxRecord
from pocv.market.market import Capabilities, Offer, Reputation, read_offer

SCHEMA_VERSION: Final = 2
STATUSES: Final = ("POSTED", "COMMITTED", "PASSED", "FAILED", "REFUNDED", "EXPIRED")
_TOP_LEVEL: Final = re.compile(r"^Program (\S+) invoke \[1\]$")
_POST_HEAD: Final = struct.Struct("<BBBB4xQQQQ")


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: str  # OFFER | POST | COMMIT | VERDICT | CLAIM
    signature: str
    slot: int
    job: str | None = None  # the job account (base58)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "signature": self.signature, "slot": self.slot, "job": self.job,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(kind=d["kind"], signature=d["signature"], slot=int(d["slot"]), job=d["job"],
                   detail=dict(d["detail"]))


def _terms_json(t: J.JobTerms) -> dict[str, Any]:
    return {"job_id": t.job_id.hex(), "spec_hash": t.spec_hash.hex(), "consumer": str(t.consumer),
            "worker": str(t.worker), "verifier": str(t.verifier), "mint": str(t.mint), "price": t.price,
            "bond": t.bond, "commit_deadline": t.commit_deadline, "verdict_deadline": t.verdict_deadline}


def _terms_from(d: dict[str, Any]) -> J.JobTerms:
    return J.JobTerms(job_id=bytes.fromhex(d["job_id"]), spec_hash=bytes.fromhex(d["spec_hash"]),
                      consumer=Pubkey.from_string(d["consumer"]), worker=Pubkey.from_string(d["worker"]),
                      verifier=Pubkey.from_string(d["verifier"]), mint=Pubkey.from_string(d["mint"]),
                      price=int(d["price"]), bond=int(d["bond"]), commit_deadline=int(d["commit_deadline"]),
                      verdict_deadline=int(d["verdict_deadline"]))


def _segments(logs: Iterable[str]) -> list[list[str]]:
    """Log lines per top-level instruction, in order."""
    out: list[list[str]] = []
    for line in logs:
        if _TOP_LEVEL.match(line):
            out.append([line])
        elif out:
            out[-1].append(line)
    return out


def decode_events(rec: TxRecord, program_id: Pubkey) -> list[Event]:
    """The job program's instructions in one successful transaction, as events."""
    if not rec.ok:
        return []
    keys = rec.account_keys
    segs = _segments(rec.logs)
    events: list[Event] = []
    sig = str(rec.signature)
    for i, ix in enumerate(rec.message.instructions):
        if ix.program_id_index >= len(keys) or keys[ix.program_id_index] != program_id:
            continue
        data, accts = bytes(ix.data), bytes(ix.accounts)
        if not data or any(a >= len(keys) for a in accts):
            events.append(Event(kind="ANOMALY", signature=sig, slot=rec.slot,
                                detail={"why": "an instruction names a looked-up account (v0 lookup table)"}))
            continue
        names = [keys[a] for a in accts]
        tag = data[0]
        logs = segs[i] if i < len(segs) else []
        settled = J.job_settlement(logs)
        try:
            if tag == 0 and len(names) >= 1:
                events.append(Event(kind="OFFER", signature=sig, slot=rec.slot, detail={"worker": str(names[0])}))
            elif tag == 1 and len(names) >= 5 and len(data) == _POST_HEAD.size + 128:
                _, _, _, _, price, bond, cd, vd = _POST_HEAD.unpack_from(data)
                o = _POST_HEAD.size
                terms = J.JobTerms(job_id=data[o:o + 32], spec_hash=data[o + 32:o + 64], consumer=names[0],
                                   worker=Pubkey.from_bytes(data[o + 64:o + 96]),
                                   verifier=Pubkey.from_bytes(data[o + 96:o + 128]), mint=names[4], price=price,
                                   bond=bond, commit_deadline=cd, verdict_deadline=vd)
                events.append(Event(kind="POST", signature=sig, slot=rec.slot, job=str(names[1]),
                                    detail={"terms": _terms_json(terms)}))
            elif tag == 2 and len(names) >= 2 and len(data) == 40:
                events.append(Event(kind="COMMIT", signature=sig, slot=rec.slot, job=str(names[1]),
                                    detail={"root": data[8:40].hex()}))
            elif tag == 3 and len(names) >= 2 and len(data) == 48:
                (beacon_slot,) = struct.unpack_from("<Q", data, 8)
                events.append(Event(kind="VERDICT", signature=sig, slot=rec.slot, job=str(names[1]),
                                    detail={"passed": data[1] == 1, "beacon_slot": beacon_slot,
                                            "digest": data[16:48].hex(), "settled": settled}))
            elif tag == 4 and len(names) >= 1:
                events.append(Event(kind="CLAIM", signature=sig, slot=rec.slot, job=str(names[0]),
                                    detail={"settled": settled}))
        except PocvError as e:  # a successful instruction the program accepted always decodes
            events.append(Event(kind="ANOMALY", signature=sig, slot=rec.slot, detail={"why": str(e)[:200]}))
    return events


@dataclass(frozen=True, kw_only=True)
class JobHistory:
    terms: J.JobTerms
    job: Pubkey
    status: str  # one of STATUSES
    root: bytes | None
    commit_slot: int | None
    events: tuple[Event, ...]

    @property
    def job_id(self) -> bytes:
        return self.terms.job_id

    @property
    def settled(self) -> bool:
        return self.status in ("PASSED", "FAILED", "REFUNDED", "EXPIRED")

    @property
    def paid(self) -> str | None:
        """Who the vault went to: the worker (PASSED, EXPIRED) or the consumer (FAILED, REFUNDED)."""
        return {"PASSED": "worker", "EXPIRED": "worker", "FAILED": "consumer", "REFUNDED": "consumer"}.get(
            self.status)

    def to_dict(self) -> dict[str, Any]:
        return {**_terms_json(self.terms), "job": str(self.job), "status": self.status, "paid": self.paid,
                "root": self.root.hex() if self.root else None, "commit_slot": self.commit_slot,
                "events": [e.to_dict() for e in self.events]}


def _histories(events: Iterable[Event]) -> list[JobHistory]:
    open_: dict[str, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for e in events:
        if e.job is None:
            continue
        if e.kind == "POST":
            if e.job in open_:  # cannot happen: the program refuses a POST to an open job account
                done.append(open_.pop(e.job))
            open_[e.job] = {"terms": _terms_from(e.detail["terms"]), "job": e.job, "status": "POSTED", "root": None,
                            "commit_slot": None, "events": [e]}
            continue
        h = open_.get(e.job)
        if h is None:
            continue
        h["events"].append(e)
        if e.kind == "COMMIT":
            h["status"], h["root"], h["commit_slot"] = "COMMITTED", bytes.fromhex(e.detail["root"]), e.slot
        elif e.kind in ("VERDICT", "CLAIM") and e.detail.get("settled") in STATUSES:
            h["status"] = e.detail["settled"]
            done.append(open_.pop(e.job))
    rows = done + list(open_.values())
    rows.sort(key=lambda h: h["events"][0].slot)
    return [JobHistory(terms=h["terms"], job=Pubkey.from_string(h["job"]), status=h["status"], root=h["root"],
                       commit_slot=h["commit_slot"], events=tuple(h["events"])) for h in rows]


class Indexer:
    """Jobs and offers of one job program. ``book`` maps capability hashes to the documents the
    caller knows (offers whose document is unknown are listed, and do not qualify in matching)."""

    def __init__(self, backend: Backend, program: J.JobProgram, *,
                 book: Mapping[bytes, Capabilities] | None = None, cache: str | Path | None = None) -> None:
        self.backend = backend
        self.program = program
        self.book = dict(book or {})
        self._events: dict[str, list[Event]] = {}  # signature -> events, in chain order
        self._order: list[str] = []
        self._offers: list[Offer] = []
        self._reputations: dict[Pubkey, Reputation] = {}
        self._db: sqlite3.Connection | None = None
        if cache is not None:
            try:
                self._db = sqlite3.connect(str(cache))
                self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
                row = self._db.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
                if row is None or row[0] != f"{SCHEMA_VERSION}:{program.program_id}":
                    self._db.execute("DROP TABLE IF EXISTS tx")
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                                     (f"{SCHEMA_VERSION}:{program.program_id}",))
                self._db.execute("CREATE TABLE IF NOT EXISTS tx (signature TEXT PRIMARY KEY, events TEXT)")
                self._db.commit()
            except sqlite3.Error as e:
                raise EvidenceError(f"index cache {str(cache)!r} is unusable ({e}); delete it to rebuild") from e

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _cached(self, signature: str) -> list[Event] | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT events FROM tx WHERE signature = ?", (signature,)).fetchone()
        return None if row is None else [Event.from_dict(d) for d in json.loads(row[0])]

    def refresh(self) -> tuple[list[Offer], list[JobHistory]]:
        pid = self.program.program_id
        fresh: list[tuple[str, list[Event]]] = []
        for sig in self.backend.signatures_for_address(pid):
            s = str(sig)
            if s in self._events:
                continue
            events = self._cached(s)
            if events is None:
                rec = self.backend.get_transaction(sig)
                if rec is None:
                    raise ChainError(f"transaction {sig} is listed for the job program but cannot be read")
                events = decode_events(rec, pid)
                fresh.append((s, events))
            self._events[s] = events
            self._order.append(s)
        if self._db is not None and fresh:
            self._db.executemany("INSERT OR REPLACE INTO tx VALUES (?, ?)",
                                 [(s, json.dumps([e.to_dict() for e in ev])) for s, ev in fresh])
            self._db.commit()
        workers = dict.fromkeys(Pubkey.from_string(e.detail["worker"]) for s in self._order
                                for e in self._events[s] if e.kind == "OFFER")
        offers, reps = [], {}
        for w in workers:
            got = read_offer(self.backend, self.program, w, self.book)
            if got is not None:
                offers.append(got[0])
                reps[w] = got[1]
        self._offers, self._reputations = offers, reps
        return offers, self.jobs()

    def events(self) -> list[Event]:
        return [e for s in self._order for e in self._events[s]]

    def jobs(self) -> list[JobHistory]:
        return _histories(self.events())

    def offers(self) -> list[Offer]:
        return list(self._offers)

    def reputations(self) -> dict[Pubkey, Reputation]:
        return dict(self._reputations)

    def job(self, job_id: bytes, consumer: Pubkey | None = None) -> JobHistory | None:
        """The latest job with this id (and consumer, if given)."""
        self.refresh()
        found = [j for j in self.jobs() if j.job_id == job_id and (consumer is None or j.terms.consumer == consumer)]
        return found[-1] if found else None


__all__ = ["STATUSES", "Event", "Indexer", "JobHistory", "decode_events"]
