"""Completeness: honest workers are never failed, whatever implementation of the kernel they run
and whatever thread count the worker and the verifier use.

Every combination of kernel x honest implementation (the default step plus every entry of the
kernel's ``honest_variants()``: for gemm-int8 torch ``_int_mm`` at 1/2 threads and the numpy
int64 reference; for mlp-sgd 1/2 threads, einsum, transposed products, fused bias, the float64
reference) x worker threads (1, 2) x verifier threads (1, 2) runs, commits, answers challenges
and is checked by the real verifier. The default run does one check per combination; the slow
one 30 per combination (>= 1,000 checks, 10 steps each).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from blake3 import blake3
from solders.keypair import Keypair

from pocv import JobSpec, Verifier
from pocv.kernels import resolve_spec
from pocv.kernels._tolerance import torch_threads
from pocv.testing import VariantProver, implementations


@dataclass
class Tally:
    verdicts: int = 0
    steps: int = 0
    fails: list[str] = field(default_factory=list)
    by_combo: Counter[str] = field(default_factory=Counter)


def honest_checks(specs: list[JobSpec], *, beacons: int, k: int, tmp: Path) -> Tally:
    tally = Tally()
    verifier = Verifier(key=Keypair.from_seed(bytes([12]) * 32))
    threads = (1, 2) if (os.cpu_count() or 1) >= 2 else (1,)
    for spec in specs:
        for impl in implementations(spec.kernel):
            for tp in threads:
                trace = tmp / f"{spec.kernel}-{spec.seed}-{impl}-{tp}"
                prover = VariantProver(impl=impl, trace_dir=trace, key=Keypair(), checkpoint_every=4)
                with torch_threads(tp):
                    c = prover.run(spec)
                for tv in threads:
                    for b in range(beacons):
                        beacon = blake3(f"completeness {trace.name} {tv} {b}".encode()).digest()
                        ch = verifier.challenge(c, beacon=beacon, k=k)
                        with torch_threads(tp):
                            resp = prover.respond(ch)
                        with torch_threads(tv):
                            verdict = verifier.check(c, ch, resp)
                        combo = f"{spec.kernel}/{impl}/worker{tp}/verifier{tv}"
                        tally.verdicts += 1
                        tally.steps += len(verdict.outcomes)
                        tally.by_combo[combo] += 1
                        if not verdict.passed:
                            tally.fails.append(f"{combo} beacon {b}: {verdict.failures[:2]}")
    return tally


def _specs(seeds: range, *, big: bool) -> list[JobSpec]:
    mlp = {"width": 64, "depth": 3, "batch": 64} if big else {"width": 32, "depth": 2, "batch": 32}
    out = []
    for s in seeds:
        out.append(resolve_spec(JobSpec(kernel="gemm-int8", steps=30 if big else 12, seed=s, params={"n": 64 if big else 32})))
        out.append(resolve_spec(JobSpec(kernel="mlp-sgd", steps=30 if big else 12, seed=s, params=mlp)))
    return out


def test_implementations_cover_both_kernels() -> None:
    for kernel in ("gemm-int8", "mlp-sgd"):
        impls = implementations(kernel)
        assert impls[0] == "default" and len(impls) >= 2, impls


def test_honest_workers_pass_across_threads_and_implementations(tmp_path) -> None:
    before = torch.get_num_threads()
    tally = honest_checks(_specs(range(1), big=False), beacons=1, k=6, tmp=tmp_path)
    assert torch.get_num_threads() == before
    assert tally.fails == []
    combos = sum(len(implementations(k)) for k in ("gemm-int8", "mlp-sgd")) * 4
    assert tally.verdicts == len(tally.by_combo) == combos and tally.steps == tally.verdicts * 6


@pytest.mark.slow
def test_one_thousand_honest_checks(tmp_path, capsys) -> None:
    tally = honest_checks(_specs(range(3), big=True), beacons=10, k=10, tmp=tmp_path)
    with capsys.disabled():
        print(f"\ncompleteness: {tally.verdicts} honest verdicts, {tally.steps} steps checked, "
              f"{len(tally.fails)} FAIL, over {len(tally.by_combo)} kernel/implementation/thread combinations")
    assert tally.fails == []
    assert tally.verdicts >= 1000
