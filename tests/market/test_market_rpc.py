"""The RPC backend end to end: solana-py's AsyncClient over HTTP to a JSON-RPC server over LiteSVM
on loopback, started by the tests themselves. Same flow, same checks as in process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from solders.keypair import Keypair

from pocv.errors import ChainError, InputError
from pocv.market import programs as P
from pocv.market.backend import LiteSVMBackend
from pocv.market.escrow import Escrow, EscrowAddresses, EscrowError, sign_and_send
from pocv.market.indexer import Indexer, reputations
from pocv.market.rpc import RpcBackend, resolve_url
from pocv.market.tokens import create_mint, fund
from pocv.testing.rpc import LoopbackServer
from tests.market.conftest import LAMPORTS, TOKENS, World


@pytest.fixture(scope="module")
def rpc_world() -> Iterator[World]:
    server = LoopbackServer(LiteSVMBackend())
    url = server.start()
    be = RpcBackend(url, poll_s=0.001)
    auth = Keypair()
    be.airdrop(auth.pubkey(), LAMPORTS)
    mint = create_mint(be, auth)
    keys = [Keypair() for _ in range(4)]
    for k in keys:
        fund(be, mint=mint, mint_authority=auth, owner=k.pubkey(), tokens=TOKENS, lamports=LAMPORTS)
    yield World(be, mint, auth, *keys, Escrow(be))  # type: ignore[arg-type]
    be.close()
    server.stop()


def test_full_lifecycle_over_http(rpc_world: World) -> None:
    w = rpc_world
    c0, w0 = w.tokens(w.consumer), w.tokens(w.worker)
    t = w.terms(price=1_000, bond=500)
    post = w.escrow.post(t, w.consumer)
    root = os.urandom(32)
    commit = w.escrow.commit(t, root, w.worker)
    beacon = w.escrow.beacon(t)
    assert beacon.slot > beacon.commit_slot
    settle = w.escrow.settle(t, root=root, verdict=w.verdict(t, root, beacon=beacon.value), verifier=w.verifier,
                             cosigner=w.worker)
    assert [o.ok for o in (post, commit, settle)] == [True, True, True]
    assert [o.fee for o in (post, commit, settle)] == [5_000, 5_000, 10_000]
    assert all(o.compute_units > 0 for o in (post, commit, settle))
    assert (w.tokens(w.consumer), w.tokens(w.worker)) == (c0 - 1_000, w0 + 1_000)
    job = Indexer(w.backend, w.mint).job(t.job_id)
    assert job is not None and job.status == "PASS" and not job.anomalies


def test_fail_and_timeout_over_http(rpc_world: World) -> None:
    w = rpc_world
    t = w.terms()
    root = w.post_and_commit(t)
    assert w.escrow.settle(t, root=root, verdict=w.verdict(t, root, ok=False), verifier=w.verifier,
                           cosigner=w.consumer).ok
    t2 = w.terms()
    w.post_and_commit(t2)
    assert w.escrow.timeout(t2, consumer=w.consumer, worker=w.worker).ok
    jobs = {j.job_id: j for j in Indexer(w.backend, w.mint).jobs()}
    assert (jobs[t.job_id].status, jobs[t2.job_id].status) == ("FAIL", "TIMEOUT")
    assert reputations(jobs.values())[w.worker.pubkey()].fails >= 1


def test_failed_transaction_comes_back_as_a_value_over_http(rpc_world: World) -> None:
    w = rpc_world
    t = w.terms()
    w.post_and_commit(t)
    a = EscrowAddresses.derive(t)
    out = sign_and_send(w.backend, [P.transfer(a.vault, a.consumer_ata, a.multisig, 1, (w.consumer.pubkey(),))],
                        [w.consumer])
    assert not out.ok and out.landed and out.fee == 5_000 and out.error
    # refused before execution (stale blockhash): landed=False, no fee
    from solders.transaction import Transaction

    from pocv.market.escrow import build_message

    msg = build_message([P.memo("x", (w.consumer.pubkey(),))], w.consumer.pubkey(), w.backend.latest_blockhash())
    w.escrow.post(w.terms(), w.consumer)  # moves the chain on one slot
    tx = Transaction.new_unsigned(msg)
    tx.sign([w.consumer], msg.recent_blockhash)
    stale = w.backend.send(tx)
    assert not stale.ok and not stale.landed and stale.fee == 0


def test_pre_bond_checks_hold_over_http(rpc_world: World) -> None:
    w = rpc_world
    t = w.terms()
    lie = type(t)(**{**t.__dict__, "price": t.price + 1})
    assert w.escrow.post(t, w.consumer).ok
    with pytest.raises(EscrowError, match="expected"):
        w.escrow.commit(lie, os.urandom(32), w.worker)


def test_unreachable_cluster_is_a_chain_error() -> None:
    be = RpcBackend("http://127.0.0.1:9", http_timeout_s=2.0)  # discard port: nothing listens
    with pytest.raises(ChainError, match="getLatestBlockhash"):
        be.latest_blockhash()
    be.close()


def test_garbage_answer_is_a_chain_error_not_a_panic() -> None:
    """solders' parser panics (a BaseException) on some malformed answers; the backend converts it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Junk(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"jsonrpc":"2.0","id":0,"result":{"context":{"slot":1},"value":{"blockhash":7}}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Junk)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        be = RpcBackend(f"http://127.0.0.1:{srv.server_address[1]}")
        with pytest.raises(ChainError):
            be.latest_blockhash()
        be.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_url_monikers() -> None:
    assert resolve_url("devnet") == "https://api.devnet.solana.com"
    assert resolve_url("localhost") == "http://127.0.0.1:8899"
    assert resolve_url("http://10.0.0.1:8899") == "http://10.0.0.1:8899"
    with pytest.raises(InputError, match="--url"):
        resolve_url("ftp://x")
