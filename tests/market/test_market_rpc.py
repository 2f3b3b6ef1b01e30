"""The RPC backend end to end: solana-py's AsyncClient over HTTP to a JSON-RPC server over LiteSVM
on loopback, started by the tests themselves. Same flow, same checks as in process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from solders.keypair import Keypair

from pocv.errors import ChainError, InputError
from pocv.market import jobprogram as J
from pocv.market import programs as P
from pocv.market.backend import LiteSVMBackend
from pocv.market.escrow import Escrow, EscrowError, install_program, sign_and_send
from pocv.market.indexer import Indexer
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
    be.airdrop(auth.pubkey(), 100 * LAMPORTS)
    mint = create_mint(be, auth)
    program = install_program(be, auth)  # through the upgradeable loader, over HTTP
    keys = [Keypair() for _ in range(4)]
    for k in keys:
        fund(be, mint=mint, mint_authority=auth, owner=k.pubkey(), tokens=TOKENS, lamports=LAMPORTS)
    w = World(be, program, mint, auth, *keys, Escrow(be, program))  # type: ignore[arg-type]
    w.offer(w.worker)
    yield w
    be.close()
    server.stop()


@pytest.mark.parametrize("version", ["legacy", "v0"])
def test_full_lifecycle_over_http(rpc_world: World, version: J.MessageVersion) -> None:
    w = rpc_world
    c0, w0 = w.tokens(w.consumer), w.tokens(w.worker)
    t = w.terms(price=1_000, bond=500)
    post = w.escrow.post(t, w.consumer, version=version)
    root = os.urandom(32)
    commit = w.escrow.commit(t, root, w.worker, version=version)
    beacon = w.escrow.beacon(t)
    assert beacon.slot > beacon.commit_slot
    verdict = w.escrow.verdict(t, w.verdict(t, root, beacon=beacon.value), w.verifier, version=version)
    assert [o.ok for o in (post, commit, verdict)] == [True, True, True]
    assert [o.fee for o in (post, commit, verdict)] == [5_000, 5_000, 5_000]
    assert all(o.compute_units > 0 for o in (post, commit, verdict))
    assert J.job_settlement(verdict.logs) == "PASSED"
    assert (w.tokens(w.consumer), w.tokens(w.worker)) == (c0 - 1_000, w0 + 1_000)
    job = Indexer(w.backend, w.program).job(t.job_id)
    assert job is not None and job.status == "PASSED" and job.root == root
    rec = w.backend.get_transaction(verdict.signature)
    assert rec is not None and type(rec.message).__name__ == ("MessageV0" if version == "v0" else "Message")


def test_fail_over_http(rpc_world: World) -> None:
    w = rpc_world
    t = w.terms()
    root = w.post_and_commit(t)
    assert w.escrow.verdict(t, w.verdict(t, root, ok=False), w.verifier).ok
    jobs = {j.job_id: j for j in Indexer(w.backend, w.program).refresh()[1]}
    assert jobs[t.job_id].status == "FAILED"


def test_failed_transaction_comes_back_with_its_error_over_http(rpc_world: World) -> None:
    w = rpc_world
    t = w.terms()
    assert w.escrow.post(t, w.consumer).ok
    # the program refuses a CLAIM before the commit deadline: the transaction lands, pays, and says why
    out = J.send(w.backend, [w.program.claim(t, committed=False)], [w.outsider])
    assert not out.ok and out.landed and out.fee == 5_000
    assert J.program_error(out.error) == J.ProgramError.TOO_EARLY
    assert any("pocv" in line or "failed" in line for line in out.logs)


def test_an_expired_blockhash_is_reported_by_block_height(rpc_world: World) -> None:
    """skipPreflight: the node returns the signature; the transaction never gets a status; once the
    block height passes the blockhash's lastValidBlockHeight the backend reports it dropped."""
    from solders.message import Message
    from solders.transaction import Transaction

    w = rpc_world
    stale_hash = w.backend.latest_blockhash()
    w.offer(w.outsider)  # moves the chain on one block: the blockhash expires
    msg = Message.new_with_blockhash([P.transfer(P.associated_token_address(w.consumer.pubkey(), w.mint),
                                                 P.associated_token_address(w.worker.pubkey(), w.mint),
                                                 w.consumer.pubkey(), 1)], w.consumer.pubkey(), stale_hash)
    tx = Transaction.new_unsigned(msg)
    tx.sign([w.consumer], stale_hash)
    c0 = w.tokens(w.consumer)
    stale = w.backend.send(tx)
    assert not stale.ok and not stale.landed and stale.fee == 0 and stale.error == "BlockhashExpired"
    assert w.tokens(w.consumer) == c0
    assert w.backend.get_transaction(tx.signatures[0]) is None


def test_a_presigned_verdict_on_a_durable_nonce_over_http(rpc_world: World) -> None:
    w = rpc_world
    t = w.terms()
    root = w.post_and_commit(t)
    tx = w.escrow.presign_verdict(t, w.verdict(t, root), w.verifier)
    for _ in range(2):
        w.offer(w.outsider)  # blockhashes expire meanwhile
    out = w.escrow.submit(tx)
    assert out.ok and J.job_settlement(out.logs) == "PASSED"


def test_pre_bond_checks_hold_over_http(rpc_world: World) -> None:
    w = rpc_world
    t = w.terms()
    lie = type(t)(**{**t.__dict__, "price": t.price + 1})
    assert w.escrow.post(t, w.consumer).ok
    with pytest.raises(EscrowError, match="expected"):
        w.escrow.commit(lie, os.urandom(32), w.worker)
    assert sign_and_send  # the same send path as in process


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
