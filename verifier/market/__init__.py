"""Marketplace and escrow on Solana, on the pocv job program (programs/README.md, docs/market.md).

* :mod:`~pocv.market.jobprogram` -- the program's client: instructions, addresses, accounts,
  error codes, deployment through the upgradeable loader.
* :mod:`~pocv.market.escrow` -- a job's lifecycle as the parties run it: POST, COMMIT, VERDICT,
  CLAIM; the checks each party makes before it signs; the chain beacon; durable nonces.
* :mod:`~pocv.market.market` -- offers (worker accounts), capabilities, reputations, the matcher.
* :mod:`~pocv.market.indexer` -- job histories from the program's transactions, offers and
  records from its accounts.
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
    EscrowError,
    SettlementError,
    chain_beacon,
    check_beacon,
    check_verdict,
    install_program,
)
from pocv.market.indexer import Indexer, JobHistory
from pocv.market.jobprogram import JobAccount, JobProgram, JobState, JobTerms
from pocv.market.market import Capabilities, JobRequest, Offer, Reputation, match, publish_offer

__all__ = [
    "Backend",
    "Capabilities",
    "ChainBeacon",
    "Escrow",
    "EscrowError",
    "Indexer",
    "JobAccount",
    "JobHistory",
    "JobProgram",
    "JobRequest",
    "JobState",
    "JobTerms",
    "LiteSVMBackend",
    "Offer",
    "Reputation",
    "SettlementError",
    "TxOutcome",
    "TxRecord",
    "chain_beacon",
    "check_beacon",
    "check_verdict",
    "install_program",
    "match",
    "publish_offer",
]


def rpc_backend(url: str) -> Backend:
    """A backend for ``url`` (a URL or localhost/devnet/testnet/mainnet-beta), imported on use."""
    from pocv.market.rpc import RpcBackend  # solana-py's async client loads only for a cluster

    return RpcBackend(url)
