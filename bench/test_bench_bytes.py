"""Bytes sent per challenged step, per kernel and opening mode (issue 11 target; suite "bytes").

For every built-in kernel at its default size: a run of STEPS steps, one challenge of K steps,
and the bundle's bytes / K / state size, for the default answer (exact kernels: s_(i-1) whole and
s_i by value; tolerance kernels: both whole) and, for the kernels that may sample (tolerance,
element-wise rule), for jobs with ``sample_chunks`` = 1, 2, 4, 8 (docs/protocol.md §8.1), with
what each sample catches: per challenged step, a step that differs in one of its C chunks
(m / C) or in all of them (1), and over the whole challenge, a worker faking a fraction f = 0.1
of the steps in one chunk each (``1 - (1 - f m / C)^k`` at the default k = 66).

Bytes are exact (no timing): the figures do not depend on the machine's load.

    POCV_BENCH_OUT=DIR pytest bench/test_bench_bytes.py --benchmark-only -s
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair

from bench.conftest import quick, write_result
from pocv import JobSpec, Prover, Verifier
from pocv.challenge import chunk_detection, sample_size
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
RESULTS: dict[str, Any] = {}


def _answer_bytes(spec: JobSpec) -> tuple[int, int, int]:
    """(bytes of the default answer, of the all-whole answer, k) for one run of ``spec``."""
    work = Path(tempfile.mkdtemp(prefix="pocv-bench-bytes-"))
    try:
        p = Prover(trace_dir=work / "t", key=Keypair.from_seed(bytes([1]) * 32))
        c = p.run(spec)
        v = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
        ch = v.challenge(c, beacon=bytes([3]) * 32, k=K)
        r = p.respond(ch)
        assert v.check(c, ch, r).passed
        return len(r.to_bytes()), len(p.respond(ch, whole=True).to_bytes()), ch.k
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_bytes_per_challenged_step(benchmark: Any, kernel: str) -> None:
    spec = resolve_spec(JobSpec(kernel=kernel, steps=STEPS, seed=1, params=KERNELS[kernel]))
    k = kernel_for(spec)
    state = encoded_size(k.schema(spec))
    chunks = len(ChunkLayout.from_schema(k.schema(spec)).chunks)
    default, whole, kk = benchmark.pedantic(_answer_bytes, args=(spec,), rounds=1, iterations=1)
    entry: dict[str, Any] = {"mode": k.mode, "params": dict(spec.params), "state_bytes": state, "chunks": chunks,
                             "steps": STEPS, "k": kk, "per_step": default / kk / state,
                             "whole_per_step": whole / kk / state, "target": 1.0 if k.mode == "exact" else 2.0}
    line = f"\n{kernel} ({k.mode}, state {state:,} B, {chunks} chunks): default {entry['per_step']:.5f}x"
    if k.samples_chunks():
        k_default = sample_size(DEFAULT_CONFIDENCE, DEFAULT_CHEAT_FRACTION)
        f = DEFAULT_CHEAT_FRACTION
        entry["sampled"] = {}
        for m in SAMPLES:
            if m > chunks:
                continue
            got, _, kk = _answer_bytes(dataclasses.replace(spec, sample_chunks=m))
            one = chunk_detection(m, chunks)
            entry["sampled"][m] = {"per_step": got / kk / state, "step_one_chunk": one, "step_all_chunks": 1.0,
                                   "challenge_one_chunk_f": 1 - (1 - f * one) ** k_default}
            line += (f"; m={m}: {got / kk / state:.3f}x (one chunk per faked step caught {one:.3f} per step, "
                     f"{entry['sampled'][m]['challenge_one_chunk_f']:.3f} over k={k_default} at f={f})")
    print(line)
    RESULTS[kernel] = entry
    write_result("bytes", {"steps": STEPS, "k": K, **RESULTS})
