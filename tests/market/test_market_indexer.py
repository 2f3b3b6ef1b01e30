"""The indexer rebuilds job histories from the program's transactions and reads offers and
records from its accounts; the matcher weighs records by distinct counterparties."""

from __future__ import annotations

import os
from pathlib import Path

from solders.keypair import Keypair

from pocv.market import jobprogram as J
from pocv.market.escrow import sign_and_send
from pocv.market.indexer import Indexer
from pocv.market.market import Capabilities, JobRequest, Offer, Reputation, match
from tests.market.conftest import CAPS, World


def _settle(w: World, kind: str, worker: Keypair | None = None) -> bytes:
    t = w.terms(worker=worker, commit_window=2, verdict_window=2)
    wk = worker or w.worker
    if kind == "REFUNDED":
        assert w.escrow.post(t, w.consumer).ok
        w.backend.warp_to(t.commit_deadline + 1)
        assert w.escrow.claim(t, w.outsider).ok
        return t.job_id
    root = w.post_and_commit(t, wk)
    if kind == "EXPIRED":
        w.backend.warp_to(t.verdict_deadline + 1)
        assert w.escrow.claim(t, wk).ok
    else:
        assert w.escrow.verdict(t, w.verdict(t, root, ok=kind == "PASSED"), w.verifier).ok
    return t.job_id


def test_histories_and_records_rebuilt_from_the_program(fast_world: World) -> None:
    w = fast_world
    ids = {_settle(w, k): k for k in ["PASSED", "PASSED", "FAILED", "REFUNDED", "EXPIRED"]}
    open_job = w.terms()
    root = w.post_and_commit(open_job)
    ix = Indexer(w.backend, w.program, book={CAPS.digest(): CAPS})
    offers, jobs = ix.refresh()
    by_id = {j.job_id: j for j in jobs}
    assert {k: by_id[k].status for k in ids} == ids
    assert by_id[open_job.job_id].status == "COMMITTED" and by_id[open_job.job_id].root == root
    assert by_id[open_job.job_id].terms == open_job
    assert [o.worker for o in offers] == [w.worker.pubkey()] and offers[0].capabilities == CAPS
    rep = ix.reputations()[w.worker.pubkey()]
    assert (rep.passes, rep.fails, rep.expired, rep.lapsed, rep.distinct_consumers) == (2, 1, 1, 1, 1)
    assert rep.slashed == 500 and rep.counted_passes == 1  # two PASSes from one consumer count once
    assert ix.job(open_job.job_id) == by_id[open_job.job_id]


def test_failed_transactions_and_other_programs_are_not_history(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    assert w.escrow.post(t, w.consumer).ok
    # an outsider's COMMIT fails on chain: it is not an event
    from solders.instruction import AccountMeta, Instruction

    ix = w.program.commit(t, os.urandom(32))
    metas = [AccountMeta(w.outsider.pubkey(), is_signer=True, is_writable=False), *list(ix.accounts)[1:]]
    bad = J.send(w.backend, [Instruction(ix.program_id, bytes(ix.data), metas)], [w.outsider])
    assert not bad.ok and bad.landed
    (job,) = Indexer(w.backend, w.program).refresh()[1]
    assert job.status == "POSTED" and [e.kind for e in job.events] == ["POST"]


def test_sqlite_cache_fetches_each_transaction_once(fast_world: World, tmp_path: Path) -> None:
    w = fast_world
    _settle(w, "PASSED")
    calls = []
    real = w.backend.get_transaction

    def counting(sig):  # type: ignore[no-untyped-def]
        calls.append(sig)
        return real(sig)

    w.backend.get_transaction = counting  # type: ignore[method-assign]
    cache = tmp_path / "index.sqlite"
    first = Indexer(w.backend, w.program, cache=cache)
    jobs1 = first.refresh()[1]
    first.close()
    n = len(calls)
    assert n >= 4
    second = Indexer(w.backend, w.program, cache=cache)
    jobs2 = second.refresh()[1]
    assert len(calls) == n and [j.to_dict() for j in jobs2] == [j.to_dict() for j in jobs1]
    _settle(w, "FAILED")
    assert [j.status for j in second.refresh()[1]] == ["PASSED", "FAILED"]
    assert len(calls) == n + 3  # only the three new transactions


def test_offer_updates_and_unknown_capabilities(fast_world: World) -> None:
    w = fast_world
    w.offer(w.worker, price=70)
    w.offer(w.worker, price=50)
    w.offer(w.outsider, price=10)
    ix = Indexer(w.backend, w.program, book={CAPS.digest(): CAPS})
    offers = {o.worker: o for o in ix.refresh()[0]}
    assert offers[w.worker.pubkey()].price == 50  # the account holds the latest
    req = JobRequest(kernel="gemm-int8@1", max_price=100, verifier=w.verifier.pubkey())
    assert match(req, offers.values(), ix.reputations()).offer.worker == w.outsider.pubkey()  # type: ignore[union-attr]
    # a matcher that does not know the capabilities document does not match the offer
    blind = Indexer(w.backend, w.program)
    assert match(req, blind.refresh()[0], blind.reputations()) is None
    other = Capabilities(device_class="h100", kernels=("mlp-sgd",))
    assert match(JobRequest(kernel="mlp-sgd", max_price=100), offers.values(), {}) is None
    assert other.digest() != CAPS.digest()


def _offer(price: int, key: Keypair | None = None) -> Offer:
    k = key or Keypair()
    terms = J.Offer(mint=Keypair().pubkey(), price=price, min_bond=0, max_bond=10, verifiers=(Keypair().pubkey(),))
    return Offer(worker=k.pubkey(), terms=terms, capabilities=CAPS)


def test_matcher_weighs_distinct_counterparties_not_repeat_jobs() -> None:
    veteran, sybil, newcomer = _offer(100), _offer(100), _offer(100)
    reps = {
        veteran.worker: Reputation(worker=veteran.worker, passes=3, distinct_consumers=3),
        # 50 PASSes from one consumer key (its own, say): counted once
        sybil.worker: Reputation(worker=sybil.worker, passes=50, distinct_consumers=1),
    }
    req = JobRequest(kernel="gemm-int8", max_price=1_000)
    assert reps[sybil.worker].trust < reps[veteran.worker].trust
    assert Reputation(worker=newcomer.worker).trust == 0.5 < reps[sybil.worker].trust
    m = match(req, [newcomer, sybil, veteran], reps)
    assert m is not None and m.offer.worker == veteran.worker and m.qualified == 3
    cheap_cheat = _offer(60)
    reps[cheap_cheat.worker] = Reputation(worker=cheap_cheat.worker, passes=1, fails=1, distinct_consumers=1)
    assert match(req, [cheap_cheat, veteran], reps).offer.worker == veteran.worker  # type: ignore[union-attr]


def test_junk_transactions_naming_the_program_are_not_jobs(fast_world: World) -> None:
    w = fast_world
    from solders.instruction import Instruction

    junk = Instruction(w.program.program_id, b"\x09" * 8, [])
    out = sign_and_send(w.backend, [junk], [w.outsider])
    assert not out.ok  # the program refuses it: a failed transaction is no history
    assert Indexer(w.backend, w.program).refresh()[1] == []
