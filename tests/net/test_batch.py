"""The batch API: verdicts stream back as they finish, bounded in flight; a failing, crashing or
hanging job never takes the others down; cancellation; progress; both executors."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pocv.batch import BatchVerifier, Executor, Job, JobResult, LocalPool, Progress, Task, ThreadExecutor, run_task
from pocv.check import Verifier
from pocv.errors import InputError, Reason
from pocv.prover import Prover
from pocv.store import load_commitment, save_response
from tests.net.conftest import SPECS, VERIFIER, WORKER


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Verifier, list[Job]]:
    """Three jobs with their challenges and answers on disk, by one verifier."""
    root = tmp_path_factory.mktemp("batch")
    verifier = Verifier(key=VERIFIER)
    jobs = []
    for i, spec in enumerate(SPECS):
        p = Prover(trace_dir=root / f"job{i}", key=WORKER, checkpoint_every=4)
        c = p.run(spec)
        ch = verifier.challenge(c, beacon=bytes([i + 1]) * 32)
        save_response(p.respond(ch), root / f"b{i}.bin")
        jobs.append(Job(commitment=c, challenge=ch, response=str(root / f"b{i}.bin"), tag=i))
    return root, verifier, jobs


@pytest.fixture(scope="module")
def pool(made: tuple[Path, Verifier, list[Job]]) -> Iterator[LocalPool]:
    """Two pool processes, warm: each has checked a job (first-call costs paid), so a test's
    timeouts measure checks, not process starts, even on a loaded machine."""
    p = LocalPool(2)
    with BatchVerifier(key=VERIFIER, executor=p, book=made[1].book) as b:
        assert all(r.passed for r in b.verify(made[2] * 2))
    yield p
    p.shutdown()


def _hanging(root: Path, job: Job, name: str) -> Job:
    """A job whose answer is a FIFO nobody writes: opening it blocks, the check hangs."""
    fifo = root / name
    if not fifo.exists():
        os.mkfifo(fifo)
    return Job(commitment=job.commitment, challenge=job.challenge, response=str(fifo), tag=name)


def _run(executor: Executor, verifier: Verifier, jobs: list[Job], **kw: object) -> list[JobResult]:
    with BatchVerifier(key=VERIFIER, executor=executor, book=verifier.book, **kw) as b:  # type: ignore[arg-type]
        return list(b.verify(jobs))


def test_threads_verdicts_stream_and_errors_stay_local(made: tuple[Path, Verifier, list[Job]]) -> None:
    root, verifier, jobs = made
    corrupt = root / "corrupt.bin"
    corrupt.write_bytes(Path(str(jobs[0].response)).read_bytes()[:-200])
    batch = [*jobs,
             Job(commitment=jobs[1].commitment, challenge=jobs[1].challenge, response=str(corrupt), tag="corrupt"),
             Job(commitment=jobs[2].commitment, challenge=jobs[2].challenge, response=str(root / "missing"),
                 tag="missing"),
             Job(commitment=jobs[2].commitment, challenge=jobs[2].challenge, response=None, tag="none")]
    seen: list[Progress] = []
    results = _run(ThreadExecutor(2), verifier, batch, progress=seen.append, max_in_flight=2)
    by = {r.tag: r for r in results}
    assert sorted(by, key=str) == sorted([0, 1, 2, "corrupt", "missing", "none"], key=str)
    assert all(by[i].passed for i in range(3))
    assert not by["corrupt"].passed and by["corrupt"].verdict is not None  # a FAIL, not a crash
    assert by["missing"].verdict is None and by["missing"].transient  # the file is gone: I/O, try again
    assert {o.reason for o in by["none"].verdict.outcomes} == {Reason.REFUSED}  # type: ignore[union-attr]
    assert [p.done for p in seen] == list(range(1, 7)) and seen[-1].passed == 3 and seen[-1].errors == 1
    assert max(p.in_flight for p in seen) <= 2


def test_pool_a_hanging_job_times_out_alone(made: tuple[Path, Verifier, list[Job]], pool: LocalPool) -> None:
    root, verifier, jobs = made
    order: list[object] = []
    t0 = time.monotonic()
    with BatchVerifier(key=VERIFIER, executor=pool, book=verifier.book, timeout_s=4) as b:
        results = []
        for r in b.verify([_hanging(root, jobs[0], "hang1"), *jobs, *jobs]):
            order.append(r.tag)
            results.append(r)
    by_tag = [r for r in results if r.tag == "hang1"]
    assert len(results) == 7 and len(by_tag) == 1
    assert by_tag[0].error_type == "Timeout" and by_tag[0].transient
    assert order[-1] == "hang1"  # the others streamed back while it hung
    assert all(r.passed for r in results if r.tag != "hang1")
    assert time.monotonic() - t0 < 30
    # the pool replaced the killed process: it keeps checking
    assert all(r.passed for r in _run(pool, verifier, jobs))


def test_pool_cancel_stops_running_and_reports_them(made: tuple[Path, Verifier, list[Job]],
                                                     pool: LocalPool) -> None:
    root, verifier, jobs = made
    b = BatchVerifier(key=VERIFIER, executor=pool, book=verifier.book, max_in_flight=3)
    hangs = [_hanging(root, jobs[0], f"hang-c{i}") for i in range(2)]

    def endless() -> Iterator[Job]:
        yield from hangs
        while True:  # a scheduler's feed that never ends: cancel is the only way out
            yield from jobs

    timer = threading.Timer(3.0, b.cancel)
    timer.start()
    t0 = time.monotonic()
    results = list(b.verify(endless()))
    assert time.monotonic() - t0 < 20
    tags = [r.tag for r in results]
    assert tags.count("hang-c0") == 1 and tags.count("hang-c1") == 1
    assert all(r.error_type == "Cancelled" for r in results if str(r.tag).startswith("hang"))
    # the pool is still usable after a cancel
    assert all(r.passed for r in _run(pool, verifier, jobs))


def test_async_iterator_and_refused_retired_challenge(made: tuple[Path, Verifier, list[Job]]) -> None:
    root, verifier, jobs = made

    async def run() -> list[JobResult]:
        with BatchVerifier(key=VERIFIER, executor=ThreadExecutor(1), book=verifier.book) as b:
            return [r async for r in b.averify(_agen(jobs))]

    async def _agen(items: list[Job]):  # type: ignore[no-untyped-def]
        for j in items:
            await asyncio.sleep(0)
            yield j

    assert all(r.passed for r in asyncio.run(run()))
    # a challenge retired by a newer one is refused, as Verifier.check refuses it
    c = load_commitment(root / "job0" / "commitment.json")
    other = Verifier(key=VERIFIER)
    old = other.challenge(c, beacon=bytes([9]) * 32)
    other.challenge(c, beacon=bytes([10]) * 32)
    with BatchVerifier(key=VERIFIER, executor=ThreadExecutor(1), book=other.book) as b:
        (r,) = list(b.verify([Job(commitment=c, challenge=old, response=jobs[0].response)]))
    assert r.error_type == "InputError" and "retired" in (r.error or "")


def test_job_needs_records_or_a_remote() -> None:
    with pytest.raises(InputError, match="a job is"):
        Job(tag=1)


def test_threads_bound_torch_and_numba_alike(made: tuple[Path, Verifier, list[Job]]) -> None:
    """A check's ``threads`` bounds torch and numba (numba first: its OpenMP start resets the
    count torch reads), so one pool process per core does not oversubscribe the cores."""
    import numba
    import torch

    import pocv.batch as batch

    _, _, jobs = made
    job = jobs[0]
    assert job.commitment is not None and job.challenge is not None
    before = torch.get_num_threads(), numba.get_num_threads(), batch._threads_set
    try:
        batch._threads_set = 0
        result = run_task(Task(commitment=job.commitment.to_json(), challenge=job.challenge.to_json(),
                               bundle_path=str(job.response), key=bytes(VERIFIER), threads=1))
        assert result.verdict is not None
        assert (torch.get_num_threads(), numba.get_num_threads()) == (1, 1)
    finally:
        numba.set_num_threads(before[1])
        torch.set_num_threads(before[0])
        batch._threads_set = before[2]
