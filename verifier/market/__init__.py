"""Marketplace and escrow on Solana, composed only from standard programs (DESIGN.md section 7).

* :mod:`~verifier.market.escrow` -- a job's 2-of-3 SPL Token multisig escrow: POST, COMMIT,
  SETTLE, TIMEOUT; checks before money moves; partial signing; durable nonces; chain beacon.
* :mod:`~verifier.market.market` -- offers, job requests, the matcher.
* :mod:`~verifier.market.indexer` -- job histories and reputations rebuilt from the chain.
* :mod:`~verifier.market.backend` -- the chain interface and the embedded LiteSVM backend;
  :mod:`~verifier.market.rpc` -- any cluster over JSON-RPC (solana-py ``AsyncClient``);
  :mod:`~verifier.market.loopback` -- a JSON-RPC server over LiteSVM for loopback tests.
* :mod:`~verifier.market.cli` -- ``pocv market``; :mod:`~verifier.market.demo` -- the demo round.

This package imports no kernels itself; the names below are what a scheduler needs.
"""

from verifier.market.backend import Backend, LiteSVMBackend, TxOutcome, TxRecord
from verifier.market.escrow import (
    ChainBeacon,
    Escrow,
    EscrowAddresses,
    EscrowError,
    JobTerms,
    SettlementError,
    chain_beacon,
    check_escrow,
    check_verdict,
    find_commit,
)
from verifier.market.indexer import Indexer, JobHistory, reputations
from verifier.market.market import JobRequest, Offer, Reputation, match, publish_offer

__all__ = [
    "Backend",
    "ChainBeacon",
    "Escrow",
    "EscrowAddresses",
    "EscrowError",
    "Indexer",
    "JobHistory",
    "JobRequest",
    "JobTerms",
    "LiteSVMBackend",
    "Offer",
    "Reputation",
    "SettlementError",
    "TxOutcome",
    "TxRecord",
    "chain_beacon",
    "check_escrow",
    "check_verdict",
    "find_commit",
    "match",
    "publish_offer",
    "reputations",
]


def rpc_backend(url: str) -> Backend:
    """A backend for ``url`` (a URL or localhost/devnet/testnet/mainnet-beta), imported on use."""
    from verifier.market.rpc import RpcBackend

    return RpcBackend(url)
