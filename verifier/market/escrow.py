"""Escrow for one job, held by the pocv job program (programs/README.md, docs/market.md).

The program keeps the terms and the state in a job account it owns and the money in a vault
token account owned by the job account; it checks every party, deadline and amount itself.
This module is the parties' side: it reads the job account back, checks what a party is about to
accept before it signs, and sends one transaction per step:

1. POST (consumer): the terms, checked against the worker's on-chain offer; the price deposited.
2. COMMIT (the named worker, while ``slot <= commit_deadline``): the worker first checks that the
   job account holds exactly the terms it accepts, then bonds and records the Merkle root.
3. VERDICT (the named verifier alone, while ``slot <= verdict_deadline``): the beacon is the hash
   of a slot after the commit (the program checks it against the SlotHashes sysvar); PASS pays
   price + bond to the worker, FAIL refunds the price and hands the bond to the consumer.
4. CLAIM (anyone, after a deadline): no commit by the commit deadline refunds the consumer; a
   commit and no verdict by the verdict deadline pays the worker (a silent verifier does not
   cost the worker its pay).

A verdict has one signer, so nothing has to be co-signed. A verifier who signs a verdict now for
someone else to submit later signs it against a durable nonce of its own for that one job
(:meth:`Escrow.presign_verdict`: one nonce account per pending settlement, at an address derived
from the verifier and the job, its rent returned when the nonce is withdrawn).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import solders.system_program as sp
from blake3 import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from pocv.errors import ChainError, InputError, MismatchError
from pocv.market import jobprogram as J
from pocv.market import programs as P
from pocv.market.backend import Backend, TxOutcome
from pocv.market.jobprogram import JobAccount, JobProgram, JobState, JobTerms
from pocv.records import Verdict

BEACON_DELAY_SLOTS: Final = 1  # the beacon is the hash of the first slot at least this far after the commit
BEACON_TIMEOUT_S: Final = 60.0  # how long to wait for such a slot on a real cluster
BEACON_POLL_S: Final = 0.4  # about one slot
#: default windows, in slots (400 ms each on mainnet): ~2 minutes to commit, then ~1 hour to judge
COMMIT_WINDOW_SLOTS: Final = 300
VERDICT_WINDOW_SLOTS: Final = 9_000
DEFAULT_CONFIDENCE_PPM: Final = 999_000
NONCE_SEED_CHARS: Final = 32  # Solana's MAX_SEED_LEN: 32 hex digits of the job's address


class EscrowError(MismatchError):
    """The job on chain is not the one the terms describe: refuse to move money into it."""

    reason = "BAD_ESCROW"


class SettlementError(MismatchError):
    """A settlement that must not happen: wrong verdict, wrong party, wrong state or deadline."""

    reason = "BAD_SETTLEMENT"


_KEYS: dict[int, tuple[Keypair, Pubkey, Ed25519PrivateKey]] = {}
_MAX_KEYS: Final = 4_096


def _key(key: Keypair) -> tuple[Keypair, Pubkey, Ed25519PrivateKey]:
    """``key``, its public key and an OpenSSL signer for it, cached: solders re-derives the public
    key on every ``pubkey()`` (~20 us) and signs in ~75 us where OpenSSL takes ~45 us (the same
    Ed25519 signature: it is deterministic). The cache holds the key itself, so an id is never
    reused while cached."""
    hit = _KEYS.get(id(key))
    if hit is not None and hit[0] is key:
        return hit
    if len(_KEYS) >= _MAX_KEYS:
        _KEYS.clear()
    hit = (key, key.pubkey(), Ed25519PrivateKey.from_private_bytes(bytes(key)[:32]))
    _KEYS[id(key)] = hit
    return hit


def pubkey_of(key: Keypair) -> Pubkey:
    """``key.pubkey()``, cached."""
    return _key(key)[1]


def sign_and_send(backend: Backend, ixs: Sequence[Instruction], signers: Sequence[Keypair], *,
                  version: J.MessageVersion = "legacy") -> TxOutcome:
    """Build with the latest blockhash, sign with every signer (the first pays), send."""
    if version != "legacy":
        return J.send(backend, ixs, signers, version=version)
    blockhash = backend.latest_blockhash()
    if len(signers) == 1:  # the payer alone: it is the message's first key
        _, payer, signer = _key(signers[0])
        msg = Message.new_with_blockhash(list(ixs), payer, blockhash)
        if msg.header.num_required_signatures == 1:
            return backend.send(Transaction.populate(msg, [Signature.from_bytes(signer.sign(bytes(msg)))]))
    else:
        msg = Message.new_with_blockhash(list(ixs), pubkey_of(signers[0]), blockhash)
    by_key = {k[1]: k[2] for k in map(_key, signers)}
    wanted = msg.account_keys[: msg.header.num_required_signatures]
    missing = [str(k) for k in wanted if k not in by_key]
    if missing:
        raise InputError(f"the transaction needs signatures of {', '.join(missing)}, which were not given")
    data = bytes(msg)  # sign the message bytes once per signer (Transaction.sign re-derives every public key)
    return backend.send(Transaction.populate(msg, [Signature.from_bytes(by_key[k].sign(data)) for k in wanted]))


def install_program(backend: Backend, payer: Keypair, elf: bytes | None = None,
                    program: Keypair | None = None) -> JobProgram:
    """Deploy the job program (the committed ``programs/pocv_job.so`` by default) through the
    upgradeable loader, ``payer`` being its upgrade authority."""
    program = program or Keypair()
    J.deploy(backend, payer, program, elf if elf is not None else J.program_elf())
    return JobProgram(program.pubkey())


# -- checks --------------------------------------------------------------------------------------


def check_verdict(terms: JobTerms, root: bytes, verdict: Verdict, *,
                  confidence_ppm: int = DEFAULT_CONFIDENCE_PPM) -> None:
    """A verdict counts only when signed by this job's named verifier, for this job and root;
    a PASS only when its detection (exact, for its distinct steps) reaches ``confidence_ppm``;
    a FAIL only when it is evidence against the worker (a signed bundle, or a refusal)."""
    verdict.verify_signature(expected_verifier=bytes(terms.verifier))
    if verdict.job_id != terms.job_id:
        raise SettlementError(f"verdict is for job {verdict.job_id.hex()}, expected {terms.job_id.hex()}")
    if verdict.root != root:
        raise SettlementError(f"verdict is for root {verdict.root.hex()}, expected the committed root {root.hex()}")
    if verdict.passed and verdict.detection * 1_000_000 < confidence_ppm - 1e-6:
        raise SettlementError(f"the verdict checked too little: detection {verdict.detection:.6f} for its "
                              f"{len(verdict.outcomes)} distinct steps, the consumer asks for "
                              f"{confidence_ppm / 1_000_000:.6f}")
    if not verdict.is_evidence:
        raise SettlementError("a FAIL on a response bundle the worker did not sign is not evidence (possibly "
                              "corrupted in transit): fetch the bundle again and judge it anew")


def verdict_digest(verdict: Verdict) -> bytes:
    """What VERDICT records in its instruction data: BLAKE3 of the verdict's signed bytes."""
    return bytes(blake3(verdict.signing_bytes()).digest())


def check_offer(backend: Backend, program: JobProgram, terms: JobTerms) -> J.WorkerAccount:
    """The worker's offer on chain, and the terms inside it (the program checks the same at POST;
    this says which term is wrong before a fee is spent)."""
    acct = program.read_worker(backend, terms.worker)
    if acct is None:
        raise EscrowError(f"worker {terms.worker} has no offer on the job program {program.program_id}")
    o = acct.offer
    problems = []
    if not o.active:
        problems.append("the offer is withdrawn")
    if o.mint != terms.mint:
        problems.append(f"the offer is in mint {o.mint}, the terms in {terms.mint}")
    if terms.price < o.price:
        problems.append(f"price {terms.price} is below the offer's {o.price}")
    if not o.min_bond <= terms.bond <= o.max_bond:
        problems.append(f"bond {terms.bond} is outside the offer's {o.min_bond}..{o.max_bond}")
    if terms.verifier not in o.verifiers:
        problems.append(f"verifier {terms.verifier} is not one the worker accepts")
    if problems:
        raise EscrowError(f"terms do not fit worker {terms.worker}'s offer: " + "; ".join(problems))
    return acct


# -- the beacon ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChainBeacon:
    """32 bytes from the chain, fixed only after the commitment landed: a later slot's hash."""

    slot: int
    value: bytes
    commit_slot: int

    @property
    def source(self) -> str:
        return f"slot:{self.slot}:after:{self.commit_slot}"  # checkable: the hash of that slot, after the commit


def chain_beacon(backend: Backend, commit_slot: int, *, timeout_s: float = BEACON_TIMEOUT_S,
                 poll_s: float = BEACON_POLL_S) -> ChainBeacon:
    """The hash of the first slot at least ``BEACON_DELAY_SLOTS`` after the commit's slot, read from
    the SlotHashes sysvar (the program checks the same sysvar at VERDICT, for 512 slots)."""
    deadline = time.monotonic() + timeout_s
    target = commit_slot + BEACON_DELAY_SLOTS
    while True:
        acct = backend.get_account(P.SLOT_HASHES_SYSVAR)
        if acct is None:
            raise ChainError("the SlotHashes sysvar is missing")
        best: tuple[int, Hash] | None = None
        saw_older = False
        for slot, h in P.iter_slot_hashes(acct.data):  # newest first: stop at the first too-old slot
            if slot < target:
                saw_older = True
                break
            best = (slot, h)
        if best is not None and (saw_older or best[0] == target):
            return ChainBeacon(slot=best[0], value=bytes(best[1]), commit_slot=commit_slot)
        if best is not None:
            raise ChainError(f"slot {target} has left the SlotHashes sysvar: the beacon cannot be read any more")
        if time.monotonic() > deadline:
            raise ChainError(f"no slot after {commit_slot} within {timeout_s} s")
        time.sleep(poll_s)


def check_beacon(backend: Backend, beacon: ChainBeacon) -> None:
    """Anyone can re-read a claimed beacon: it must be the first slot hash after the commit."""
    got = chain_beacon(backend, beacon.commit_slot, timeout_s=0.0)
    if (got.slot, got.value) != (beacon.slot, beacon.value):
        raise MismatchError(f"beacon claims slot {beacon.slot} hash {beacon.value.hex()[:16]}, chain has slot "
                            f"{got.slot} hash {got.value.hex()[:16]}")


def beacon_slot(backend: Backend, job: JobAccount, beacon: bytes) -> int:
    """The slot whose hash is ``beacon``, after the job's commit, from the SlotHashes sysvar."""
    acct = backend.get_account(P.SLOT_HASHES_SYSVAR)
    if acct is None:
        raise ChainError("the SlotHashes sysvar is missing")
    for slot, h in P.iter_slot_hashes(acct.data):
        if slot <= job.commit_slot:
            break
        if bytes(h) == beacon:
            return slot
    raise SettlementError(f"the verdict's beacon {beacon.hex()[:16]}… is not the hash of a slot after the commit "
                          f"(slot {job.commit_slot}) that the SlotHashes sysvar still holds")


# -- durable nonces: one per pending settlement --------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DurableNonce:
    account: Pubkey
    authority: Pubkey
    value: Hash


def nonce_seed(job: Pubkey) -> str:
    return bytes(job).hex()[:NONCE_SEED_CHARS]


def nonce_address(authority: Pubkey, job: Pubkey) -> Pubkey:
    """The durable nonce account ``authority`` uses for the settlement of ``job`` (one per job)."""
    return Pubkey.create_with_seed(authority, nonce_seed(job), P.SYSTEM_PROGRAM_ID)


def read_nonce(backend: Backend, account: Pubkey) -> DurableNonce:
    acct = backend.get_account(account)
    if acct is None or acct.owner != P.SYSTEM_PROGRAM_ID or len(acct.data) != P.NONCE_ACCOUNT_SIZE:
        raise ChainError(f"nonce account {account} does not exist")
    return DurableNonce(account=account, authority=P.nonce_authority(acct.data), value=P.nonce_value(acct.data))


# -- the escrow ----------------------------------------------------------------------------------


class Escrow:
    """One job program on one chain, as the parties use it."""

    def __init__(self, backend: Backend, program: JobProgram | Pubkey) -> None:
        self.backend = backend
        self.program = program if isinstance(program, JobProgram) else JobProgram(program)

    def terms(self, *, job_id: bytes, spec_hash: bytes, consumer: Pubkey, worker: Pubkey, verifier: Pubkey,
              mint: Pubkey, price: int, bond: int, commit_window: int = COMMIT_WINDOW_SLOTS,
              verdict_window: int = VERDICT_WINDOW_SLOTS) -> JobTerms:
        """Terms with deadlines counted in slots from now."""
        now = self.backend.slot()
        return JobTerms(job_id=job_id, spec_hash=spec_hash, consumer=consumer, worker=worker, verifier=verifier,
                        mint=mint, price=price, bond=bond, commit_deadline=now + commit_window,
                        verdict_deadline=now + commit_window + verdict_window)

    def job(self, terms: JobTerms) -> JobAccount | None:
        """The job account (None: never posted, or settled and closed)."""
        return self.program.read_job(self.backend, terms)

    def _job(self, terms: JobTerms, state: JobState, what: str) -> JobAccount:
        job = self.job(terms)
        if job is None:
            raise SettlementError(f"{what}: job {terms.job_id.hex()} has no open account (never posted, or settled)")
        if job.terms != terms:
            raise EscrowError(f"{what}: the job account's terms are not the expected ones: {job.terms} != {terms}")
        if job.state != state:
            raise SettlementError(f"{what}: job {terms.job_id.hex()} is {job.state.name}, expected {state.name}")
        return job

    def post(self, terms: JobTerms, consumer: Keypair, *, source: Pubkey | None = None,
             version: J.MessageVersion = "legacy") -> TxOutcome:
        if pubkey_of(consumer) != terms.consumer:
            raise InputError(f"POST is signed by the consumer {terms.consumer}, got {pubkey_of(consumer)}")
        if terms.commit_deadline <= self.backend.slot():
            raise InputError(f"the commit deadline {terms.commit_deadline} is not after the current slot")
        check_offer(self.backend, self.program, terms)
        return sign_and_send(self.backend, [self.program.post(terms, source=source)], [consumer], version=version)

    def commit(self, terms: JobTerms, root: bytes, worker: Keypair, *, source: Pubkey | None = None,
               version: J.MessageVersion = "legacy") -> TxOutcome:
        """Bond and record ``root``, after checking that the job account holds exactly ``terms``."""
        if pubkey_of(worker) != terms.worker:
            raise InputError(f"COMMIT is signed by the named worker {terms.worker}, got {pubkey_of(worker)}")
        self._job(terms, JobState.POSTED, "COMMIT")
        if self.backend.slot() > terms.commit_deadline:
            raise SettlementError(f"the commit deadline (slot {terms.commit_deadline}) has passed")
        return sign_and_send(self.backend, [self.program.commit(terms, root, source=source)], [worker],
                             version=version)

    def beacon(self, terms: JobTerms, *, timeout_s: float = BEACON_TIMEOUT_S) -> ChainBeacon:
        job = self._job(terms, JobState.COMMITTED, "beacon")
        return chain_beacon(self.backend, job.commit_slot, timeout_s=timeout_s)

    def verdict_instruction(self, terms: JobTerms, verdict: Verdict, *,
                            confidence_ppm: int = DEFAULT_CONFIDENCE_PPM) -> Instruction:
        """VERDICT for ``verdict``, after every check the program cannot make (the verdict's
        signature, job, root, detection and evidence) and the ones it will (state, deadline, beacon)."""
        job = self._job(terms, JobState.COMMITTED, "VERDICT")
        check_verdict(terms, job.root, verdict, confidence_ppm=confidence_ppm)
        if self.backend.slot() > terms.verdict_deadline:
            raise SettlementError(f"the verdict deadline (slot {terms.verdict_deadline}) has passed: "
                                  f"the worker can CLAIM")
        slot = beacon_slot(self.backend, job, verdict.beacon)
        return self.program.verdict(terms, passed=verdict.passed, beacon_slot=slot, digest=verdict_digest(verdict))

    def verdict(self, terms: JobTerms, verdict: Verdict, verifier: Keypair, *,
                confidence_ppm: int = DEFAULT_CONFIDENCE_PPM, version: J.MessageVersion = "legacy") -> TxOutcome:
        if pubkey_of(verifier) != terms.verifier:
            raise InputError(f"VERDICT is signed by the named verifier {terms.verifier}, got {pubkey_of(verifier)}")
        ix = self.verdict_instruction(terms, verdict, confidence_ppm=confidence_ppm)
        return sign_and_send(self.backend, [ix], [verifier], version=version)

    def claim(self, terms: JobTerms, payer: Keypair, *, version: J.MessageVersion = "legacy") -> TxOutcome:
        """CLAIM after a deadline: refund (no commit) or pay the worker (committed, no verdict)."""
        job = self.job(terms)
        if job is None:
            raise SettlementError(f"CLAIM: job {terms.job_id.hex()} has no open account (never posted, or settled)")
        committed = job.state == JobState.COMMITTED
        deadline = terms.verdict_deadline if committed else terms.commit_deadline
        if self.backend.slot() <= deadline:
            raise SettlementError(f"CLAIM: the {'verdict' if committed else 'commit'} deadline (slot {deadline}) "
                                  f"has not passed (slot {self.backend.slot()})")
        return sign_and_send(self.backend, [self.program.claim(job.terms, committed=committed)], [payer],
                             version=version)

    # -- a verdict signed now, submitted later by anyone -----------------------------------------

    def create_nonce(self, terms: JobTerms, authority: Keypair) -> Pubkey:
        """Create (once) ``authority``'s durable nonce account for this job's settlement."""
        job = self.program.addresses(terms).job
        addr = nonce_address(pubkey_of(authority), job)
        if self.backend.get_account(addr) is None:
            ixs = sp.create_nonce_account_with_seed(
                pubkey_of(authority), addr, pubkey_of(authority), nonce_seed(job), pubkey_of(authority),
                self.backend.rent_exempt(P.NONCE_ACCOUNT_SIZE))
            out = sign_and_send(self.backend, ixs, [authority])
            if not out.ok:
                raise ChainError(f"creating nonce account {addr} failed: {out.error}")
        return addr

    def presign_verdict(self, terms: JobTerms, verdict: Verdict, verifier: Keypair, *,
                        confidence_ppm: int = DEFAULT_CONFIDENCE_PPM) -> Transaction:
        """The VERDICT transaction signed by the verifier against its durable nonce for this job
        (created if needed): valid until submitted, whatever blockhashes pass meanwhile, and only
        once (its first instruction advances the nonce). :meth:`close_nonce` returns the nonce
        account's rent afterwards."""
        ix = self.verdict_instruction(terms, verdict, confidence_ppm=confidence_ppm)
        account = self.create_nonce(terms, verifier)
        nonce = read_nonce(self.backend, account)
        vk = pubkey_of(verifier)
        if nonce.authority != vk:
            raise SettlementError(f"nonce account {account} is not the verifier's")
        ixs = [sp.advance_nonce_account(sp.AdvanceNonceAccountParams(nonce_pubkey=account, authorized_pubkey=vk)), ix]
        msg = Message.new_with_blockhash(ixs, vk, nonce.value)
        tx = Transaction.new_unsigned(msg)
        tx.sign([verifier], nonce.value)
        return tx

    def close_nonce(self, terms: JobTerms, authority: Keypair) -> TxOutcome:
        """Withdraw the whole balance of ``authority``'s nonce account for this job (closing it)."""
        job = self.program.addresses(terms).job
        account = nonce_address(pubkey_of(authority), job)
        lamports = self.backend.balance(account)
        ix = sp.withdraw_nonce_account(sp.WithdrawNonceAccountParams(
            nonce_pubkey=account, authorized_pubkey=pubkey_of(authority), to_pubkey=pubkey_of(authority),
            lamports=lamports))
        return sign_and_send(self.backend, [ix], [authority])

    def submit(self, tx: Transaction) -> TxOutcome:
        return self.backend.send(tx)


def program_for(backend: Backend, program_id: Pubkey) -> JobProgram:
    """The job program at ``program_id``, checked to be deployed (an executable account)."""
    acct = backend.get_account(program_id)
    if acct is None or not acct.executable:
        raise ChainError(f"no program is deployed at {program_id}")
    return JobProgram(program_id)


__all__ = [
    "ChainBeacon",
    "Escrow",
    "EscrowError",
    "JobAccount",
    "JobProgram",
    "JobState",
    "JobTerms",
    "SettlementError",
    "beacon_slot",
    "chain_beacon",
    "check_beacon",
    "check_offer",
    "check_verdict",
    "install_program",
    "program_for",
    "verdict_digest",
]
