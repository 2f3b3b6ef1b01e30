"""Client of the pocv job program (programs/README.md; source programs/job/job.c).

The program holds each job's terms and state in a job account it owns, and the payment and
the bond in a vault token account owned by the job account. Instructions:

* OFFER (worker): create or update the worker's account -- its offer (mint, price, bond range,
  device fingerprint hash, capabilities hash, accepted verifiers) and its statistics, which only
  the program writes (PASS and FAIL counts, value settled, slashed total, distinct consumers).
* POST (consumer): create the job account and its vault, deposit the price; the terms must fit
  the worker's offer.
* COMMIT (the named worker, by the commit deadline): deposit the bond, record the Merkle root
  and the commit slot.
* VERDICT (the named verifier, by the verdict deadline): PASS pays vault (price + bond) to the
  worker, FAIL pays it to the consumer; the beacon slot must follow the commit slot and be in
  the SlotHashes sysvar. The vault and the job account are closed, their rent to the consumer.
* CLAIM (anyone, after a deadline): no commit by the commit deadline refunds the consumer; no
  verdict by the verdict deadline pays the worker.

Deadlines are slots: COMMIT is allowed while ``slot <= commit_deadline``, VERDICT while ``slot
<= verdict_deadline``; CLAIM from the slot after. This module builds the instructions (SPL Token
accounts through solders/solana-py's helpers), derives the addresses, decodes the accounts and
the program's error codes, and deploys the program through the upgradeable loader.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache, lru_cache
from pathlib import Path
from typing import Final, Literal

import solders.system_program as sp
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction, VersionedTransaction

from pocv.errors import ChainError, InputError, MalformedError
from pocv.market.backend import Backend, TxOutcome

TOKEN_PROGRAM_ID: Final = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
SYSTEM_PROGRAM_ID: Final = Pubkey.from_string("11111111111111111111111111111111")
SLOT_HASHES_SYSVAR: Final = Pubkey.from_string("SysvarS1otHashes111111111111111111111111111")
NATIVE_MINT: Final = Pubkey.from_string("So11111111111111111111111111111111111111112")
LOADER_UPGRADEABLE_ID: Final = Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")
RENT_SYSVAR: Final = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
CLOCK_SYSVAR: Final = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")

# -- limits, as the program has them (programs/job/job.c) ----------------------------------------
MAX_VERIFIERS: Final = 4  # verifiers an offer may accept
MAX_DEADLINE_SLOTS: Final = 4_320_000  # a verdict deadline at most ~20 days of 400 ms slots after POST
MIN_VERDICT_WINDOW: Final = 2  # slots from the commit deadline to the verdict deadline, at least
U64_MAX: Final = (1 << 64) - 1  # price + bond must fit SPL Token's u64 amount

JOB_SIZE: Final = 304
WORKER_SIZE: Final = 360
PAIR_SIZE: Final = 72
TOKEN_ACCOUNT_SIZE: Final = 165
KIND_JOB, KIND_WORKER, KIND_PAIR = 1, 2, 3

# -- the upgradeable loader (solana_sdk::bpf_loader_upgradeable) --------------------------------
BUFFER_METADATA_SIZE: Final = 37  # UpgradeableLoaderState::size_of_buffer_metadata()
PROGRAM_ACCOUNT_SIZE: Final = 36  # UpgradeableLoaderState::size_of_program()
PROGRAMDATA_METADATA_SIZE: Final = 45
WRITE_CHUNK: Final = 900  # ELF bytes per Write instruction: one legacy transaction stays < 1,232 bytes
MAX_PROGRAM_BYTES: Final = 1 << 20  # a job program larger than this is not ours

_IX_OFFER, _IX_POST, _IX_COMMIT, _IX_VERDICT, _IX_CLAIM = 0, 1, 2, 3, 4
# read-only accounts every instruction of a kind names (AccountMeta is an immutable value)
_TOKEN_RO: Final = AccountMeta(TOKEN_PROGRAM_ID, is_signer=False, is_writable=False)
_SYSTEM_RO: Final = AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False)
_SLOT_HASHES_RO: Final = AccountMeta(SLOT_HASHES_SYSVAR, is_signer=False, is_writable=False)


class JobState(IntEnum):
    """States a job account holds while it exists (it is closed when settled)."""

    POSTED = 1
    COMMITTED = 2


_JOB_STATES: Final = {s.value: s for s in JobState}  # JobState(v) without the enum's call machinery

Settlement = Literal["PASSED", "FAILED", "REFUNDED", "EXPIRED"]
SETTLEMENTS: Final[tuple[Settlement, ...]] = ("PASSED", "FAILED", "REFUNDED", "EXPIRED")


class ProgramError(IntEnum):
    """The program's custom error codes (``custom program error: 0x..``), job.c's ``E_*``."""

    INSTRUCTION = 1  # unknown instruction or wrong data length
    ACCOUNTS = 2  # too few (or too many) accounts
    SIGNER = 3  # a required signature is missing
    ADDRESS = 4  # an account is not the one the job, the seeds or the program ids name
    OWNER = 5  # an account is owned by the wrong program
    WRITABLE = 6  # an account that must be writable is not
    STATE = 7  # the job is not in the state this instruction needs
    DEADLINE = 8  # the deadline has passed
    TOO_EARLY = 9  # a CLAIM before its deadline passed
    TERMS = 10  # terms refused: parties, price, overflow, deadlines; or an offer's own terms
    OFFER = 11  # the terms do not fit the worker's offer
    MINT = 12  # not a classic SPL Token mint, not initialized, or wrapped SOL
    TOKEN_ACCOUNT = 13  # a payout account that is not the entitled party's account of the mint
    BEACON = 14  # the beacon slot is not after the commit, or not in SlotHashes
    INITIALIZED = 15  # an address to be created is already in use
    PARTY = 16  # the signer is not the party the job names
    RENT = 17  # the Rent sysvar's exemption threshold is not 2 years


_CUSTOM: Final = re.compile(r"Custom\((\d+)\)")


def program_error(error: str | None) -> ProgramError | None:
    """The job program's error code in a transaction error string, if it is one of ours."""
    if error is None:
        return None
    m = _CUSTOM.search(error)
    if m is None:
        return None
    try:
        return ProgramError(int(m.group(1)))
    except ValueError:
        return None


def _bytes32(name: str, v: object) -> bytes:
    if not isinstance(v, bytes) or len(v) != 32:
        raise InputError(f"{name} must be 32 bytes, got {v!r:.80}")
    return v


def _u64(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= U64_MAX:
        raise InputError(f"{name} must be an integer in 0..2^64-1, got {v!r}")
    return v


# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobTerms:
    """What the consumer posts and the worker accepts by committing."""

    job_id: bytes
    spec_hash: bytes
    consumer: Pubkey
    worker: Pubkey
    verifier: Pubkey
    mint: Pubkey
    price: int
    bond: int
    commit_deadline: int  # slot: COMMIT while slot <= this
    verdict_deadline: int  # slot: VERDICT while slot <= this

    def __post_init__(self) -> None:
        _bytes32("terms.job_id", self.job_id)
        _bytes32("terms.spec_hash", self.spec_hash)
        for name in ("price", "bond", "commit_deadline", "verdict_deadline"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= U64_MAX:  # the common case without formatting a name
                _u64(f"terms.{name}", v)
        if len({self.consumer, self.worker, self.verifier}) != 3:
            raise InputError("consumer, worker and verifier must be three different keys")
        if self.price == 0:
            raise InputError("terms.price must be positive")
        if self.price + self.bond > U64_MAX:
            raise InputError(f"price + bond must be at most {U64_MAX}, got {self.price + self.bond}")
        if self.verdict_deadline < self.commit_deadline + MIN_VERDICT_WINDOW:
            raise InputError(f"the verdict deadline ({self.verdict_deadline}) must be at least "
                             f"{MIN_VERDICT_WINDOW} slots after the commit deadline ({self.commit_deadline})")


@dataclass(frozen=True, kw_only=True)
class Offer:
    """A worker's offer, as OFFER writes it."""

    mint: Pubkey
    price: int  # the least price the worker accepts
    min_bond: int
    max_bond: int
    verifiers: tuple[Pubkey, ...]
    fingerprint: bytes = bytes(32)  # hash of the device fingerprint
    capabilities: bytes = bytes(32)  # hash of the capabilities document (kernels, devices)
    active: bool = True

    def __post_init__(self) -> None:
        for name in ("price", "min_bond", "max_bond"):
            _u64(f"offer.{name}", getattr(self, name))
        _bytes32("offer.fingerprint", self.fingerprint)
        _bytes32("offer.capabilities", self.capabilities)
        if not 1 <= len(self.verifiers) <= MAX_VERIFIERS:
            raise InputError(f"an offer names 1..{MAX_VERIFIERS} verifiers, got {len(self.verifiers)}")
        if self.price == 0 or self.min_bond > self.max_bond:
            raise InputError("an offer needs price > 0 and min_bond <= max_bond")
        if self.mint == NATIVE_MINT:
            raise InputError("wrapped SOL is not supported as a job mint")


@dataclass(frozen=True, kw_only=True)
class JobAccount:
    """A job account as the program stores it (304 bytes)."""

    address: Pubkey
    state: JobState
    bump: int
    vault_bump: int
    terms: JobTerms
    vault: Pubkey
    commit_slot: int
    root: bytes

    @classmethod
    def decode(cls, address: Pubkey, data: bytes) -> JobAccount:
        if len(data) != JOB_SIZE or data[0] != KIND_JOB:
            raise MalformedError(f"a job account is {JOB_SIZE} bytes of kind {KIND_JOB}, "
                                 f"got {len(data)} bytes of kind {data[:1].hex() or 'none'}")
        if data[1] not in (1, 2):
            raise MalformedError(f"job state {data[1]} is not POSTED (1) or COMMITTED (2)")
        (commit_slot,) = struct.unpack_from("<Q", data, 40)
        terms, vault = _decode_terms(data[8:40] + data[48:272])
        return cls(address=address, state=_JOB_STATES[data[1]], bump=data[2], vault_bump=data[3], terms=terms,
                   vault=vault, commit_slot=commit_slot, root=data[272:304])


#: entries of the caches that hold one job's records (a job is read a few times between POST and
#: settlement; every entry is objects Python's cycle collector walks, so the caches stay small)
_JOB_CACHE: Final = 256


@lru_cache(maxsize=_JOB_CACHE)
def _decode_terms(raw: bytes) -> tuple[JobTerms, Pubkey]:
    """A job account's terms and vault from its bytes 8..40 and 48..272 (they stay the same from
    POST to settlement: decoded once per job, the record is immutable)."""
    price, bond, cd, vd = struct.unpack_from("<4Q", raw, 0)
    keys = [Pubkey.from_bytes(raw[32 + 32 * i: 64 + 32 * i]) for i in range(5)]
    terms = JobTerms(job_id=raw[192:224], spec_hash=raw[224:256], consumer=keys[0], worker=keys[1],
                     verifier=keys[2], mint=keys[3], price=price, bond=bond, commit_deadline=cd, verdict_deadline=vd)
    return terms, keys[4]


@dataclass(frozen=True, kw_only=True)
class WorkerAccount:
    """A worker's account: its offer and the statistics the program keeps (360 bytes)."""

    address: Pubkey
    worker: Pubkey
    bump: int
    offer: Offer
    passes: int
    fails: int
    expired: int  # jobs paid by CLAIM after the verdict deadline (no verdict)
    lapsed: int  # jobs refunded by CLAIM because the worker did not commit
    value_settled: int  # sum of prices of PASSed jobs
    slashed: int  # sum of bonds lost on FAIL
    bonded: int  # sum of bonds at stake in jobs with a verdict
    distinct_consumers: int  # consumers with at least one PASS (one pair account each)
    created_slot: int

    @classmethod
    def decode(cls, address: Pubkey, data: bytes) -> WorkerAccount:
        if len(data) != WORKER_SIZE or data[0] != KIND_WORKER:
            raise MalformedError(f"a worker account is {WORKER_SIZE} bytes of kind {KIND_WORKER}, got {len(data)}")
        n = data[3]
        if not 1 <= n <= MAX_VERIFIERS:
            raise MalformedError(f"worker account names {n} verifiers")
        passes, fails, expired, lapsed, value, slashed, bonded, distinct, created = struct.unpack_from(
            "<9Q", data, 32)
        worker, offer = _decode_offer(data[2:4] + data[8:32] + data[104:232 + 32 * n])
        return cls(address=address, worker=worker, bump=data[1], offer=offer, passes=passes, fails=fails,
                   expired=expired, lapsed=lapsed, value_settled=value, slashed=slashed, bonded=bonded,
                   distinct_consumers=distinct, created_slot=created)


@lru_cache(maxsize=1_024)
def _decode_offer(raw: bytes) -> tuple[Pubkey, Offer]:
    """A worker account's key and offer from its bytes 2..4, 8..32 and 104..232+32n (the
    statistics around them change at every settlement; the offer only at OFFER)."""
    active, n = raw[0], raw[1]
    price, min_bond, max_bond = struct.unpack_from("<3Q", raw, 2)
    worker, mint = Pubkey.from_bytes(raw[26:58]), Pubkey.from_bytes(raw[58:90])
    verifiers = tuple(Pubkey.from_bytes(raw[154 + 32 * i: 186 + 32 * i]) for i in range(n))
    return worker, Offer(mint=mint, price=price, min_bond=min_bond, max_bond=max_bond, verifiers=verifiers,
                         fingerprint=raw[90:122], capabilities=raw[122:154], active=active == 1)


@dataclass(frozen=True, kw_only=True)
class PairAccount:
    """The (worker, consumer) record: ``counted`` once the consumer has given the worker a PASS."""

    worker: Pubkey
    consumer: Pubkey
    bump: int
    counted: bool

    @classmethod
    def decode(cls, data: bytes) -> PairAccount:
        if len(data) != PAIR_SIZE or data[0] != KIND_PAIR:
            raise MalformedError(f"a pair account is {PAIR_SIZE} bytes of kind {KIND_PAIR}, got {len(data)}")
        return cls(worker=Pubkey.from_bytes(data[8:40]), consumer=Pubkey.from_bytes(data[40:72]), bump=data[1],
                   counted=data[2] == 1)


# -- addresses and instructions ------------------------------------------------------------------


@dataclass(frozen=True)
class JobProgram:
    """The job program deployed at ``program_id``: addresses and instructions."""

    program_id: Pubkey

    def job_address(self, consumer: Pubkey, job_id: bytes) -> tuple[Pubkey, int]:
        return Pubkey.find_program_address([b"job", bytes(consumer), _bytes32("job_id", job_id)], self.program_id)

    def vault_address(self, job: Pubkey) -> tuple[Pubkey, int]:
        return Pubkey.find_program_address([b"vault", bytes(job)], self.program_id)

    def worker_address(self, worker: Pubkey) -> tuple[Pubkey, int]:
        return _worker_address(self.program_id, worker)

    def pair_address(self, worker: Pubkey, consumer: Pubkey) -> tuple[Pubkey, int]:
        return _pair_address(self.program_id, worker, consumer)

    def addresses(self, terms: JobTerms) -> JobAddresses:
        """The job's addresses (four program-address searches, ~30 us each: cached per terms, and
        per terms object: hashing the terms costs more than the look-up by identity)."""
        hit = _ADDRESSES_BY_ID.get(id(terms))
        if hit is not None and hit[0] is terms and (hit[1] is self or hit[1] == self):
            return hit[2]
        a = _addresses(self, terms)
        if len(_ADDRESSES_BY_ID) >= _MAX_ADDRESSES_BY_ID:
            _ADDRESSES_BY_ID.clear()
        _ADDRESSES_BY_ID[id(terms)] = (terms, self, a)  # holds the terms: an id is not reused while cached
        return a

    def offer(self, worker: Pubkey, offer: Offer) -> Instruction:
        acct, bump = self.worker_address(worker)
        verifiers = b"".join(bytes(v) for v in offer.verifiers) + bytes(32 * (MAX_VERIFIERS - len(offer.verifiers)))
        data = (struct.pack("<BBBB4xQQQ", _IX_OFFER, int(offer.active), len(offer.verifiers), bump, offer.price,
                            offer.min_bond, offer.max_bond)
                + bytes(offer.mint) + offer.fingerprint + offer.capabilities + verifiers)
        return Instruction(self.program_id, data, [
            AccountMeta(worker, is_signer=True, is_writable=True),
            AccountMeta(acct, is_signer=False, is_writable=True),
            _SYSTEM_RO,
        ])

    def post(self, terms: JobTerms, *, source: Pubkey | None = None) -> Instruction:
        """POST: ``source`` is the consumer's token account (its associated one by default)."""
        a = self.addresses(terms)
        data = (struct.pack("<BBBB4xQQQQ", _IX_POST, a.job_bump, a.vault_bump, a.pair_bump, terms.price, terms.bond,
                            terms.commit_deadline, terms.verdict_deadline)
                + terms.job_id + terms.spec_hash + bytes(terms.worker) + bytes(terms.verifier))
        return Instruction(self.program_id, data, [  # AccountMeta(key, is_signer, is_writable)
            AccountMeta(terms.consumer, True, True),
            AccountMeta(a.job, False, True),
            AccountMeta(a.vault, False, True),
            AccountMeta(source or token_account(terms.consumer, terms.mint), False, True),
            AccountMeta(terms.mint, False, False),
            AccountMeta(a.worker_account, False, False),
            AccountMeta(a.pair, False, True),
            _TOKEN_RO,
            _SYSTEM_RO,
        ])

    def commit(self, terms: JobTerms, root: bytes, *, source: Pubkey | None = None) -> Instruction:
        a = self.addresses(terms)
        return Instruction(self.program_id, struct.pack("<B7x", _IX_COMMIT) + _bytes32("root", root), [
            AccountMeta(terms.worker, True, False),
            AccountMeta(a.job, False, True),
            AccountMeta(a.vault, False, True),
            AccountMeta(source or token_account(terms.worker, terms.mint), False, True),
            _TOKEN_RO,
        ])

    def verdict(self, terms: JobTerms, *, passed: bool, beacon_slot: int, digest: bytes,
                dest: Pubkey | None = None) -> Instruction:
        """VERDICT: ``dest`` is the paid party's token account (the worker's on PASS, the
        consumer's on FAIL; their associated ones by default); ``digest`` the verdict record's."""
        a = self.addresses(terms)
        paid = terms.worker if passed else terms.consumer
        data = struct.pack("<BB6xQ", _IX_VERDICT, int(passed), _u64("beacon_slot", beacon_slot))
        return Instruction(self.program_id, data + _bytes32("digest", digest), [
            AccountMeta(terms.verifier, True, False),
            AccountMeta(a.job, False, True),
            AccountMeta(a.vault, False, True),
            AccountMeta(dest or token_account(paid, terms.mint), False, True),
            AccountMeta(terms.consumer, False, True),
            AccountMeta(a.worker_account, False, True),
            AccountMeta(a.pair, False, True),
            _SLOT_HASHES_RO,
            _TOKEN_RO,
        ])

    def claim(self, terms: JobTerms, *, committed: bool, dest: Pubkey | None = None) -> Instruction:
        """CLAIM: pays the consumer (no commit) or the worker (``committed``, no verdict)."""
        a = self.addresses(terms)
        paid = terms.worker if committed else terms.consumer
        return Instruction(self.program_id, struct.pack("<B7x", _IX_CLAIM), [
            AccountMeta(a.job, False, True),
            AccountMeta(a.vault, False, True),
            AccountMeta(dest or token_account(paid, terms.mint), False, True),
            AccountMeta(terms.consumer, False, True),
            AccountMeta(a.worker_account, False, True),
            _TOKEN_RO,
        ])

    # -- reading --------------------------------------------------------------------------------

    def read_job(self, backend: Backend, terms: JobTerms) -> JobAccount | None:
        """The job account, or None when it does not exist (never posted, or settled)."""
        address = self.addresses(terms).job
        acct = backend.get_account(address)
        if acct is None or acct.owner != self.program_id:
            return None
        return _decode_job(address, acct.data)

    def read_worker(self, backend: Backend, worker: Pubkey) -> WorkerAccount | None:
        address, _ = self.worker_address(worker)
        acct = backend.get_account(address)
        if acct is None or acct.owner != self.program_id:
            return None
        return _decode_worker(address, acct.data)


@lru_cache(maxsize=_JOB_CACHE)
def _decode_job(address: Pubkey, data: bytes) -> JobAccount:
    """The account read fresh each time, its bytes decoded once (records are immutable)."""
    return JobAccount.decode(address, data)


@lru_cache(maxsize=_JOB_CACHE)  # a worker account's bytes change at every settlement
def _decode_worker(address: Pubkey, data: bytes) -> WorkerAccount:
    return WorkerAccount.decode(address, data)


@lru_cache(maxsize=4_096)
def _pair_address(program_id: Pubkey, worker: Pubkey, consumer: Pubkey) -> tuple[Pubkey, int]:
    return Pubkey.find_program_address([b"pair", bytes(worker), bytes(consumer)], program_id)


@lru_cache(maxsize=4_096)
def _worker_address(program_id: Pubkey, worker: Pubkey) -> tuple[Pubkey, int]:
    return Pubkey.find_program_address([b"worker", bytes(worker)], program_id)


_MAX_ADDRESSES_BY_ID: Final = _JOB_CACHE
_ADDRESSES_BY_ID: dict[int, tuple[JobTerms, JobProgram, JobAddresses]] = {}


@lru_cache(maxsize=_JOB_CACHE)
def _addresses(program: JobProgram, terms: JobTerms) -> JobAddresses:
    job, job_bump = program.job_address(terms.consumer, terms.job_id)
    vault, vault_bump = program.vault_address(job)
    worker_acct, _ = program.worker_address(terms.worker)
    pair, pair_bump = program.pair_address(terms.worker, terms.consumer)
    return JobAddresses(job=job, job_bump=job_bump, vault=vault, vault_bump=vault_bump, worker_account=worker_acct,
                        pair=pair, pair_bump=pair_bump)


@dataclass(frozen=True, kw_only=True)
class JobAddresses:
    job: Pubkey
    job_bump: int
    vault: Pubkey
    vault_bump: int
    worker_account: Pubkey
    pair: Pubkey
    pair_bump: int


@lru_cache(maxsize=4_096)
def token_account(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The associated token account of ``owner`` for ``mint`` (classic SPL Token; cached)."""
    return get_associated_token_address(owner, mint)


def job_settlement(logs: Sequence[str]) -> Settlement | None:
    """How a transaction's logs say a job ended (the program logs ``pocv: PASSED`` etc.)."""
    for line in logs:
        s = _SETTLEMENT_LOGS.get(line)
        if s is not None:
            return s
    return None


_SETTLEMENT_LOGS: Final[dict[str, Settlement]] = {f"Program log: pocv: {s}": s for s in SETTLEMENTS}


# -- sending -------------------------------------------------------------------------------------

MessageVersion = Literal["legacy", "v0"]


def build_transaction(ixs: Sequence[Instruction], signers: Sequence[Keypair], blockhash: Hash, *,
                      version: MessageVersion = "legacy") -> Transaction | VersionedTransaction:
    """Sign ``ixs`` with every signer (the first pays), as a legacy or a v0 message."""
    payer = signers[0].pubkey()
    if version == "legacy":
        msg = Message.new_with_blockhash(list(ixs), payer, blockhash)
        tx = Transaction.new_unsigned(msg)
        tx.sign(list(signers), blockhash)
        return tx
    if version == "v0":
        return VersionedTransaction(MessageV0.try_compile(payer, list(ixs), [], blockhash), list(signers))
    raise InputError(f"message version must be 'legacy' or 'v0', got {version!r}")


def send(backend: Backend, ixs: Sequence[Instruction], signers: Sequence[Keypair], *,
         version: MessageVersion = "legacy") -> TxOutcome:
    tx = build_transaction(ixs, signers, backend.latest_blockhash(), version=version)
    return backend.send(tx)


# -- deployment through the upgradeable loader -------------------------------------------------

PROGRAM_FILE: Final = "pocv_job.so"  # built by programs/build.py, shipped beside this module


@cache
def program_elf() -> bytes:
    """The committed build of the job program (``pocv/market/pocv_job.so``)."""
    path = Path(__file__).resolve().parent / PROGRAM_FILE  # resolved: the strict editable install links files
    try:
        elf = path.read_bytes()
    except OSError as e:
        raise ChainError(f"the job program's build {path} is missing ({e.strerror}): "
                         f"run python programs/build.py in a checkout") from e
    if not elf.startswith(b"\x7fELF") or len(elf) > MAX_PROGRAM_BYTES:
        raise ChainError(f"{path} is not a program ELF of at most {MAX_PROGRAM_BYTES} bytes")
    return elf



def _loader_ix(data: bytes, metas: list[AccountMeta]) -> Instruction:
    return Instruction(LOADER_UPGRADEABLE_ID, data, metas)


def programdata_address(program_id: Pubkey) -> Pubkey:
    return Pubkey.find_program_address([bytes(program_id)], LOADER_UPGRADEABLE_ID)[0]


def deploy(backend: Backend, payer: Keypair, program: Keypair, elf: bytes, *,
           buffer: Keypair | None = None) -> list[TxOutcome]:
    """Deploy ``elf`` at ``program``'s address: a buffer (InitializeBuffer, Write...), then
    DeployWithMaxDataLen (which runs the loader's ELF checks and the verifier). ``payer`` is the
    upgrade authority. Returns every transaction's outcome; raises ChainError on the first failure."""
    if not elf.startswith(b"\x7fELF") or len(elf) > MAX_PROGRAM_BYTES:
        raise InputError(f"not a program ELF of at most {MAX_PROGRAM_BYTES} bytes")
    buffer = buffer or Keypair()
    authority = payer.pubkey()
    outs: list[TxOutcome] = []

    def run(ixs: list[Instruction], signers: list[Keypair], what: str) -> None:
        out = send(backend, ixs, signers)
        outs.append(out)
        if not out.ok:
            raise ChainError(f"deploying the job program: {what} failed: {out.error}")

    size = BUFFER_METADATA_SIZE + len(elf)
    run([sp.create_account(sp.CreateAccountParams(
            from_pubkey=authority, to_pubkey=buffer.pubkey(), lamports=backend.rent_exempt(size), space=size,
            owner=LOADER_UPGRADEABLE_ID)),
         _loader_ix(struct.pack("<I", 0), [AccountMeta(buffer.pubkey(), is_signer=False, is_writable=True),
                                           AccountMeta(authority, is_signer=False, is_writable=False)])],
        [payer, buffer], "creating the buffer")
    for off in range(0, len(elf), WRITE_CHUNK):
        chunk = elf[off: off + WRITE_CHUNK]
        run([_loader_ix(struct.pack("<IIQ", 1, off, len(chunk)) + chunk,
                        [AccountMeta(buffer.pubkey(), is_signer=False, is_writable=True),
                         AccountMeta(authority, is_signer=True, is_writable=False)])],
            [payer], f"writing bytes {off}..{off + len(chunk)}")
    max_len = 2 * len(elf)  # room for upgrades
    run([sp.create_account(sp.CreateAccountParams(
            from_pubkey=authority, to_pubkey=program.pubkey(), lamports=backend.rent_exempt(PROGRAM_ACCOUNT_SIZE),
            space=PROGRAM_ACCOUNT_SIZE, owner=LOADER_UPGRADEABLE_ID)),
         _loader_ix(struct.pack("<IQ", 2, max_len), [
             AccountMeta(authority, is_signer=True, is_writable=True),
             AccountMeta(programdata_address(program.pubkey()), is_signer=False, is_writable=True),
             AccountMeta(program.pubkey(), is_signer=False, is_writable=True),
             AccountMeta(buffer.pubkey(), is_signer=False, is_writable=True),
             AccountMeta(RENT_SYSVAR, is_signer=False, is_writable=False),
             AccountMeta(CLOCK_SYSVAR, is_signer=False, is_writable=False),
             AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
             AccountMeta(authority, is_signer=True, is_writable=False),
         ])],
        [payer, program], "DeployWithMaxDataLen")
    return outs
