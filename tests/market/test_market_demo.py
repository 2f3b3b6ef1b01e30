"""The marketplace round ``pocv demo`` runs, with the stand-in compute callbacks."""

from __future__ import annotations

import io
import re

from pocv.kernels import resolve_spec
from pocv.market.demo import run_market_demo
from pocv.testing.market import stand_in_verdict


def test_demo_round_pays_honest_and_slashes_cheater() -> None:
    out = io.StringIO()
    r = run_market_demo(out=out)
    text = out.getvalue()
    assert r["ok"], text
    assert [x["result"] for x in r["rounds"]] == ["PASS", "FAIL", "EXPIRED"]
    assert [x["worker"] for x in r["rounds"]] == ["honest worker", "cheating worker", "honest worker"]
    assert r["tokens_reconciled"] and r["lamports_reconciled"]
    assert r["reputation"]["cheating worker"]["fails"] == 1
    assert r["reputation"]["honest worker"]["expired"] == 1
    for party in ("consumer", "honest worker", "cheating worker", "verifier"):
        assert party in text
    assert "beacon: slot:" in text and "commit by slot" in text and "verdict by slot" in text
    assert "result: honest worker PAID, cheater SLASHED, silent verifier's job PAID BY CLAIM" in text
    # one signature per transaction; the early CLAIM is refused by the program at the deadline
    job_txs = [t for t in r["transactions"] if t["step"].startswith(("POST", "COMMIT", "VERDICT", "CLAIM"))]
    assert len(job_txs) == 10 and all(t["fee"] == 5_000 for t in job_txs)
    early = [t for t in job_txs if not t["ok"]]
    assert len(early) == 1 and "Custom(9)" in early[0]["error"] and early[0]["slot"] == r["rounds"][2][
        "verdict_deadline"]


def test_demo_with_engine_callbacks_gets_the_chain_beacon() -> None:
    from solders.keypair import Keypair

    from pocv.jobs import JobSpec
    from pocv.records import Commitment, Verdict

    seen: list[tuple[bytes, str]] = []

    def commit(spec: JobSpec, key: Keypair, honest: bool) -> Commitment:
        return Commitment.create(spec=spec, root=(b"\x01" if honest else b"\x02") * 32, key=key)

    def verify(c: Commitment, beacon: bytes, source: str, key: Keypair) -> Verdict:
        seen.append((beacon, source))
        ok = c.root == b"\x01" * 32
        return stand_in_verdict(job_id=c.job_id, root=c.root, beacon=beacon, kernel=c.spec.kernel_ref, key=key, ok=ok)

    r = run_market_demo(commit=commit, verify=verify)
    assert r["ok"] and not r["stand_in"]
    assert [b.hex() for b, _ in seen] == [x["beacon"] for x in r["rounds"][:2]]  # job 3: the verifier is silent
    assert all(re.fullmatch(r"slot:[0-9]+:after:[0-9]+", s) for _, s in seen)  # checkable: slot after commit


def test_demo_over_the_real_engine(tmp_path: object) -> None:
    """Real provers and the real verifier, challenged with the chain beacon; the cheater skips steps."""
    from pathlib import Path

    from solders.keypair import Keypair

    from pocv.jobs import JobSpec
    from pocv.market.demo import engine_callbacks
    from pocv.prover import Prover
    from pocv.testing import LazyProver

    root = Path(str(tmp_path))
    made: list[str] = []

    def make_prover(key: Keypair, honest: bool) -> Prover:
        d = root / f"trace-{len(made)}"
        made.append(str(d))
        if honest:
            return Prover(trace_dir=d, key=key)
        return LazyProver(trace_dir=d, key=key, skip_fraction=0.5, seed=7)

    commit, verify = engine_callbacks(make_prover)
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=24, seed=11, params={"n": 16}))
    out = io.StringIO()
    r = run_market_demo(spec=spec, commit=commit, verify=verify, out=out)
    assert r["ok"], out.getvalue()
    assert [x["result"] for x in r["rounds"]] == ["PASS", "FAIL", "EXPIRED"]
    assert len(made) == 3
