"""A whole marketplace round on the embedded chain, for ``pocv demo``.

:func:`run_market_demo` is the entry point. The caller supplies the compute side as two
callbacks, so the market layer stays free of kernels and provers:

* ``commit(spec, worker_key, honest) -> Commitment`` runs the job (honestly, or as a cheater)
  and returns the worker's signed commitment;
* ``verify(commitment, beacon, beacon_source, verifier_key) -> Verdict`` challenges the worker
  with ``beacon`` -- 32 bytes taken from the chain *after* the commit transaction landed --
  collects the response, checks it and returns the signed verdict.

:func:`engine_callbacks` builds both from the real engine, given a prover factory.

Without callbacks, the clearly labelled stand-ins of :mod:`pocv.testing.market` are used (a
fixed "honest" root; the stand-in verifier fails any other root), which exercise every chain
step but no computation.

The round: a consumer, an honest worker, a cheating worker and a verifier get SOL and tokens;
both workers publish offers; the consumer posts a job and the matcher picks the honest worker;
it commits, the verifier draws the beacon from the chain, verifies, and settles PASS with the
worker co-signing a byte-compared, durable-nonce settlement. The cheater then undercuts the
price, wins the next job, is caught, and its bond is slashed to the consumer. The indexer
rebuilds both jobs and the reputations from chain history; balances before and after are printed
and every token and lamport is accounted for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TextIO

from blake3 import blake3
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.errors import ChainError, InputError, MismatchError
from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.market import programs as P
from pocv.market.backend import Backend, LiteSVMBackend, TxOutcome
from pocv.market.escrow import Escrow, JobTerms, check_beacon, create_nonce, find_commit
from pocv.market.indexer import Indexer, reputations
from pocv.market.market import JobRequest, Offer, match, publish_offer
from pocv.market.tokens import create_mint, fund, token_balance
from pocv.records import Challenge, Commitment, Verdict, meta_hash

CommitFn = Callable[[JobSpec, Keypair, bool], Commitment]
VerifyFn = Callable[[Commitment, bytes, str, Keypair], Verdict]


class ProverLike(Protocol):
    """What :func:`engine_callbacks` needs of a worker (``pocv.prover.Prover`` is one)."""

    def run(self, spec: JobSpec) -> Commitment: ...

    def respond(self, challenge: Challenge) -> Any: ...

TOKEN_DECIMALS: Final = 6
START_TOKENS: Final = 100 * 10**TOKEN_DECIMALS  # each party starts with 100 tokens
START_LAMPORTS: Final = 2 * 10**9  # and 2 SOL
HONEST_PRICE: Final = 5 * 10**TOKEN_DECIMALS
CHEAT_PRICE: Final = 6 * 10**TOKEN_DECIMALS
CHEAT_UNDERCUT: Final = 3 * 10**TOKEN_DECIMALS
BOND: Final = 10 * 10**TOKEN_DECIMALS
DEADLINE_S: Final = 3_600
PARTY_NAMES: Final = ("consumer", "honest worker", "cheating worker", "verifier")


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
                    out: TextIO | None = None, backend: Backend | None = None,
                    keys: Mapping[str, Keypair] | None = None) -> dict[str, Any]:
    """Run the round; print a narrative to ``out`` (if given); return a JSON-able summary with
    ``ok`` True when the honest worker was paid, the cheater slashed and every balance reconciles.

    ``keys`` may name any of "consumer", "honest worker", "cheating worker", "verifier" (fresh
    keys otherwise). Job 1 runs ``spec``; job 2 the same kernel and size with ``seed + 1``."""
    spec = spec or resolve_spec(JobSpec(kernel="gemm-int8", steps=64, seed=2026, params={"n": 64}))
    commit_fn: CommitFn
    verify_fn: VerifyFn
    if commit is None or verify is None:  # no computation: the labelled stand-ins
        from pocv.testing import market as stand_in  # the labelled stand-ins, only without an engine

        commit_fn = commit or stand_in.stand_in_commit
        verify_fn = verify or stand_in.stand_in_verify
    else:
        commit_fn, verify_fn = commit, verify
    be: Backend = backend or LiteSVMBackend()

    def say(line: str) -> None:
        if out is not None:
            out.write(line + "\n")

    escrow = Escrow(be)
    txs: list[dict[str, Any]] = []

    def record(what: str, o: TxOutcome) -> TxOutcome:
        txs.append({"step": what, "signature": str(o.signature), "ok": o.ok, "fee": o.fee,
                    "compute_units": o.compute_units, "slot": o.slot, "error": o.error})
        if not o.ok:
            raise ChainError(f"{what} failed on chain: {o.error}")
        say(f"  {what:<34} slot {o.slot:>6}  fee {o.fee:>6} lamports  {o.compute_units:>6} CU  "
            f"{str(o.signature)[:16]}…")
        return o

    say(f"market — {be.description}")
    authority = Keypair()
    be.airdrop(authority.pubkey(), START_LAMPORTS)
    mint = create_mint(be, authority, decimals=TOKEN_DECIMALS)
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

    nonce = create_nonce(be, verifier.key)  # the verifier's durable nonce for pre-signed settlements
    say(f"  verifier's durable nonce account {nonce} (rent {be.rent_exempt(P.NONCE_ACCOUNT_SIZE):,} lamports)")
    before = balances()
    say(f"  mint {mint} ({TOKEN_DECIMALS} decimals); parties funded with {_fmt_tokens(START_TOKENS)} tokens "
        f"and {START_LAMPORTS / 1e9:g} SOL each")

    # 1. offers
    say("offers")
    fp = meta_hash({"device": "cpu", "demo": True})
    kernel = spec.kernel
    record("honest worker offer", publish_offer(be, Offer(worker=honest.pubkey, device_class="cpu", fingerprint=fp,
                                                          price=HONEST_PRICE, bond=BOND, kernels=(kernel,)),
                                                honest.key, mint))
    record("cheating worker offer", publish_offer(be, Offer(worker=cheater.pubkey, device_class="cpu",
                                                            fingerprint=fp, price=CHEAT_PRICE, bond=BOND,
                                                            kernels=(kernel,)), cheater.key, mint))
    indexer = Indexer(be, mint)
    request = JobRequest(kernel=spec.kernel_ref, max_price=10 * 10**TOKEN_DECIMALS, min_bond=BOND)

    def one_job(job_spec: JobSpec, label: str) -> dict[str, Any]:
        offers, jobs = indexer.refresh()
        m = match(request, offers, reputations(jobs))
        if m is None:
            raise InputError(f"no offer qualifies for {request}")
        worker = next(p for p in parties if p.pubkey == m.offer.worker)
        say(f"{label}: job {job_spec.job_id.hex()[:16]}… ({job_spec.kernel_ref}, {job_spec.steps} steps)")
        say(f"  matcher: {m.qualified} of {m.considered} offers qualify; picked {worker.name} "
            f"(price {_fmt_tokens(m.offer.price)}, score {m.score / 10**TOKEN_DECIMALS:.3f})")
        terms = JobTerms(job_id=job_spec.job_id, spec_hash=bytes(blake3(job_spec.canonical_json()).digest()),
                         kernel=job_spec.kernel_ref, mint=mint, consumer=consumer.pubkey, worker=worker.pubkey,
                         verifier=verifier.pubkey, price=m.offer.price, bond=m.offer.bond, deadline=DEADLINE_S,
                         device_class=request.device_class or "any",
                         confidence_ppm=round(request.confidence * 1_000_000))
        record("POST   (consumer: vault+deposit)", escrow.post(terms, consumer.key))
        commitment = commit_fn(job_spec, worker.key, worker is honest)
        commitment.verify_signature()
        record("COMMIT (worker: bond+root)", escrow.commit(terms, commitment.root, worker.key))
        # the beacon: a slot hash from after the commit landed; the verifier reads the commit from chain
        committed = find_commit(be, terms)
        if committed is None or committed.root != commitment.root:
            raise MismatchError("the commit read back from the chain is not the worker's commitment")
        beacon = escrow.beacon(terms)
        check_beacon(be, beacon)
        say(f"  beacon: {beacon.source}: {beacon.value.hex()[:16]}…")
        verdict = verify_fn(commitment, beacon.value, beacon.source, verifier.key)
        result = "PASS" if verdict.passed else "FAIL"
        say(f"  verdict: {result} ({len(verdict.outcomes)} steps checked, {len(verdict.failures)} failed)")
        # partial signing: the verifier signs first (durable nonce), the co-signer rebuilds and compares
        tx = escrow.start_settlement(terms, root=commitment.root, verdict=verdict, key=verifier.key,
                                     nonce_account=nonce)
        cosigner = worker if verdict.passed else consumer
        tx = escrow.cosign_settlement(tx, terms, root=commitment.root, verdict=verdict, key=cosigner.key,
                                      nonce_account=nonce)
        say(f"  {cosigner.name} rebuilt the settlement, compared {len(bytes(tx.message))} message bytes, signed")
        record(f"SETTLE {result} (verifier+{cosigner.name.split()[0]})", escrow.submit(tx))
        return {"job_id": job_spec.job_id.hex(), "worker": worker.name, "result": result, "root": commitment.root.hex(),
                "beacon": beacon.value.hex(), "beacon_source": beacon.source, "price": terms.price, "bond": terms.bond}

    rounds = [one_job(spec, "job 1")]
    # the cheater undercuts; with one PASS the honest worker's trust is 2/3, the newcomer's 1/2
    record("cheating worker undercuts", publish_offer(be, Offer(worker=cheater.pubkey, device_class="cpu",
                                                                fingerprint=fp, price=CHEAT_UNDERCUT, bond=BOND,
                                                                kernels=(kernel,)), cheater.key, mint))
    spec2 = resolve_spec(JobSpec(kernel=spec.kernel, steps=spec.steps, seed=spec.seed + 1, params=dict(spec.params),
                    version=spec.version))
    rounds.append(one_job(spec2, "job 2"))

    offers, jobs = indexer.refresh()
    reps = reputations(jobs)
    say("chain history (rebuilt by the indexer from signatures, memos and token movements)")
    for j in jobs:
        who = next(p.name for p in parties if p.pubkey == j.terms.worker)
        say(f"  job {j.job_id.hex()[:16]}…  {who:<16} {j.status:<5} paid {j.paid}  anomalies {len(j.anomalies)}")
    for p in (honest, cheater):
        r = reps.get(p.pubkey)
        if r is not None:
            say(f"  reputation {p.name:<16} PASS {r.passes}  FAIL {r.fails}  slashed {_fmt_tokens(r.slashed)}  "
                f"trust {r.trust:.2f}")
    nxt = match(request, offers, reps)
    nxt_name = next(p.name for p in parties if nxt is not None and p.pubkey == nxt.offer.worker)
    say(f"  next match for the same request: {nxt_name}")

    after = balances()
    fees = sum(t["fee"] for t in txs)
    say("balances            tokens before →    after        lamports before →      after")
    for p in parties:
        b, a = before[p.name], after[p.name]
        say(f"  {p.name:<16} {_fmt_tokens(b['tokens']):>12} → {_fmt_tokens(a['tokens']):>12}   "
            f"{b['lamports']:>14,} → {a['lamports']:>14,}")
    # reconciliation: tokens only moved between parties; lamports left only as fees and locked rent
    ms_rent = be.rent_exempt(P.MULTISIG_SIZE) * 2  # one multisig per (consumer, worker, verifier) trio
    token_ok = sum(a["tokens"] for a in after.values()) == sum(b["tokens"] for b in before.values())
    lamport_ok = (sum(b["lamports"] for b in before.values()) - sum(a["lamports"] for a in after.values())
                  == fees + ms_rent)
    paid_ok = (after["honest worker"]["tokens"] - before["honest worker"]["tokens"] == rounds[0]["price"]
               and before["cheating worker"]["tokens"] - after["cheating worker"]["tokens"] == rounds[1]["bond"])
    ok = (rounds[0]["result"] == "PASS" and rounds[1]["result"] == "FAIL" and rounds[1]["worker"] == "cheating worker"
          and token_ok and lamport_ok and paid_ok)
    say(f"  fees paid: {fees:,} lamports over {len(txs)} transactions; rent locked in 2 multisigs: {ms_rent:,}")
    say(f"  reconciled: tokens {'yes' if token_ok else 'NO'}, lamports {'yes' if lamport_ok else 'NO'}")
    say("result: honest worker PAID, cheater SLASHED" if ok else "result: UNEXPECTED — see above")
    return {"backend": be.description, "mint": str(mint), "rounds": rounds, "transactions": txs,
            "balances_before": before, "balances_after": after,
            "reputation": {p.name: reps[p.pubkey].to_dict() for p in (honest, cheater) if p.pubkey in reps},
            "fees": fees, "tokens_reconciled": token_ok, "lamports_reconciled": lamport_ok, "ok": ok,
            "stand_in": commit is None or verify is None}
