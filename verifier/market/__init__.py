"""Marketplace and escrow on Solana, composed only from standard programs (docs/protocol.md §12.1).

* :mod:`~pocv.market.escrow` -- a job's 2-of-3 SPL Token multisig escrow: POST, COMMIT,
  SETTLE, TIMEOUT; checks before money moves; partial signing; durable nonces; chain beacon.
* :mod:`~pocv.market.market` -- offers, job requests, the matcher.
* :mod:`~pocv.market.indexer` -- job histories and reputations rebuilt from the chain.
* :mod:`~pocv.market.backend` -- the chain interface and the embedded LiteSVM backend;
  :mod:`~pocv.market.rpc` -- any cluster over JSON-RPC (solana-py ``AsyncClient``);
  :mod:`pocv.testing.rpc` -- a JSON-RPC server over LiteSVM for loopback tests.
* :mod:`pocv.cli._market` -- ``pocv market``; :mod:`~pocv.market.demo` -- the demo round.

This package imports no kernels itself; the names below are what a scheduler needs.
"""

from pocv.market.backend import Backend, LiteSVMBackend, TxOutcome, TxRecord
from pocv.market.escrow import (
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
from pocv.market.indexer import Indexer, JobHistory, reputations
from pocv.market.market import JobRequest, Offer, Reputation, match, publish_offer

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
    from pocv.market.rpc import RpcBackend  # solana-py's async client loads only for a cluster

    return RpcBackend(url)
