"""Rebuild every job's history and every worker's reputation from the chain alone.

Sources: ``getSignaturesForAddress(board)`` finds offers and posts; ``getSignaturesForAddress(vault)``
finds each job's commit and settlement; ``getTransaction`` gives the memo, who signed it, and the
token balances before and after. Memos are claims: an event counts only when

* the memo was signed by the party entitled to make it (the Memo program guarantees the
  signature; the indexer checks *who*: the registered verifier for a verdict, the worker for a
  commit, consumer and worker for a timeout), and
* the transaction actually moved the tokens the memo implies (deposit into the vault, payout to
  the beneficiary, vault emptied).

Anything else is kept as an *anomaly* (e.g. a PASS memo signed by an outsider) and ignored.

A local SQLite file caches the per-transaction facts, so a refresh fetches only transactions it
has not seen; the cache can always be deleted and rebuilt from the chain.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from solders.pubkey import Pubkey

from pocv.errors import ChainError, EvidenceError, PocvError
from pocv.market import memo as memos
from pocv.market.backend import Backend, TxRecord
from pocv.market.escrow import EscrowAddresses, JobTerms, board_address, memo_of
from pocv.market.market import Offer, Reputation

SCHEMA_VERSION: Final = 1
MAX_EVENTS_PER_JOB: Final = 64  # a vault's history longer than this is junk (anyone can name a vault)


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What one landed transaction says and does, as far as the market cares."""

    signature: str
    slot: int
    ok: bool
    fee: int
    memo: memos.Memo | None
    memo_signers: tuple[str, ...]
    deltas: dict[str, int]  # token account -> change of amount
    token_closed: tuple[str, ...]  # token accounts that existed before and not after

    @classmethod
    def of(cls, rec: TxRecord) -> Facts:
        mm = memo_of(rec) if rec.ok else None
        accounts = {str(b.account) for b in rec.pre_token + rec.post_token}
        post = {str(b.account) for b in rec.post_token}
        return cls(signature=str(rec.signature), slot=rec.slot, ok=rec.ok, fee=rec.fee,
                   memo=mm[0] if mm else None, memo_signers=tuple(str(k) for k in mm[1]) if mm else (),
                   deltas={a: rec.token_delta(Pubkey.from_string(a)) for a in sorted(accounts)},
                   token_closed=tuple(sorted(a for a in accounts if a not in post)))

    def to_json(self) -> str:
        return json.dumps({"signature": self.signature, "slot": self.slot, "ok": self.ok, "fee": self.fee,
                           "memo": self.memo.text() if self.memo else None, "memo_signers": list(self.memo_signers),
                           "deltas": self.deltas, "token_closed": list(self.token_closed)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Facts:
        d = json.loads(text)
        return cls(signature=d["signature"], slot=d["slot"], ok=d["ok"], fee=d["fee"],
                   memo=memos.parse(d["memo"]) if d["memo"] else None, memo_signers=tuple(d["memo_signers"]),
                   deltas=dict(d["deltas"]), token_closed=tuple(d["token_closed"]))


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: str  # post | commit | settle
    signature: str
    slot: int
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "signature": self.signature, "slot": self.slot, "detail": self.detail}


@dataclass(frozen=True, kw_only=True)
class JobHistory:
    terms: JobTerms
    status: str  # posted | committed | PASS | FAIL | TIMEOUT
    root: bytes | None
    events: tuple[Event, ...]
    anomalies: tuple[str, ...] = ()
    paid: dict[str, int] = field(default_factory=dict)  # party role -> tokens received at settlement

    @property
    def job_id(self) -> bytes:
        return self.terms.job_id

    def to_dict(self) -> dict[str, Any]:
        t = self.terms
        return {
            "job_id": t.job_id.hex(), "status": self.status, "root": self.root.hex() if self.root else None,
            "kernel": t.kernel, "device_class": t.device_class, "confidence": t.confidence_ppm / 1e6,
            "price": t.price, "bond": t.bond, "mint": str(t.mint),
            "consumer": str(t.consumer), "worker": str(t.worker), "verifier": str(t.verifier),
            "vault": str(EscrowAddresses.derive(t).vault), "paid": dict(self.paid),
            "events": [e.to_dict() for e in self.events], "anomalies": list(self.anomalies),
        }


def _segments(facts: list[Facts]) -> list[list[Facts]]:
    """Split a vault's history at each POST (a closed vault's address can be posted again)."""
    out: list[list[Facts]] = []
    for f in facts:
        if f.memo is not None and f.memo.kind == "post":
            out.append([])
        if out:
            out[-1].append(f)
    return out


def build_history(terms: JobTerms, post: Facts, facts: Iterable[Facts]) -> JobHistory:
    """One job's history from its vault's transactions, every event checked against token movements."""
    a = EscrowAddresses.derive(terms)
    vault, c_ata, w_ata = str(a.vault), str(a.consumer_ata), str(a.worker_ata)
    c, w, v = str(terms.consumer), str(terms.worker), str(terms.verifier)
    events = [Event(kind="post", signature=post.signature, slot=post.slot,
                    detail=f"price {terms.price} deposited by {c}")]
    anomalies: list[str] = []
    status, root, held = "posted", None, terms.price
    paid: dict[str, int] = {}
    for f in facts:
        if f.signature == post.signature or not f.ok:
            continue
        m = f.memo
        if m is None or m.fields.get("job") != memos.b58(terms.job_id):
            if f.deltas.get(vault, 0) and status in ("posted", "committed"):
                # anyone can send tokens to a token account: count the gift, flag it
                held += f.deltas[vault]
                anomalies.append(f"{f.signature}: {f.deltas[vault]} tokens sent to the vault without a pocv memo")
            continue
        try:
            if m.kind == "commit" and status == "posted":
                if w not in f.memo_signers:
                    anomalies.append(f"{f.signature}: commit memo not signed by the worker {w}: ignored")
                elif f.deltas.get(vault, 0) != terms.bond:
                    anomalies.append(f"{f.signature}: commit moved {f.deltas.get(vault, 0)} into the vault, "
                                     f"expected the bond {terms.bond}: ignored")
                else:
                    status, root, held = "committed", m.digest("root"), held + terms.bond
                    events.append(Event(kind="commit", signature=f.signature, slot=f.slot,
                                        detail=f"root {m.digest('root').hex()}, bond {terms.bond}"))
                continue
            if m.kind == "settle" and status in ("posted", "committed"):
                result = m.fields["result"]
                need = {"PASS": (v,), "FAIL": (v,), "TIMEOUT": (c, w)}.get(result, ("?",))
                if not all(k in f.memo_signers for k in need):
                    anomalies.append(f"{f.signature}: {result} memo signed by {list(f.memo_signers)}, "
                                      f"expected {list(need)}: ignored")
                    continue
                if result in ("PASS", "FAIL") and (status != "committed" or m.digest("root") != root):
                    anomalies.append(f"{f.signature}: {result} for root {m.fields['root']} but the commit is "
                                     f"{root.hex() if root else 'missing'}: ignored")
                    continue
                got = {"consumer": f.deltas.get(c_ata, 0), "worker": f.deltas.get(w_ata, 0)}
                want = {"PASS": {"consumer": 0, "worker": held},
                        "FAIL": {"consumer": held, "worker": 0},
                        "TIMEOUT": {"consumer": min(held, terms.price), "worker": held - min(held, terms.price)}}
                if (got != want.get(result) or f.deltas.get(vault, 0) != -held or vault not in f.token_closed):
                    anomalies.append(f"{f.signature}: {result} memo but tokens moved {got} (vault "
                                     f"{f.deltas.get(vault, 0)}), expected {want.get(result)} and the vault "
                                     f"emptied and closed: ignored")
                    continue
                status, paid = result, {k: n for k, n in got.items() if n}
                events.append(Event(kind="settle", signature=f.signature, slot=f.slot,
                                    detail=f"{result}: paid {paid}, verdict {m.fields['verdict']}"))
                continue
            anomalies.append(f"{f.signature}: {m.kind} memo out of order (job is {status}): ignored")
        except EvidenceError as e:
            anomalies.append(f"{f.signature}: malformed {m.kind} memo: {e}")
    return JobHistory(terms=terms, status=status, root=root, events=tuple(events), anomalies=tuple(anomalies),
                      paid=paid)


class Indexer:
    """Chain -> job histories, offers and reputations, with an optional SQLite cache of facts."""

    def __init__(self, backend: Backend, mint: Pubkey, *, cache: str | Path | None = None) -> None:
        self.backend = backend
        self.mint = mint
        self.board = board_address(mint)
        self._db = sqlite3.connect(str(cache) if cache is not None else ":memory:")
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
            "CREATE TABLE IF NOT EXISTS facts (signature TEXT PRIMARY KEY, slot INTEGER, body TEXT);")
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?), ('mint', ?)", (str(SCHEMA_VERSION), str(mint)))
        elif row[0] != str(SCHEMA_VERSION):
            self._db.executescript("DELETE FROM facts;")
            self._db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        mrow = self._db.execute("SELECT value FROM meta WHERE key='mint'").fetchone()
        if mrow is not None and mrow[0] != str(mint):
            raise ChainError(f"index cache {cache} belongs to mint {mrow[0]}, not {mint}")
        self._db.commit()
        self.fetched = 0  # transactions fetched from the chain by the last refresh

    def close(self) -> None:
        self._db.close()

    # -- facts ------------------------------------------------------------------------------

    def _facts_for(self, address: Pubkey) -> list[Facts]:
        sigs = self.backend.signatures_for_address(address)
        out = []
        for sig in sigs:
            s = str(sig)
            row = self._db.execute("SELECT body FROM facts WHERE signature=?", (s,)).fetchone()
            if row is not None:
                out.append(Facts.from_json(row[0]))
                continue
            rec = self.backend.get_transaction(sig)
            if rec is None:
                continue
            self.fetched += 1
            f = Facts.of(rec)
            self._db.execute("INSERT OR REPLACE INTO facts VALUES (?, ?, ?)", (s, f.slot, f.to_json()))
            out.append(f)
        self._db.commit()
        return out

    # -- views ------------------------------------------------------------------------------

    def refresh(self) -> tuple[list[Offer], list[JobHistory]]:
        self.fetched = 0
        board = self._facts_for(self.board)
        offers: dict[Pubkey, Offer] = {}
        jobs: list[JobHistory] = []
        for f in board:
            if not f.ok or f.memo is None:
                continue
            m = f.memo
            try:
                if m.kind == "offer" and len(f.memo_signers) == 1:
                    o = Offer.from_memo(m, Pubkey.from_string(f.memo_signers[0]))
                    offers[o.worker] = o  # the latest offer of a worker replaces its earlier ones
                elif m.kind == "post":
                    terms = JobTerms.from_post_memo(m, self.mint)
                    if str(terms.consumer) not in f.memo_signers:
                        continue  # a post names its consumer, who must have signed it
                    vault = EscrowAddresses.derive(terms).vault
                    if f.deltas.get(str(vault), 0) != terms.price:
                        continue  # no deposit, no job
                    segs = [s for s in _segments(self._facts_for(vault)) if s and s[0].signature == f.signature]
                    history = segs[0][:MAX_EVENTS_PER_JOB] if segs else [f]
                    jobs.append(build_history(terms, f, history))
            except ChainError:
                raise
            except (PocvError, ValueError):
                continue  # a malformed claim on a public board (bad digest, zero price...): not a record
        return list(offers.values()), jobs

    def jobs(self) -> list[JobHistory]:
        return self.refresh()[1]

    def offers(self) -> list[Offer]:
        return self.refresh()[0]

    def job(self, job_id: bytes) -> JobHistory | None:
        found = [j for j in self.jobs() if j.job_id == job_id]
        return found[-1] if found else None


def reputations(jobs: Iterable[JobHistory]) -> dict[Pubkey, Reputation]:
    """Per worker: PASS, FAIL (bond slashed) and TIMEOUT counts over settled jobs."""
    acc: dict[Pubkey, dict[str, int]] = {}
    for j in jobs:
        r = acc.setdefault(j.terms.worker, {"passes": 0, "fails": 0, "timeouts": 0, "slashed": 0})
        if j.status == "PASS":
            r["passes"] += 1
        elif j.status == "FAIL":
            r["fails"] += 1
            r["slashed"] += j.terms.bond
        elif j.status == "TIMEOUT":
            r["timeouts"] += 1
    return {w: Reputation(worker=w, **r) for w, r in acc.items()}
