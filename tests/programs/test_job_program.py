"""The job program in LiteSVM (deployed through the upgradeable loader), every instruction and
the hostile parties of issue 13 point 5; each test's transactions are then replayed in
solana-bankrun by the ``world`` fixture and must end the same way there."""

from __future__ import annotations

import os
import struct

import pytest
import solders.system_program as sp
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from spl.token import instructions as spl
from spl.token import models

from pocv.errors import InputError
from pocv.market import jobprogram as J
from tests.programs.conftest import World

E = J.ProgramError
V0: J.MessageVersion = "v0"


def with_account(ix: Instruction, index: int, meta: AccountMeta) -> Instruction:
    metas = list(ix.accounts)
    metas[index] = meta
    return Instruction(ix.program_id, bytes(ix.data), metas)


def unsigned(ix: Instruction, index: int) -> Instruction:
    m = ix.accounts[index]
    return with_account(ix, index, AccountMeta(m.pubkey, is_signer=False, is_writable=m.is_writable))


def with_data(ix: Instruction, offset: int, value: bytes) -> Instruction:
    data = bytearray(bytes(ix.data))
    data[offset: offset + len(value)] = value
    return Instruction(ix.program_id, bytes(data), list(ix.accounts))


def vault_tokens(world: World, terms: J.JobTerms) -> int | None:
    return world.tokens(world.program.addresses(terms).vault)


# -- the four ways a job ends ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["legacy", "v0"])
def test_pass_pays_price_and_bond_to_the_worker_and_closes_both_accounts(world: World,
                                                                         version: J.MessageVersion) -> None:
    t = world.terms(price=1_000, bond=500)
    a = world.program.addresses(t)
    c0, w0 = world.tokens(world.consumer.token), world.tokens(world.worker.token)
    lamports0 = world.lamports(world.consumer.pubkey)
    world.ok([world.program.post(t, source=world.consumer.token)], [world.consumer.key], version=version)
    assert vault_tokens(world, t) == 1_000
    job = world.job(t)
    assert job.state == J.JobState.POSTED and job.terms == t and job.vault == a.vault
    world.ok([world.program.commit(t, b"r" * 32, source=world.worker.token)], [world.worker.key], version=version)
    job = world.job(t)
    assert job.state == J.JobState.COMMITTED and job.root == b"r" * 32 and job.commit_slot == world.chain.slot() - 1
    assert vault_tokens(world, t) == 1_500
    out = world.ok([world.verdict_ix(t, passed=True)], [world.verifier.key], version=version)
    assert J.job_settlement(out.logs) == "PASSED"
    assert world.tokens(world.worker.token) == w0 + 1_000 and world.tokens(world.consumer.token) == c0 - 1_000
    assert world.chain.get_account(a.job) is None and world.chain.get_account(a.vault) is None
    # the consumer paid one fee and, once, the pair record's rent; the job's and vault's rent came back
    pair_rent = world.chain.rent_exempt(J.PAIR_SIZE)
    assert world.lamports(world.consumer.pubkey) == lamports0 - 5_000 - pair_rent
    stats = world.program.read_worker(world.chain, world.worker.pubkey)
    assert stats is not None
    assert (stats.passes, stats.fails, stats.value_settled, stats.bonded, stats.distinct_consumers) == (
        1, 0, 1_000, 500, 1)


def test_fail_refunds_the_price_and_hands_the_bond_to_the_consumer(world: World) -> None:
    t = world.terms(price=700, bond=300)
    c0, w0 = world.tokens(world.consumer.token), world.tokens(world.worker.token)
    world.post(t)
    world.commit(t)
    out = world.ok([world.verdict_ix(t, passed=False)], [world.verifier.key])
    assert J.job_settlement(out.logs) == "FAILED"
    assert world.tokens(world.consumer.token) == c0 + 300 and world.tokens(world.worker.token) == w0 - 300
    stats = world.program.read_worker(world.chain, world.worker.pubkey)
    assert stats is not None and (stats.passes, stats.fails, stats.slashed, stats.distinct_consumers) == (0, 1, 300, 0)


def test_commit_on_the_commit_deadline_but_not_after(world: World) -> None:
    on_time, late = world.terms(commit_in=3), world.terms(commit_in=4)
    world.post(on_time)
    world.post(late)
    world.chain.warp(on_time.commit_deadline)
    world.commit(on_time)  # on the last slot COMMIT is allowed in
    world.chain.warp(late.commit_deadline + 1)
    world.fails([world.program.commit(late, os.urandom(32), source=world.worker.token)], [world.worker.key],
                E.DEADLINE)


def test_claim_refund_one_slot_before_and_one_after_the_commit_deadline(world: World) -> None:
    lapsed = world.terms(commit_in=3)
    world.post(lapsed)
    world.chain.warp(lapsed.commit_deadline)
    claim = world.program.claim(lapsed, committed=False, dest=world.consumer.token)
    world.fails([claim], [world.outsider.key], E.TOO_EARLY)
    assert world.chain.slot() == lapsed.commit_deadline + 1
    c0 = world.tokens(world.consumer.token)
    out = world.ok([claim], [world.consumer.key])
    assert J.job_settlement(out.logs) == "REFUNDED" and world.tokens(world.consumer.token) == c0 + lapsed.price
    stats = world.program.read_worker(world.chain, world.worker.pubkey)
    assert stats is not None and stats.lapsed == 1


def test_verdict_on_the_verdict_deadline_but_not_after(world: World) -> None:
    on_time, late = world.terms(commit_in=3, verdict_in=8), world.terms(commit_in=3, verdict_in=9)
    for t in (on_time, late):
        world.post(t)
        world.commit(t)
    world.chain.warp(on_time.verdict_deadline)
    world.ok([world.verdict_ix(on_time, passed=True)], [world.verifier.key])
    world.chain.warp(late.verdict_deadline + 1)
    world.fails([world.verdict_ix(late, passed=False)], [world.verifier.key], E.DEADLINE)


def test_claim_pays_the_worker_one_slot_after_the_verdict_deadline_not_before(world: World) -> None:
    silent = world.terms(commit_in=3, verdict_in=8)
    world.post(silent)
    world.commit(silent)
    world.chain.warp(silent.verdict_deadline)
    claim = world.program.claim(silent, committed=True, dest=world.worker.token)
    world.fails([claim], [world.outsider.key], E.TOO_EARLY)
    assert world.chain.slot() == silent.verdict_deadline + 1
    w0 = world.tokens(world.worker.token)
    out = world.ok([claim], [world.outsider.key])
    assert J.job_settlement(out.logs) == "EXPIRED"
    assert world.tokens(world.worker.token) == w0 + silent.price + silent.bond
    stats = world.program.read_worker(world.chain, world.worker.pubkey)
    assert stats is not None and (stats.passes, stats.expired) == (0, 1)


# -- wrong signers and wrong parties ------------------------------------------------------------


def test_every_instruction_refuses_a_missing_signature(world: World) -> None:
    t = world.terms()
    o = world.outsider
    offer = J.Offer(mint=world.mint, price=1, min_bond=0, max_bond=10, verifiers=(world.verifier.pubkey,))
    world.fails([unsigned(world.program.offer(world.worker.pubkey, offer), 0)], [o.key], E.SIGNER)
    world.fails([unsigned(world.program.post(t, source=world.consumer.token), 0)], [o.key], E.SIGNER)
    world.post(t)
    world.fails([unsigned(world.program.commit(t, os.urandom(32), source=world.worker.token), 0)], [o.key],
                E.SIGNER)
    world.commit(t)
    world.fails([unsigned(world.verdict_ix(t, passed=True), 0)], [o.key], E.SIGNER)
    assert world.job(t).state == J.JobState.COMMITTED


def test_only_the_named_worker_commits_and_only_the_named_verifier_judges(world: World) -> None:
    t = world.terms()
    world.post(t)
    for p in (world.consumer, world.verifier, world.outsider):
        ix = with_account(world.program.commit(t, os.urandom(32), source=p.token), 0,
                          AccountMeta(p.pubkey, is_signer=True, is_writable=False))
        world.fails([ix], [p.key], E.PARTY)
    world.commit(t)
    for p in (world.consumer, world.worker, world.outsider):
        ix = with_account(world.verdict_ix(t, passed=p is world.worker), 0,
                          AccountMeta(p.pubkey, is_signer=True, is_writable=False))
        world.fails([ix], [p.key], E.PARTY)


def test_offer_cannot_be_written_for_another_worker(world: World) -> None:
    offer = J.Offer(mint=world.mint, price=1, min_bond=0, max_bond=10, verifiers=(world.verifier.pubkey,))
    ix = world.program.offer(world.worker.pubkey, offer)  # the worker's existing account...
    ix = with_account(ix, 0, AccountMeta(world.outsider.pubkey, is_signer=True, is_writable=True))  # ...outsider signs
    world.fails([ix], [world.outsider.key], E.ADDRESS)
    # a first offer at someone else's address (not the signer's canonical one)
    fresh = world.party()
    ix = with_account(world.program.offer(fresh.pubkey, offer), 0,
                      AccountMeta(world.outsider.pubkey, is_signer=True, is_writable=True))
    world.fails([ix], [world.outsider.key], E.ADDRESS)


def test_hostile_parties_are_refused_the_same_in_v0_transactions(world: World) -> None:
    """Every refusal above holds when the hostile party sends a v0 transaction instead of a legacy one."""
    t = world.terms(commit_in=10, verdict_in=20)
    o = world.outsider
    world.fails([unsigned(world.program.post(t, source=world.consumer.token), 0)], [o.key], E.SIGNER, version=V0)
    world.ok([world.program.post(t, source=world.consumer.token)], [world.consumer.key], version=V0)
    world.fails([world.program.post(t, source=world.consumer.token)], [world.consumer.key], E.INITIALIZED,
                version=V0)
    world.fails([world.program.claim(t, committed=False, dest=world.consumer.token)], [o.key], E.TOO_EARLY,
                version=V0)
    ix = with_account(world.program.commit(t, os.urandom(32), source=o.token), 0,
                      AccountMeta(o.pubkey, is_signer=True, is_writable=False))
    world.fails([ix], [o.key], E.PARTY, version=V0)
    world.ok([world.program.commit(t, os.urandom(32), source=world.worker.token)], [world.worker.key], version=V0)
    job = world.job(t)
    world.fails([world.verdict_ix(t, passed=True, beacon_slot=job.commit_slot)], [world.verifier.key], E.BEACON,
                version=V0)
    ix = with_account(world.verdict_ix(t, passed=False), 0, AccountMeta(o.pubkey, is_signer=True, is_writable=False))
    world.fails([ix], [o.key], E.PARTY, version=V0)
    again = world.verdict_ix(t, passed=False)
    world.ok([world.verdict_ix(t, passed=True)], [world.verifier.key], version=V0)
    world.fails([again], [world.verifier.key], E.OWNER, version=V0)
    world.chain.warp(t.verdict_deadline + 1)
    world.fails([world.program.claim(t, committed=True, dest=world.worker.token)], [o.key], E.OWNER, version=V0)


# -- spoofed accounts ---------------------------------------------------------------------------


def test_spoofed_job_account_owned_by_another_program(world: World) -> None:
    t = world.terms()
    world.post(t)
    real = world.chain.get_account(world.program.addresses(t).job)
    assert real is not None
    fake = Pubkey.from_bytes(os.urandom(32))
    world.chain.put_account(fake, lamports=real.lamports, owner=J.TOKEN_PROGRAM_ID, data=real.data)
    ix = with_account(world.program.commit(t, os.urandom(32), source=world.worker.token), 1,
                      AccountMeta(fake, is_signer=False, is_writable=True))
    world.fails([ix], [world.worker.key], E.OWNER)
    world.commit(t)
    ix = with_account(world.verdict_ix(t, passed=True), 1, AccountMeta(fake, is_signer=False, is_writable=True))
    world.fails([ix], [world.verifier.key], E.OWNER)
    ix = with_account(world.program.claim(t, committed=True, dest=world.worker.token), 0,
                      AccountMeta(fake, is_signer=False, is_writable=True))
    world.fails([ix], [world.outsider.key], E.OWNER)


def test_spoofed_vault_token_program_and_payout_accounts(world: World) -> None:
    t = world.terms()
    world.post(t)
    world.commit(t)
    v = world.verifier
    ix = world.verdict_ix(t, passed=True)
    world.fails([with_account(ix, 2, AccountMeta(world.outsider.token, is_signer=False, is_writable=True))], [v.key],
                E.ADDRESS)  # another token account as the vault
    world.fails([with_account(ix, 8, AccountMeta(J.SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False))], [v.key],
                E.ADDRESS)  # another program as SPL Token
    world.fails([with_account(ix, 7, AccountMeta(J.CLOCK_SYSVAR, is_signer=False, is_writable=False))], [v.key],
                E.ADDRESS)  # another sysvar as SlotHashes
    world.fails([with_account(ix, 4, AccountMeta(world.outsider.pubkey, is_signer=False, is_writable=True))],
                [v.key], E.ADDRESS)  # the rent to someone else
    # the payment to the verifier's own account, to the consumer's on PASS, to the vault itself
    for dest in (v.token, world.consumer.token, world.program.addresses(t).vault):
        world.fails([world.verdict_ix(t, passed=True, dest=dest)], [v.key], E.TOKEN_ACCOUNT)
    other_mint, auth = world.new_mint()
    wrong_mint = world.token_account(world.worker.pubkey, 0, mint=other_mint, authority=auth)
    world.fails([world.verdict_ix(t, passed=True, dest=wrong_mint)], [v.key], E.TOKEN_ACCOUNT)
    world.ok([world.verdict_ix(t, passed=True)], [v.key])


def test_spoofed_mints_are_refused_at_post(world: World) -> None:
    t = world.terms()
    real = world.chain.get_account(world.mint)
    assert real is not None
    for owner in (J.SYSTEM_PROGRAM_ID, Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")):
        fake = Pubkey.from_bytes(os.urandom(32))
        world.chain.put_account(fake, lamports=real.lamports, owner=owner, data=real.data)
        ix = with_account(world.program.post(t, source=world.consumer.token), 4,
                          AccountMeta(fake, is_signer=False, is_writable=False))
        world.fails([ix], [world.consumer.key], E.MINT)
    ix = with_account(world.program.post(t, source=world.consumer.token), 4,
                      AccountMeta(J.NATIVE_MINT, is_signer=False, is_writable=False))
    world.fails([ix], [world.consumer.key], E.MINT)
    with pytest.raises(InputError, match="wrapped SOL"):
        J.Offer(mint=J.NATIVE_MINT, price=1, min_bond=0, max_bond=1, verifiers=(world.verifier.pubkey,))


def test_accounts_passed_twice(world: World) -> None:
    t = world.terms()
    world.post(t)
    world.commit(t)
    a = world.program.addresses(t)
    v = world.verifier
    ix = world.verdict_ix(t, passed=True)
    world.fails([with_account(ix, 4, AccountMeta(a.job, is_signer=False, is_writable=True))], [v.key], E.ADDRESS)
    world.fails([with_account(ix, 3, AccountMeta(a.vault, is_signer=False, is_writable=True))], [v.key],
                E.TOKEN_ACCOUNT)
    world.fails([with_account(ix, 6, AccountMeta(a.worker_account, is_signer=False, is_writable=True))], [v.key],
                E.ADDRESS)  # the worker account as the pair record
    world.fails([with_account(ix, 2, AccountMeta(a.job, is_signer=False, is_writable=True))], [v.key], E.ADDRESS)
    world.ok([ix], [v.key])


# -- re-initialisation, settling twice ----------------------------------------------------------


def test_post_twice_and_commit_twice_are_refused(world: World) -> None:
    t = world.terms()
    world.post(t)
    world.fails([world.program.post(t, source=world.consumer.token)], [world.consumer.key], E.INITIALIZED)
    world.commit(t)
    world.fails([world.program.commit(t, os.urandom(32), source=world.worker.token)], [world.worker.key], E.STATE)


def test_settling_twice_in_one_transaction_or_two(world: World) -> None:
    t = world.terms()
    world.post(t)
    world.commit(t)
    ix = world.verdict_ix(t, passed=True)
    fail = world.verdict_ix(t, passed=False)
    world.fails([ix, fail], [world.verifier.key], E.OWNER)  # the second sees the account closed: all rolled back
    assert world.job(t).state == J.JobState.COMMITTED
    world.ok([ix], [world.verifier.key])
    world.fails([fail], [world.verifier.key], E.OWNER)
    world.chain.warp(t.verdict_deadline + 1)
    world.fails([world.program.claim(t, committed=True, dest=world.worker.token)], [world.outsider.key], E.OWNER)


def test_reoffer_keeps_the_statistics(world: World) -> None:
    t = world.terms()
    world.post(t)
    world.commit(t)
    world.ok([world.verdict_ix(t, passed=True)], [world.verifier.key])
    world.offer(world.worker, price=5, max_bond=9)
    stats = world.program.read_worker(world.chain, world.worker.pubkey)
    assert stats is not None and stats.passes == 1 and stats.offer.price == 5 and stats.offer.max_bond == 9


# -- terms nobody accepted ------------------------------------------------------------------------


def test_terms_outside_the_offer_or_impossible_are_refused(world: World) -> None:
    world.offer(world.worker, price=10, min_bond=5, max_bond=50)
    c = world.consumer
    cases = [
        (world.terms(price=9, bond=5), E.OFFER),  # below the offer's price
        (world.terms(price=10, bond=4), E.OFFER),  # bond below the minimum
        (world.terms(price=10, bond=51), E.OFFER),  # bond above the maximum (not the worker's whole balance)
        (world.terms(price=10, bond=5, verifier=world.outsider), E.OFFER),  # a verifier the worker did not accept
    ]
    for t, code in cases:
        world.fails([world.program.post(t, source=c.token)], [c.key], code)
    ok = world.terms(price=10, bond=5)
    # the consumer as its own verifier, a deadline already passed, a verdict window too short
    post = world.program.post(ok, source=c.token)
    world.fails([with_data(post, 136, bytes(c.pubkey))], [c.key], E.TERMS)
    world.fails([with_data(post, 24, struct.pack("<Q", world.chain.slot()))], [c.key], E.TERMS)
    world.fails([with_data(post, 32, struct.pack("<Q", ok.commit_deadline + 1))], [c.key], E.TERMS)
    world.fails([with_data(post, 32, struct.pack("<Q", world.chain.slot() + J.MAX_DEADLINE_SLOTS + 1))], [c.key],
                E.TERMS)
    with pytest.raises(InputError, match="three different keys"):
        world.terms(verifier=world.consumer)
    world.ok([post], [c.key])


def test_inactive_offer_takes_no_jobs(world: World) -> None:
    offer = J.Offer(mint=world.mint, price=1, min_bond=0, max_bond=10, verifiers=(world.verifier.pubkey,),
                    active=False)
    world.ok([world.program.offer(world.worker.pubkey, offer)], [world.worker.key])
    world.fails([world.program.post(world.terms(bond=1), source=world.consumer.token)], [world.consumer.key], E.OFFER)


# -- arithmetic at the limits -------------------------------------------------------------------


def test_price_plus_bond_at_u64_max_settles_and_one_more_is_refused(world: World) -> None:
    mint, auth = world.new_mint()
    bond = 7
    consumer, worker = world.party(), world.party()
    consumer.token = world.token_account(consumer.pubkey, J.U64_MAX - bond, mint=mint, authority=auth)
    worker.token = world.token_account(worker.pubkey, bond, mint=mint, authority=auth)
    world.offer(worker, mint=mint)
    t = world.terms(price=J.U64_MAX - bond, bond=bond, consumer=consumer, worker=worker, mint=mint)
    over = with_data(world.program.post(t, source=consumer.token), 16, struct.pack("<Q", bond + 1))
    world.fails([over], [consumer.key], E.TERMS)  # price + bond wraps around u64
    with pytest.raises(InputError, match="price \\+ bond"):
        world.terms(price=J.U64_MAX - bond, bond=bond + 1, consumer=consumer, worker=worker, mint=mint)
    world.post(t, consumer)
    world.commit(t, worker)
    assert vault_tokens(world, t) == J.U64_MAX
    world.ok([world.verdict_ix(t, passed=True, dest=worker.token)], [world.verifier.key])
    assert world.tokens(worker.token) == J.U64_MAX and world.tokens(consumer.token) == 0


# -- the beacon ---------------------------------------------------------------------------------


def test_beacon_must_follow_the_commit_and_be_a_real_slot(world: World) -> None:
    t = world.terms()
    world.post(t)
    world.commit(t)
    commit_slot = world.job(t).commit_slot
    v = world.verifier
    for slot in (commit_slot - 1, commit_slot, world.chain.slot() + 5):  # before, at, not yet happened
        world.fails([world.verdict_ix(t, passed=True, beacon_slot=slot)], [v.key], E.BEACON)
    world.ok([world.verdict_ix(t, passed=True, beacon_slot=commit_slot + 1)], [v.key])


# -- squatters and donors -----------------------------------------------------------------------


def test_prefunded_job_vault_and_pair_addresses_do_not_block_post(world: World) -> None:
    consumer = world.party()
    t = world.terms(consumer=consumer)
    a = world.program.addresses(t)
    gift = 1_234_567
    world.ok([sp.transfer(sp.TransferParams(from_pubkey=world.outsider.pubkey, to_pubkey=k, lamports=gift))
              for k in (a.job, a.vault, a.pair)], [world.outsider.key])
    lamports0 = world.lamports(consumer.pubkey)
    world.post(t, consumer)
    world.commit(t)
    world.ok([world.verdict_ix(t, passed=True)], [world.verifier.key])
    # the squatter's lamports in the job and vault accounts went to the consumer with the rent;
    # the pair record kept its own (it is never closed)
    pair_rent = world.chain.rent_exempt(J.PAIR_SIZE)
    assert world.lamports(consumer.pubkey) == lamports0 - 5_000 - (pair_rent - gift) + 2 * gift
    assert world.lamports(a.pair) == pair_rent


def test_tokens_sent_to_the_vault_go_with_the_settlement(world: World) -> None:
    t = world.terms(price=100, bond=10)
    world.post(t)
    vault = world.program.addresses(t).vault
    world.ok([spl.transfer(models.TransferParams(program_id=J.TOKEN_PROGRAM_ID, source=world.outsider.token,
                                                 dest=vault, owner=world.outsider.pubkey, amount=5))],
             [world.outsider.key])
    world.chain.warp(t.commit_deadline + 1)
    c0 = world.tokens(world.consumer.token)
    world.ok([world.program.claim(t, committed=False, dest=world.consumer.token)], [world.outsider.key])
    assert world.tokens(world.consumer.token) == c0 + 105


def test_program_error_parses_only_custom_codes() -> None:
    assert J.program_error("TransactionErrorInstructionError((0, Tagged(InstructionErrorCustom(14))))") == E.BEACON
    assert J.program_error("TransactionErrorInstructionError((0, Tagged(InstructionErrorInvalidAccountData)))") is None
    assert J.program_error("InstructionError(0, Custom(14))") == E.BEACON
    assert J.program_error("InstructionError(0, Custom(999))") is None
    assert J.program_error(None) is None
