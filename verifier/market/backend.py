"""Chain backends behind one small synchronous interface.

:class:`Backend` is what the escrow, market and indexer need from a chain: send a transaction
(a failed transaction comes back as a :class:`TxOutcome` value, never as an exception), read
accounts, list the transactions that touched an address, read one transaction with its token
balances before and after. Transport trouble raises :class:`~pocv.errors.ChainError`.

:class:`LiteSVMBackend` is the embedded default: ``solders.litesvm.LiteSVM`` in process, made to
behave like a chain where the escrow needs it -- one slot (and one new blockhash, recorded in the
SlotHashes sysvar) per landed transaction, and an address -> signatures index with pre/post
lamport and token balances per transaction, as an RPC node's ``getSignaturesForAddress`` and
``getTransaction`` give. The RPC backend lives in :mod:`pocv.market.rpc`.
"""

from __future__ import annotations

import base64
import functools
import importlib.metadata
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from types import FunctionType
from typing import Any, Final, Literal, Protocol, TypeVar

from solders.account import Account
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from pocv.errors import ChainError
from pocv.market.programs import (
    ACCOUNT_SIZE,
    SLOT_HASHES_SYSVAR,
    TOKEN_PROGRAM_ID,
    classic_token_elf,
    decode_slot_hashes,
)

MAX_SLOT_HASHES: Final = 512  # entries the SlotHashes sysvar keeps (as on a real cluster)
# The embedded chain writes only the newest entries into LiteSVM's sysvar (it costs per entry on
# every clock change); :meth:`LiteSVMBackend.slot_hash` answers for all MAX_SLOT_HASHES.
SYSVAR_SLOT_HASHES: Final = 64
CLOCK_SYSVAR: Final = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
_SYSVARS_READ: Final = frozenset({SLOT_HASHES_SYSVAR, CLOCK_SYSVAR})
MAX_SIGNATURES_PER_ADDRESS: Final = 100_000  # the embedded index keeps at most this many per address
MAX_CACHED_BALANCES: Final = 1_024  # token balance objects the index keeps for reuse (cleared when full)
MAX_KNOWN_ACCOUNTS: Final = 100_000  # account heads the index remembers between transactions (cleared when full)
_NO_SLOT_HASHES: Final[list[tuple[int, Hash]]] = []
_RANDOM_BATCH: Final = 4_096  # bytes of OS randomness drawn at once for slot hashes (128 slots)
TokenBuild = Literal["p-token", "classic"]
SNAPSHOT_VERSION: Final = 1
# sysvars and builtins come from LiteSVM itself; upgradeable programs are loaded again from their ELF
_NOT_SNAPSHOT_OWNERS: Final = frozenset({Pubkey.from_string("Sysvar1111111111111111111111111111111111111"),
                                         Pubkey.from_string("NativeLoader1111111111111111111111111111111"),
                                         Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111")})


@dataclass(frozen=True, kw_only=True)
class AccountView:
    """An account as read from the chain (a copy, not a live view)."""

    lamports: int
    owner: Pubkey
    data: bytes
    executable: bool = False


@dataclass(frozen=True, kw_only=True)
class TokenBalance:
    """A token account's balance as ``getTransaction`` reports it (pre or post)."""

    account: Pubkey
    mint: Pubkey
    owner: Pubkey
    amount: int


@dataclass(frozen=True, kw_only=True)
class TxOutcome:
    """What happened to a sent transaction. ``landed``: it was executed and charged a fee."""

    signature: Signature
    ok: bool
    landed: bool
    error: str | None
    fee: int
    compute_units: int
    slot: int
    logs: tuple[str, ...] = ()
    raw_error: object = field(default=None, compare=False, repr=False)  # the solders error, where there is one


@dataclass(frozen=True, kw_only=True)
class TxRecord:
    """A landed transaction as an indexer sees it (``getTransaction``)."""

    signature: Signature
    slot: int
    message: Message | MessageV0  # a v0 message's keys: its static keys (address lookup tables are not read)
    error: str | None
    fee: int
    compute_units: int
    pre_lamports: tuple[int, ...]
    post_lamports: tuple[int, ...]
    pre_token: tuple[TokenBalance, ...]
    post_token: tuple[TokenBalance, ...]
    logs: tuple[str, ...] = ()
    # a v0 message's looked-up addresses (meta.loadedAddresses), writable ones first
    loaded_writable: tuple[Pubkey, ...] = ()
    loaded_readonly: tuple[Pubkey, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @cached_property
    def account_keys(self) -> tuple[Pubkey, ...]:
        """Every key the transaction used: the message's static keys, then the looked-up ones
        (solders builds a new list on every access: keep one)."""
        return tuple(self.message.account_keys) + self.loaded_writable + self.loaded_readonly

    @property
    def signers(self) -> tuple[Pubkey, ...]:
        return self.account_keys[: self.message.header.num_required_signatures]

    def token_delta(self, account: Pubkey) -> int:
        """Change of ``account``'s token amount in this transaction (0 if not a token account)."""
        pre = sum(b.amount for b in self.pre_token if b.account == account)
        post = sum(b.amount for b in self.post_token if b.account == account)
        return post - pre


_R = TypeVar("_R", AccountView, TokenBalance, TxOutcome, TxRecord)
for _cls in (AccountView, TokenBalance, TxOutcome, TxRecord):  # _record_of skips __init__: nothing may need it
    assert not hasattr(_cls, "__post_init__"), _cls


class Backend(Protocol):
    """The chain, as the market layer uses it."""

    @property
    def description(self) -> str: ...

    @property
    def token_build(self) -> str: ...

    def latest_blockhash(self) -> Hash: ...

    def send(self, tx: Transaction | VersionedTransaction) -> TxOutcome: ...

    def get_account(self, address: Pubkey) -> AccountView | None: ...

    def balance(self, address: Pubkey) -> int: ...

    def rent_exempt(self, size: int) -> int: ...

    def airdrop(self, address: Pubkey, lamports: int) -> None: ...

    def slot(self) -> int: ...

    def signatures_for_address(self, address: Pubkey) -> list[Signature]:
        """Signatures of landed transactions naming ``address``, oldest first."""
        ...

    def get_transaction(self, signature: Signature) -> TxRecord | None: ...

    def close(self) -> None: ...


_new = object.__new__


def _record_of(cls: type[_R], **fields: Any) -> _R:
    """A frozen record built from values this module made itself, without the generated
    ``__init__`` (one store per field through ``object.__setattr__``: 2-5 us a record on the
    per-transaction path). Only for the records below, which have no ``__post_init__``."""
    obj = _new(cls)
    obj.__dict__.update(fields)
    return obj


def slot_hashes(backend: Backend) -> list[tuple[int, Hash]]:
    """The SlotHashes sysvar, newest first (read like any account: works on every backend)."""
    acct = backend.get_account(SLOT_HASHES_SYSVAR)
    if acct is None:
        raise ChainError("the SlotHashes sysvar is missing")
    return decode_slot_hashes(acct.data)


def _writable_indices(header: Any, n: int, loaded_writable: int = 0) -> tuple[int, ...]:
    """Indices of the writable keys of a message with ``n`` static keys (from its header, as the
    runtime reads it), then of its ``loaded_writable`` looked-up writable keys."""
    return _writable(header.num_required_signatures, header.num_readonly_signed_accounts,
                     header.num_readonly_unsigned_accounts, n, loaded_writable)


@lru_cache(maxsize=1_024)
def _writable(signed: int, ro_signed: int, ro_unsigned: int, n: int, loaded_writable: int) -> tuple[int, ...]:
    return (tuple(i for i in range(n) if i < signed - ro_signed or signed <= i < n - ro_unsigned)
            + tuple(range(n, n + loaded_writable)))


ALT_META_SIZE: Final = 56  # an address lookup table's header; its addresses follow, 32 bytes each


def lookup_table_addresses(data: bytes) -> list[Pubkey]:
    """The addresses an address lookup table account holds."""
    body = data[ALT_META_SIZE:]
    return [Pubkey.from_bytes(body[i: i + 32]) for i in range(0, len(body) - len(body) % 32, 32)]


def token_balances(keys: Sequence[Pubkey], accounts: Sequence[AccountView | None]) -> tuple[TokenBalance, ...]:
    out = []
    for key, acct in zip(keys, accounts):
        if acct is not None and acct.owner == TOKEN_PROGRAM_ID and len(acct.data) == ACCOUNT_SIZE:
            d = acct.data
            out.append(TokenBalance(account=key, mint=Pubkey.from_bytes(d[0:32]), owner=Pubkey.from_bytes(d[32:64]),
                                    amount=int.from_bytes(d[64:72], "little")))
    return tuple(out)


# A landed transaction as the embedded index keeps it until someone reads it: signature, slot,
# message, error, fee, units, pre and post (lamports, token account head) per key, logs, looked-up
# keys (writable, read-only), every key. The TxRecord is built from it on the first read.
_Pending = tuple[Signature, int, "Message | MessageV0", "str | None", int, int, tuple[tuple[int, "bytes | None"], ...],
                 tuple[tuple[int, "bytes | None"], ...], tuple[str, ...], tuple[Pubkey, ...], tuple[Pubkey, ...],
                 tuple[Pubkey, ...]]
_TOKEN_HEAD: Final = 72  # a token account's mint, owner and amount


@dataclass
class _Index:
    records: dict[Signature, TxRecord | _Pending] = field(default_factory=dict)
    # the signed transaction and the solders error
    raw: dict[Signature, tuple[Transaction | VersionedTransaction, object]] = field(default_factory=dict)
    #: every landed signature, oldest first, and per address the positions of its signatures in
    #: that list as 8-byte integers in a bytearray: an object Python's cycle collector never
    #: walks, however long the history (a list per address was two more for every job)
    order: list[Signature] = field(default_factory=list)
    by_address: dict[Pubkey, bytearray] = field(default_factory=dict)

    def add(self, sig: Signature, keys: Sequence[Pubkey]) -> None:
        pos = len(self.order).to_bytes(8, "little")
        self.order.append(sig)
        by_address = self.by_address
        for k in keys:
            at = by_address.get(k)
            if at is None:
                by_address[k] = bytearray(pos)
            elif len(at) < 8 * MAX_SIGNATURES_PER_ADDRESS:
                at += pos

    def signatures(self, address: Pubkey) -> list[Signature]:
        at = self.by_address.get(address)
        order = self.order
        return [] if at is None else [order[i] for i in memoryview(at).cast("Q")]


class _EmbeddedSVM(LiteSVM):
    """solders' LiteSVM as the embedded chain holds it: reading SlotHashes through it (an account
    read, a simulation, a transaction sent past the backend) first puts back the slot hashes the
    backend parked (see LiteSVMBackend._flush); every call that is not a read (set_account,
    airdrop, add_program, a transaction sent past the backend, ...) first makes the backend
    forget the account states it remembers (see LiteSVMBackend.send)."""

    def __init__(self, restore: Callable[[], None], forget: Callable[[], None]) -> None:
        self._restore = restore
        self._forget = forget
        super().__init__()

    def get_account(self, address: Pubkey) -> Account | None:
        if address == SLOT_HASHES_SYSVAR:
            self._restore()
        return super().get_account(address)

    def get_slot_hashes(self) -> list[tuple[int, Hash]]:
        self._restore()
        return super().get_slot_hashes()

    def simulate_transaction(self, tx: Transaction | VersionedTransaction) -> Any:
        self._restore()
        return super().simulate_transaction(tx)

    def send_transaction(self, tx: Transaction | VersionedTransaction) -> Any:
        self._restore()
        self._forget()
        return super().send_transaction(tx)


# LiteSVM's methods that change nothing; every other public method may change accounts
_SVM_READERS: Final = frozenset({
    "epoch_stake", "epoch_total_stake", "get_account", "get_balance", "get_clock", "get_epoch_rewards",
    "get_epoch_schedule", "get_last_restart_slot", "get_program_accounts", "get_rent", "get_sigverify",
    "get_slot_hashes", "get_slot_history", "get_stake_history", "get_transaction", "latest_blockhash",
    "minimum_balance_for_rent_exemption", "simulate_transaction"})


def _forgetting(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: _EmbeddedSVM, *args: Any, **kwargs: Any) -> Any:
        self._forget()
        return method(self, *args, **kwargs)

    return call


for _name, _method in list(vars(LiteSVM).items()):
    if (isinstance(_method, FunctionType) and not _name.startswith("_") and _name not in _SVM_READERS
            and _name not in vars(_EmbeddedSVM)):
        setattr(_EmbeddedSVM, _name, _forgetting(_method))


class LiteSVMBackend:
    """The embedded chain: LiteSVM in process. No validator, no network.

    ``token_program``: ``"p-token"`` (LiteSVM's default: a build of the rewrite that mainnet runs
    at ``Tokenkeg...`` since epoch 971, May 2026, SIMD-0266) or ``"classic"`` (the SPL Token build
    mainnet ran until then, and solana-bankrun 0.4 still runs). ``index=False`` turns off the
    address index (benchmarks of raw throughput); the escrow works either way, the indexer needs it.
    """

    def __init__(self, *, token_program: TokenBuild = "p-token", index: bool = True,  # noqa: S107
                 start_slot: int = 1_000) -> None:
        # what each account held after the last transaction that wrote it (lamports, token head),
        # for the index's "before" of the next one: only a transaction's writable accounts change,
        # and anything else that changes an account goes through self.svm, which clears this
        self._known: dict[Pubkey, tuple[int, bytes | None]] = {}
        self._sysvars: set[Pubkey] = set()  # never remembered
        self.svm: LiteSVM = _EmbeddedSVM(self._restore_slot_hashes, self._known.clear)
        if token_program == "classic":  # noqa: S105
            self.svm.add_program(TOKEN_PROGRAM_ID, classic_token_elf())
        elif token_program != "p-token":  # noqa: S105
            raise ValueError(f"token_program must be 'p-token' or 'classic', got {token_program!r}")
        self._token_build: TokenBuild = token_program
        self._indexing = index
        self._index = _Index()
        self._slot = start_slot
        self._start_slot = start_slot
        self._touched: set[Pubkey] = set()  # accounts outside any transaction (airdrops): for snapshots
        self._hashes: list[tuple[int, Hash]] = []
        self._dirty = True  # LiteSVM's SlotHashes is not the newest (a slot passed since it was written)
        self._written: list[tuple[int, Hash]] = []  # the slot hashes last written into LiteSVM
        self._parked = False  # LiteSVM's SlotHashes is empty for now; _written goes back before any read
        self._clock_slot = -1
        # sysvars and programs: accounts whose data the index never copies (only their lamports count)
        self._no_data: set[Pubkey] = set(_SYSVARS_READ)
        self._random = b""  # OS randomness for slot hashes, drawn 4 KiB at a time; the next 32 bytes at:
        self._random_at = _RANDOM_BATCH
        self._inner: Any = getattr(self.svm, "_inner", self.svm)  # the Rust object behind solders' wrapper
        self._balances: dict[Pubkey, tuple[bytes, TokenBalance]] = {}  # last balance seen per token account
        self._push_slot_hash()
        self._flush()

    # -- chain-like behaviour ---------------------------------------------------------------

    def _push_slot_hash(self) -> None:
        # A real slot hash is the bank hash: unpredictable before the slot ends. LiteSVM's
        # blockhashes are a public hash chain (predictable), so the embedded chain draws each
        # slot's hash from the OS's CSPRNG instead.
        at = self._random_at
        if at >= _RANDOM_BATCH:
            self._random, at = os.urandom(_RANDOM_BATCH), 0
        self._random_at = at + 32
        self._hashes.insert(0, (self._slot, Hash(self._random[at:at + 32])))
        del self._hashes[MAX_SLOT_HASHES:]
        self._dirty = True

    # LiteSVM parses every sysvar again on each sysvar change (a clock tick, a new blockhash):
    # with 64 slot hashes in SlotHashes that is ~45 us more per change, two changes per
    # transaction. So SlotHashes is written only for what reads it (a transaction naming it, an
    # account read) and is parked empty while the clock and the blockhash move; whatever reads
    # LiteSVM directly (``self.svm``) first gets the slot hashes last written back.

    def _flush(self) -> None:
        """Bring LiteSVM's Clock and SlotHashes sysvars up to date, for a reader of SlotHashes."""
        self._flush_clock()
        if self._dirty:
            self._written = self._hashes[:SYSVAR_SLOT_HASHES]
            self._inner.set_slot_hashes(self._written)
            self._dirty = self._parked = False
        else:
            self._restore_slot_hashes()

    def _restore_slot_hashes(self) -> None:
        """Put the slot hashes last written back into LiteSVM (a direct reader sees what it saw
        before SlotHashes was parked)."""
        if self._parked:
            self._inner.set_slot_hashes(self._written)
            self._parked = False

    def _park_slot_hashes(self) -> None:
        if not self._parked:
            self._inner.set_slot_hashes(_NO_SLOT_HASHES)
            self._parked = True

    def _flush_clock(self) -> None:
        """The Clock sysvar: a program reads it through a syscall, named in no account list, so it
        is brought up to date before every transaction."""
        if self._clock_slot != self._slot:
            self._park_slot_hashes()
            self._inner.warp_to_slot(self._slot)
            self._clock_slot = self._slot

    def advance_slot(self) -> None:
        """Close the current slot: next slot, new blockhash (the old one stops being accepted)."""
        self._slot += 1
        self._park_slot_hashes()
        self._inner.expire_blockhash()
        self._push_slot_hash()

    def warp_to(self, slot: int) -> None:
        """Let time pass up to ``slot`` (a new slot hash for each slot, as a cluster would):
        deadlines in tests and in the demo."""
        if slot < self._slot:
            raise ValueError(f"the chain is at slot {self._slot}; it cannot go back to {slot}")
        if slot == self._slot:
            return
        while self._slot < slot:  # a hash per slot; one new blockhash at the end is enough to refuse the old ones
            self._slot += 1
            self._push_slot_hash()
        self._park_slot_hashes()
        self._inner.expire_blockhash()

    def slot_hash(self, slot: int) -> Hash | None:
        """The hash of ``slot`` if it is among the last ``MAX_SLOT_HASHES`` slots."""
        return next((h for s, h in self._hashes if s == slot), None)

    @property
    def description(self) -> str:
        return f"LiteSVM in process (solders {_solders_version()}, token program: {self._token_build})"

    @property
    def token_build(self) -> str:
        return self._token_build

    def latest_blockhash(self) -> Hash:
        h: Hash = self._inner.latest_blockhash()
        return h

    def slot(self) -> int:
        return self._slot

    def _peek(self, key: Pubkey) -> tuple[int, bytes | None]:
        """An account's lamports and, for a token account, the head of its data (mint, owner,
        amount): what the index records before and after a transaction. Read straight from
        LiteSVM, without copying the data of sysvars and programs (never written by a
        transaction: only their lamports count)."""
        if key in self._no_data:
            return self._inner.get_balance(key) or 0, None
        a = self._inner.get_account(key)
        if a is None:
            return 0, None
        if a.owner == TOKEN_PROGRAM_ID and not a.executable:
            data = a.data
            return a.lamports, data[:_TOKEN_HEAD] if len(data) == ACCOUNT_SIZE else None
        if a.executable:
            self._no_data.add(key)
        return a.lamports, None

    def _first_peek(self, key: Pubkey) -> tuple[int, bytes | None]:
        """``_peek`` of an account the index does not remember; remembered unless a sysvar (the
        clock and the slot hashes change them between transactions)."""
        v = self._peek(key)
        if str(key).startswith("Sysvar"):
            self._sysvars.add(key)
        else:
            known = self._known
            if len(known) >= MAX_KNOWN_ACCOUNTS:
                known.clear()
            known[key] = v
        return v

    def _balance(self, key: Pubkey, head: bytes) -> TokenBalance:
        """The balance a token account's head says (one object per account and head, reused)."""
        hit = self._balances.get(key)
        if hit is None or hit[0] != head:
            if len(self._balances) >= MAX_CACHED_BALANCES:
                self._balances.clear()
            hit = (head, _record_of(TokenBalance, account=key, mint=Pubkey.from_bytes(head[0:32]),
                                    owner=Pubkey.from_bytes(head[32:64]),
                                    amount=int.from_bytes(head[64:72], "little")))
            self._balances[key] = hit
        return hit[1]

    def _record(self, p: _Pending) -> TxRecord:
        sig, slot, msg, error, fee, cu, pre, post, logs, loaded_w, loaded_r, keys = p
        balance = self._balance
        return _record_of(
            TxRecord, signature=sig, slot=slot, message=msg, error=error, fee=fee, compute_units=cu,
            pre_lamports=tuple([lam for lam, _ in pre]), post_lamports=tuple([lam for lam, _ in post]),
            pre_token=tuple([balance(k, h) for k, (_, h) in zip(keys, pre) if h is not None]),
            post_token=tuple([balance(k, h) for k, (_, h) in zip(keys, post) if h is not None]),
            logs=logs, loaded_writable=loaded_w, loaded_readonly=loaded_r,
            account_keys=keys,  # the cached_property's value, known here
        )

    def send(self, tx: Transaction | VersionedTransaction) -> TxOutcome:
        sig = tx.signatures[0]
        index = self._index
        if sig in index.records:  # LiteSVM's own history does not survive a snapshot/restore
            return TxOutcome(signature=sig, ok=False, landed=False, error="AlreadyProcessed", fee=0,
                             compute_units=0, slot=self._slot)
        msg = tx.message
        static = msg.account_keys
        if type(tx) is Transaction:  # a legacy message looks nothing up
            loaded_w: tuple[Pubkey, ...] = ()
            loaded_r: tuple[Pubkey, ...] = ()
            keys = static
        else:
            lw, lr = self._loaded(tx)
            loaded_w, loaded_r = tuple(lw), tuple(lr)
            keys = static + lw + lr if lw or lr else static
        if SLOT_HASHES_SYSVAR in keys or CLOCK_SYSVAR in keys:
            self._flush()
        else:
            self._flush_clock()
        inner = self._inner
        indexing = self._indexing
        if indexing:
            peek = self._peek
            known = self._known
            first_peek = self._first_peek
            pre = [known.get(k) or first_peek(k) for k in keys]
        else:
            payer_before = inner.get_balance(keys[0]) or 0
        result = inner.send_transaction(tx)
        raw_err: object = None
        if isinstance(result, FailedTransactionMetadata):
            meta: TransactionMetadata = result.meta()
            raw_err = result.err()
            error: str | None = str(raw_err)
        else:
            meta = result
            error = None
        logs = tuple(meta.logs())
        cu = meta.compute_units_consumed()
        if indexing:
            # only writable accounts can change: re-read those, keep the read-only ones as they were
            post = pre.copy()
            fee = 0
            sysvars = self._sysvars
            for i in _writable_indices(msg.header, len(static), len(loaded_w)):
                k = keys[i]
                after = post[i] = peek(k)
                if k not in sysvars:  # (the runtime never lets a transaction write a sysvar)
                    known[k] = after
                fee += pre[i][0] - after[0]
        else:
            fee = payer_before - (inner.get_balance(keys[0]) or 0) if error is not None else meta.fee()
        landed = error is None or fee > 0
        slot = self._slot
        if landed and indexing:
            checked = msg if isinstance(msg, Message | MessageV0) else _message(tx)
            # tuples, not lists: the collector stops tracking tuples of plain values
            index.records[sig] = (sig, slot, checked, error, fee, cu, tuple(pre), tuple(post), logs, loaded_w,
                                  loaded_r, tuple(keys))
            index.raw[sig] = (tx, raw_err)
            index.add(sig, keys)
        if landed:
            self.advance_slot()
        return _record_of(TxOutcome, signature=sig, ok=error is None, landed=landed, error=error,
                          fee=fee if landed else 0, compute_units=cu, slot=slot, logs=logs, raw_error=raw_err)

    def _loaded(self, tx: Transaction | VersionedTransaction) -> tuple[list[Pubkey], list[Pubkey]]:
        """A v0 message's looked-up keys (writable, read-only), resolved as the runtime will; a
        table that does not resolve leaves them out (the transaction then fails to load)."""
        msg = tx.message
        lookups = getattr(msg, "address_table_lookups", None)
        if not lookups:
            return [], []
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        for lk in lookups:
            acct = self.svm.get_account(lk.account_key)
            table = lookup_table_addresses(bytes(acct.data)) if acct is not None else []
            w, r = bytes(lk.writable_indexes), bytes(lk.readonly_indexes)
            if any(i >= len(table) for i in w + r):
                return [], []
            writable += [table[i] for i in w]
            readonly += [table[i] for i in r]
        return writable, readonly

    def get_account(self, address: Pubkey) -> AccountView | None:
        if address in _SYSVARS_READ:
            self._flush()
        a = self._inner.get_account(address)
        if a is None:
            return None
        lamports, data = a.lamports, a.data
        if lamports == 0 and not data:
            return None
        return _record_of(AccountView, lamports=lamports, owner=a.owner, data=bytes(data), executable=a.executable)

    def balance(self, address: Pubkey) -> int:
        return self.svm.get_balance(address) or 0

    def rent_exempt(self, size: int) -> int:
        return self.svm.minimum_balance_for_rent_exemption(size)

    def airdrop(self, address: Pubkey, lamports: int) -> None:
        self._touched.add(address)
        r = self.svm.airdrop(address, lamports)
        if isinstance(r, FailedTransactionMetadata):
            raise ChainError(f"airdrop of {lamports} lamports to {address} failed: {r.err()}")

    def signatures_for_address(self, address: Pubkey) -> list[Signature]:
        return self._index.signatures(address)

    def get_transaction(self, signature: Signature) -> TxRecord | None:
        rec = self._index.records.get(signature)
        return None if rec is None else self._built(signature, rec)

    def _built(self, signature: Signature, rec: TxRecord | _Pending) -> TxRecord:
        # Built on every read and not kept: a kept record is a dozen objects that Python's cycle
        # collector walks at each full collection (py-spy: 4.4% of a lifecycle in the collector
        # with ~220,000 tracked objects, 3.9% without them); the pending tuple holds no container
        # the collector must follow once its first collections have seen it.
        return rec if isinstance(rec, TxRecord) else self._record(rec)

    def signed_transaction(self, signature: Signature) -> Transaction | VersionedTransaction | None:
        raw = self._index.raw.get(signature)
        return raw[0] if raw else None

    def raw_error(self, signature: Signature) -> object:
        """The solders TransactionError of a landed failed transaction (``None`` if it succeeded)."""
        raw = self._index.raw.get(signature)
        return raw[1] if raw else None

    def records(self) -> list[TxRecord]:
        """Every landed transaction, oldest first (used by the loopback RPC server and the ledger)."""
        return [self._built(sig, r) for sig, r in list(self._index.records.items())]

    def close(self) -> None:
        """Nothing to release in process."""

    # -- snapshots (the CLI's ledger directory) -----------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue this chain in another process, as JSON-able data."""
        keys: set[Pubkey] = set(self._touched)
        records = self.records()
        for rec in records:
            keys.update(rec.account_keys)
        accounts = {}
        for k in sorted(keys, key=bytes):
            a = self.svm.get_account(k)
            if a is None or a.executable or a.owner in _NOT_SNAPSHOT_OWNERS or k in _SYSVARS_READ:
                continue
            accounts[str(k)] = {"lamports": a.lamports, "owner": str(a.owner), "rent_epoch": a.rent_epoch,
                                "data": base64.b64encode(bytes(a.data)).decode()}
        txs = []
        for rec in records:
            tx = self._index.raw[rec.signature][0]
            txs.append({"tx": base64.b64encode(bytes(tx)).decode(), "v0": isinstance(tx, VersionedTransaction),
                        "slot": rec.slot, "error": rec.error,
                        "fee": rec.fee, "cu": rec.compute_units, "logs": list(rec.logs),
                        "pre_lamports": list(rec.pre_lamports), "post_lamports": list(rec.post_lamports),
                        "pre_token": [_tb_json(b) for b in rec.pre_token],
                        "post_token": [_tb_json(b) for b in rec.post_token],
                        "loaded_writable": [str(k) for k in rec.loaded_writable],
                        "loaded_readonly": [str(k) for k in rec.loaded_readonly]})
        return {"version": SNAPSHOT_VERSION, "token_program": self._token_build, "start_slot": self._start_slot,
                "slot": self._slot, "slot_hashes": [[s, str(h)] for s, h in self._hashes],
                "accounts": accounts, "transactions": txs, "touched": sorted(str(k) for k in self._touched)}

    @classmethod
    def from_state(cls, state: dict[str, Any], programs: Sequence[tuple[Pubkey, bytes]] = ()) -> LiteSVMBackend:
        """The chain ``to_state`` saved; ``programs`` (address, ELF) are loaded again first (a
        snapshot keeps no program accounts)."""
        if state.get("version") != SNAPSHOT_VERSION:
            raise ChainError(f"ledger snapshot version {state.get('version')!r}, expected {SNAPSHOT_VERSION}")
        be = cls(token_program=state["token_program"], start_slot=int(state["start_slot"]))
        for address, elf in programs:
            be.svm.add_program(address, elf)
        for k, a in state["accounts"].items():
            be.svm.set_account(Pubkey.from_string(k), Account(int(a["lamports"]), base64.b64decode(a["data"]),
                                                              Pubkey.from_string(a["owner"]), False,
                                                              int(a["rent_epoch"])))
        # LiteSVM's blockhash is a hash chain from a fixed start: walk it past every hash already
        # used, so no transaction signed in an earlier process can land again
        for _ in range(int(state["slot"]) - be._slot):
            be.svm.expire_blockhash()
        be._slot = int(state["slot"])
        be._hashes = [(int(s), Hash.from_string(h)) for s, h in state["slot_hashes"]]
        be._touched = {Pubkey.from_string(k) for k in state["touched"]}
        for t in state["transactions"]:
            raw = base64.b64decode(t["tx"])
            tx: Transaction | VersionedTransaction = (
                VersionedTransaction.from_bytes(raw) if t.get("v0") else Transaction.from_bytes(raw))
            rec = TxRecord(signature=tx.signatures[0], slot=int(t["slot"]), message=_message(tx), error=t["error"],
                           fee=int(t["fee"]), compute_units=int(t["cu"]), logs=tuple(t["logs"]),
                           pre_lamports=tuple(t["pre_lamports"]), post_lamports=tuple(t["post_lamports"]),
                           pre_token=tuple(_tb_from(b) for b in t["pre_token"]),
                           post_token=tuple(_tb_from(b) for b in t["post_token"]),
                           loaded_writable=tuple(Pubkey.from_string(k) for k in t.get("loaded_writable", ())),
                           loaded_readonly=tuple(Pubkey.from_string(k) for k in t.get("loaded_readonly", ())))
            keys = list(rec.account_keys)
            be._index.records[rec.signature] = rec
            be._index.raw[rec.signature] = (tx, None)
            be._index.add(rec.signature, keys)
        be._dirty = True
        be._flush()
        return be


def _message(tx: Transaction | VersionedTransaction) -> Message | MessageV0:
    msg = tx.message
    if not isinstance(msg, Message | MessageV0):
        raise ChainError(f"transaction {tx.signatures[0]} has an unsupported message version ({type(msg).__name__})")
    return msg


def _tb_json(b: TokenBalance) -> list[Any]:
    return [str(b.account), str(b.mint), str(b.owner), b.amount]


def _tb_from(v: list[Any]) -> TokenBalance:
    return TokenBalance(account=Pubkey.from_string(v[0]), mint=Pubkey.from_string(v[1]),
                        owner=Pubkey.from_string(v[2]), amount=int(v[3]))


def _solders_version() -> str:
    try:
        return importlib.metadata.version("solders")
    except Exception:  # metadata missing in odd installs; the description is informational
        return "?"
