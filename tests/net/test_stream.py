"""The client streams a large bundle (>= 10 MB) into the verifier through a bounded temporary
file: its peak Python memory is that of the file-based check, not one more copy of the bundle;
and its time over loopback is close to the file-based check's."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from pocv.challenge import derive_indices
from pocv.check import Verifier
from pocv.client import RemoteWorker, averify_remote
from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.prover import Prover
from pocv.records import Challenge, Commitment
from pocv.store import save_response
from tests.net.conftest import VERIFIER, WORKER
from tests.net.test_fault import _free_port, _start

BIG = resolve_spec(JobSpec(kernel="heat2d", steps=12, seed=5, params={"n": 1024, "substeps": 1}))  # 4 MiB states
K = 4  # heat2d is exact: the state before each run of challenged steps whole, every s_i by its leaf value


def _spread_beacon(job: Path) -> bytes:
    """A beacon whose K indices hold no adjacent pair and not step 1: K runs, so K states opened
    whole (about 16 MB; docs/protocol.md §8)."""
    c = Prover(trace_dir=job, key=WORKER).commitment()
    for b in range(10_000):
        beacon = b.to_bytes(32, "little")
        idx = derive_indices(c.job_id, c.root, beacon, c.steps, K)
        if idx[0] > 1 and all(y - x > 1 for x, y in itertools.pairwise(idx)):
            return beacon
    raise AssertionError("no beacon spreads the indices")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big")
    Prover(trace_dir=root / "job", key=WORKER, checkpoint_every=4).run(BIG)
    return root


def _peak(fn: Any) -> tuple[Any, int, float]:
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1], time.perf_counter() - t0
    finally:
        tracemalloc.stop()


def test_remote_streams_a_large_bundle(big: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    proc = _start(big, port)
    try:
        url = f"http://127.0.0.1:{port}"
        seen: dict[str, Any] = {}
        beacon = _spread_beacon(big / "job")

        def hook(c: Commitment, ch: Challenge) -> None:
            seen["c"], seen["ch"] = c, ch

        async def remote() -> Any:
            async with RemoteWorker(url, key=VERIFIER) as w:
                return await averify_remote(Verifier(key=VERIFIER), w, BIG.job_id, k=K, beacon=beacon,
                                            challenge_hook=hook)

        asyncio.run(remote())  # warm: kernels, connections
        r, remote_peak, remote_s = _peak(lambda: asyncio.run(remote()))
        assert r.verdict.passed and r.bundle_bytes >= 10_000_000
        # the same challenge's answer, checked from a file (what a file-based flow does)
        prover = Prover(trace_dir=big / "job", key=WORKER)
        v = Verifier(key=VERIFIER)
        c = seen["c"]
        ch = v.challenge(c, beacon=seen["ch"].beacon, k=K)
        path = tmp_path / "bundle.bin"
        t0 = time.perf_counter()
        save_response(prover.respond(ch), path)  # the file flow: the worker answers into a file
        answer_s = time.perf_counter() - t0

        def from_file() -> Any:
            with open(path, "rb") as f:
                return v.check(c, ch, f)

        verdict, file_peak, file_s = _peak(from_file)
        assert verdict.passed
        with capsys.disabled():
            print(f"\nstream: bundle {r.bundle_bytes / 1e6:.1f} MB; peak Python memory remote "
                  f"{remote_peak / 1e6:.1f} MB, file {file_peak / 1e6:.1f} MB; check time remote "
                  f"{remote_s * 1000:.0f} ms (fetch {r.fetch_s * 1000:.0f}), file flow {(answer_s + file_s) * 1000:.0f} ms "
                  f"(answer {answer_s * 1000:.0f}, check {file_s * 1000:.0f}): remote adds "
                  f"{(remote_s / (answer_s + file_s) - 1) * 100:+.0f}%")
        assert remote_peak < file_peak + 8_000_000  # chunks and spool buffers, never the whole bundle again
    finally:
        proc.kill()
        proc.wait()
