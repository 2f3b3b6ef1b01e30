"""A whole marketplace round on the embedded chain and the pocv job program, for ``pocv demo``.

:func:`run_market_demo` is the entry point. The caller supplies the compute side as two
callbacks, so the market layer stays free of kernels and provers:

* ``commit(spec, worker_key, honest) -> Commitment`` runs the job (honestly, or as a cheater)
  and returns the worker's signed commitment;
* ``verify(commitment, beacon, beacon_source, verifier_key) -> Verdict`` challenges the worker
  with ``beacon`` -- the hash of a slot *after* the commit transaction landed -- collects the
  response, checks it and returns the signed verdict.

:func:`engine_callbacks` builds both from the real engine, given a prover factory.

Without callbacks, the clearly labelled stand-ins of :mod:`pocv.testing.market` are used (a
fixed "honest" root; the stand-in verifier fails any other root), which exercise every chain
step but no computation.

The round: the job program is deployed through the upgradeable loader; a consumer, an honest
worker, a cheating worker and a verifier get SOL and tokens; both workers write their offers into
worker accounts; the consumer posts a job with a commit and a verdict deadline (slots) and the
matcher picks the honest worker; it commits, the verifier draws the beacon from the chain,
verifies, and its VERDICT pays the worker. The cheater undercuts the price, wins the next job, is
caught, and the program hands its bond to the consumer. In a third job the verifier never
answers: a CLAIM at the verdict deadline is refused by the program, and one slot later anyone's
CLAIM pays the worker. The indexer rebuilds the jobs from the program's transactions and the
reputations from its accounts; balances before and after are printed and every token and lamport
is accounted for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TextIO

from blake3 import blake3
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.check import NOT_JUDGED
from pocv.errors import ChainError, InputError, MismatchError
from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.market import jobprogram as J
from pocv.market.backend import LiteSVMBackend, TxOutcome
from pocv.market.escrow import Escrow, check_beacon, install_program
from pocv.market.indexer import Indexer
from pocv.market.market import Capabilities, JobRequest, match, publish_offer
from pocv.market.tokens import create_mint, fund, token_balance
from pocv.records import Challenge, Commitment, Verdict, meta_hash

CommitFn = Callable[[JobSpec, Keypair, bool], Commitment]
VerifyFn = Callable[[Commitment, bytes, str, Keypair], Verdict]

TOKEN_DECIMALS: Final = 6
START_TOKENS: Final = 100 * 10**TOKEN_DECIMALS  # each party starts with 100 tokens
START_LAMPORTS: Final = 2 * 10**9  # and 2 SOL
HONEST_PRICE: Final = 5 * 10**TOKEN_DECIMALS
CHEAT_PRICE: Final = 6 * 10**TOKEN_DECIMALS
CHEAT_UNDERCUT: Final = 3 * 10**TOKEN_DECIMALS
BOND: Final = 10 * 10**TOKEN_DECIMALS
MAX_BOND: Final = 50 * 10**TOKEN_DECIMALS
COMMIT_WINDOW: Final = 20  # slots from POST to the commit deadline (the embedded chain: one slot per transaction)
VERDICT_WINDOW: Final = 20  # slots from the commit deadline to the verdict deadline
PARTY_NAMES: Final = ("consumer", "honest worker", "cheating worker", "verifier")
SILENT_JOB_MIN_STEPS: Final = 8  # job 3 (the verifier never answers) runs a quarter of job 1's steps, at least this


class ProverLike(Protocol):
    """What :func:`engine_callbacks` needs of a worker (``pocv.prover.Prover`` is one)."""

    def run(self, spec: JobSpec) -> Commitment: ...

    def respond(self, challenge: Challenge) -> Any: ...

def engine_callbacks(make_prover: Callable[[Keypair, bool], ProverLike], *, confidence: float = 0.999,
                     cheat_fraction: float = 0.1) -> tuple[CommitFn, VerifyFn]:
    """The demo's callbacks over the real engine: ``make_prover(worker_key, honest)`` returns a
    prover (an honest ``Prover``, or a cheating one); the verifier is ``pocv.check.Verifier``,
    challenging with the chain beacon. The worker answers the challenge from its own trace."""
    provers: dict[tuple[bytes, bytes], ProverLike] = {}

    def commit(spec: JobSpec, key: Keypair, honest: bool) -> Commitment:
        prover = make_prover(key, honest)
        c = prover.run(spec)
        provers[(c.job_id, c.root)] = prover
        return c

    def verify(c: Commitment, beacon: bytes, source: str, key: Keypair) -> Verdict:
        from pocv.check import Verifier  # the verifier (torch) loads only when a round is judged

        v = Verifier(key=key)
        challenge = v.challenge(c, beacon=beacon, confidence=confidence, cheat_fraction=cheat_fraction,
                                beacon_source=source)
        prover = provers.get((c.job_id, c.root))
        response = prover.respond(challenge) if prover is not None else None  # no prover: a refusal, a FAIL
        return v.check(c, challenge, response)

    return commit, verify



@dataclass
class _Party:
    name: str
    key: Keypair
    pubkey: Pubkey


def _fmt_tokens(n: int) -> str:
    return f"{n / 10**TOKEN_DECIMALS:,.6f}"


def run_market_demo(*, spec: JobSpec | None = None, commit: CommitFn | None = None, verify: VerifyFn | None = None,
                    out: TextIO | None = None, backend: LiteSVMBackend | None = None,
                    keys: Mapping[str, Keypair] | None = None) -> dict[str, Any]:
    """Run the round; print a narrative to ``out`` (if given); return a JSON-able summary with
    ``ok`` True when the honest worker was paid, the cheater slashed, the silent verifier's job paid
    to the worker by CLAIM, and every balance reconciles.

    ``keys`` may name any of "consumer", "honest worker", "cheating worker", "verifier" (fresh
    keys otherwise). Job 1 runs ``spec``; job 2 the same kernel and size with ``seed + 1``; job 3
    ``seed + 2`` with a quarter of the steps. The backend must be the embedded chain: the third job lets time pass."""
    spec = spec or resolve_spec(JobSpec(kernel="gemm-int8", steps=64, seed=2026, params={"n": 64}))
    commit_fn: CommitFn
    verify_fn: VerifyFn
    if commit is None or verify is None:  # no computation: the labelled stand-ins
        from pocv.testing import market as stand_in  # the labelled stand-ins, only without an engine

        commit_fn = commit or stand_in.stand_in_commit
        verify_fn = verify or stand_in.stand_in_verify
    else:
        commit_fn, verify_fn = commit, verify
    be = backend or LiteSVMBackend()

    def say(line: str) -> None:
        if out is not None:
            out.write(line + "\n")

    txs: list[dict[str, Any]] = []

    def record(what: str, o: TxOutcome, *, expect_ok: bool = True) -> TxOutcome:
        txs.append({"step": what, "signature": str(o.signature), "ok": o.ok, "fee": o.fee,
                    "compute_units": o.compute_units, "slot": o.slot, "error": o.error})
        if o.ok != expect_ok:
            raise ChainError(f"{what}: expected {'success' if expect_ok else 'a refusal'}, got {o.error or 'success'}")
        code = J.program_error(o.error)
        result = "" if o.ok else f"  refused: {code.name if code is not None else o.error}"
        say(f"  {what:<36} slot {o.slot:>6}  fee {o.fee:>6} lamports  {o.compute_units:>6} CU  "
            f"{str(o.signature)[:12]}…{result}")
        return o

    say(f"market — {be.description}")
    authority = Keypair()
    be.airdrop(authority.pubkey(), 10 * START_LAMPORTS)
    mint = create_mint(be, authority, decimals=TOKEN_DECIMALS)
    program = install_program(be, authority)
    escrow = Escrow(be, program)
    say(f"  job program {program.program_id} deployed through the upgradeable loader "
        f"({len(J.program_elf()):,}-byte SBPFv0 ELF)")
    given = dict(keys or {})
    unknown = set(given) - set(PARTY_NAMES)
    if unknown:
        raise InputError(f"unknown party names {sorted(unknown)}; expected some of {PARTY_NAMES}")
    parties = [_Party(n, k, k.pubkey()) for n, k in ((n, given.get(n) or Keypair()) for n in PARTY_NAMES)]
    consumer, honest, cheater, verifier = parties
    for p in parties:
        fund(be, mint=mint, mint_authority=authority, owner=p.pubkey, tokens=START_TOKENS, lamports=START_LAMPORTS)

    def balances() -> dict[str, dict[str, int]]:
        return {p.name: {"lamports": be.balance(p.pubkey), "tokens": token_balance(be, p.pubkey, mint)}
                for p in parties}

    before = balances()
    say(f"  mint {mint} ({TOKEN_DECIMALS} decimals); parties funded with {_fmt_tokens(START_TOKENS)} tokens "
        f"and {START_LAMPORTS / 1e9:g} SOL each")

    # 1. offers: worker accounts of the program
    say("offers (worker accounts: price, bond range, accepted verifiers, capabilities hash)")
    fp = meta_hash({"device": "cpu", "demo": True})
    caps = Capabilities(device_class="cpu", kernels=(spec.kernel,))

    def offer(who: _Party, price: int, what: str) -> None:
        _, o = publish_offer(be, program, who.key, mint=mint, price=price, min_bond=BOND, max_bond=MAX_BOND,
                             verifiers=(verifier.pubkey,), fingerprint=fp, capabilities=caps)
        record(what, o)

    offer(honest, HONEST_PRICE, "OFFER  honest worker")
    offer(cheater, CHEAT_PRICE, "OFFER  cheating worker")
    indexer = Indexer(be, program, book={caps.digest(): caps})
    request = JobRequest(kernel=spec.kernel_ref, max_price=10 * 10**TOKEN_DECIMALS, min_bond=BOND,
                         verifier=verifier.pubkey)

    def one_job(job_spec: JobSpec, label: str, *, silent_verifier: bool = False) -> dict[str, Any]:
        offers, _ = indexer.refresh()
        m = match(request, offers, indexer.reputations(), mint=mint)
        if m is None:
            raise InputError(f"no offer qualifies for {request}")
        worker = next(p for p in parties if p.pubkey == m.offer.worker)
        say(f"{label}: job {job_spec.job_id.hex()[:16]}… ({job_spec.kernel_ref}, {job_spec.steps} steps)")
        say(f"  matcher: {m.qualified} of {m.considered} offers qualify; picked {worker.name} "
            f"(price {_fmt_tokens(m.offer.price)}, score {m.score / 10**TOKEN_DECIMALS:.3f})")
        terms = escrow.terms(job_id=job_spec.job_id, spec_hash=bytes(blake3(job_spec.canonical_json()).digest()),
                             consumer=consumer.pubkey, worker=worker.pubkey, verifier=verifier.pubkey, mint=mint,
                             price=m.offer.price, bond=m.bond, commit_window=COMMIT_WINDOW,
                             verdict_window=VERDICT_WINDOW)
        say(f"  terms: price {_fmt_tokens(terms.price)}, bond {_fmt_tokens(terms.bond)}; commit by slot "
            f"{terms.commit_deadline}, verdict by slot {terms.verdict_deadline}")
        record("POST    (consumer: job + vault + price)", escrow.post(terms, consumer.key))
        commitment = commit_fn(job_spec, worker.key, worker is honest)
        commitment.verify_signature()
        record("COMMIT  (worker: bond + root)", escrow.commit(terms, commitment.root, worker.key))
        job = escrow.job(terms)
        if job is None or job.root != commitment.root:
            raise MismatchError("the root read back from the job account is not the worker's commitment")
        beacon = escrow.beacon(terms)
        check_beacon(be, beacon)
        say(f"  beacon: {beacon.source}: {beacon.value.hex()[:16]}…")
        row: dict[str, Any] = {"job_id": job_spec.job_id.hex(), "worker": worker.name, "root": commitment.root.hex(),
                               "beacon": beacon.value.hex(), "beacon_source": beacon.source, "price": terms.price,
                               "bond": terms.bond, "commit_deadline": terms.commit_deadline,
                               "verdict_deadline": terms.verdict_deadline}
        if silent_verifier:
            say("  the verifier never answers")
            be.warp_to(terms.verdict_deadline)
            early = J.send(be, [program.claim(terms, committed=True)], [worker.key])
            record(f"CLAIM   at slot {terms.verdict_deadline} (the deadline)", early, expect_ok=False)
            be.warp_to(terms.verdict_deadline + 1)
            o = record("CLAIM   one slot later (worker paid)", escrow.claim(terms, worker.key))
            row["result"] = "EXPIRED" if J.job_settlement(o.logs) == "EXPIRED" else "?"
            return row
        verdict = verify_fn(commitment, beacon.value, beacon.source, verifier.key)
        result = "PASS" if verdict.passed else "FAIL"
        unjudged = sum(o.detail.startswith(NOT_JUDGED) for o in verdict.failures)  # after a failure, in its run
        say(f"  verdict: {result} ({len(verdict.outcomes)} steps checked, {len(verdict.failures) - unjudged} failed"
            + (f", {unjudged} after them not judged)" if unjudged else ")"))
        o = record(f"VERDICT {result} (verifier alone)", escrow.verdict(terms, verdict, verifier.key))
        row["result"] = result
        row["settled"] = J.job_settlement(o.logs)
        return row

    rounds = [one_job(spec, "job 1")]
    say("the cheating worker undercuts")
    offer(cheater, CHEAT_UNDERCUT, "OFFER  cheating worker (lower price)")

    def variant(k: int, steps: int) -> JobSpec:
        return resolve_spec(JobSpec(kernel=spec.kernel, steps=steps, seed=spec.seed + k,
                                    params=dict(spec.params), version=spec.version))

    rounds.append(one_job(variant(1, spec.steps), "job 2"))
    # the silent verifier's case is about the chain: a shorter job keeps the demo's compute down
    rounds.append(one_job(variant(2, max(SILENT_JOB_MIN_STEPS, spec.steps // 4)), "job 3", silent_verifier=True))

    _, jobs = indexer.refresh()
    reps = indexer.reputations()
    say("chain history (the indexer: the program's transactions; records: its worker accounts)")
    for j in jobs:
        who = next(p.name for p in parties if p.pubkey == j.terms.worker)
        say(f"  job {j.job_id.hex()[:16]}…  {who:<16} {j.status:<8} paid to {j.paid}  "
            f"({len(j.events)} transactions)")
    for p in (honest, cheater):
        r = reps.get(p.pubkey)
        if r is not None:
            say(f"  record {p.name:<16} PASS {r.passes}  FAIL {r.fails}  paid by CLAIM {r.expired}  "
                f"slashed {_fmt_tokens(r.slashed)}  distinct consumers {r.distinct_consumers}  trust {r.trust:.2f}")
    nxt = match(request, indexer.offers(), reps, mint=mint)
    nxt_name = next(p.name for p in parties if nxt is not None and p.pubkey == nxt.offer.worker)
    say(f"  next match for the same request: {nxt_name}")

    after = balances()
    fees = sum(t["fee"] for t in txs)
    say("balances            tokens before →    after        lamports before →      after")
    for p in parties:
        b, a = before[p.name], after[p.name]
        say(f"  {p.name:<16} {_fmt_tokens(b['tokens']):>12} → {_fmt_tokens(a['tokens']):>12}   "
            f"{b['lamports']:>14,} → {a['lamports']:>14,}")
    # reconciliation: tokens only moved between parties (every vault closed); lamports left only as
    # fees and the rent of the records the program keeps (two worker accounts, two pair records)
    locked = 2 * be.rent_exempt(J.WORKER_SIZE) + 2 * be.rent_exempt(J.PAIR_SIZE)
    token_ok = sum(a["tokens"] for a in after.values()) == sum(b["tokens"] for b in before.values())
    lamport_ok = (sum(b["lamports"] for b in before.values()) - sum(a["lamports"] for a in after.values())
                  == fees + locked)
    open_jobs = [j for j in jobs if not j.settled]
    d = {p.name: after[p.name]["tokens"] - before[p.name]["tokens"] for p in parties}
    paid_ok = (d["honest worker"] == rounds[0]["price"] + rounds[2]["price"]
               and d["cheating worker"] == -rounds[1]["bond"]
               and d["consumer"] == -rounds[0]["price"] - rounds[2]["price"] + rounds[1]["bond"])
    ok = ([r["result"] for r in rounds] == ["PASS", "FAIL", "EXPIRED"]
          and [r["worker"] for r in rounds] == ["honest worker", "cheating worker", "honest worker"]
          and token_ok and lamport_ok and paid_ok and not open_jobs)
    say(f"  fees paid: {fees:,} lamports over {len(txs)} transactions; rent kept by the program's records "
        f"(2 worker accounts, 2 pair records): {locked:,}; job and vault accounts closed, their rent returned")
    say(f"  reconciled: tokens {'yes' if token_ok else 'NO'}, lamports {'yes' if lamport_ok else 'NO'}")
    say("result: honest worker PAID, cheater SLASHED, silent verifier's job PAID BY CLAIM" if ok
        else "result: UNEXPECTED — see above")
    return {"backend": be.description, "mint": str(mint), "program": str(program.program_id), "rounds": rounds,
            "transactions": txs, "balances_before": before, "balances_after": after,
            "reputation": {p.name: reps[p.pubkey].to_dict() for p in (honest, cheater) if p.pubkey in reps},
            "fees": fees, "rent_locked": locked, "tokens_reconciled": token_ok, "lamports_reconciled": lamport_ok,
            "ok": ok, "stand_in": commit is None or verify is None}
