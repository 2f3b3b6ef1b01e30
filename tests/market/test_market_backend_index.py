"""The embedded chain's address index: what ``getTransaction`` returns for a transaction is what
happened in that transaction, however much later it is read (the record is built on the first
read, on every read, from what was captured when it landed), the index holds nothing Python's
cycle collector has to walk, and the decoded accounts follow the bytes."""

from __future__ import annotations

import gc
import os

from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from pocv.market import jobprogram as J
from pocv.market.backend import LiteSVMBackend, TxRecord
from pocv.market.escrow import sign_and_send
from pocv.market.programs import SLOT_HASHES_SYSVAR, decode_slot_hashes

from .conftest import World


def test_the_index_holds_nothing_the_cycle_collector_walks(fast_world: World) -> None:
    """A long-running chain indexes every transaction: what it keeps per transaction and per
    address must not be objects every full collection walks (a kept record and a list per
    address grew them by about 25 a lifecycle in bench/test_bench_market.py)."""
    w = fast_world
    for _ in range(3):
        t = w.terms(price=1_000, bond=500)
        root = os.urandom(32)
        assert w.escrow.post(t, w.consumer).ok and w.escrow.commit(t, root, w.worker).ok
        assert w.escrow.verdict(t, w.verdict(t, root), w.verifier).ok
    index = w.backend._index
    sigs = list(index.records)
    assert len(sigs) >= 9
    for sig in sigs:  # reading every record back keeps none of them
        assert w.backend.get_transaction(sig) is not None
    for _ in range(3):  # a tuple leaves tracking when a collection finds all it holds untracked:
        gc.collect()  # the (lamports, head) pairs, the tuples of them, the record: one level a pass
    tracked = [what for what, values in (("records", index.records.values()), ("raw", index.raw.values()),
                                         ("by_address", index.by_address.values()))
               for v in values if gc.is_tracked(v)]
    assert tracked == []
    # and the per-address index still answers, oldest first
    consumer_sigs = w.backend.signatures_for_address(w.consumer.pubkey())
    assert [s for s in sigs if s in set(consumer_sigs)] == consumer_sigs and len(consumer_sigs) >= 3


def _amount(rec: TxRecord, account: object, which: str) -> int | None:
    found = [b.amount for b in getattr(rec, which) if b.account == account]
    assert len(found) <= 1
    return found[0] if found else None


def test_a_record_read_late_still_shows_its_own_balances(fast_world: World) -> None:
    w = fast_world
    c_acct = J.token_account(w.consumer.pubkey(), w.mint)
    w_acct = J.token_account(w.worker.pubkey(), w.mint)
    c0, w0 = w.tokens(w.consumer), w.tokens(w.worker)
    t = w.terms(price=1_000, bond=500)
    post = w.escrow.post(t, w.consumer)
    root = os.urandom(32)
    commit = w.escrow.commit(t, root, w.worker)
    verdict = w.escrow.verdict(t, w.verdict(t, root), w.verifier)
    assert post.ok and commit.ok and verdict.ok
    # later transactions move the same token accounts again before anything is read
    t2 = w.terms(price=7_000, bond=0)
    assert w.escrow.post(t2, w.consumer).ok
    vault = w.program.addresses(t).vault

    rec = w.backend.get_transaction(post.signature)
    assert rec is not None and rec.ok and rec.slot == post.slot and rec.fee == post.fee == 5_000
    assert rec.compute_units == post.compute_units and rec.logs == post.logs
    assert (_amount(rec, c_acct, "pre_token"), _amount(rec, c_acct, "post_token")) == (c0, c0 - 1_000)
    assert (_amount(rec, vault, "pre_token"), _amount(rec, vault, "post_token")) == (None, 1_000)  # created here
    assert rec.token_delta(c_acct) == -1_000
    assert sum(rec.pre_lamports) - sum(rec.post_lamports) == rec.fee
    assert len(rec.pre_lamports) == len(rec.post_lamports) == len(rec.account_keys)

    rec = w.backend.get_transaction(commit.signature)
    assert rec is not None
    assert (_amount(rec, w_acct, "pre_token"), _amount(rec, w_acct, "post_token")) == (w0, w0 - 500)
    assert (_amount(rec, vault, "pre_token"), _amount(rec, vault, "post_token")) == (1_000, 1_500)

    rec = w.backend.get_transaction(verdict.signature)
    assert rec is not None and J.job_settlement(rec.logs) == "PASSED"
    assert (_amount(rec, w_acct, "pre_token"), _amount(rec, w_acct, "post_token")) == (w0 - 500, w0 + 1_000)
    assert (_amount(rec, vault, "pre_token"), _amount(rec, vault, "post_token")) == (1_500, None)  # closed
    again = w.backend.get_transaction(verdict.signature)  # built anew on each read (none is kept) ...
    assert again == rec and again is not rec  # ... and the same record each time


def test_records_and_snapshot_agree_with_single_reads(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    root = w.post_and_commit(t)
    assert w.escrow.verdict(t, w.verdict(t, root), w.verifier).ok
    be = w.backend
    assert isinstance(be, LiteSVMBackend)
    every = be.records()
    assert [r.signature for r in every[-3:]] == [s for s in be.signatures_for_address(w.program.program_id)[-3:]]
    for r in every:
        assert be.get_transaction(r.signature) == r
    again = LiteSVMBackend.from_state(be.to_state(), programs=[(w.program.program_id, J.program_elf())])
    assert again.records() == every


def test_worker_account_decodes_its_changing_statistics(fast_world: World) -> None:
    w = fast_world
    before = w.program.read_worker(w.backend, w.worker.pubkey())
    assert before is not None
    t = w.terms(price=1_000, bond=500)
    root = w.post_and_commit(t)
    assert w.escrow.verdict(t, w.verdict(t, root), w.verifier).ok
    after = w.program.read_worker(w.backend, w.worker.pubkey())
    assert after is not None
    assert after.offer == before.offer and after.worker == before.worker == w.worker.pubkey()
    assert (after.passes, after.value_settled, after.bonded) == (before.passes + 1, before.value_settled + 1_000,
                                                                 before.bonded + 500)
    t2 = w.terms(price=2_000, bond=0)
    assert w.escrow.post(t2, w.consumer).ok
    job = w.escrow.job(t2)
    assert job is not None and job.terms == t2 and job.state == J.JobState.POSTED and job.commit_slot == 0
    root2 = os.urandom(32)
    assert w.escrow.commit(t2, root2, w.worker).ok
    job2 = w.escrow.job(t2)
    assert job2 is not None and job2.terms == t2 and job2.state == J.JobState.COMMITTED
    assert job2.root == root2 and job2.commit_slot > 0 and job2.vault == job.vault


def test_direct_readers_of_litesvm_see_the_slot_hashes_last_written(fast_world: World) -> None:
    """The backend parks LiteSVM's SlotHashes empty while the clock and the blockhash move (LiteSVM
    re-parses every sysvar on each change); whatever reads LiteSVM directly (the loopback RPC
    server's preflight simulation) still sees the slot hashes last written, as before."""
    w = fast_world
    be = w.backend
    assert isinstance(be, LiteSVMBackend)
    t = w.terms()
    root = w.post_and_commit(t)
    beacon = w.escrow.beacon(t)  # reads SlotHashes: written in full
    ix = w.escrow.verdict_instruction(t, w.verdict(t, root, beacon=beacon.value))
    # an unrelated transaction lands: the clock and the blockhash move, SlotHashes is parked
    assert w.escrow.post(w.terms(), w.consumer).ok
    direct = be.svm.get_account(SLOT_HASHES_SYSVAR)
    assert direct is not None
    held = decode_slot_hashes(bytes(direct.data))
    assert beacon.slot in [s for s, _ in held] and len(held) > 1

    msg = Message.new_with_blockhash([ix], w.verifier.pubkey(), be.latest_blockhash())
    sim = be.svm.simulate_transaction(Transaction([w.verifier], msg, be.latest_blockhash()))
    assert type(sim).__name__ == "SimulatedTransactionInfo", sim
    # and the transaction itself, through the backend, sees the newest slot hashes and settles
    out = sign_and_send(be, [ix], [w.verifier])
    assert out.ok, out.error
    assert J.job_settlement(out.logs) == "PASSED"


def test_a_record_sees_accounts_changed_outside_transactions(fast_world: World) -> None:
    """The index remembers each account as the last transaction left it (its "before" for the
    next one); what changes an account past the backend -- set_account, an airdrop, a
    transaction sent to LiteSVM directly -- must show in the next record's pre balances."""
    from solders.account import Account  # reason: only this test writes an account directly

    w = fast_world
    be = w.backend
    assert isinstance(be, LiteSVMBackend)
    c_acct = J.token_account(w.consumer.pubkey(), w.mint)
    payer = w.consumer.pubkey()
    assert w.escrow.post(w.terms(), w.consumer).ok  # both accounts remembered from here

    def pre(out_sig: Signature, key: Pubkey) -> tuple[int, int | None]:
        rec = be.get_transaction(out_sig)
        assert rec is not None
        i = list(rec.account_keys).index(key)
        return rec.pre_lamports[i], _amount(rec, key, "pre_token")

    # a token account rewritten directly (its amount set to 123,456,789)
    acct = be.svm.get_account(c_acct)
    assert acct is not None
    data = bytearray(acct.data)
    data[64:72] = (123_456_789).to_bytes(8, "little")
    be.svm.set_account(c_acct, Account(acct.lamports, bytes(data), acct.owner, acct.executable, acct.rent_epoch))
    out = w.escrow.post(w.terms(price=1_000), w.consumer)
    assert out.ok
    assert pre(out.signature, c_acct)[1] == 123_456_789
    assert _amount(be.get_transaction(out.signature), c_acct, "post_token") == 123_456_789 - 1_000  # type: ignore[arg-type]

    # the payer airdropped to, through the backend and through LiteSVM itself
    for drop in (lambda: be.airdrop(payer, 10**9), lambda: be.svm.airdrop(payer, 10**9)):
        before = be.balance(payer)
        drop()
        assert be.balance(payer) == before + 10**9
        out = w.escrow.post(w.terms(), w.consumer)
        assert out.ok
        assert pre(out.signature, payer)[0] == before + 10**9

    # a transaction sent to LiteSVM past the backend (a plain transfer from the payer)
    import solders.system_program as sp  # reason: only this test sends a transfer

    before = be.balance(payer)
    ix = sp.transfer(sp.TransferParams(from_pubkey=payer, to_pubkey=w.worker.pubkey(), lamports=777))
    msg = Message.new_with_blockhash([ix], payer, be.latest_blockhash())
    be.svm.send_transaction(Transaction([w.consumer], msg, be.latest_blockhash()))
    assert be.balance(payer) == before - 777 - 5_000
    be.advance_slot()
    out = w.escrow.post(w.terms(), w.consumer)
    assert out.ok
    assert pre(out.signature, payer)[0] == before - 777 - 5_000
