"""Bytes sent per challenged step, per kernel and opening mode (issue 11 target; suite "bytes").

For every built-in kernel at its default size: a run of STEPS steps, one challenge of K steps,
and the bundle's bytes / K / state size, for the default answer (exact kernels: the state before
each run of consecutive challenged steps whole, every s_i by value; tolerance kernels: s_(i-1) and
s_i whole) and, for the kernels that may sample (tolerance, element-wise rule), for jobs with
``sample_chunks`` = 1, 2, 4, 8 (docs/protocol.md §8.1), with what each sample catches: per
challenged step, a step that differs in one of its C chunks (m / C) or in all of them (1), and
over the whole challenge, a worker faking a fraction f = 0.1 of the steps in one chunk each
(``1 - (1 - f m / C)^k`` at the default k = 66).

For the exact kernels the figure is a distribution, not a number: an answer opens one state per
run of consecutive challenged steps (none for a run from step 1, docs/protocol.md §8), so its
bytes depend on how the beacon's indices fall. ``test_bytes_distribution_over_beacons`` computes
it at the issue's defaults (n = 1,000 steps, k = 66 from p = 0.999 and f = 0.1) over BEACONS
beacons, exactly: an answer's size is a function of the indices, the state size and the
multiproof (:func:`pocv.bundle.answer_size`, checked here against the real bundles of the
measurement above). It reports mean, median, p99 and max bytes per challenged step and the
fraction of challenges above 1.0x (those with no adjacent pair and no step 1). No answer can go
below one state per run when the states do not compress (gemm-int8's do not: zstd ratio 1.000):
the verifier has to learn each run's first input, which is information the worker alone holds.

Bytes are exact (no timing): the figures do not depend on the machine's load.

    POCV_BENCH_OUT=DIR pytest bench/test_bench_bytes.py --benchmark-only -s
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from solders.keypair import Keypair

from bench.conftest import quick, write_result
from pocv import JobSpec, Prover, Verifier
from pocv.bundle import Response, answer_size, challenge_runs, whole_leaves
from pocv.challenge import chunk_detection, derive_indices, sample_size
from pocv.encoding import ChunkLayout, encoded_size
from pocv.kernels import kernel_for, resolve_spec
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE

pytestmark = pytest.mark.bench

STEPS = quick(60, 200)
K = quick(10, 20)
SAMPLES = (1, 2, 4, 8)
#: the default sizes, except: mlp-sgd's batch (not in the state) cut to keep the run short, and
#: gemm-int8 at n = 1024, one layer (a 1 MiB state; its default, n = 2048 with 4 layers, takes about
#: a minute per step on a CPU without VNNI, and a larger state only shrinks the per-step overhead)
KERNELS = {"gemm-int8": {"n": 1024, "layers": 1}, "gemm-fp32-exact": {}, "heat2d": {}, "gemm-fp32": {},
           "mlp-sgd": {"batch": 256}}
#: the distribution's job: the issue's n, and k from its p and f (66)
DIST_STEPS = 1000
#: beacons the distribution is taken over
BEACONS = quick(200, 2000)
RESULTS: dict[str, Any] = {}
#: kernel -> (indices, tree size, leaves opened whole, bundle bytes) of the real default answer measured
REAL: dict[str, tuple[tuple[int, ...], int, list[int], int]] = {}


def _answer_bytes(spec: JobSpec) -> tuple[int, int, int, tuple[tuple[int, ...], int, list[int]]]:
    """(bytes of the default answer, of the all-whole answer, k, (its indices, tree size, leaves
    opened whole)) for one run of ``spec``; both answers' sizes are checked against answer_size."""
    work = Path(tempfile.mkdtemp(prefix="pocv-bench-bytes-"))
    try:
        p = Prover(trace_dir=work / "t", key=Keypair.from_seed(bytes([1]) * 32))
        c = p.run(spec)
        v = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
        ch = v.challenge(c, beacon=bytes([3]) * 32, k=K)
        r = p.respond(ch)
        assert v.check(c, ch, r).passed
        default, whole = len(r.to_bytes()), len(p.respond(ch, whole=True).to_bytes())
        if not r.chunks:  # the formula covers answers without chunk openings
            state = encoded_size(kernel_for(spec).schema(spec))
            assert default == answer_size(ch.indices, c.tree_size, state, r.states)
            assert whole == answer_size(ch.indices, c.tree_size, state, Response.opened_leaves(ch.indices))
        return default, whole, ch.k, (ch.indices, c.tree_size, sorted(r.states))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_bytes_per_challenged_step(benchmark: Any, kernel: str) -> None:
    spec = resolve_spec(JobSpec(kernel=kernel, steps=STEPS, seed=1, params=KERNELS[kernel]))
    k = kernel_for(spec)
    state = encoded_size(k.schema(spec))
    chunks = len(ChunkLayout.from_schema(k.schema(spec)).chunks)
    default, whole, kk, (indices, tree_size, opened_whole) = benchmark.pedantic(
        _answer_bytes, args=(spec,), rounds=1, iterations=1)
    REAL[kernel] = (indices, tree_size, opened_whole, default)
    entry: dict[str, Any] = {"mode": k.mode, "params": dict(spec.params), "state_bytes": state, "chunks": chunks,
                             "steps": STEPS, "k": kk, "per_step": default / kk / state,
                             "whole_per_step": whole / kk / state, "target": 1.0 if k.mode == "exact" else 2.0,
                             "runs": len(challenge_runs(indices)), "states_opened_whole": len(opened_whole)}
    line = f"\n{kernel} ({k.mode}, state {state:,} B, {chunks} chunks): default {entry['per_step']:.5f}x"
    if k.samples_chunks():
        k_default = sample_size(DEFAULT_CONFIDENCE, DEFAULT_CHEAT_FRACTION)
        f = DEFAULT_CHEAT_FRACTION
        entry["sampled"] = {}
        for m in SAMPLES:
            if m > chunks:
                continue
            got, _, kk, _ = _answer_bytes(dataclasses.replace(spec, sample_chunks=m))
            one = chunk_detection(m, chunks)
            entry["sampled"][m] = {"per_step": got / kk / state, "step_one_chunk": one, "step_all_chunks": 1.0,
                                   "challenge_one_chunk_f": 1 - (1 - f * one) ** k_default}
            line += (f"; m={m}: {got / kk / state:.3f}x (one chunk per faked step caught {one:.3f} per step, "
                     f"{entry['sampled'][m]['challenge_one_chunk_f']:.3f} over k={k_default} at f={f})")
    print(line)
    RESULTS[kernel] = entry
    write_result("bytes", {"steps": STEPS, "k": K, **RESULTS})


EXACT = [name for name in KERNELS if kernel_for(resolve_spec(JobSpec(kernel=name, steps=2, seed=1,
                                                                     params=KERNELS[name]))).mode == "exact"]


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank rule (a value that occurred)."""
    rank = max(1, -(-len(sorted_values) * q // 1))
    return sorted_values[int(rank) - 1]


def distribution(job_id: bytes, root: bytes, steps: int, k: int, state: int, beacons: int) -> dict[str, Any]:
    """Bytes per challenged step (answer bytes / k / state size) of the honest default answer of
    an exact kernel over ``beacons`` beacons, computed exactly from each challenge's indices."""
    per: list[float] = []
    whole: list[int] = []
    for t in range(beacons):
        beacon = blake3(f"pocv bench bytes beacon {t}".encode()).digest()
        indices = derive_indices(job_id, root, beacon, steps, k)
        opened = whole_leaves(indices, exact=True, chain=True)
        per.append(answer_size(indices, steps + 1, state, opened) / k / state)
        whole.append(len(opened))
    ordered = sorted(per)
    return {"steps": steps, "k": k, "beacons": beacons, "mean": statistics.fmean(per),
            "median": statistics.median(per), "p99": _percentile(ordered, 0.99), "max": ordered[-1],
            "min": ordered[0], "above_1": sum(x > 1.0 for x in per) / beacons,
            "mean_states_whole": statistics.fmean(whole),
            # theory: no adjacent pair and no step 1 has probability C(n-k, k) / C(n, k); each of the
            # k(k-1)/n expected adjacent pairs and step 1 (probability k/n) saves one state
            "above_1_theory": math.comb(steps - k, k) / math.comb(steps, k),
            "mean_states_whole_theory": k - k * (k - 1) / steps - k / steps}


@pytest.mark.parametrize("kernel", EXACT)
def test_bytes_distribution_over_beacons(benchmark: Any, kernel: str) -> None:
    """The exact kernels' bytes per challenged step over many beacons at n = 1,000, k = 66."""
    k_default = sample_size(DEFAULT_CONFIDENCE, DEFAULT_CHEAT_FRACTION)
    assert k_default == 66
    spec = resolve_spec(JobSpec(kernel=kernel, steps=DIST_STEPS, seed=1, params=KERNELS[kernel]))
    state = encoded_size(kernel_for(spec).schema(spec))
    # the formula is the real answer's size (measured above, or here if this test runs alone)
    if kernel not in REAL:
        small = resolve_spec(JobSpec(kernel=kernel, steps=quick(24, 48), seed=1, params=KERNELS[kernel]))
        default, _, _, (indices, tree_size, opened_whole) = _answer_bytes(small)
        REAL[kernel] = (indices, tree_size, opened_whole, default)
    indices, tree_size, opened_whole, real = REAL[kernel]
    assert set(opened_whole) == whole_leaves(indices, exact=True, chain=True)
    assert real == answer_size(indices, tree_size, state, opened_whole)
    root = blake3(b"pocv bench bytes: a root (the indices' distribution is the same for any)").digest()
    got = benchmark.pedantic(distribution, args=(spec.job_id, root, DIST_STEPS, k_default, state, BEACONS),
                             rounds=1, iterations=1)
    print(f"\n{kernel} (exact, state {state:,} B), n={DIST_STEPS}, k={k_default}, {BEACONS} beacons: "
          f"mean {got['mean']:.4f}x, median {got['median']:.4f}x, p99 {got['p99']:.4f}x, max {got['max']:.4f}x, "
          f"min {got['min']:.4f}x; {got['above_1']:.2%} of challenges above 1.0x; "
          f"{got['mean_states_whole']:.1f} states whole on average")
    assert got["median"] <= 1.0  # the target, for the typical challenge
    RESULTS.setdefault(kernel, {})["distribution"] = got
    write_result("bytes", {"steps": STEPS, "k": K, **RESULTS})
