"""A response cannot make the verifier allocate more than an honest answer needs (issue 15, class 2).

Every count in a bundle is bounded by what the verifier's own challenge requires before what it
counts is read: the file size by the largest honest answer, the indices by the challenge's, each
opened leaf by the set the challenge opens, each state by the job's exact state size, the proof
by the exact multiproof size. Peak memory is measured with tracemalloc around ``Verifier.check``
on the worst bundles we can build, each read from a file object as the CLI does.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import MAGIC, Expected, Response
from pocv.encoding import encoded_size
from pocv.kernels import kernel_for, resolve_spec
from pocv.merkle import MAX_PROOF_HASHES, multiproof_size
from pocv.records import Verdict

SPEC = resolve_spec(JobSpec(kernel="gemm-int8", steps=120, seed=5, params={"n": 128, "layers": 1}))
STATE = encoded_size(kernel_for(SPEC).schema(SPEC))  # 16 KiB


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Prover, Verifier, object, object]:
    prover = Prover(trace_dir=tmp_path_factory.mktemp("t") / "trace", key=Keypair.from_seed(bytes([1]) * 32))
    c = prover.run(SPEC)
    v = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
    ch = v.challenge(c, beacon=bytes([7]) * 32, k=3)
    return prover, v, c, ch


def _peak(fn: Callable[[], Verdict]) -> tuple[Verdict, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        verdict = fn()
        return verdict, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _check_file(v: Verifier, c: object, ch: object, path: Path) -> Callable[[], Verdict]:
    def run() -> Verdict:
        with path.open("rb") as f:
            return v.check(c, ch, f)  # type: ignore[arg-type]
    return run


def test_an_honest_answer_is_read_holding_its_states_only(job, tmp_path: Path) -> None:
    prover, v, c, ch = job
    path = tmp_path / "honest.pocv"
    path.write_bytes(prover.respond(ch).to_bytes())
    verdict, peak = _peak(_check_file(v, c, ch, path))
    assert verdict.passed
    opened = len(Response.opened_leaves(ch.indices))
    assert peak < (2 * opened + 8) * STATE + (4 << 20)  # states (+ their decoded copies) and working room


def test_a_bundle_opening_every_state_is_refused_after_one_unwanted_header(job, tmp_path: Path) -> None:
    # all 121 states, a valid multiproof (of all of them: none), answering the right indices
    prover, v, c, ch = job
    states, proof = prover.open(range(c.tree_size))
    fat = Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices, states=states,
                   proof=tuple(proof))
    path = tmp_path / "fat.pocv"
    path.write_bytes(fat.to_bytes())
    assert path.stat().st_size > 100 * STATE
    verdict, peak = _peak(_check_file(v, c, ch, path))
    assert not verdict.passed and {o.reason for o in verdict.outcomes} == {"MALFORMED"}
    assert "at most" in verdict.outcomes[0].detail or "does not ask for" in verdict.outcomes[0].detail
    assert peak < 8 * STATE + (1 << 20), f"{peak} bytes to refuse a bundle of {path.stat().st_size}"


def test_unwanted_leaves_inside_the_size_bound_are_refused_before_their_bytes(job, tmp_path: Path) -> None:
    # as many states as an honest answer, but some of them not asked for: same size, other leaves
    prover, v, c, ch = job
    want = Response.opened_leaves(ch.indices)
    other = sorted({j for j in range(c.tree_size) if j not in want})[: len(want) - 1]
    states, proof = prover.open([0, *other])
    liar = Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices, states=states,
                    proof=tuple(proof))
    verdict = v.check(c, ch, liar.to_bytes())
    assert not verdict.passed and "does not ask for" in verdict.outcomes[0].detail


def test_a_sparse_file_claiming_the_global_proof_limit_is_refused_by_size(job, tmp_path: Path) -> None:
    prover, v, c, ch = job
    honest = prover.respond(ch)
    # everything up to the proof count (the leaf values follow the proof)
    head = honest.to_bytes()[: -4 - 32 * len(honest.proof) - 4 - 40 * len(honest.values) - 96]
    path = tmp_path / "sparse.pocv"
    with path.open("wb") as f:
        f.write(head + struct.pack("<I", MAX_PROOF_HASHES))
        f.truncate(len(head) + 4 + 32 * MAX_PROOF_HASHES)  # sparse: 150 MB claimed, no disk used
    verdict, peak = _peak(_check_file(v, c, ch, path))
    assert not verdict.passed and {o.reason for o in verdict.outcomes} == {"MALFORMED"}
    assert "honest answer" in verdict.outcomes[0].detail
    assert peak < 1 << 20


def test_a_proof_count_other_than_the_exact_multiproof_is_bad_proof(job) -> None:
    prover, v, c, ch = job
    honest = prover.respond(ch)
    need = multiproof_size(honest.opened(), c.tree_size)
    assert len(honest.proof) == need
    shorter = Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices,
                       states=honest.states, values=honest.values, proof=honest.proof[:-1])
    verdict = v.check(c, ch, shorter.to_bytes())
    assert {o.reason for o in verdict.outcomes} == {"BAD_PROOF"}
    assert f"expected {need} hashes" in verdict.outcomes[0].detail


def test_other_indices_are_refused_before_any_state(job) -> None:
    prover, v, c, ch = job
    honest = prover.respond(ch)
    data = bytearray(honest.to_bytes())
    at = len(MAGIC) + 4 + 32 + 32 + 8 + 4  # the first index
    data[at : at + 8] = struct.pack("<Q", ch.indices[0] + 1 if ch.indices[0] + 1 not in ch.indices else 1)
    verdict = v.check(c, ch, bytes(data))
    assert {o.reason for o in verdict.outcomes} == {"WRONG_JOB"}


def test_the_size_bound_is_the_largest_honest_answer(job) -> None:
    prover, _, c, ch = job
    honest = prover.respond(ch)  # s_i by value: smaller than the bound
    whole = prover.respond(ch, whole=True)  # every leaf whole: the largest honest answer
    e = Expected(job_id=c.job_id, root=c.root, tree_size=c.tree_size, state_bytes=STATE, indices=ch.indices)
    assert len(honest.to_bytes()) < len(whole.to_bytes()) <= e.max_bundle_bytes() < len(whole.to_bytes()) + 64 * 32


_RSS_PROBE = """
import resource, sys
from pathlib import Path
from solders.keypair import Keypair
from pocv import Commitment, Challenge, Verifier
d = Path(sys.argv[1])
c = Commitment.from_json((d / "c.json").read_text())
ch = Challenge.from_json((d / "ch.json").read_text())
v = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
v.check(c, ch, None)  # everything imported and warmed: the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[2] != "-":
    with open(sys.argv[2], "rb") as f:
        verdict = v.check(c, ch, f)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_rss_of_the_verifier_on_the_worst_bundles(tmp_path: Path) -> None:
    # the bounds, on the process's peak RSS (torch's and numpy's memory included):
    # any bundle <= (2k+1) x state + 64 MiB above the warmed-up verifier, a lying one <= 64 MiB.
    # 16 MiB states: a bundle opening all 9 of them (144 MiB) would break the bound if it were read.
    import subprocess
    import sys

    spec = resolve_spec(JobSpec(kernel="heat2d", steps=8, seed=2, params={"n": 2048, "substeps": 1}))
    state = encoded_size(kernel_for(spec).schema(spec))
    assert state >= 16 << 20
    prover = Prover(trace_dir=tmp_path / "trace", key=Keypair.from_seed(bytes([1]) * 32), checkpoint_every=1)
    c = prover.run(spec)
    ch = Verifier(key=Keypair.from_seed(bytes([2]) * 32)).challenge(c, beacon=bytes([9]) * 32, k=2)
    (tmp_path / "c.json").write_text(c.to_json())
    (tmp_path / "ch.json").write_text(ch.to_json())
    honest = prover.respond(ch)
    (tmp_path / "honest.pocv").write_bytes(honest.to_bytes())
    states, proof = prover.open(range(c.tree_size))
    fat = Response(job_id=c.job_id, root=c.root, tree_size=c.tree_size, indices=ch.indices, states=states,
                   proof=tuple(proof))
    (tmp_path / "fat.pocv").write_bytes(fat.to_bytes())
    head = honest.to_bytes()[: -4 - 32 * len(honest.proof) - 4 - 40 * len(honest.values) - 96]
    with (tmp_path / "sparse.pocv").open("wb") as f:
        f.write(head + struct.pack("<I", MAX_PROOF_HASHES))
        f.truncate(len(head) + 4 + 32 * MAX_PROOF_HASHES + 96)
    mib = 1024  # ru_maxrss is in KiB
    opened = len(Response.opened_leaves(ch.indices))
    assert (tmp_path / "fat.pocv").stat().st_size > 128 << 20
    for name, bound in (("honest.pocv", opened * state // 1024 + 64 * mib), ("fat.pocv", 64 * mib),
                        ("sparse.pocv", 64 * mib)):
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(tmp_path), str(tmp_path / name)],
                             capture_output=True, text=True, check=True, timeout=600)
        base, peak = map(int, out.stdout.split())
        assert peak - base <= bound, f"{name}: {peak - base} KiB above the warmed verifier, bound {bound} KiB"
