"""Escrow lifecycles and attacks on the embedded chain (real LiteSVM, real SPL programs, no mocks).

Every test that runs against both token builds (LiteSVM's default p-token and the classic SPL
Token program) uses the ``world`` fixture; ``fast_world`` is p-token only.
"""

from __future__ import annotations

import os
import random

import pytest
import solders.system_program as sp
from solders.keypair import Keypair
from solders.transaction import Transaction

from pocv.errors import SignatureError
from pocv.market import programs as P
from pocv.market.escrow import (
    EscrowAddresses,
    EscrowError,
    JobTerms,
    SettlementError,
    build_message,
    chain_beacon,
    check_beacon,
    create_nonce,
    find_commit,
    multisig_seed,
    settle_instructions,
    sign_and_send,
)
from pocv.records import Outcome, Verdict
from tests.market.conftest import World

FEE = 5_000  # lamports per signature


def lamports(w: World, *keys: Keypair) -> list[int]:
    return [w.backend.balance(k.pubkey()) for k in keys]


# -- the common path -------------------------------------------------------------------------------


def test_pass_pays_worker_price_and_bond_in_three_transactions(world: World) -> None:
    w = world
    t = w.terms(price=1_000, bond=500)
    a = EscrowAddresses.derive(t)
    c0, w0, v0 = w.tokens(w.consumer), w.tokens(w.worker), w.tokens(w.verifier)
    lc0, lw0, lv0 = lamports(w, w.consumer, w.worker, w.verifier)

    post = w.escrow.post(t, w.consumer)
    assert post.ok, post.error
    assert w.vault_tokens(t) == 1_000
    root = os.urandom(32)
    commit = w.escrow.commit(t, root, w.worker)
    assert commit.ok, commit.error
    assert w.vault_tokens(t) == 1_500
    settle = w.escrow.settle(t, root=root, verdict=w.verdict(t, root, ok=True), verifier=w.verifier,
                             cosigner=w.worker)
    assert settle.ok, settle.error

    assert (w.tokens(w.consumer), w.tokens(w.worker), w.tokens(w.verifier)) == (c0 - 1_000, w0 + 1_000, v0)
    assert w.backend.get_account(a.vault) is None  # closed: rent back
    ms_rent = w.backend.rent_exempt(P.MULTISIG_SIZE)
    lc1, lw1, lv1 = lamports(w, w.consumer, w.worker, w.verifier)
    assert lc1 == lc0 - FEE - ms_rent  # vault rent came back; the multisig's stays locked
    assert lw1 == lw0 - FEE
    assert lv1 == lv0 - 2 * FEE  # the verifier pays the two-signature settlement
    assert [post.fee, commit.fee, settle.fee] == [FEE, FEE, 2 * FEE]
    assert sum(o.fee for o in (post, commit, settle)) <= 20_000


def test_fail_refunds_consumer_and_slashes_bond(world: World) -> None:
    w = world
    t = w.terms(price=2_000, bond=700)
    c0, w0 = w.tokens(w.consumer), w.tokens(w.worker)
    root = w.post_and_commit(t)
    out = w.escrow.settle(t, root=root, verdict=w.verdict(t, root, ok=False), verifier=w.verifier,
                          cosigner=w.consumer)
    assert out.ok, out.error
    assert w.tokens(w.consumer) == c0 + 700  # price back plus the slashed bond
    assert w.tokens(w.worker) == w0 - 700


def test_multisig_is_reused_for_the_same_trio(fast_world: World) -> None:
    w = fast_world
    lc0 = w.backend.balance(w.consumer.pubkey())
    for _ in range(3):
        t = w.terms()
        root = w.post_and_commit(t)
        assert w.escrow.settle(t, root=root, verdict=w.verdict(t, root), verifier=w.verifier,
                               cosigner=w.worker).ok
    # one multisig's rent, three POST fees: nothing else left the consumer
    assert w.backend.balance(w.consumer.pubkey()) == lc0 - w.backend.rent_exempt(P.MULTISIG_SIZE) - 3 * FEE


@pytest.mark.parametrize("committed", [True, False], ids=["after-commit", "before-commit"])
def test_timeout_settles_without_the_verifier(fast_world: World, committed: bool) -> None:
    w = fast_world
    t = w.terms(price=1_000, bond=300)
    c0, w0, v0 = w.tokens(w.consumer), w.tokens(w.worker), w.tokens(w.verifier)
    lv0 = w.backend.balance(w.verifier.pubkey())
    if committed:
        w.post_and_commit(t)
    else:
        assert w.escrow.post(t, w.consumer).ok
    out = w.escrow.timeout(t, consumer=w.consumer, worker=w.worker)
    assert out.ok, out.error
    assert (w.tokens(w.consumer), w.tokens(w.worker), w.tokens(w.verifier)) == (c0, w0, v0)
    assert w.backend.balance(w.verifier.pubkey()) == lv0  # never signed, never paid
    assert w.vault_tokens(t) is None


# -- nobody alone ----------------------------------------------------------------------------------


def _solo_attacks(w: World, t: JobTerms, k: Keypair) -> dict[str, list[object]]:
    a = EscrowAddresses.derive(t)
    dest = P.associated_token_address(k.pubkey(), t.mint)
    one = (k.pubkey(),)
    return {
        "transfer via multisig": [P.transfer(a.vault, dest, a.multisig, 1_500, one)],
        "transfer_checked via multisig": [P.transfer_checked(a.vault, t.mint, dest, a.multisig, 1_500, 6, one)],
        "transfer as owner": [P.transfer(a.vault, dest, k.pubkey(), 1_500)],
        "set_authority owner": [P.set_authority(a.vault, a.multisig, P.AUTHORITY_ACCOUNT_OWNER, k.pubkey(), one)],
        "set_authority close": [P.set_authority(a.vault, a.multisig, P.AUTHORITY_CLOSE_ACCOUNT, k.pubkey(), one)],
        "set_authority owner directly": [P.set_authority(a.vault, k.pubkey(), P.AUTHORITY_ACCOUNT_OWNER, k.pubkey())],
        "close via multisig": [P.close_account(a.vault, k.pubkey(), a.multisig, one)],
        "same key twice": [P.transfer(a.vault, dest, a.multisig, 1_500, (k.pubkey(), k.pubkey()))],
    }


@pytest.mark.parametrize("party", ["consumer", "worker", "verifier"])
def test_no_party_alone_can_move_vault_funds(world: World, party: str) -> None:
    w = world
    t = w.terms(price=1_000, bond=500)
    w.post_and_commit(t)
    k: Keypair = getattr(w, party)
    before = w.tokens(k)
    for name, ixs in _solo_attacks(w, t, k).items():
        out = sign_and_send(w.backend, ixs, [k])  # type: ignore[arg-type]
        assert not out.ok, f"{party} alone succeeded at {name}"
        assert out.error is not None
        assert w.vault_tokens(t) == 1_500, name
    assert w.tokens(k) == before
    # and the untouched escrow still settles normally
    acct = w.backend.get_account(EscrowAddresses.derive(t).vault)
    assert acct is not None
    st = P.TokenAccountState.decode(acct.data)
    assert st.owner == EscrowAddresses.derive(t).multisig and st.close_authority is None


# -- checks before bonding ------------------------------------------------------------------------


def _hostile_post(w: World, t: JobTerms, signers: tuple[object, ...], m: int, *,
                  close_authority: bool = False) -> None:
    """The consumer builds the escrow by hand with a multisig of its choosing."""
    a = EscrowAddresses.derive(t)
    c = w.consumer.pubkey()
    ixs = [
        sp.create_account_with_seed(sp.CreateAccountWithSeedParams(
            from_pubkey=c, to_pubkey=a.multisig, base=c, seed=multisig_seed(t.worker, t.verifier, t.mint),
            lamports=w.backend.rent_exempt(P.MULTISIG_SIZE), space=P.MULTISIG_SIZE, owner=P.TOKEN_PROGRAM_ID)),
        P.initialize_multisig2(a.multisig, signers, m),  # type: ignore[arg-type]
        sp.create_account_with_seed(sp.CreateAccountWithSeedParams(
            from_pubkey=c, to_pubkey=a.vault, base=c, seed=a.vault_seed,
            lamports=w.backend.rent_exempt(P.ACCOUNT_SIZE), space=P.ACCOUNT_SIZE, owner=P.TOKEN_PROGRAM_ID)),
    ]
    if close_authority:  # vault first owned by the consumer, who leaves itself a close authority
        ixs += [P.initialize_account3(a.vault, t.mint, c),
                P.set_authority(a.vault, c, P.AUTHORITY_CLOSE_ACCOUNT, c),
                P.set_authority(a.vault, c, P.AUTHORITY_ACCOUNT_OWNER, a.multisig)]
    else:
        ixs.append(P.initialize_account3(a.vault, t.mint, a.multisig))
    ixs.append(P.transfer_checked(a.consumer_ata, t.mint, a.vault, c, t.price, 6))
    out = sign_and_send(w.backend, ixs, [w.consumer])
    assert out.ok, out.error


def test_duplicate_signer_multisig_refused_before_bonding(world: World) -> None:
    w = world
    t = w.terms()
    c, wk = w.consumer.pubkey(), w.worker.pubkey()
    _hostile_post(w, t, (c, c, wk), 2)  # SPL Token accepts this...
    w0 = w.tokens(w.worker)
    with pytest.raises(EscrowError, match="lists a signer twice"):
        w.escrow.commit(t, os.urandom(32), w.worker)
    assert w.tokens(w.worker) == w0  # refused before any token moved
    # ...and this is why: the consumer alone can drain such a vault.
    a = EscrowAddresses.derive(t)
    out = sign_and_send(w.backend, [P.transfer(a.vault, a.consumer_ata, a.multisig, t.price, (c,))], [w.consumer])
    assert out.ok, "SPL Token multisig is expected to count a duplicated signer twice"


def test_m_greater_than_n_multisig_refused_before_bonding(world: World) -> None:
    w = world
    t = w.terms()
    signers = (w.consumer.pubkey(), w.worker.pubkey(), w.verifier.pubkey())
    _hostile_post(w, t, signers, 3)
    # a 3-of-3 is refused too (not the agreed 2-of-3); then the m > n case, written as the chain would hold it
    with pytest.raises(EscrowError, match="3-of-3"):
        w.escrow.commit(t, os.urandom(32), w.worker)
    a = EscrowAddresses.derive(t)
    acct = w.backend.svm.get_account(a.multisig)
    assert acct is not None
    data = bytearray(acct.data)
    data[0], data[1] = 3, 2  # m = 3 of n = 2 (InitializeMultisig refuses it, but an account can hold it)
    from solders.account import Account
    w.backend.svm.set_account(a.multisig, Account(acct.lamports, bytes(data), acct.owner, acct.executable,
                                                  acct.rent_epoch))
    w0 = w.tokens(w.worker)
    with pytest.raises(EscrowError, match="m > n"):
        w.escrow.commit(t, os.urandom(32), w.worker)
    assert w.tokens(w.worker) == w0


def test_vault_with_close_authority_refused(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    _hostile_post(w, t, (w.consumer.pubkey(), w.worker.pubkey(), w.verifier.pubkey()), 2, close_authority=True)
    with pytest.raises(EscrowError, match="close authority"):
        w.escrow.commit(t, os.urandom(32), w.worker)


def test_mint_with_freeze_authority_refused(fast_world: World) -> None:
    from pocv.market.tokens import create_mint, fund

    w = fast_world
    mint = create_mint(w.backend, w.authority, freeze=w.consumer.pubkey())
    for k in (w.consumer, w.worker):
        fund(w.backend, mint=mint, mint_authority=w.authority, owner=k.pubkey(), tokens=10_000)
    t = JobTerms(job_id=os.urandom(32), spec_hash=os.urandom(32), kernel="gemm-int8@1", mint=mint,
                 consumer=w.consumer.pubkey(), worker=w.worker.pubkey(), verifier=w.verifier.pubkey(),
                 price=100, bond=10, deadline=0)
    with pytest.raises(EscrowError, match="freeze authority"):
        w.escrow.post(t, w.consumer)


def test_commit_refuses_underfunded_vault(fast_world: World) -> None:
    w = fast_world
    t = w.terms(price=1_000)
    assert w.escrow.post(t, w.consumer).ok
    lie = JobTerms(**{**t.__dict__, "price": 5_000})  # the consumer claims more than it deposited
    with pytest.raises(EscrowError, match="holds 1000, expected at least 5000"):
        w.escrow.commit(lie, os.urandom(32), w.worker)


# -- verdicts ----------------------------------------------------------------------------------------


def test_verdict_replayed_from_another_job_rejected(fast_world: World) -> None:
    w = fast_world
    t1, t2 = w.terms(), w.terms()
    r1, r2 = w.post_and_commit(t1), w.post_and_commit(t2)
    v1 = w.verdict(t1, r1)
    with pytest.raises(SettlementError, match="verdict is for job"):
        w.escrow.settle(t2, root=r2, verdict=v1, verifier=w.verifier, cosigner=w.worker)
    # same job, but a verdict on another root
    with pytest.raises(SettlementError, match="verdict is for root"):
        w.escrow.settle(t2, root=r2, verdict=w.verdict(t2, r1), verifier=w.verifier, cosigner=w.worker)
    # settling a root the worker never committed
    with pytest.raises(SettlementError, match="worker committed"):
        w.escrow.settle(t2, root=r1, verdict=w.verdict(t2, r1), verifier=w.verifier, cosigner=w.worker)
    # a verdict signed by someone other than the registered verifier
    with pytest.raises(SignatureError, match="expected"):
        w.escrow.settle(t2, root=r2, verdict=w.verdict(t2, r2, key=w.outsider), verifier=w.verifier,
                        cosigner=w.worker)
    assert w.vault_tokens(t2) == 1_500
    assert w.escrow.settle(t2, root=r2, verdict=w.verdict(t2, r2), verifier=w.verifier, cosigner=w.worker).ok


def test_second_settlement_impossible(world: World) -> None:
    w = world
    t = w.terms()
    root = w.post_and_commit(t)
    verdict = w.verdict(t, root)
    tx = w.escrow.start_settlement(t, root=root, verdict=verdict, key=w.verifier)
    tx = w.escrow.cosign_settlement(tx, t, root=root, verdict=verdict, key=w.worker)
    assert w.escrow.submit(tx).ok
    w1 = w.tokens(w.worker)
    # the library refuses (the vault is gone)...
    with pytest.raises(EscrowError, match="does not exist"):
        w.escrow.settle(t, root=root, verdict=verdict, verifier=w.verifier, cosigner=w.worker)
    with pytest.raises(EscrowError, match="does not exist"):
        w.escrow.timeout(t, consumer=w.consumer, worker=w.worker)
    # ...the exact same signed transaction is refused by the chain...
    again = w.escrow.submit(tx)
    assert not again.ok and not again.landed
    # ...and so is a freshly signed copy that skips every check
    a = EscrowAddresses.derive(t)
    from pocv.market.escrow import plan_settlement

    ixs = settle_instructions(t, plan_settlement(t, "PASS", 1_500), root=root, digest=bytes(32), decimals=6)
    out = sign_and_send(w.backend, ixs, [w.verifier, w.worker])
    assert not out.ok and out.landed  # executed, failed, fee paid
    assert w.tokens(w.worker) == w1
    assert w.backend.get_account(a.vault) is None


def test_cosigner_refuses_a_tampered_settlement(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    root = w.post_and_commit(t)
    verdict = w.verdict(t, root, ok=False)  # FAIL: verifier + consumer
    honest = w.escrow.start_settlement(t, root=root, verdict=verdict, key=w.verifier)
    # the verifier swaps the refund destination for its own token account and re-signs
    a = EscrowAddresses.derive(t)
    msg = honest.message
    from pocv.market.escrow import plan_settlement

    plan = plan_settlement(t, "FAIL", 1_500)
    ixs = settle_instructions(t, plan, root=root, digest=bytes(32), decimals=6)
    evil_dest = P.associated_token_address(w.verifier.pubkey(), t.mint)
    ixs = [ix if ix.program_id != P.TOKEN_PROGRAM_ID or len(ix.data) != 10 else
           P.transfer_checked(a.vault, t.mint, evil_dest, a.multisig, 1_500, 6, plan.signers) for ix in ixs]
    evil = Transaction.new_unsigned(build_message(ixs, w.verifier.pubkey(), msg.recent_blockhash))
    evil.partial_sign([w.verifier], msg.recent_blockhash)
    with pytest.raises(SettlementError, match="not the expected one"):
        w.escrow.cosign_settlement(evil, t, root=root, verdict=verdict, key=w.consumer)
    # a forged first signature is caught too
    forged = Transaction.populate(honest.message, [Keypair().sign_message(bytes(honest.message_data())),
                                                   honest.signatures[1]])
    with pytest.raises(SignatureError, match="does not verify"):
        w.escrow.cosign_settlement(forged, t, root=root, verdict=verdict, key=w.consumer)
    ok = w.escrow.cosign_settlement(honest, t, root=root, verdict=verdict, key=w.consumer)
    assert w.escrow.submit(ok).ok


def test_durable_nonce_keeps_a_presigned_settlement_valid(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    root = w.post_and_commit(t)
    verdict = w.verdict(t, root)
    nonce = create_nonce(w.backend, w.verifier)
    w.backend.advance_slot()
    presigned = w.escrow.start_settlement(t, root=root, verdict=verdict, key=w.verifier, nonce_account=nonce)
    plain = w.escrow.start_settlement(t, root=root, verdict=verdict, key=w.verifier)
    for _ in range(5):  # other traffic: the blockhash moves on
        w.post_and_commit(w.terms())
    stale = w.escrow.submit(Transaction.populate(plain.message, [
        plain.signatures[0], w.worker.sign_message(bytes(plain.message_data()))]))
    assert not stale.ok and not stale.landed and "BlockhashNotFound" in str(stale.error)
    signed = w.escrow.cosign_settlement(presigned, t, root=root, verdict=verdict, key=w.worker, nonce_account=nonce)
    out = w.escrow.submit(signed)
    assert out.ok, out.error
    assert w.vault_tokens(t) is None
    # the nonce advanced: the same pre-signed settlement can never land again
    assert not w.escrow.submit(signed).ok


# -- the beacon -------------------------------------------------------------------------------------


def test_beacon_comes_from_a_slot_after_the_commit(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    assert w.escrow.post(t, w.consumer).ok
    before = w.backend.slot()
    root = os.urandom(32)
    assert w.escrow.commit(t, root, w.worker).ok
    commit = find_commit(w.backend, t)
    assert commit is not None and commit.root == root and commit.slot >= before
    b = chain_beacon(w.backend, commit)
    assert b.slot > commit.slot and len(b.value) == 32
    check_beacon(w.backend, b)  # anyone can re-derive it
    for _ in range(3):
        w.post_and_commit(w.terms())
    assert chain_beacon(w.backend, commit) == b  # fixed once the slot passed, whatever happens later
    other = w.terms()
    w.post_and_commit(other)
    c2 = find_commit(w.backend, other)
    assert c2 is not None
    assert chain_beacon(w.backend, c2).value != b.value


# -- conservation -----------------------------------------------------------------------------------


def run_mixed_lifecycles(w: World, n: int, seed: int) -> dict[str, int]:
    """n lifecycles of PASS / FAIL / TIMEOUT; checks that every token and lamport is accounted for."""
    rng = random.Random(seed)
    workers = [w.worker, w.outsider]  # two workers share one consumer and verifier: two multisigs
    people = [w.consumer, w.verifier, *workers]
    tracked = [k.pubkey() for k in people]
    lam0 = {k: w.backend.balance(k) for k in tracked}
    tok0 = {k: w.tokens(k) for k in tracked}
    fees = 0
    rent_locked = 0
    counts = {"PASS": 0, "FAIL": 0, "TIMEOUT": 0}
    expect = dict(tok0)
    for i in range(n):
        wk = workers[i % 2]
        t = w.terms(price=rng.randint(1, 10_000), bond=rng.randint(0, 5_000), worker=wk)
        ms_new = w.backend.get_account(EscrowAddresses.derive(t).multisig) is None
        outs = [w.escrow.post(t, w.consumer)]
        rent_locked += w.backend.rent_exempt(P.MULTISIG_SIZE) if ms_new else 0
        kind = rng.choice(["PASS", "FAIL", "TIMEOUT"])
        root = os.urandom(32)
        committed = kind != "TIMEOUT" or rng.random() < 0.5
        if committed:
            outs.append(w.escrow.commit(t, root, wk))
        if kind == "TIMEOUT":
            outs.append(w.escrow.timeout(t, consumer=w.consumer, worker=wk))
            expect[wk.pubkey()] += 0
        else:
            v = w.verdict(t, root, ok=kind == "PASS")
            outs.append(w.escrow.settle(t, root=root, verdict=v, verifier=w.verifier,
                                        cosigner=wk if kind == "PASS" else w.consumer))
            held = t.price + t.bond
            if kind == "PASS":
                expect[w.consumer.pubkey()] -= t.price
                expect[wk.pubkey()] += t.price
            else:
                expect[w.consumer.pubkey()] += t.bond
                expect[wk.pubkey()] -= t.bond
            assert held > 0
        assert all(o.ok for o in outs), [o.error for o in outs]
        assert len(outs) <= 3
        fees += sum(o.fee for o in outs)
        counts[kind] += 1
    lam1 = {k: w.backend.balance(k) for k in tracked}
    # lamports: before = after + fees + multisig rent (the vault rent went back to the consumer)
    assert sum(lam0.values()) == sum(lam1.values()) + fees + rent_locked
    # tokens: exactly the expected payouts, nothing created, nothing lost
    assert {k: w.tokens(k) for k in tracked} == expect
    assert sum(expect.values()) == sum(tok0.values())
    return {**counts, "fees": fees, "rent_locked": rent_locked}


def test_every_token_and_lamport_accounted_for(fast_world: World) -> None:
    counts = run_mixed_lifecycles(fast_world, 150, seed=1)
    assert min(counts["PASS"], counts["FAIL"], counts["TIMEOUT"]) > 20


@pytest.mark.slow
def test_every_token_and_lamport_accounted_for_1000(fast_world: World) -> None:
    counts = run_mixed_lifecycles(fast_world, 1_000, seed=2)
    assert counts["fees"] <= 1_000 * 20_000


def test_conservation_on_classic_token() -> None:
    from tests.market.conftest import make_world

    run_mixed_lifecycles(make_world("classic"), 30, seed=3)


def test_token_2022_mint_refused(fast_world: World) -> None:
    """Token-2022 mints can carry a permanent delegate or a transfer hook: not accepted for escrow."""
    from solders.account import Account

    w = fast_world
    acct = w.backend.svm.get_account(w.mint)
    assert acct is not None
    fake = Keypair().pubkey()
    w.backend.svm.set_account(fake, Account(acct.lamports, bytes(acct.data), P.TOKEN_2022_PROGRAM_ID, False,
                                            acct.rent_epoch))
    t = JobTerms(**{**w.terms().__dict__, "mint": fake})
    with pytest.raises(EscrowError, match="expected the SPL Token program"):
        w.escrow.post(t, w.consumer)


def test_terms_round_trip_through_the_post_memo(fast_world: World) -> None:
    t = JobTerms(**{**fast_world.terms().__dict__, "device_class": "h100", "confidence_ppm": 999_900})
    from pocv.market import memo as memos

    m = memos.parse(t.post_memo().text())
    assert m is not None
    assert JobTerms.from_post_memo(m, t.mint) == t
    assert len(t.post_memo().text()) < P.MAX_MEMO_BYTES


def test_every_escrow_transaction_fits_the_packet_limit(fast_world: World) -> None:
    """1,232 bytes is Solana's transaction size limit; the first POST of a trio is the largest."""
    w = fast_world
    t = JobTerms(**{**w.terms().__dict__, "kernel": "gemm-fp32-exact@12", "device_class": "h100-sxm5",
                    "price": 2**62, "bond": 2**62 - 1, "deadline": 2**62})
    from pocv.market.tokens import fund

    fund(w.backend, mint=w.mint, mint_authority=w.authority, owner=w.consumer.pubkey(), tokens=2**62)
    fund(w.backend, mint=w.mint, mint_authority=w.authority, owner=w.worker.pubkey(), tokens=2**62)
    root = w.post_and_commit(t)
    nonce = create_nonce(w.backend, w.verifier)
    w.backend.advance_slot()
    v = w.verdict(t, root)
    tx = w.escrow.start_settlement(t, root=root, verdict=v, key=w.verifier, nonce_account=nonce)
    out = w.escrow.submit(w.escrow.cosign_settlement(tx, t, root=root, verdict=v, key=w.worker, nonce_account=nonce))
    assert out.ok, out.error
    sizes = [len(bytes(w.backend.signed_transaction(s) or b"")) for s in
             w.backend.signatures_for_address(EscrowAddresses.derive(t).vault)]
    assert len(sizes) == 3 and max(sizes) <= 1_232, sizes


def test_a_strangers_gift_to_the_vault_blocks_nothing(fast_world: World) -> None:
    """Anyone can send tokens to a token account; that must not block the commit or the settlement."""
    from pocv.market.indexer import Indexer

    w = fast_world
    t = w.terms(price=1_000, bond=500)
    assert w.escrow.post(t, w.consumer).ok
    a = EscrowAddresses.derive(t)
    gift = P.transfer_checked(P.associated_token_address(w.outsider.pubkey(), t.mint), t.mint, a.vault,
                              w.outsider.pubkey(), 7, 6)
    assert sign_and_send(w.backend, [gift], [w.outsider]).ok
    root = os.urandom(32)
    assert w.escrow.commit(t, root, w.worker).ok
    w0 = w.tokens(w.worker)
    assert w.escrow.settle(t, root=root, verdict=w.verdict(t, root), verifier=w.verifier, cosigner=w.worker).ok
    assert w.tokens(w.worker) == w0 + 1_507
    job = Indexer(w.backend, w.mint).job(t.job_id)
    assert job is not None and job.status == "PASS" and job.paid == {"worker": 1_507}
    assert len(job.anomalies) == 1 and "without a pocv memo" in job.anomalies[0]


def test_a_verdict_must_have_checked_enough_and_be_evidence(fast_world: World) -> None:
    # issue 15 class 4: settlement checks that the verdict reaches the terms' confidence, and that
    # a FAIL is evidence against the worker (a bundle it signed), not a relay's corruption
    w = fast_world
    t = w.terms()
    r = w.post_and_commit(t)
    thin = Verdict.create(job_id=t.job_id, root=r, beacon=bytes(32), kernel=t.kernel, outcomes=[Outcome(3, "OK")],
                          cheat_fraction=0.1, key=w.verifier, steps=200)
    with pytest.raises(SettlementError, match="checked too little"):
        w.escrow.settle(t, root=r, verdict=thin, verifier=w.verifier, cosigner=w.worker)
    unsigned = Verdict.create(job_id=t.job_id, root=r, beacon=bytes(32), kernel=t.kernel,
                              outcomes=[Outcome(i, "MISMATCH" if i == 1 else "OK") for i in range(1, 5)],
                              cheat_fraction=0.1, key=w.verifier, steps=4, bundle=bytes([1]) * 32,
                              bundle_signed=False)
    with pytest.raises(SettlementError, match="not evidence"):
        w.escrow.settle(t, root=r, verdict=unsigned, verifier=w.verifier, cosigner=w.consumer)
    assert w.vault_tokens(t) is not None  # nothing moved
