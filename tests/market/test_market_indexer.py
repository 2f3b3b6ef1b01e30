"""The indexer rebuilds histories and reputations from chain data, trusting no memo on its own."""

from __future__ import annotations

import os
from pathlib import Path

from solders.keypair import Keypair

from pocv.market import memo as memos
from pocv.market import programs as P
from pocv.market.escrow import EscrowAddresses, sign_and_send
from pocv.market.indexer import Indexer, reputations
from pocv.market.market import JobRequest, Offer, Reputation, match, publish_offer
from tests.market.conftest import World


def _settle(w: World, kind: str, worker: Keypair | None = None) -> bytes:
    t = w.terms(worker=worker)
    root = w.post_and_commit(t, worker)
    wk = worker or w.worker
    if kind == "TIMEOUT":
        assert w.escrow.timeout(t, consumer=w.consumer, worker=wk).ok
    else:
        v = w.verdict(t, root, ok=kind == "PASS")
        assert w.escrow.settle(t, root=root, verdict=v, verifier=w.verifier,
                               cosigner=wk if kind == "PASS" else w.consumer).ok
    return t.job_id


def test_histories_and_reputation_rebuilt_from_chain(fast_world: World) -> None:
    w = fast_world
    ids = {_settle(w, k): k for k in ["PASS", "PASS", "FAIL", "TIMEOUT"]}
    open_job = w.terms()
    root = w.post_and_commit(open_job)
    jobs = Indexer(w.backend, w.mint).jobs()
    by_id = {j.job_id: j for j in jobs}
    assert {k: by_id[k].status for k in ids} == ids
    assert by_id[open_job.job_id].status == "committed" and by_id[open_job.job_id].root == root
    assert all(not j.anomalies for j in jobs)
    fail = next(j for j in jobs if j.status == "FAIL")
    assert fail.paid == {"consumer": fail.terms.price + fail.terms.bond}
    assert [e.kind for e in fail.events] == ["post", "commit", "settle"]
    rep = reputations(jobs)[w.worker.pubkey()]
    assert (rep.passes, rep.fails, rep.timeouts, rep.slashed) == (2, 1, 1, 500)


def test_outsider_pass_memo_is_ignored(fast_world: World) -> None:
    w = fast_world
    t = w.terms()
    root = w.post_and_commit(t)
    vault = EscrowAddresses.derive(t).vault
    fake = memos.make("settle", job=memos.b58(t.job_id), root=memos.b58(root), result="PASS",
                      verdict=memos.b58(os.urandom(32)))
    # the outsider names the vault (read-only) so the memo lands in the vault's history
    out = sign_and_send(w.backend, [P.memo(fake.text(), (w.outsider.pubkey(),))], [w.outsider], [vault])
    assert out.ok, out.error
    assert str(out.signature) in {str(s) for s in w.backend.signatures_for_address(vault)}
    job = Indexer(w.backend, w.mint).job(t.job_id)
    assert job is not None
    assert job.status == "committed"
    assert any("expected" in a and "ignored" in a for a in job.anomalies)
    assert reputations([job]).get(w.worker.pubkey(), Reputation(worker=w.worker.pubkey())).passes == 0


def test_verifier_memo_without_payout_is_ignored(fast_world: World) -> None:
    """Even the real verifier's PASS memo counts only with the matching token movements."""
    w = fast_world
    t = w.terms()
    root = w.post_and_commit(t)
    m = memos.make("settle", job=memos.b58(t.job_id), root=memos.b58(root), result="PASS",
                   verdict=memos.b58(os.urandom(32)))
    vault = EscrowAddresses.derive(t).vault
    assert sign_and_send(w.backend, [P.memo(m.text(), (w.verifier.pubkey(),))], [w.verifier], [vault]).ok
    job = Indexer(w.backend, w.mint).job(t.job_id)
    assert job is not None and job.status == "committed"
    assert any("tokens moved" in a for a in job.anomalies)


def test_memo_naming_an_unsigned_key_does_not_land(fast_world: World) -> None:
    w = fast_world
    from solders.instruction import AccountMeta, Instruction

    ix = Instruction(P.MEMO_PROGRAM_ID, b"pocv1 settle", [AccountMeta(w.verifier.pubkey(), False, False)])
    out = sign_and_send(w.backend, [ix], [w.outsider])
    assert not out.ok


def test_sqlite_cache_fetches_each_transaction_once(fast_world: World, tmp_path: Path) -> None:
    w = fast_world
    for k in ["PASS", "FAIL"]:
        _settle(w, k)
    db = tmp_path / "index.sqlite"
    ix = Indexer(w.backend, w.mint, cache=db)
    first = [j.to_dict() for j in ix.jobs()]
    assert ix.fetched >= 6
    second = [j.to_dict() for j in ix.jobs()]
    assert ix.fetched == 0 and second == first
    ix.close()
    again = Indexer(w.backend, w.mint, cache=db)  # a new process reads the same file
    assert [j.to_dict() for j in again.jobs()] == first and again.fetched == 0
    _settle(w, "PASS")
    assert len(again.jobs()) == 3 and again.fetched == 3


# -- offers and matching ----------------------------------------------------------------------


def _offer(k: Keypair, price: int, kernels: tuple[str, ...] = ("gemm-int8",), dev: str = "cpu-x86",
           bond: int = 500) -> Offer:
    return Offer(worker=k.pubkey(), device_class=dev, fingerprint=bytes(32), price=price, bond=bond, kernels=kernels)


def test_offers_published_on_chain_and_latest_wins(fast_world: World) -> None:
    w = fast_world
    assert publish_offer(w.backend, _offer(w.worker, 900), w.worker, w.mint).ok
    assert publish_offer(w.backend, _offer(w.outsider, 800, ("mlp-sgd",)), w.outsider, w.mint).ok
    assert publish_offer(w.backend, _offer(w.worker, 700), w.worker, w.mint).ok
    offers = {o.worker: o for o in Indexer(w.backend, w.mint).offers()}
    assert offers[w.worker.pubkey()].price == 700
    assert offers[w.outsider.pubkey()].kernels == ("mlp-sgd",)


def test_matcher_picks_cheapest_qualified_weighted_by_history() -> None:
    a, b, c, d = (Keypair() for _ in range(4))
    offers = [_offer(a, 1_000), _offer(b, 900), _offer(c, 500, ("mlp-sgd",)), _offer(d, 950, dev="h100")]
    req = JobRequest(kernel="gemm-int8@1", max_price=2_000)
    m = match(req, offers, {})
    assert m is not None and m.offer.worker == b.pubkey() and m.qualified == 3 and m.considered == 4
    # b has failed before: a, with a clean record, now wins despite the higher price
    rep = {b.pubkey(): Reputation(worker=b.pubkey(), passes=3, fails=1),
           a.pubkey(): Reputation(worker=a.pubkey(), passes=5)}
    m = match(req, offers, rep)
    assert m is not None and m.offer.worker == a.pubkey()
    assert match(JobRequest(kernel="gemm-int8", max_price=2_000, device_class="h100"), offers, rep).offer.worker \
        == d.pubkey()  # type: ignore[union-attr]
    assert match(JobRequest(kernel="gemm-int8", max_price=100), offers, rep) is None
    assert match(JobRequest(kernel="gemm-int8", max_price=2_000, min_bond=10_000), offers, rep) is None


def test_junk_on_the_board_is_not_a_job(fast_world: World) -> None:
    """Anyone can write to the board: malformed posts, posts without a deposit, posts for someone else."""
    from pocv.market.escrow import board_address

    w = fast_world
    board = board_address(w.mint)
    t = w.terms()
    junk = [
        "pocv1 post job=xx spec=yy kernel=k dev=any conf=1 c=a w=b v=c price=1 bond=1 dl=1",  # bad keys, digests
        t.post_memo().text(),  # a well-formed post by the outsider, naming the consumer, with no deposit
        "pocv1 offer dev=cpu fp=- price=0 bond=0 kernels=x",  # price 0: not a valid offer
        "hello",
    ]
    for text in junk:
        assert sign_and_send(w.backend, [P.memo(text, (w.outsider.pubkey(),))], [w.outsider], [board]).ok
    _settle(w, "PASS")
    offers, jobs = Indexer(w.backend, w.mint).refresh()
    assert [j.status for j in jobs] == ["PASS"] and offers == []
