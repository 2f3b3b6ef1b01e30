"""The RPC backend: any Solana cluster through solana-py's ``AsyncClient`` (solana-py 0.41 has no
sync client), behind the synchronous :class:`~pocv.market.backend.Backend` interface.

``--url`` follows the Solana CLI: a URL, or one of the monikers in :data:`CLUSTERS`.

RPC semantics this backend relies on, as a validator gives them (the loopback server in
:mod:`pocv.testing.rpc` follows the same, checked against ``@solana/web3.js``):

* Transactions are sent with ``skipPreflight``: the node answers with the signature (checked to
  be the transaction's first) and nothing else. The backend then polls ``getSignatureStatuses``
  until the transaction is confirmed, and reads it back with ``getTransaction``: one that
  executed and failed comes back as a :class:`TxOutcome` value (``ok=False, landed=True``) with
  its error, exactly as on the embedded backend.
* Blockhashes expire by block height: ``getLatestBlockhash``'s ``lastValidBlockHeight`` is kept
  for each blockhash handed out; while a transaction has no status the backend polls
  ``getBlockHeight``, and once the height passes that limit the transaction can never land: it
  comes back with ``landed=False`` and error ``BlockhashExpired`` (safe to rebuild and resend).
  A transaction on a durable nonce has no such height; it is polled until the timeout, then
  reported as unknown (a :class:`~pocv.errors.ChainError`: it may still land).
* Legacy and v0 transactions are read (``maxSupportedTransactionVersion: 0``); a v0
  transaction's keys are its static keys followed by the addresses its lookup tables loaded.

Transport trouble, timeouts and unparseable answers raise :class:`~pocv.errors.ChainError`.
solders' response parsers can raise ``PanicException`` (a ``BaseException``), so it is caught
here explicitly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus

from pocv.errors import ChainError, InputError
from pocv.market.backend import AccountView, TokenBalance, TxOutcome, TxRecord

CLUSTERS: Final = {
    "localhost": "http://127.0.0.1:8899",
    "devnet": "https://api.devnet.solana.com",
    "testnet": "https://api.testnet.solana.com",
    "mainnet-beta": "https://api.mainnet-beta.solana.com",
}
CONFIRM_TIMEOUT_S: Final = 60.0  # a blockhash lives ~150 slots (~60-90 s); after that it cannot land
CONFIRM_POLL_S: Final = 0.25
HTTP_TIMEOUT_S: Final = 30.0
SIGNATURES_PAGE: Final = 1_000  # getSignaturesForAddress's maximum page
MAX_KNOWN_BLOCKHASHES: Final = 1_024  # blockhash -> lastValidBlockHeight entries kept
MAX_SIGNATURES: Final = 100_000  # stop paging an address's history after this many

T = TypeVar("T")


def resolve_url(url: str) -> str:
    if url in CLUSTERS:
        return CLUSTERS[url]
    if url.startswith(("http://", "https://")):
        return url
    raise InputError(f"--url must be http(s)://... or one of {sorted(CLUSTERS)}, got {url!r}")


def _is_fatal(e: BaseException) -> bool:
    return isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit | asyncio.CancelledError)


class RpcBackend:
    """A Solana cluster over JSON-RPC. ``token_build`` is whatever the cluster runs at Tokenkeg...
    (mainnet: p-token since epoch 971, May 2026; the classic SPL Token build before)."""

    def __init__(self, url: str, *, confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
                 poll_s: float = CONFIRM_POLL_S, http_timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.url = resolve_url(url)
        self.confirm_timeout_s = confirm_timeout_s
        self.poll_s = poll_s
        self._loop = asyncio.new_event_loop()
        self._client = AsyncClient(self.url, commitment=Confirmed, timeout=http_timeout_s, http2=False)
        self._valid_until: dict[Hash, int] = {}  # blockhash -> lastValidBlockHeight

    def _run(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return self._loop.run_until_complete(make())
        except ChainError:
            raise
        except BaseException as e:  # PanicException from solders' parsers is a BaseException
            if _is_fatal(e):
                raise
            raise ChainError(f"{what} at {self.url} failed: {type(e).__name__}: {str(e)[:300]}") from e

    @property
    def description(self) -> str:
        return f"Solana JSON-RPC at {self.url} (solana-py AsyncClient)"

    @property
    def token_build(self) -> str:
        return "cluster"

    def latest_blockhash(self) -> Hash:
        v = self._run("getLatestBlockhash", lambda: self._client.get_latest_blockhash()).value
        if len(self._valid_until) >= MAX_KNOWN_BLOCKHASHES:
            self._valid_until.clear()
        self._valid_until[v.blockhash] = int(v.last_valid_block_height)
        return v.blockhash

    def block_height(self) -> int:
        return int(self._run("getBlockHeight", lambda: self._client.get_block_height()).value)

    def slot(self) -> int:
        return int(self._run("getSlot", lambda: self._client.get_slot()).value)

    def send(self, tx: Transaction | VersionedTransaction) -> TxOutcome:
        sig = tx.signatures[0]
        blockhash = tx.message.recent_blockhash
        valid_until = self._valid_until.get(blockhash)
        opts = TxOpts(skip_preflight=True, skip_confirmation=True, preflight_commitment=Confirmed)
        try:
            got = self._loop.run_until_complete(self._client.send_raw_transaction(bytes(tx), opts)).value
        except BaseException as e:
            if _is_fatal(e):
                raise
            if isinstance(e, RPCException):  # refused before execution (malformed, or a node that checks anyway)
                return TxOutcome(signature=sig, ok=False, landed=False, error=str(e)[:500], fee=0, compute_units=0,
                                 slot=0)
            raise ChainError(f"sendTransaction at {self.url} failed: {type(e).__name__}: {str(e)[:300]}") from e
        if got != sig:
            raise ChainError(f"sendTransaction at {self.url} answered signature {got}, the transaction's is {sig}")
        deadline = time.monotonic() + self.confirm_timeout_s
        while True:
            statuses = self._run("getSignatureStatuses", lambda: self._client.get_signature_statuses([sig])).value
            st = statuses[0] if statuses else None
            if st is not None and st.confirmation_status in (TransactionConfirmationStatus.Confirmed,
                                                             TransactionConfirmationStatus.Finalized):
                break
            if st is None and valid_until is not None and self.block_height() > valid_until:
                # past its blockhash's last valid height with no status: it never landed and never will
                return TxOutcome(signature=sig, ok=False, landed=False, error="BlockhashExpired", fee=0,
                                 compute_units=0, slot=0)
            if time.monotonic() > deadline:
                # unknown, not failed: it may still land until its blockhash expires
                raise ChainError(f"transaction {sig} not confirmed within {self.confirm_timeout_s} s; "
                                 f"check `pocv market status` before retrying")
            time.sleep(self.poll_s)
        rec = self.get_transaction(sig)
        if rec is None:
            raise ChainError(f"transaction {sig} confirmed but getTransaction returned nothing")
        return TxOutcome(signature=sig, ok=rec.ok, landed=True, error=rec.error, fee=rec.fee,
                         compute_units=rec.compute_units, slot=rec.slot, logs=rec.logs)

    def get_account(self, address: Pubkey) -> AccountView | None:
        v = self._run("getAccountInfo", lambda: self._client.get_account_info(address, encoding="base64")).value
        if v is None:
            return None
        return AccountView(lamports=v.lamports, owner=v.owner, data=bytes(v.data), executable=v.executable)

    def balance(self, address: Pubkey) -> int:
        return int(self._run("getBalance", lambda: self._client.get_balance(address)).value)

    def rent_exempt(self, size: int) -> int:
        return int(self._run("getMinimumBalanceForRentExemption",
                             lambda: self._client.get_minimum_balance_for_rent_exemption(size)).value)

    def airdrop(self, address: Pubkey, lamports: int) -> None:
        sig = self._run("requestAirdrop", lambda: self._client.request_airdrop(address, lamports)).value
        deadline = time.monotonic() + self.confirm_timeout_s
        while True:
            st = self._run("getSignatureStatuses", lambda: self._client.get_signature_statuses([sig])).value[0]
            if st is not None and st.confirmation_status is not None:
                if st.err is not None:
                    raise ChainError(f"airdrop to {address} failed: {st.err}")
                return
            if time.monotonic() > deadline:
                raise ChainError(f"airdrop to {address} not confirmed within {self.confirm_timeout_s} s")
            time.sleep(self.poll_s)

    def signatures_for_address(self, address: Pubkey) -> list[Signature]:
        out: list[Signature] = []
        before: Signature | None = None
        while len(out) < MAX_SIGNATURES:
            page = self._page(address, before)
            if not page:
                break
            out.extend(p.signature for p in page)
            before = page[-1].signature
            if len(page) < SIGNATURES_PAGE:
                break
        out.reverse()  # the node answers newest first
        return out

    def _page(self, address: Pubkey, before: Signature | None) -> list[Any]:
        return list(self._run("getSignaturesForAddress", lambda: self._client.get_signatures_for_address(
            address, before=before, limit=SIGNATURES_PAGE)).value)

    def get_transaction(self, signature: Signature) -> TxRecord | None:
        resp = self._run("getTransaction", lambda: self._client.get_transaction(
            signature, encoding="base64", max_supported_transaction_version=0))
        v = resp.value
        if v is None:
            return None
        return _record(signature, v)

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._client.close())
        finally:
            self._loop.close()


def _record(signature: Signature, v: Any) -> TxRecord:
    etx = v.transaction
    meta = etx.meta
    if meta is None:
        raise ChainError(f"transaction {signature} has no status meta")
    vtx = etx.transaction
    msg = vtx.message
    if type(msg).__name__ not in ("Message", "MessageV0"):
        raise ChainError(f"transaction {signature} has a message of version {type(msg).__name__}")
    keys = list(msg.account_keys)
    loaded = meta.loaded_addresses
    loaded_w = tuple(loaded.writable) if loaded is not None else ()
    loaded_r = tuple(loaded.readonly) if loaded is not None else ()
    keys += list(loaded_w) + list(loaded_r)  # v0: the static keys, then the writable and read-only looked-up ones

    def balances(items: Any) -> tuple[TokenBalance, ...]:
        out = []
        for b in items or []:
            if b.owner is None:
                continue
            out.append(TokenBalance(account=keys[b.account_index], mint=b.mint, owner=b.owner,
                                    amount=int(b.ui_token_amount.amount)))
        return tuple(out)

    cu = meta.compute_units_consumed
    return TxRecord(
        signature=signature, slot=int(v.slot), message=msg, error=None if meta.err is None else str(meta.err),
        fee=int(meta.fee), compute_units=int(cu) if cu is not None else 0,
        pre_lamports=tuple(meta.pre_balances), post_lamports=tuple(meta.post_balances),
        pre_token=balances(meta.pre_token_balances), post_token=balances(meta.post_token_balances),
        logs=tuple(meta.log_messages or ()), loaded_writable=loaded_w, loaded_readonly=loaded_r,
    )
