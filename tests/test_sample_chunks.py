"""Tolerance kernels compared on a beacon-drawn sample of s_i's chunks (issue 11 point 5, stage 3;
docs/protocol.md §8.1).

A job that sets ``sample_chunks = m`` has each challenged s_i opened by its leaf value and m of
its chunks, drawn from the challenge seed, each with its audit path in the state's subtree; the
verifier recomputes s_i, puts the claimed chunks in place of its own and compares element by
element. The verdict says, per step, what the sample catches. Here: the spec rules, the draw,
an honest PASS with fewer bytes, cheats caught exactly when the sample reaches them, and every
way a lying worker can bend the openings.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import Response
from pocv.challenge import chunk_detection, derive_chunks
from pocv.encoding import ChunkLayout
from pocv.errors import SpecError
from pocv.kernels import get_kernel, kernel_for, resolve_spec
from pocv.records import Reason

WORKER = Keypair.from_seed(bytes([1]) * 32)
V = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
SPEC = resolve_spec(JobSpec(kernel="mlp-sgd", steps=16, seed=4, params={"width": 16, "depth": 1, "batch": 4},
                            sample_chunks=2))
LAYOUT = ChunkLayout.from_schema(kernel_for(SPEC).schema(SPEC))
CHEAT_STEP = 9


def test_the_job_says_so_and_only_where_the_rule_is_element_by_element() -> None:
    plain = resolve_spec(dataclasses.replace(SPEC, sample_chunks=0))
    assert "sample_chunks" not in plain.to_dict()  # ids of jobs without it are unchanged
    assert SPEC.to_dict()["sample_chunks"] == 2
    assert SPEC.job_id != plain.job_id
    assert JobSpec.from_json(SPEC.to_json()) == SPEC
    with pytest.raises(SpecError, match="sample_chunks must be an integer in 0..1024"):
        JobSpec(kernel="mlp-sgd", steps=4, seed=1, sample_chunks=1025)
    with pytest.raises(SpecError, match="compares whole states"):
        resolve_spec(JobSpec(kernel="gemm-int8", steps=4, seed=1, params={"n": 64}, sample_chunks=1))
    assert get_kernel("gemm-fp32").samples_chunks()  # Freivalds checks compare()'s own rule
    assert not get_kernel("hf-causal-lm").samples_chunks()  # its rule is token by token


@given(st.binary(min_size=32, max_size=32), st.integers(1, 10_000), st.integers(1, 300), st.integers(1, 40))
def test_the_draw_is_distinct_sorted_in_range_and_seeded(beacon: bytes, leaf: int, count: int, m: int) -> None:
    got = derive_chunks(bytes(32), bytes([1]) * 32, beacon, leaf, count, m)
    assert got == tuple(sorted(set(got)))
    assert len(got) == min(m, count)
    assert all(0 <= c < count for c in got)
    assert got == derive_chunks(bytes(32), bytes([1]) * 32, beacon, leaf, count, m)
    if m < count:  # another step or beacon draws independently (not always different: small spaces collide)
        others = {derive_chunks(bytes(32), bytes([1]) * 32, beacon, leaf + d, count, m) for d in range(1, 9)}
        assert len(others | {got}) > 1 or count <= 2


class _OneChunkLiar(Prover):
    """Scales one tensor of s_CHEAT_STEP by 1.01: a cheat confined to that tensor's chunks."""

    tensor = "layer0.weight"

    def _step(self, kernel, state, i, spec, device):  # type: ignore[no-untyped-def]
        out = super()._step(kernel, state, i, spec, device)
        if i == CHEAT_STEP:
            out = dict(out)
            out[self.tensor] = out[self.tensor] * 1.01
        return out


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory):
    p = Prover(trace_dir=tmp_path_factory.mktemp("h") / "t", key=WORKER)
    return p, p.run(SPEC)


@pytest.fixture(scope="module")
def liar(tmp_path_factory: pytest.TempPathFactory):
    p = _OneChunkLiar(trace_dir=tmp_path_factory.mktemp("l") / "t", key=WORKER)
    return p, p.run(SPEC)


def test_an_honest_sampled_answer_passes_with_fewer_bytes_and_states_its_detection(honest) -> None:
    p, c = honest
    ch = V.challenge(c, beacon=bytes([5]) * 32, k=8)
    r = p.respond(ch)
    assert r.chunks and all(j in r.values and j not in r.states for j in r.chunks)
    for j, opened in r.chunks.items():
        assert tuple(i for i, _, _ in opened) == derive_chunks(c.job_id, c.root, ch.beacon, j, len(LAYOUT.chunks), 2)
    v = V.check(c, ch, r.to_bytes())
    assert v.passed, v.failures
    sampled = [o for o in v.outcomes if o.index in r.chunks]
    p_one = chunk_detection(2, len(LAYOUT.chunks))
    assert sampled and all(f"compared on 2 of {len(LAYOUT.chunks)} chunks" in o.detail and f"{p_one:.3f}" in o.detail
                           for o in sampled)
    whole = p.respond(ch, whole=True)
    assert len(r.to_bytes()) < len(whole.to_bytes())
    assert V.check(c, ch, whole).passed  # whole states are always a valid answer
    out = io.BytesIO()
    p.respond_to(ch, out)  # the streamed answer is the same bundle
    assert out.getvalue() == r.to_bytes()
    assert Response.from_bytes(out.getvalue()) == r  # and the in-memory record is what it parses to


def test_a_cheat_is_caught_exactly_when_the_sample_reaches_its_chunks(liar) -> None:
    p, c = liar
    tensor_chunks = {j for j, (name, _, _) in enumerate(LAYOUT.chunks) if name == p.tensor}
    caught = missed = 0
    for b in range(64):
        ch = V.challenge(c, beacon=bytes([b]) * 32, k=6)
        if CHEAT_STEP not in ch.indices or CHEAT_STEP + 1 in ch.indices:
            continue  # not challenged, or opened whole as s_(i-1) of the next step: compared in full
        r = p.respond(ch)
        assert CHEAT_STEP in r.chunks
        drawn = set(derive_chunks(c.job_id, c.root, ch.beacon, CHEAT_STEP, len(LAYOUT.chunks), 2))
        outcome = {o.index: o for o in V.check(c, ch, r).outcomes}[CHEAT_STEP]
        if drawn & tensor_chunks:
            assert outcome.reason == Reason.MISMATCH, outcome
            caught += 1
        else:
            assert outcome.reason == Reason.OK, outcome
            missed += 1
    assert caught > 0  # 2 of 5 chunks drawn: the one cheating chunk is reached 40% of the time
    assert missed > 0  # and missed otherwise: what the verdict's detail states


def test_a_cheat_in_every_chunk_is_always_caught(tmp_path: Path) -> None:
    class AllChunks(Prover):
        def _step(self, kernel, state, i, spec, device):  # type: ignore[no-untyped-def]
            out = super()._step(kernel, state, i, spec, device)
            return {k: v * 1.01 if i == CHEAT_STEP and v.is_floating_point() else v for k, v in out.items()}

    p = AllChunks(trace_dir=tmp_path / "t", key=WORKER)
    c = p.run(SPEC)
    ch = V.challenge(c, beacon=bytes([1]) * 32, k=c.steps)
    r = p.respond(ch)
    v = V.check(c, ch, r)
    assert not v.passed
    assert {o.index: o.reason for o in v.outcomes}[CHEAT_STEP] in (Reason.MISMATCH,)


def _resigned(r: Response, **changes: object) -> Response:
    return dataclasses.replace(r, **changes).signed(WORKER)


@pytest.fixture(scope="module")
def answer(honest):
    p, c = honest
    ch = V.challenge(c, beacon=bytes([6]) * 32, k=8)
    r = p.respond(ch)
    assert r.chunks
    return c, ch, r


def _outcomes(c, ch, r: Response) -> dict[int, Reason]:  # type: ignore[no-untyped-def]
    return {o.index: o.reason for o in V.check(c, ch, r.to_bytes()).outcomes}


def test_chunks_other_than_the_beacon_draws_are_malformed(answer) -> None:
    c, ch, r = answer
    j, opened = next(iter(r.chunks.items()))
    drawn = {i for i, _, _ in opened}
    other = next(i for i in range(len(LAYOUT.chunks)) if i not in drawn)
    swapped = list(opened)
    swapped[0] = (other, LAYOUT.chunk_of(b"\0" * LAYOUT.total, other), opened[0][2])
    swapped.sort()
    assert _outcomes(c, ch, _resigned(r, chunks={**r.chunks, j: tuple(swapped)}))[j] == Reason.MALFORMED


@pytest.mark.parametrize("how", ["flip a byte", "drop a path hash", "another chunk's path"])
def test_a_chunk_that_does_not_open_the_committed_leaf_is_a_bad_proof(answer, how: str) -> None:
    c, ch, r = answer
    j, opened = next(iter(r.chunks.items()))
    index, data, path = opened[0]
    if how == "flip a byte":
        bad = (index, bytes([data[0] ^ 1]) + data[1:], path)
    elif how == "drop a path hash":
        bad = (index, data, path[:-1])
    else:
        bad = (index, data, opened[1][2])
    assert _outcomes(c, ch, _resigned(r, chunks={**r.chunks, j: (bad, *opened[1:])}))[j] == Reason.BAD_PROOF


def test_a_sampled_step_without_its_chunks_is_missing(answer) -> None:
    c, ch, r = answer
    j = next(iter(r.chunks))
    rest = {k: v for k, v in r.chunks.items() if k != j}
    assert _outcomes(c, ch, _resigned(r, chunks=rest))[j] == Reason.MISSING


def test_chunks_for_a_job_that_compares_whole_states_are_refused(tmp_path: Path, answer) -> None:
    plain = resolve_spec(dataclasses.replace(SPEC, sample_chunks=0))
    p = Prover(trace_dir=tmp_path / "t", key=WORKER)
    c = p.run(plain)
    ch = V.challenge(c, beacon=bytes([6]) * 32, k=8)
    r = p.respond(ch)
    j = max(ch.indices)  # opened whole (a tolerance job without sampling): now by value and a chunk
    assert j in r.states
    extra = _resigned(r, values={**r.values, j: r.leaf_values()[j]},
                      states={k: v for k, v in r.states.items() if k != j},
                      chunks={j: ((0, b"x", ()),)})
    verdict = V.check(c, ch, extra.to_bytes())
    assert not verdict.passed
    assert {o.reason for o in verdict.outcomes} == {Reason.MALFORMED}
    assert "compares whole states" in verdict.outcomes[0].detail


def test_a_bundle_with_chunks_round_trips_in_memory_and_in_place(answer, tmp_path: Path) -> None:
    _, _, r = answer
    data = r.to_bytes()
    assert Response.from_bytes(data) == r
    path = tmp_path / "r.pocv"
    path.write_bytes(data)
    with path.open("rb") as f:
        lazy = Response.read_from(f, lazy=True)
        assert lazy.chunks == r.chunks
        assert lazy.digest() == r.digest()


def test_a_scaled_tensor_is_a_float_change_not_a_dtype_change() -> None:
    # the liar above keeps dtypes and shapes: its cheat is judged as a MISMATCH, not a bad state
    x = torch.ones(3, dtype=torch.float32)
    assert (x * 1.01).dtype == torch.float32


def test_the_cli_writes_a_sampled_job_and_its_verdict_says_what_the_sample_means(tmp_path: Path, capsys) -> None:
    from pocv.cli import main
    from pocv.store import save_keypair

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    save_keypair(WORKER, tmp_path / "w.json")
    save_keypair(Keypair.from_seed(bytes([2]) * 32), tmp_path / "v.json")
    code, _, err = run("job", "gemm-int8", "--steps", "4", "--sample-chunks", "2", "-o", tmp_path / "bad.json")
    assert code == 2 and "compares whole states" in err and not (tmp_path / "bad.json").exists()
    code, out, _ = run("job", "mlp-sgd", "--steps", "12", "--param", "width=16", "--param", "depth=1", "--param",
                       "batch=4", "--sample-chunks", "2", "--output", "text", "-o", tmp_path / "job.json")
    assert code == 0 and "compared on 2 sampled chunks" in out
    assert JobSpec.from_json((tmp_path / "job.json").read_bytes()).sample_chunks == 2
    t, c, ch, r = (tmp_path / n for n in ("t", "c.json", "ch.json", "r.pocv"))
    assert run("run", tmp_path / "job.json", "--trace", t, "-k", tmp_path / "w.json", "-o", c, "-q")[0] == 0
    assert run("challenge", c, "--beacon", "11" * 32, "-k", tmp_path / "v.json", "-n", "5", "-o", ch, "-q")[0] == 0
    assert run("respond", t, ch, "-k", tmp_path / "w.json", "-o", r, "-q")[0] == 0
    code, out, _ = run("verify", c, ch, r, "-k", tmp_path / "v.json", "-o", "-", "--output", "text", "-q")
    assert code == 0
    assert out.startswith("PASS") and "each s_i compared on 2 sampled chunks" in out
