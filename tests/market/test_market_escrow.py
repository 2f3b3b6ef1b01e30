"""The parties' side of the job program (pocv.market.escrow): what each party checks before it
signs, the four ways a job ends, durable nonces, the beacon, and every token and lamport
accounted for over mixed lifecycles. The program's own refusals are tests/programs."""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest
from solders.keypair import Keypair

from pocv.errors import InputError, PocvError
from pocv.market import jobprogram as J
from pocv.market.escrow import (
    EscrowError,
    SettlementError,
    check_beacon,
    nonce_address,
    verdict_digest,
)
from tests.market.conftest import World, make_world


def test_pass_pays_worker_price_and_bond_in_three_transactions(world: World) -> None:
    w = world
    t = w.terms(price=1_000, bond=500)
    c0, w0 = w.tokens(w.consumer), w.tokens(w.worker)
    lam0 = w.backend.balance(w.consumer.pubkey())
    root = w.post_and_commit(t)
    assert w.vault_tokens(t) == 1_500
    job = w.escrow.job(t)
    assert job is not None and job.state == J.JobState.COMMITTED and job.root == root and job.terms == t
    out = w.escrow.verdict(t, w.verdict(t, root), w.verifier)
    assert out.ok and J.job_settlement(out.logs) == "PASSED" and out.fee == 5_000
    assert w.tokens(w.worker) == w0 + 1_000 and w.tokens(w.consumer) == c0 - 1_000
    assert w.escrow.job(t) is None and w.vault_tokens(t) is None  # both closed
    # the consumer paid one fee and, once, the pair record's rent: the job's and vault's rent came back
    assert w.backend.balance(w.consumer.pubkey()) == lam0 - 5_000 - w.backend.rent_exempt(J.PAIR_SIZE)
    # settling twice is refused before a fee is spent
    with pytest.raises(SettlementError, match="no open account"):
        w.escrow.verdict(t, w.verdict(t, root, beacon=os.urandom(32)), w.verifier)


def test_fail_refunds_consumer_and_slashes_bond(world: World) -> None:
    w = world
    t = w.terms(price=700, bond=300)
    c0, w0 = w.tokens(w.consumer), w.tokens(w.worker)
    root = w.post_and_commit(t)
    out = w.escrow.verdict(t, w.verdict(t, root, ok=False), w.verifier)
    assert out.ok and J.job_settlement(out.logs) == "FAILED"
    assert w.tokens(w.consumer) == c0 + 300 and w.tokens(w.worker) == w0 - 300
    stats = w.program.read_worker(w.backend, w.worker.pubkey())
    assert stats is not None and (stats.fails, stats.slashed) == (1, 300)


def test_worker_checks_the_terms_it_accepts_before_bonding(fast_world: World) -> None:
    w = fast_world
    t = w.terms(price=1_000, bond=500)
    assert w.escrow.post(t, w.consumer).ok
    # the worker expected a higher price: the job account says otherwise, nothing is sent
    with pytest.raises(EscrowError, match="terms are not the expected"):
        w.escrow.commit(replace(t, price=2_000), os.urandom(32), w.worker)
    with pytest.raises(InputError, match="named worker"):
        w.escrow.commit(t, os.urandom(32), w.outsider)
    assert w.escrow.job(t).state == J.JobState.POSTED  # type: ignore[union-attr]


def test_consumer_checks_the_offer_before_posting(fast_world: World) -> None:
    w = fast_world
    w.offer(w.worker, price=100, min_bond=50, max_bond=60)
    with pytest.raises(EscrowError, match="below the offer"):
        w.escrow.post(w.terms(price=99, bond=55), w.consumer)
    with pytest.raises(EscrowError, match="outside the offer"):
        w.escrow.post(w.terms(price=100, bond=61), w.consumer)
    t = replace(w.terms(price=100, bond=55), verifier=w.outsider.pubkey())
    with pytest.raises(EscrowError, match="not one the worker accepts"):
        w.escrow.post(t, w.consumer)
    with pytest.raises(EscrowError, match="no offer"):
        w.escrow.post(w.terms(worker=w.outsider), w.consumer)
    # the program refuses the same terms on its own (sent raw, without the client's checks)
    out = J.send(w.backend, [w.program.post(w.terms(price=99, bond=55))], [w.consumer])
    assert J.program_error(out.error) == J.ProgramError.OFFER


def test_verdict_checks(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    root = w.post_and_commit(t)
    with pytest.raises(InputError, match="named verifier"):
        w.escrow.verdict(t, w.verdict(t, root, key=w.outsider), w.outsider)
    with pytest.raises(PocvError):  # signed by another key than the job's verifier
        w.escrow.verdict(t, w.verdict(t, root, key=w.outsider), w.verifier)
    with pytest.raises(SettlementError, match="committed root"):
        w.escrow.verdict(t, w.verdict(t, os.urandom(32)), w.verifier)
    other = w.terms()
    w.post_and_commit(other)
    with pytest.raises(SettlementError, match="is for job"):  # a verdict replayed from another job
        w.escrow.verdict(other, w.verdict(t, root), w.verifier)
    with pytest.raises(SettlementError, match="not the hash of a slot after the commit"):
        w.escrow.verdict(t, w.verdict(t, root, beacon=os.urandom(32)), w.verifier)
    job = w.escrow.job(t)
    assert job is not None
    before = w.backend.slot_hash(job.commit_slot)
    assert before is not None
    with pytest.raises(SettlementError, match="not the hash of a slot after the commit"):
        w.escrow.verdict(t, w.verdict(t, root, beacon=bytes(before)), w.verifier)
    from pocv.errors import Reason
    from pocv.records import Outcome, Verdict

    thin = Verdict.create(job_id=t.job_id, root=root, beacon=w.escrow.beacon(t).value, kernel="gemm-int8@1",
                          outcomes=[Outcome(1, Reason.OK, "")], cheat_fraction=0.1, key=w.verifier, steps=1_000,
                          bundle=bytes(32), bundle_signed=True)  # 1 of 1,000 steps checked
    with pytest.raises(SettlementError, match="checked too little"):
        w.escrow.verdict(t, thin, w.verifier)
    assert w.escrow.verdict(t, w.verdict(t, root), w.verifier).ok


def test_claims_at_the_deadlines(fast_world: World) -> None:
    w = fast_world
    # no commit: refund the consumer, from the slot after the commit deadline
    t = w.terms(price=800, bond=200, commit_window=5, verdict_window=5)
    c0 = w.tokens(w.consumer)
    assert w.escrow.post(t, w.consumer).ok
    w.backend.warp_to(t.commit_deadline)
    with pytest.raises(SettlementError, match="has not passed"):
        w.escrow.claim(t, w.outsider)
    raw = J.send(w.backend, [w.program.claim(t, committed=False)], [w.outsider])  # the program agrees
    assert J.program_error(raw.error) == J.ProgramError.TOO_EARLY
    with pytest.raises(SettlementError, match="deadline"):  # and the worker is too late to commit
        w.escrow.commit(t, os.urandom(32), w.worker)
    out = w.escrow.claim(t, w.outsider)
    assert out.ok and J.job_settlement(out.logs) == "REFUNDED" and w.tokens(w.consumer) == c0
    # committed, the verifier silent: the worker is paid after the verdict deadline
    t = w.terms(price=800, bond=200, commit_window=5, verdict_window=5)
    root = w.post_and_commit(t)
    w0 = w.tokens(w.worker)
    w.backend.warp_to(t.verdict_deadline)
    with pytest.raises(SettlementError, match="has not passed"):
        w.escrow.claim(t, w.worker)
    w.backend.warp_to(t.verdict_deadline + 1)
    with pytest.raises(SettlementError, match="verdict deadline .* has passed"):
        w.escrow.verdict(t, w.verdict(t, root), w.verifier)
    out = w.escrow.claim(t, w.outsider)
    assert out.ok and J.job_settlement(out.logs) == "EXPIRED" and w.tokens(w.worker) == w0 + 800 + 200
    stats = w.program.read_worker(w.backend, w.worker.pubkey())
    assert stats is not None and (stats.expired, stats.lapsed) == (1, 1)


def test_durable_nonce_keeps_a_presigned_verdict_valid(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    root = w.post_and_commit(t)
    v = w.verdict(t, root)
    tx = w.escrow.presign_verdict(t, v, w.verifier)
    nonce = nonce_address(w.verifier.pubkey(), w.program.addresses(t).job)
    assert tx.message.recent_blockhash != w.backend.latest_blockhash() or True
    for _ in range(3):  # other transactions land, blockhashes expire
        w.offer(w.outsider)
    out = w.escrow.submit(tx)  # submitted by anyone, later
    assert out.ok, out.error
    assert J.job_settlement(out.logs) == "PASSED"
    assert not w.escrow.submit(tx).ok  # once only
    # a second pending job gets its own nonce account (one per pending settlement)
    t2 = w.terms()
    root2 = w.post_and_commit(t2)
    w.escrow.presign_verdict(t2, w.verdict(t2, root2), w.verifier)
    assert nonce_address(w.verifier.pubkey(), w.program.addresses(t2).job) != nonce
    lam = w.backend.balance(w.verifier.pubkey())
    w.offer(w.outsider)  # the nonce must be older than the current blockhash to be withdrawn whole
    closed = w.escrow.close_nonce(t, w.verifier)
    assert closed.ok, closed.error
    assert w.backend.get_account(nonce) is None
    assert w.backend.balance(w.verifier.pubkey()) == lam - 5_000 + w.backend.rent_exempt(80)


def test_beacon_comes_from_a_slot_after_the_commit(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    w.post_and_commit(t)
    job = w.escrow.job(t)
    assert job is not None
    b = w.escrow.beacon(t)
    assert b.slot > b.commit_slot == job.commit_slot
    assert b.value == bytes(w.backend.slot_hash(b.slot))  # type: ignore[arg-type]
    check_beacon(w.backend, b)
    with pytest.raises(PocvError):
        check_beacon(w.backend, replace(b, value=os.urandom(32)))
    assert len(verdict_digest(w.verdict(t, job.root))) == 32


def test_v0_transactions_everywhere(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    assert w.escrow.post(t, w.consumer, version="v0").ok
    root = os.urandom(32)
    assert w.escrow.commit(t, root, w.worker, version="v0").ok
    out = w.escrow.verdict(t, w.verdict(t, root), w.verifier, version="v0")
    assert out.ok and J.job_settlement(out.logs) == "PASSED"
    # and the index reads them like legacy ones
    from pocv.market.indexer import Indexer

    (job,) = Indexer(w.backend, w.program).refresh()[1]
    assert job.status == "PASSED" and job.root == root and [e.kind for e in job.events] == ["POST", "COMMIT",
                                                                                            "VERDICT"]


def run_mixed_lifecycles(w: World, n: int, seed: int) -> dict[str, int]:
    """n lifecycles ending PASSED / FAILED / REFUNDED / EXPIRED, two workers; checks that every
    token and lamport is accounted for."""
    rng = random.Random(seed)
    w.offer(w.outsider)
    workers = [w.worker, w.outsider]
    people = [w.consumer, w.verifier, *workers]
    tracked = [k.pubkey() for k in people]
    lam0 = {k: w.backend.balance(k) for k in tracked}
    tok0 = {k: w.tokens(k) for k in tracked}
    fees = rent_locked = 0
    counts = {"PASSED": 0, "FAILED": 0, "REFUNDED": 0, "EXPIRED": 0}
    expect = dict(tok0)
    for i in range(n):
        wk = workers[i % 2]
        t = w.terms(price=rng.randint(1, 10_000), bond=rng.randint(0, 5_000), worker=wk, commit_window=3,
                    verdict_window=3)
        if w.backend.get_account(w.program.addresses(t).pair) is None:
            rent_locked += w.backend.rent_exempt(J.PAIR_SIZE)
        outs = [w.escrow.post(t, w.consumer)]
        kind = rng.choice(list(counts))
        root = os.urandom(32)
        if kind != "REFUNDED":
            outs.append(w.escrow.commit(t, root, wk))
        if kind in ("PASSED", "FAILED"):
            outs.append(w.escrow.verdict(t, w.verdict(t, root, ok=kind == "PASSED"), w.verifier))
        else:
            w.backend.warp_to((t.verdict_deadline if kind == "EXPIRED" else t.commit_deadline) + 1)
            outs.append(w.escrow.claim(t, people[rng.randrange(4)]))
        assert all(o.ok for o in outs), [o.error for o in outs]
        assert J.job_settlement(outs[-1].logs) == kind
        if kind in ("PASSED", "EXPIRED"):
            expect[w.consumer.pubkey()] -= t.price
            expect[wk.pubkey()] += t.price
        elif kind == "FAILED":
            expect[w.consumer.pubkey()] += t.bond
            expect[wk.pubkey()] -= t.bond
        fees += sum(o.fee for o in outs)
        counts[kind] += 1
    lam1 = {k: w.backend.balance(k) for k in tracked}
    # lamports: before = after + fees + pair records' rent (job and vault rent went back to the consumer)
    assert sum(lam0.values()) == sum(lam1.values()) + fees + rent_locked
    # tokens: exactly the expected payouts, nothing created, nothing lost
    assert {k: w.tokens(k) for k in tracked} == expect
    assert sum(expect.values()) == sum(tok0.values())
    return {**counts, "fees": fees, "rent_locked": rent_locked}


def test_every_token_and_lamport_accounted_for(fast_world: World) -> None:
    counts = run_mixed_lifecycles(fast_world, 120, seed=1)
    assert min(counts["PASSED"], counts["FAILED"], counts["REFUNDED"], counts["EXPIRED"]) > 15


@pytest.mark.slow
def test_every_token_and_lamport_accounted_for_1000(fast_world: World) -> None:
    counts = run_mixed_lifecycles(fast_world, 1_000, seed=2)
    assert counts["fees"] <= 1_000 * 15_000


def test_conservation_on_classic_token() -> None:
    run_mixed_lifecycles(make_world("classic"), 30, seed=3)


def test_a_strangers_gift_to_the_vault_goes_to_the_paid_party(fast_world: World) -> None:
    w = fast_world
    t = w.terms(price=1_000, bond=0)
    root = w.post_and_commit(t)
    from pocv.market import programs as P
    from pocv.market.escrow import sign_and_send

    vault = w.program.addresses(t).vault
    src = P.associated_token_address(w.outsider.pubkey(), w.mint)
    assert sign_and_send(w.backend, [P.transfer(src, vault, w.outsider.pubkey(), 77)], [w.outsider]).ok
    w0 = w.tokens(w.worker)
    assert w.escrow.verdict(t, w.verdict(t, root), w.verifier).ok
    assert w.tokens(w.worker) == w0 + 1_077


def test_keys_must_differ() -> None:
    k = Keypair().pubkey()
    with pytest.raises(InputError, match="three different keys"):
        J.JobTerms(job_id=bytes(32), spec_hash=bytes(32), consumer=k, worker=k, verifier=Keypair().pubkey(),
                   mint=Keypair().pubkey(), price=1, bond=0, commit_deadline=10, verdict_deadline=20)


def _lookup_table(w: World, addresses: list) -> object:  # type: ignore[type-arg]
    """An address lookup table written straight into the chain (solders has no builder for its
    instructions): active, extended long ago, holding ``addresses``."""
    import struct

    from solders.account import Account
    from solders.address_lookup_table_account import ID as ALT_PROGRAM
    from solders.address_lookup_table_account import AddressLookupTableAccount

    key = Keypair().pubkey()
    data = struct.pack("<IQQB", 1, 2**64 - 1, 0, 0) + b"\x01" + bytes(w.authority.pubkey()) + b"\x00\x00"
    data += b"".join(bytes(a) for a in addresses)
    w.backend.svm.set_account(key, Account(w.backend.rent_exempt(len(data)), data, ALT_PROGRAM, False, 0))
    return AddressLookupTableAccount(key, addresses)


def test_a_v0_transaction_with_looked_up_accounts_is_indexed(fast_world: World) -> None:
    """A COMMIT whose job and vault come from an address lookup table: the program runs it, and the
    index resolves the looked-up keys (the multisig escrow's indexer broke on such a transaction)."""
    from solders.message import MessageV0
    from solders.transaction import VersionedTransaction

    from pocv.market.indexer import Indexer

    w = fast_world
    t = w.terms()
    assert w.escrow.post(t, w.consumer).ok
    a = w.program.addresses(t)
    table = _lookup_table(w, [a.job, a.vault])
    root = os.urandom(32)
    msg = MessageV0.try_compile(w.worker.pubkey(), [w.program.commit(t, root)], [table],  # type: ignore[list-item]
                                w.backend.latest_blockhash())
    assert len(msg.address_table_lookups) == 1 and a.job not in msg.account_keys
    out = w.backend.send(VersionedTransaction(msg, [w.worker]))
    assert out.ok, out.error
    rec = w.backend.get_transaction(out.signature)
    assert rec is not None and set(rec.loaded_writable) == {a.job, a.vault}  # in the order the message chose
    assert w.backend.signatures_for_address(a.vault)[-1] == out.signature  # found through the looked-up key
    (job,) = Indexer(w.backend, w.program).refresh()[1]
    assert job.status == "COMMITTED" and job.root == root
    assert w.escrow.verdict(t, w.verdict(t, root), w.verifier).ok
