"""Escrow for one job: a vault token account owned by a 2-of-3 SPL Token multisig.

Lifecycle (docs/protocol.md §12.1), one transaction each on the common path:

1. POST (consumer): create the multisig if this (consumer, worker, verifier, mint) trio has none
   yet, create the vault, deposit the price, memo ``post``.
2. COMMIT (worker): check the multisig, vault and mint first (:func:`check_escrow`), then deposit
   the bond, memo ``commit`` with the Merkle root.
3. SETTLE (verifier + beneficiary): memo ``settle`` with the verdict digest, pay out, close the
   vault (its rent returns to the consumer). PASS pays the worker price + bond; FAIL refunds the
   consumer and slashes the bond to the consumer.
4. TIMEOUT (consumer + worker, no verifier): the price back to the consumer, the bond back to the
   worker.

Addresses derive from public data only: ``vault = create_with_seed(consumer, job_id[:16] hex,
Token)``, ``multisig = create_with_seed(consumer, H(worker, verifier, mint)[:16] hex, Token)``.

Parties that sign at different times exchange a partially signed transaction: the second party
rebuilds the message it expects from the chain and the verdict, compares the bytes, and only
then signs (:func:`cosign`). A durable nonce keeps such a transaction valid across blockhashes.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

import solders.system_program as sp
from blake3 import blake3
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from pocv.errors import ChainError, InputError, MismatchError, SignatureError
from pocv.market import memo as memos
from pocv.market import programs as P
from pocv.market.backend import Backend, TxOutcome, TxRecord
from pocv.records import Verdict

ESCROW_M: Final = 2  # signatures needed out of the three parties
ESCROW_N: Final = 3
SEED_CHARS: Final = 32  # Solana's MAX_SEED_LEN; 32 hex digits = 128 bits of the digest
MULTISIG_CONTEXT: Final = "pocv 2026-11 escrow multisig seed v1"
BOARD_SEED: Final = "pocv-market-board-v1"
BEACON_DELAY_SLOTS: Final = 1  # the beacon is the hash of a slot at least this far after the commit
BEACON_TIMEOUT_S: Final = 60.0  # how long to wait for such a slot on a real cluster
BEACON_POLL_S: Final = 0.4  # about one slot
MAX_PRICE: Final = (1 << 63) - 1  # price + bond must fit the token program's u64

Result = Literal["PASS", "FAIL", "TIMEOUT"]


class EscrowError(MismatchError):
    """The escrow on chain is not the one the terms describe: refuse to move money into it."""

    reason = "BAD_ESCROW"


class SettlementError(MismatchError):
    """A settlement that must not happen: wrong verdict, wrong party, already settled."""

    reason = "BAD_SETTLEMENT"


# -- terms and addresses -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobTerms:
    """What the consumer posts and the worker accepts by bonding."""

    job_id: bytes
    spec_hash: bytes
    kernel: str
    mint: Pubkey
    consumer: Pubkey
    worker: Pubkey
    verifier: Pubkey
    price: int
    bond: int
    deadline: int  # unix seconds; informational: there is no on-chain deadline (docs/protocol.md §13.4)
    device_class: str = "any"  # the consumer's requirement, as matched
    confidence_ppm: int = 999_000  # detection probability wanted from the verifier, parts per million

    def __post_init__(self) -> None:
        for name in ("job_id", "spec_hash"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != 32:
                raise InputError(f"terms.{name} must be 32 bytes")
        if len({self.consumer, self.worker, self.verifier}) != 3:
            raise InputError("consumer, worker and verifier must be three different keys "
                             "(a 2-of-3 escrow with a shared key is a 1-of-2)")
        for name in ("price", "bond", "deadline", "confidence_ppm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"terms.{name} must be a non-negative integer, got {v!r}")
        if not 0 < self.confidence_ppm < 1_000_000:
            raise InputError(f"terms.confidence_ppm must be in 1..999999, got {self.confidence_ppm}")
        if self.price == 0:
            raise InputError("terms.price must be positive")
        if self.price + self.bond > MAX_PRICE:
            raise InputError(f"price + bond must be at most {MAX_PRICE}")
        self.post_memo()  # every field must fit the memo grammar

    @property
    def parties(self) -> tuple[Pubkey, Pubkey, Pubkey]:
        return (self.consumer, self.worker, self.verifier)

    def post_memo(self) -> memos.Memo:
        return memos.make("post", job=memos.b58(self.job_id), spec=memos.b58(self.spec_hash), kernel=self.kernel,
                          dev=self.device_class, conf=self.confidence_ppm,
                          c=str(self.consumer), w=str(self.worker), v=str(self.verifier),
                          price=self.price, bond=self.bond, dl=self.deadline)

    @classmethod
    def from_post_memo(cls, memo: memos.Memo, mint: Pubkey) -> JobTerms:
        if memo.kind != "post":
            raise EscrowError(f"expected a post memo, got {memo.kind!r}")
        return cls(job_id=memo.digest("job"), spec_hash=memo.digest("spec"), kernel=memo.fields["kernel"],
                   mint=mint, consumer=memo.key("c"), worker=memo.key("w"), verifier=memo.key("v"),
                   price=memo.int("price"), bond=memo.int("bond"), deadline=memo.int("dl"),
                   device_class=memo.fields["dev"], confidence_ppm=memo.int("conf"))


def vault_seed(job_id: bytes) -> str:
    return job_id.hex()[:SEED_CHARS]


def multisig_seed(worker: Pubkey, verifier: Pubkey, mint: Pubkey) -> str:
    h = blake3(bytes(worker) + bytes(verifier) + bytes(mint), derive_key_context=MULTISIG_CONTEXT)
    return h.hexdigest()[:SEED_CHARS]


def board_address(mint: Pubkey) -> Pubkey:
    """The market's notice board for ``mint``: every offer and post names it (read-only, unsigned)."""
    return Pubkey.create_with_seed(mint, BOARD_SEED, P.MEMO_PROGRAM_ID)


@dataclass(frozen=True, kw_only=True)
class EscrowAddresses:
    multisig: Pubkey
    multisig_seed: str
    vault: Pubkey
    vault_seed: str
    consumer_ata: Pubkey
    worker_ata: Pubkey
    board: Pubkey

    @classmethod
    def derive(cls, terms: JobTerms) -> EscrowAddresses:
        return _derive(terms)

    @classmethod
    def _derive(cls, terms: JobTerms) -> EscrowAddresses:
        ms_seed = multisig_seed(terms.worker, terms.verifier, terms.mint)
        v_seed = vault_seed(terms.job_id)
        return cls(
            multisig=Pubkey.create_with_seed(terms.consumer, ms_seed, P.TOKEN_PROGRAM_ID), multisig_seed=ms_seed,
            vault=Pubkey.create_with_seed(terms.consumer, v_seed, P.TOKEN_PROGRAM_ID), vault_seed=v_seed,
            consumer_ata=P.associated_token_address(terms.consumer, terms.mint),
            worker_ata=P.associated_token_address(terms.worker, terms.mint),
            board=board_address(terms.mint),
        )


@lru_cache(maxsize=4096)
def _derive(terms: JobTerms) -> EscrowAddresses:
    """Derivation costs two program-address searches (~10 us); terms are immutable, so cache."""
    return EscrowAddresses._derive(terms)


# -- messages ------------------------------------------------------------------------------------


def build_message(ixs: Sequence[Instruction], payer: Pubkey, blockhash: Hash,
                  references: Sequence[Pubkey] = ()) -> Message:
    """A legacy message; ``references`` are appended as read-only unsigned keys (so that
    ``getSignaturesForAddress(reference)`` finds the transaction, as Solana Pay does)."""
    msg = Message.new_with_blockhash(list(ixs), payer, blockhash)
    keys = list(msg.account_keys)
    extra = [r for r in dict.fromkeys(references) if r not in keys]
    if not extra:
        return msg
    h = msg.header
    return Message.new_with_compiled_instructions(
        h.num_required_signatures, h.num_readonly_signed_accounts, h.num_readonly_unsigned_accounts + len(extra),
        keys + extra, blockhash, list(msg.instructions))


_PUBKEYS: dict[int, tuple[Keypair, Pubkey]] = {}
_MAX_PUBKEYS: Final = 4_096


def pubkey_of(key: Keypair) -> Pubkey:
    """``key.pubkey()``, cached: solders re-derives it on every call (~20 us, an ed25519 base-point
    multiplication). The cache holds the key itself, so an id is never reused while cached."""
    hit = _PUBKEYS.get(id(key))
    if hit is not None and hit[0] is key:
        return hit[1]
    if len(_PUBKEYS) >= _MAX_PUBKEYS:
        _PUBKEYS.clear()
    pk = key.pubkey()
    _PUBKEYS[id(key)] = (key, pk)
    return pk


def sign_and_send(backend: Backend, ixs: Sequence[Instruction], signers: Sequence[Keypair],
                  references: Sequence[Pubkey] = ()) -> TxOutcome:
    """Build with the latest blockhash, sign with every signer (the first pays), send."""
    msg = build_message(ixs, pubkey_of(signers[0]), backend.latest_blockhash(), references)
    tx = Transaction.new_unsigned(msg)
    tx.sign(list(signers), msg.recent_blockhash)
    return backend.send(tx)


def cosign(tx: Transaction, expected: Message, key: Keypair) -> Transaction:
    """Sign ``tx`` with ``key`` only if its message is byte for byte the one ``expected``, and
    every signature already on it verifies."""
    got, want = bytes(tx.message), bytes(expected)
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise SettlementError(f"transaction to co-sign is not the expected one: expected {len(want)} bytes "
                              f"(blake3 {blake3(want).hexdigest()[:16]}), got {len(got)} bytes "
                              f"(blake3 {blake3(got).hexdigest()[:16]}), first difference at byte {first}")
    signer_keys = expected.account_keys[: expected.header.num_required_signatures]
    if pubkey_of(key) not in signer_keys:
        raise SettlementError(f"{pubkey_of(key)} is not a required signer of this transaction")
    default = Signature.default()
    for pk, sig, ok in zip(signer_keys, tx.signatures, tx.verify_with_results()):
        if sig != default and not ok:
            raise SignatureError(f"signature of {pk} on the transaction to co-sign does not verify")
    out = Transaction.populate(expected, list(tx.signatures))
    out.partial_sign([key], expected.recent_blockhash)
    return out


# -- checks before money moves ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EscrowState:
    mint: P.MintState
    multisig: P.MultisigState
    vault: P.TokenAccountState
    vault_lamports: int


def _account(backend: Backend, address: Pubkey, what: str, size: int) -> bytes:
    acct = backend.get_account(address)
    if acct is None:
        hint = " (never posted, or already settled and closed)" if what == "vault" else ""
        raise EscrowError(f"{what} {address} does not exist{hint}")
    if acct.owner != P.TOKEN_PROGRAM_ID:
        raise EscrowError(f"{what} {address} is owned by {acct.owner}, expected the SPL Token program "
                          f"{P.TOKEN_PROGRAM_ID}")
    if len(acct.data) != size:
        raise EscrowError(f"{what} {address} has {len(acct.data)} bytes, expected {size}")
    return acct.data


# Per backend: mints that passed with no freeze authority. That can never change (only a freeze
# authority can set one), nor can decimals, owner or initialization; ``supply`` may be stale.
_GOOD_MINTS: weakref.WeakKeyDictionary[Any, dict[Pubkey, P.MintState]] = weakref.WeakKeyDictionary()
_RENT: weakref.WeakKeyDictionary[Any, dict[int, int]] = weakref.WeakKeyDictionary()


def rent_exempt(backend: Backend, size: int) -> int:
    """The backend's rent-exempt minimum for ``size`` bytes, asked once per backend and size."""
    cache = _RENT.setdefault(backend, {})
    if size not in cache:
        cache[size] = backend.rent_exempt(size)
    return cache[size]


def check_mint(backend: Backend, mint: Pubkey, allowed_freeze: frozenset[Pubkey] = frozenset()) -> P.MintState:
    """Classic SPL Token mint (Token-2022 extensions could seize or hook transfers), initialized,
    and no freeze authority unless the caller names it as accepted."""
    cached = _GOOD_MINTS.get(backend, {}).get(mint)
    if cached is not None:
        return cached
    m = P.MintState.decode(_account(backend, mint, "mint", P.MINT_SIZE))
    if not m.initialized:
        raise EscrowError(f"mint {mint} is not initialized")
    if m.freeze_authority is not None and m.freeze_authority not in allowed_freeze:
        raise EscrowError(f"mint {mint} has freeze authority {m.freeze_authority}, which could freeze the vault; "
                          f"expected none")
    if m.freeze_authority is None:
        _GOOD_MINTS.setdefault(backend, {})[mint] = m
    return m


def check_multisig(backend: Backend, terms: JobTerms, address: Pubkey) -> P.MultisigState:
    """2-of-3 of exactly (consumer, worker, verifier). SPL Token itself accepts duplicate signers
    and m > n (docs/protocol.md §12.1), so both are checked here, before anyone bonds."""
    ms = P.MultisigState.decode(_account(backend, address, "multisig", P.MULTISIG_SIZE))
    if not ms.initialized:
        raise EscrowError(f"multisig {address} is not initialized")
    if ms.m > ms.n:
        raise EscrowError(f"multisig {address} needs {ms.m} of {ms.n} signatures: m > n locks the funds forever")
    if len(set(ms.signers)) != len(ms.signers):
        raise EscrowError(f"multisig {address} lists a signer twice: {[str(s) for s in ms.signers]}")
    if (ms.m, ms.n) != (ESCROW_M, ESCROW_N):
        raise EscrowError(f"multisig {address} is {ms.m}-of-{ms.n}, expected {ESCROW_M}-of-{ESCROW_N}")
    if set(ms.signers) != set(terms.parties):
        raise EscrowError(f"multisig {address} signers are {sorted(map(str, ms.signers))}, expected "
                          f"{sorted(map(str, terms.parties))}")
    return ms


def check_escrow(backend: Backend, terms: JobTerms, *, min_amount: int | None = None,
                 allowed_freeze: frozenset[Pubkey] = frozenset()) -> EscrowState:
    """Everything a worker must check before bonding (and a settler before paying out).

    ``min_amount``: the vault must hold at least this much. At least, not exactly: anyone can send
    tokens to any token account, so an exact check would let a stranger block the commit with a
    one-token gift (the extra goes to whoever the settlement pays)."""
    addrs = EscrowAddresses.derive(terms)
    mint = check_mint(backend, terms.mint, allowed_freeze)
    ms = check_multisig(backend, terms, addrs.multisig)
    acct = backend.get_account(addrs.vault)
    vault = P.TokenAccountState.decode(_account(backend, addrs.vault, "vault", P.ACCOUNT_SIZE))
    problems = []
    if vault.mint != terms.mint:
        problems.append(f"mint is {vault.mint}, expected {terms.mint}")
    if vault.owner != addrs.multisig:
        problems.append(f"owner is {vault.owner}, expected the multisig {addrs.multisig}")
    if vault.delegate is not None:
        problems.append(f"has a delegate {vault.delegate} (for {vault.delegated_amount}), expected none")
    if vault.close_authority is not None:
        problems.append(f"has a close authority {vault.close_authority}, expected none")
    if vault.state != P.ACCOUNT_STATE_INITIALIZED:
        problems.append(f"state is {vault.state} (frozen or uninitialized), expected {P.ACCOUNT_STATE_INITIALIZED}")
    if vault.is_native:
        problems.append("is a native (wrapped SOL) account")
    if min_amount is not None and vault.amount < min_amount:
        problems.append(f"holds {vault.amount}, expected at least {min_amount}")
    if problems:
        raise EscrowError(f"vault {addrs.vault}: " + "; ".join(problems))
    assert acct is not None
    return EscrowState(mint=mint, multisig=ms, vault=vault, vault_lamports=acct.lamports)


def check_verdict(terms: JobTerms, root: bytes, verdict: Verdict) -> None:
    """A verdict counts only when signed by this job's registered verifier, for this job and root;
    a PASS only when its detection (exact, for its distinct steps) reaches the terms' confidence;
    a FAIL only when it is evidence against the worker (a signed bundle, or a refusal)."""
    verdict.verify_signature(expected_verifier=bytes(terms.verifier))
    if verdict.job_id != terms.job_id:
        raise SettlementError(f"verdict is for job {verdict.job_id.hex()}, expected {terms.job_id.hex()}")
    if verdict.root != root:
        raise SettlementError(f"verdict is for root {verdict.root.hex()}, expected the committed root {root.hex()}")
    if verdict.passed and verdict.detection * 1_000_000 < terms.confidence_ppm - 1e-6:
        raise SettlementError(f"the verdict checked too little: detection {verdict.detection:.6f} for its "
                              f"{len(verdict.outcomes)} distinct steps, the terms ask for "
                              f"{terms.confidence_ppm / 1_000_000:.6f}")
    if not verdict.is_evidence:
        raise SettlementError("a FAIL on a response bundle the worker did not sign is not evidence (possibly "
                              "corrupted in transit): fetch the bundle again and judge it anew")


def verdict_digest(verdict: Verdict) -> bytes:
    return bytes(blake3(verdict.signing_bytes()).digest())


# -- reading the job back from the chain --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CommitInfo:
    root: bytes
    signature: Signature
    slot: int


@dataclass(frozen=True, kw_only=True)
class ChainBeacon:
    """32 bytes from the chain, fixed only after the commitment landed: a later slot's hash."""

    slot: int
    value: bytes
    commit_slot: int

    @property
    def source(self) -> str:
        return f"slot:{self.slot}:after:{self.commit_slot}"  # checkable: the hash of that slot, after the commit


def memo_of(rec: TxRecord) -> tuple[memos.Memo, tuple[Pubkey, ...]] | None:
    """The pocv memo of a transaction and the keys that signed it (the Memo program checked them)."""
    signers = set(rec.signers)
    for data, named in rec.memos:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            continue
        m = memos.parse(text)
        if m is None:
            continue
        if not all(k in signers for k in named):
            continue  # cannot happen for a landed memo (the program checks), but the indexer trusts nothing
        return m, named
    return None


def lifecycle_records(backend: Backend, vault: Pubkey) -> list[TxRecord]:
    """Landed, successful transactions naming the vault since its latest POST."""
    recs: list[TxRecord] = []
    for sig in backend.signatures_for_address(vault):
        rec = backend.get_transaction(sig)
        if rec is None or not rec.ok:
            continue
        mm = memo_of(rec)
        if mm is not None and mm[0].kind == "post":
            recs = []
        recs.append(rec)
    return recs


def find_commit(backend: Backend, terms: JobTerms) -> CommitInfo | None:
    """The worker's commit: a landed ``commit`` memo for this job signed by the worker, in a
    transaction that actually moved the bond into the vault."""
    addrs = EscrowAddresses.derive(terms)
    for rec in lifecycle_records(backend, addrs.vault):
        mm = memo_of(rec)
        if mm is None:
            continue
        m, named = mm
        if m.kind != "commit" or terms.worker not in named:
            continue
        if m.digest("job") != terms.job_id or rec.token_delta(addrs.vault) != terms.bond:
            continue
        return CommitInfo(root=m.digest("root"), signature=rec.signature, slot=rec.slot)
    return None


def chain_beacon(backend: Backend, commit: CommitInfo, *, timeout_s: float = BEACON_TIMEOUT_S,
                 poll_s: float = BEACON_POLL_S) -> ChainBeacon:
    """The hash of the first slot at least ``BEACON_DELAY_SLOTS`` after the commit's slot, read from
    the SlotHashes sysvar (anyone can check it for 512 slots, and explorers keep it longer)."""
    deadline = time.monotonic() + timeout_s
    target = commit.slot + BEACON_DELAY_SLOTS
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
            return ChainBeacon(slot=best[0], value=bytes(best[1]), commit_slot=commit.slot)
        if best is not None:
            raise ChainError(f"slot {target} has left the SlotHashes sysvar: the beacon cannot be read any more")
        if time.monotonic() > deadline:
            raise ChainError(f"no slot after {commit.slot} within {timeout_s} s")
        time.sleep(poll_s)


def check_beacon(backend: Backend, beacon: ChainBeacon) -> None:
    """Anyone can re-read a claimed beacon: it must be the first slot hash after the commit."""
    got = chain_beacon(backend, CommitInfo(root=bytes(32), signature=Signature.default(), slot=beacon.commit_slot),
                       timeout_s=0.0)
    if (got.slot, got.value) != (beacon.slot, beacon.value):
        raise MismatchError(f"beacon claims slot {beacon.slot} hash {beacon.value.hex()[:16]}, chain has slot "
                            f"{got.slot} hash {got.value.hex()[:16]}")


# -- durable nonces ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DurableNonce:
    account: Pubkey
    authority: Pubkey
    value: Hash


def nonce_address(authority: Pubkey) -> Pubkey:
    return Pubkey.create_with_seed(authority, "pocv-nonce-v1", P.SYSTEM_PROGRAM_ID)


def create_nonce(backend: Backend, authority: Keypair) -> Pubkey:
    """Create (once) the authority's durable nonce account at a derivable address."""
    addr = nonce_address(authority.pubkey())
    if backend.get_account(addr) is None:
        ixs = sp.create_nonce_account_with_seed(
            authority.pubkey(), addr, authority.pubkey(), "pocv-nonce-v1", authority.pubkey(),
            rent_exempt(backend, P.NONCE_ACCOUNT_SIZE))
        out = sign_and_send(backend, ixs, [authority])
        if not out.ok:
            raise ChainError(f"creating nonce account {addr} failed: {out.error}")
    return addr


def read_nonce(backend: Backend, account: Pubkey) -> DurableNonce:
    acct = backend.get_account(account)
    if acct is None or acct.owner != P.SYSTEM_PROGRAM_ID:
        raise ChainError(f"nonce account {account} does not exist")
    return DurableNonce(account=account, authority=P.nonce_authority(acct.data), value=P.nonce_value(acct.data))


# -- instruction sets ----------------------------------------------------------------------------


def post_instructions(backend: Backend, terms: JobTerms) -> list[Instruction]:
    a = EscrowAddresses.derive(terms)
    mint = check_mint(backend, terms.mint)
    ixs: list[Instruction] = []
    if backend.get_account(a.vault) is not None:
        raise EscrowError(f"vault {a.vault} for job {terms.job_id.hex()} already exists")
    if backend.get_account(a.multisig) is None:
        ixs.append(sp.create_account_with_seed(sp.CreateAccountWithSeedParams(
            from_pubkey=terms.consumer, to_pubkey=a.multisig, base=terms.consumer, seed=a.multisig_seed,
            lamports=rent_exempt(backend, P.MULTISIG_SIZE), space=P.MULTISIG_SIZE, owner=P.TOKEN_PROGRAM_ID)))
        ixs.append(P.initialize_multisig2(a.multisig, terms.parties, ESCROW_M))
    else:
        check_multisig(backend, terms, a.multisig)
    ixs += [
        sp.create_account_with_seed(sp.CreateAccountWithSeedParams(
            from_pubkey=terms.consumer, to_pubkey=a.vault, base=terms.consumer, seed=a.vault_seed,
            lamports=rent_exempt(backend, P.ACCOUNT_SIZE), space=P.ACCOUNT_SIZE, owner=P.TOKEN_PROGRAM_ID)),
        P.initialize_account3(a.vault, terms.mint, a.multisig),
        P.transfer_checked(a.consumer_ata, terms.mint, a.vault, terms.consumer, terms.price, mint.decimals),
        P.memo(terms.post_memo().text(), (terms.consumer,)),
    ]
    return ixs


def commit_instructions(terms: JobTerms, root: bytes, decimals: int) -> list[Instruction]:
    a = EscrowAddresses.derive(terms)
    m = memos.make("commit", job=memos.b58(terms.job_id), root=memos.b58(root), bond=terms.bond)
    ixs = []
    if terms.bond:
        ixs.append(P.transfer_checked(a.worker_ata, terms.mint, a.vault, terms.worker, terms.bond, decimals))
    ixs.append(P.memo(m.text(), (terms.worker,)))
    return ixs


@dataclass(frozen=True, kw_only=True)
class Settlement:
    """Who signs a settlement and who receives what."""

    result: Result
    signers: tuple[Pubkey, Pubkey]  # the first one pays the fee
    payouts: tuple[tuple[Pubkey, int], ...]  # (token account, amount)


def plan_settlement(terms: JobTerms, result: Result, vault_amount: int) -> Settlement:
    a = EscrowAddresses.derive(terms)
    if result == "PASS":
        return Settlement(result=result, signers=(terms.verifier, terms.worker),
                          payouts=((a.worker_ata, vault_amount),))
    if result == "FAIL":
        return Settlement(result=result, signers=(terms.verifier, terms.consumer),
                          payouts=((a.consumer_ata, vault_amount),))
    if result == "TIMEOUT":
        refund = min(vault_amount, terms.price)
        pays = [(a.consumer_ata, refund)]
        if vault_amount > refund:
            pays.append((a.worker_ata, vault_amount - refund))
        return Settlement(result=result, signers=(terms.consumer, terms.worker), payouts=tuple(pays))
    raise InputError(f"settlement result must be one of {memos.RESULTS}, got {result!r}")


def settle_instructions(terms: JobTerms, plan: Settlement, *, root: bytes, digest: bytes, decimals: int,
                        nonce: DurableNonce | None = None) -> list[Instruction]:
    a = EscrowAddresses.derive(terms)
    m = memos.make("settle", job=memos.b58(terms.job_id), root=memos.b58(root), result=plan.result,
                   verdict=memos.b58(digest))
    memo_signers = (terms.verifier,) if plan.result != "TIMEOUT" else plan.signers
    ixs: list[Instruction] = []
    if nonce is not None:
        ixs.append(sp.advance_nonce_account(sp.AdvanceNonceAccountParams(
            nonce_pubkey=nonce.account, authorized_pubkey=nonce.authority)))
    ixs.append(P.memo(m.text(), memo_signers))
    for dest, amount in plan.payouts:
        if amount:
            ixs.append(P.transfer_checked(a.vault, terms.mint, dest, a.multisig, amount, decimals, plan.signers))
    ixs.append(P.close_account(a.vault, terms.consumer, a.multisig, plan.signers))
    return ixs


# -- the client ----------------------------------------------------------------------------------


class Escrow:
    """Escrow operations over one backend. Every method that moves money checks first."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def post(self, terms: JobTerms, consumer: Keypair) -> TxOutcome:
        if pubkey_of(consumer) != terms.consumer:
            raise InputError(f"POST must be signed by the consumer {terms.consumer}, got {pubkey_of(consumer)}")
        board = board_address(terms.mint)
        return sign_and_send(self.backend, post_instructions(self.backend, terms), [consumer], [board])

    def commit(self, terms: JobTerms, root: bytes, worker: Keypair,
               allowed_freeze: frozenset[Pubkey] = frozenset()) -> TxOutcome:
        if pubkey_of(worker) != terms.worker:
            raise InputError(f"COMMIT must be signed by the worker {terms.worker}, got {pubkey_of(worker)}")
        if len(root) != 32:
            raise InputError(f"root must be 32 bytes, got {len(root)}")
        state = check_escrow(self.backend, terms, min_amount=terms.price, allowed_freeze=allowed_freeze)
        ixs = commit_instructions(terms, root, state.mint.decimals)
        if self.backend.get_account(EscrowAddresses.derive(terms).worker_ata) is None:
            # no bond, no token account yet: create it now, or a PASS payout would have nowhere to go
            ixs.insert(0, P.create_associated_token_account_idempotent(terms.worker, terms.worker, terms.mint))
        return sign_and_send(self.backend, ixs, [worker])

    # settlement ---------------------------------------------------------------------------

    def settlement_message(self, terms: JobTerms, *, result: Result, root: bytes, digest: bytes,
                           nonce_account: Pubkey | None = None) -> Message:
        """The settlement message, rebuilt from the chain alone: both signers call this and compare."""
        state = check_escrow(self.backend, terms)
        committed = find_commit(self.backend, terms)
        if result != "TIMEOUT":
            if committed is None:
                raise SettlementError(f"job {terms.job_id.hex()} has no commit on chain; only TIMEOUT can settle it")
            if committed.root != root:
                raise SettlementError(f"settling root {root.hex()}, but the worker committed {committed.root.hex()}")
        plan = plan_settlement(terms, result, state.vault.amount)
        nonce = read_nonce(self.backend, nonce_account) if nonce_account is not None else None
        if nonce is not None and nonce.authority not in plan.signers:
            raise SettlementError(f"nonce authority {nonce.authority} is not a signer of this settlement")
        ixs = settle_instructions(terms, plan, root=root, digest=digest, decimals=state.mint.decimals, nonce=nonce)
        blockhash = nonce.value if nonce is not None else self.backend.latest_blockhash()
        return build_message(ixs, plan.signers[0], blockhash)

    def _result_and_digest(self, terms: JobTerms, root: bytes, verdict: Verdict | None) -> tuple[Result, bytes]:
        if verdict is None:
            return "TIMEOUT", b""
        check_verdict(terms, root, verdict)
        return ("PASS" if verdict.passed else "FAIL"), verdict_digest(verdict)

    def start_settlement(self, terms: JobTerms, *, root: bytes, verdict: Verdict | None, key: Keypair,
                         nonce_account: Pubkey | None = None) -> Transaction:
        """First signature of a settlement (the verifier's, or the consumer's for a TIMEOUT)."""
        result, digest = self._result_and_digest(terms, root, verdict)
        msg = self.settlement_message(terms, result=result, root=root, digest=digest, nonce_account=nonce_account)
        tx = Transaction.new_unsigned(msg)
        if pubkey_of(key) not in msg.account_keys[: msg.header.num_required_signatures]:
            raise SettlementError(f"{pubkey_of(key)} is not a signer of a {result} settlement")
        tx.partial_sign([key], msg.recent_blockhash)
        return tx

    def cosign_settlement(self, tx: Transaction, terms: JobTerms, *, root: bytes, verdict: Verdict | None,
                          key: Keypair, nonce_account: Pubkey | None = None) -> Transaction:
        """Second signature: rebuild the expected message independently, compare bytes, sign."""
        result, digest = self._result_and_digest(terms, root, verdict)
        expected = self.settlement_message(terms, result=result, root=root, digest=digest,
                                           nonce_account=nonce_account)
        return cosign(tx, expected, key)

    def submit(self, tx: Transaction) -> TxOutcome:
        if not tx.is_signed():
            raise SettlementError("settlement is missing a signature")
        return self.backend.send(tx)

    def settle(self, terms: JobTerms, *, root: bytes, verdict: Verdict, verifier: Keypair,
               cosigner: Keypair) -> TxOutcome:
        tx = self.start_settlement(terms, root=root, verdict=verdict, key=verifier)
        return self.submit(self.cosign_settlement(tx, terms, root=root, verdict=verdict, key=cosigner))

    def timeout(self, terms: JobTerms, *, consumer: Keypair, worker: Keypair) -> TxOutcome:
        committed = find_commit(self.backend, terms)
        root = committed.root if committed is not None else b""
        tx = self.start_settlement(terms, root=root, verdict=None, key=consumer)
        return self.submit(self.cosign_settlement(tx, terms, root=root, verdict=None, key=worker))

    def beacon(self, terms: JobTerms) -> ChainBeacon:
        committed = find_commit(self.backend, terms)
        if committed is None:
            raise ChainError(f"job {terms.job_id.hex()} has no commit on chain yet")
        return chain_beacon(self.backend, committed)
