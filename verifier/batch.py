"""Verify many jobs at once, for schedulers (docs/network.md §6).

:class:`BatchVerifier` takes an iterable (or async iterable) of :class:`Job` and yields a
:class:`JobResult` for each as it finishes, in completion order: a signed verdict, or an error
that says whether trying again may help. Bounds:

- **concurrency**: at most ``executor.slots`` checks run at once;
- **memory**: at most ``max_in_flight`` jobs are taken from the iterable and not yet yielded
  (it is read lazily), remote answers are spooled to temporary files of bounded size
  (:func:`pocv.client.bundle_limit`), and a job whose answer is a path is opened by the
  process that checks it;
- **time**: ``timeout_s`` per check; a check that runs longer is stopped (its process killed
  and replaced) and reported as a transient error. One failing, crashing or hanging job never
  takes the others down.

The checks run on an :class:`Executor`: :class:`LocalPool` (the default) keeps one process per
slot, forked from a server process that has imported the verifier; :class:`ThreadExecutor`
runs checks on threads of this process (no process start, but a hanging check cannot be
stopped); ``pocv.ray_backend.RayExecutor`` runs them as Ray tasks.
Between the scheduler and the executor a check is a :class:`Task` of plain values (the
records' JSON, the bundle's path or bytes, the verifier's key), and its result a
:class:`TaskResult` (the verdict's JSON or an error), so no pocv object crosses a process
boundary. ``cancel()`` stops the batch: queued checks are dropped, running ones killed, each
job that was in flight is reported cancelled.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing
import os
import queue
import secrets
import signal
import socket
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from pocv.check import ChallengeBook, Verifier, challenge_digest
from pocv.client import (
    DEFAULT_DEADLINE_S,
    ClientLimits,
    RemoteRefused,
    RemoteUnavailable,
    RemoteWorker,
    bundle_limit,
)
from pocv.errors import EvidenceError, InputError, PocvError, TransientError
from pocv.keys import Keypair, Signer, as_keypair
from pocv.records import Challenge, Commitment, Verdict

log = logging.getLogger(__name__)

#: a slot's child process gets this long to start and import pocv before its first check
START_TIMEOUT_S: Final = 120.0
#: an idle slot's process gets this long to exit when the pool shuts down, then it is killed
CLOSE_TIMEOUT_S: Final = 5.0
#: a batch iterator closed early polls its finishing event loop this often while draining it
DRAIN_POLL_S: Final = 0.005


# -- what crosses to an executor ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Task:
    """One check, as plain values: what an executor ships to where the check runs."""

    commitment: str  # JSON
    challenge: str  # JSON
    bundle_path: str | None = None  # a bundle file the checking process opens
    bundle: bytes | None = None  # or its bytes; neither: no answer (a FAIL, REFUSED)
    key: bytes  # the verifier's 64-byte keypair: it signs the verdict
    device: str = "cpu"
    threads: int = 1  # torch threads the check may use
    avoid_node: str | None = None  # an executor's node this check must not run on


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    verdict: str | None = None  # JSON of the signed verdict
    error: str | None = None
    error_type: str | None = None
    transient: bool = False  # trying again may help
    node: str = ""
    gpus: tuple[str, ...] = ()
    seconds: float = 0.0


_threads_set = 0


def _set_threads(n: int) -> None:
    """At most ``n`` threads for a check in this process: torch's intra-op pool and numba's
    parallel loops (the kernels use both; a pool of one process per core must not oversubscribe)."""
    import numba  # the numba kernels' parallel loops (heat2d and others)
    import torch  # the check's tensors

    # numba first: launching its OpenMP layer resets the OpenMP thread count torch reads, and a
    # torch left at every core spin-waits against the other pool processes (10-40x slower checks
    # on a loaded machine)
    numba.set_num_threads(max(1, min(n, int(numba.config.NUMBA_NUM_THREADS))))  # type: ignore[attr-defined,unused-ignore]
    torch.set_num_threads(n)


def run_task(task: Task, node: str = "", gpus: tuple[str, ...] = ()) -> TaskResult:
    """Run one check where the executor put it (a pool process, a Ray worker)."""
    global _threads_set
    t0 = time.perf_counter()
    node = node or socket.gethostname()
    try:
        if _threads_set != task.threads:
            _set_threads(task.threads)
            _threads_set = task.threads
        # one step at a time: the executor runs a check per slot (a core, a thread) already
        verifier = Verifier(key=Keypair.from_bytes(task.key), device=task.device, workers=1)
        commitment = Commitment.from_json(task.commitment)
        challenge = Challenge.from_json(task.challenge)
        if task.bundle is not None:
            verdict = verifier.check(commitment, challenge, task.bundle)
        elif task.bundle_path is not None:
            with open(task.bundle_path, "rb") as f:
                verdict = verifier.check(commitment, challenge, f)
        else:
            verdict = verifier.check(commitment, challenge, None)
        return TaskResult(verdict=verdict.to_json(), node=node, gpus=gpus, seconds=time.perf_counter() - t0)
    except Exception as e:  # any failure of one check is that job's result, never the pool's
        transient = isinstance(e, TransientError | OSError) or not isinstance(e, PocvError)
        return TaskResult(error=str(e) or type(e).__name__, error_type=type(e).__name__, transient=transient,
                          node=node, gpus=gpus, seconds=time.perf_counter() - t0)


class Executor(ABC):
    """Where checks run. ``submit`` returns at once; the future's result is a TaskResult (an
    executor reports a check that failed, timed out or was cancelled as a TaskResult, not as
    an exception)."""

    #: checks that run at once
    slots: int

    @abstractmethod
    def submit(self, task: Task, timeout_s: float | None = None) -> Future[TaskResult]: ...

    @abstractmethod
    def cancel(self, future: Future[TaskResult]) -> None:
        """Stop the check behind ``future`` (queued or running); its result says cancelled."""

    @abstractmethod
    def shutdown(self) -> None: ...

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _settle(fut: Future[TaskResult], result: TaskResult) -> None:
    """Resolve ``fut`` unless it already is (a timeout and a late result race)."""
    with contextlib.suppress(Exception):  # InvalidStateError: the other side won
        fut.set_result(result)


def _stopped(why: str, *, transient: bool = True) -> TaskResult:
    return TaskResult(error=why, error_type="Cancelled" if why == "cancelled" else "Timeout", transient=transient)


# -- the local process pool -----------------------------------------------------------------


def _child(conn: Connection) -> None:
    """A pool process: checks tasks until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    import pocv.check  # noqa: F401 - warm: load the verifier before the first task

    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(run_task(task))


class _Slot(threading.Thread):
    def __init__(self, pool: LocalPool, n: int) -> None:
        super().__init__(name=f"pocv-pool-{n}", daemon=True)
        self.pool = pool
        self.proc: Any = None
        self.conn: Connection | None = None
        self.current: Future[TaskResult] | None = None
        self.stop_current: str | None = None  # "cancelled" when asked to stop the running task

    def _ensure(self) -> Connection:
        if self.proc is not None and self.proc.is_alive() and self.conn is not None:
            return self.conn
        self._kill()
        parent, child = self.pool.ctx.Pipe()
        self.proc = self.pool.ctx.Process(target=_child, args=(child,), daemon=True, name=self.name)
        self.proc.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            raise TransientError(f"pool process did not start within {START_TIMEOUT_S:.0f} s")
        parent.recv()
        self.conn = parent
        return parent

    def _kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.kill()
                self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn = None, None

    def _close(self) -> None:
        """Let an idle process exit on its own (its pipe closed: it cleans up as it exits), else kill it."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            self.proc.join(CLOSE_TIMEOUT_S)
        self._kill()

    def run(self) -> None:
        while True:
            item = self.pool.queue.get()
            if item is None:
                self._close()
                return
            task, fut, timeout_s = item
            if not fut.set_running_or_notify_cancel():
                continue
            self.current, self.stop_current = fut, None
            try:
                result = self._run(task, timeout_s)
            except Exception as e:  # the future always resolves: a slot never dies with its job
                self._kill()
                result = TaskResult(error=f"pool process failed: {e}", error_type=type(e).__name__, transient=True)
            fut.set_result(result)
            self.current = None

    def _run(self, task: Task, timeout_s: float | None) -> TaskResult:
        try:
            conn = self._ensure()
            conn.send(task)
        except (PocvError, OSError, EOFError) as e:
            self._kill()
            return TaskResult(error=f"pool process failed: {e}", error_type=type(e).__name__, transient=True)
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = 0.05 if end is None else max(0.0, min(0.05, end - time.monotonic()))
            try:
                if conn.poll(wait):
                    result: TaskResult = conn.recv()
                    return result
            except (EOFError, OSError):
                code = self.proc.exitcode if self.proc is not None else None
                self._kill()
                return TaskResult(error=f"the checking process died (exit code {code})", error_type="WorkerDied",
                                  transient=True)
            if self.stop_current is not None or self.pool.closing:
                self._kill()
                return _stopped("cancelled")
            if end is not None and time.monotonic() >= end:
                self._kill()  # the only way to stop a check that hangs: its process goes
                return _stopped(f"check took longer than {timeout_s:g} s (timeout); its process was replaced")


class LocalPool(Executor):
    """``workers`` processes on this machine (default: one per core), each running one check at
    a time with ``threads`` torch threads. A check that times out, is cancelled or crashes
    loses its process, which is replaced; the other slots go on."""

    def __init__(self, workers: int | None = None) -> None:
        self.slots = workers or os.cpu_count() or 1
        if self.slots < 1:
            raise InputError(f"a pool needs at least one worker, got {workers}")
        # forkserver: no fork of a parent that holds threads; the server imports the verifier once,
        # so a slot whose process was killed gets a new one in milliseconds, not a torch import
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["pocv.check"])
        self.queue: queue.Queue[tuple[Task, Future[TaskResult], float | None] | None] = queue.Queue()
        self.closing = False
        self._slots = [_Slot(self, n) for n in range(self.slots)]
        for s in self._slots:
            s.start()
        atexit.register(self.shutdown)  # a pool not shut down by its owner still stops cleanly at exit

    def submit(self, task: Task, timeout_s: float | None = None) -> Future[TaskResult]:
        if self.closing:
            raise InputError("the pool is shut down")
        fut: Future[TaskResult] = Future()
        self.queue.put((task, fut, timeout_s))
        return fut

    def cancel(self, future: Future[TaskResult]) -> None:
        if future.cancel():  # still queued
            return
        for s in self._slots:
            if s.current is future:
                s.stop_current = "cancelled"

    def shutdown(self) -> None:
        if self.closing:
            return
        self.closing = True
        atexit.unregister(self.shutdown)
        for _ in self._slots:
            self.queue.put(None)
        for s in self._slots:
            s.join(10)


class ThreadExecutor(Executor):
    """Checks on ``workers`` threads of this process: no process to start, and torch releases
    the GIL while it computes; but a check that hangs cannot be stopped (its timeout reports
    it and the thread stays busy until it returns). For small batches and tests."""

    def __init__(self, workers: int = 2) -> None:
        self.slots = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pocv-check")
        self._inner: dict[Future[TaskResult], Future[TaskResult]] = {}

    def submit(self, task: Task, timeout_s: float | None = None) -> Future[TaskResult]:
        out: Future[TaskResult] = Future()
        inner = self._pool.submit(run_task, task)
        timer = None
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, _settle, (out, _stopped(f"check took longer than {timeout_s:g} s "
                                                                      "(timeout); its thread is still busy")))
            timer.daemon = True
            timer.start()

        def done(f: Future[TaskResult]) -> None:
            if timer is not None:
                timer.cancel()
            _settle(out, _stopped("cancelled") if f.cancelled() else f.result())

        inner.add_done_callback(done)
        self._inner[out] = inner
        out.add_done_callback(lambda f: self._inner.pop(f, None))
        return out

    def cancel(self, future: Future[TaskResult]) -> None:
        inner = self._inner.get(future)
        if inner is not None:
            inner.cancel()
        _settle(future, _stopped("cancelled"))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- the batch ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Job:
    """One verification. Either local records with their answer -- ``commitment``,
    ``challenge`` (issued by this batch's key) and ``response`` (the bundle's bytes, a path to
    it, or None for no answer) -- or a remote worker: ``remote`` (its URL) and ``job_id``
    (optionally ``worker``, its public key), which the batch fetches, challenges and
    downloads. ``tag`` is the caller's name for the job, handed back in its result."""

    commitment: Commitment | None = None
    challenge: Challenge | None = None
    response: bytes | str | os.PathLike[str] | None = None
    remote: str | None = None
    job_id: bytes | None = None
    worker: bytes | None = None
    tag: Any = None
    avoid_node: str | None = None

    def __post_init__(self) -> None:
        if self.remote is None and (self.commitment is None or self.challenge is None):
            raise InputError("a job is (commitment, challenge, response) or (remote URL, job id)")
        if self.remote is not None and self.job_id is None:
            raise InputError("a remote job needs the job id to verify")


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """A job's end: the signed verdict, or an error (``transient``: trying again may help)."""

    job: Job
    verdict: Verdict | None = None
    error: str | None = None
    error_type: str | None = None
    transient: bool = False
    refused: str | None = None  # a remote worker that did not answer in time, or refused
    node: str = ""
    gpus: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def tag(self) -> Any:
        return self.job.tag

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed


@dataclass(frozen=True)
class Progress:
    """Counts of one batch so far (handed to ``progress`` after every finished job)."""

    started: int
    done: int
    passed: int
    failed: int
    errors: int

    @property
    def in_flight(self) -> int:
        return self.started - self.done


class BatchVerifier:
    """Verifies jobs concurrently on ``executor`` with the verifier ``key``.

    ``max_in_flight`` (default: twice the executor's slots) bounds the jobs taken and not yet
    finished; ``timeout_s`` bounds each check; ``deadline_s`` is a remote worker's deadline to
    answer its challenge. ``progress(Progress)`` is called after each job.
    """

    def __init__(self, *, key: Signer, device: str = "cpu", executor: Executor | None = None,
                 max_in_flight: int | None = None, timeout_s: float | None = None,
                 deadline_s: float = DEFAULT_DEADLINE_S, client_limits: ClientLimits | None = None,
                 spool_dir: str | None = None, book: ChallengeBook | None = None,
                 progress: Callable[[Progress], None] | None = None, threads: int = 1) -> None:
        self.keypair = as_keypair(key)
        self.verifier = Verifier(key=self.keypair, device=device, book=book)
        self.device = device
        self._own_executor = executor is None
        self.executor = executor or LocalPool()
        self.max_in_flight = max_in_flight or 2 * self.executor.slots
        if self.max_in_flight < 1:
            raise InputError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.client_limits = client_limits
        self.spool_dir = spool_dir
        self.progress = progress
        self.threads = threads
        self._cancel: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[Future[TaskResult]] = set()

    def close(self) -> None:
        if self._own_executor:
            self.executor.shutdown()

    def __enter__(self) -> BatchVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cancel(self) -> None:
        """Stop the batch (from any thread): no new job is taken, running checks are stopped and
        reported cancelled."""
        loop, event = self._loop, self._cancel
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the batch's loop already finished
                loop.call_soon_threadsafe(event.set)
        for fut in list(self._running):
            self.executor.cancel(fut)

    # -- async form ------------------------------------------------------------------------

    async def averify(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[JobResult]:
        """Yield each job's result as it finishes."""
        self._loop = asyncio.get_running_loop()
        self._cancel = cancel = asyncio.Event()
        slots = asyncio.Semaphore(self.max_in_flight)
        results: asyncio.Queue[JobResult | None] = asyncio.Queue()
        remotes: dict[tuple[str, bytes | None], RemoteWorker] = {}
        tasks: set[asyncio.Task[None]] = set()
        counts = {"started": 0, "done": 0, "passed": 0, "failed": 0, "errors": 0}

        async def one(job: Job) -> None:
            try:
                result = await self._one(job, remotes)
            except asyncio.CancelledError:
                result = JobResult(job=job, error="cancelled", error_type="Cancelled", transient=True)
            except Exception as e:  # one job's failure is its result, never the batch's
                result = JobResult(job=job, error=str(e) or type(e).__name__, error_type=type(e).__name__,
                                   transient=not isinstance(e, EvidenceError | InputError))
            await results.put(result)  # its slot is freed once the result is counted

        async def produce() -> None:
            try:
                async for job in _aiter(jobs):
                    await slots.acquire()
                    if cancel.is_set():
                        slots.release()
                        break
                    counts["started"] += 1
                    t = asyncio.create_task(one(job))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            finally:
                await results.put(None)  # the producer is done; tasks still report

        producer = asyncio.create_task(produce())
        stopper = asyncio.create_task(cancel.wait())
        produced = False
        try:
            while not (produced and counts["done"] == counts["started"]):
                got = asyncio.create_task(results.get())
                finished, _ = await asyncio.wait({got, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if got not in finished:
                    got.cancel()
                    producer.cancel()
                    for fut in list(self._running):
                        self.executor.cancel(fut)
                    stopper = asyncio.create_task(asyncio.Event().wait())  # drain the rest
                    continue
                result = got.result()
                if result is None:
                    produced = True
                    continue
                counts["done"] += 1
                slots.release()
                if result.verdict is None:
                    counts["errors"] += 1
                else:
                    counts["passed" if result.verdict.passed else "failed"] += 1
                if self.progress is not None:
                    self.progress(Progress(**counts))
                yield result
        finally:
            self._loop = None
            stopper.cancel()
            producer.cancel()
            for t in list(tasks):
                t.cancel()
            for fut in list(self._running):
                self.executor.cancel(fut)
            for r in remotes.values():
                await r.close()

    async def _one(self, job: Job, remotes: dict[tuple[str, bytes | None], RemoteWorker]) -> JobResult:
        t0 = time.perf_counter()
        refused: str | None = None
        spool: Path | None = None
        try:
            if job.remote is not None:
                commitment, challenge, spool, refused = await self._fetch(job, remotes)
                task = self._task(commitment, challenge, job, bundle_path=None if spool is None else str(spool))
            else:
                assert job.commitment is not None
                assert job.challenge is not None
                commitment, challenge = job.commitment, job.challenge
                current = self.verifier.book.current(challenge.job_id, challenge.root)
                if current is not None and current != challenge_digest(challenge):
                    raise InputError("this challenge was retired: a newer one was issued for this commitment")
                r = job.response
                task = self._task(commitment, challenge, job,
                                  bundle=bytes(r) if isinstance(r, bytes | bytearray | memoryview) else None,
                                  bundle_path=None if r is None or isinstance(r, bytes | bytearray | memoryview)
                                  else os.fspath(r))
            fut = self.executor.submit(task, self.timeout_s)
            self._running.add(fut)
            try:
                out = await asyncio.wrap_future(fut)
            finally:
                self._running.discard(fut)
        finally:
            if spool is not None:
                spool.unlink(missing_ok=True)
        verdict = None
        if out.verdict is not None:
            verdict = Verdict.from_json(out.verdict)
            verdict.verify_signature(expected_verifier=self.verifier.public_key)
        return JobResult(job=job, verdict=verdict, error=out.error, error_type=out.error_type,
                         transient=out.transient, refused=refused, node=out.node, gpus=out.gpus,
                         seconds=time.perf_counter() - t0)

    def _task(self, commitment: Commitment, challenge: Challenge, job: Job, **kw: Any) -> Task:
        return Task(commitment=commitment.to_json(), challenge=challenge.to_json(), key=bytes(self.keypair),
                    device=self.device, threads=self.threads, avoid_node=job.avoid_node, **kw)

    async def _fetch(self, job: Job, remotes: dict[tuple[str, bytes | None], RemoteWorker]
                     ) -> tuple[Commitment, Challenge, Path | None, str | None]:
        """Fetch, challenge and download a remote job's answer into a spool file (or refused)."""
        assert job.remote is not None
        assert job.job_id is not None
        remote = remotes.get((job.remote, job.worker))
        if remote is None:
            remote = remotes[(job.remote, job.worker)] = RemoteWorker(job.remote, key=self.keypair, worker=job.worker,
                                                                      limits=self.client_limits)
        commitment = await remote.commitment(job.job_id)
        challenge = self.verifier.challenge(commitment, beacon=secrets.token_bytes(32))
        fd, name = tempfile.mkstemp(prefix="pocv-bundle-", dir=self.spool_dir)
        path = Path(name)
        start = time.monotonic()
        try:
            with os.fdopen(fd, "w+b") as f:
                async with asyncio.timeout(self.deadline_s):
                    await remote.respond(challenge, f, max_bytes=bundle_limit(commitment, challenge),
                                         deadline_s=self.deadline_s)
            return commitment, challenge, path, None
        except TimeoutError:
            why = f"no answer within the challenge deadline ({self.deadline_s:g} s)"
        except RemoteRefused as e:
            why = str(e)
        except RemoteUnavailable as e:
            if time.monotonic() - start < self.deadline_s:
                path.unlink(missing_ok=True)
                raise
            why = f"no answer within the challenge deadline ({self.deadline_s:g} s): {e}"
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)
        log.warning("batch: job %s at %s: REFUSED: %s", job.job_id.hex()[:16], job.remote, why)
        return commitment, challenge, None, why

    # -- blocking form ---------------------------------------------------------------------

    def verify(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> Iterator[JobResult]:
        """Yield each job's result as it finishes (an event loop runs in a thread). Closing the
        iterator early cancels the batch."""
        out: queue.Queue[JobResult | BaseException | None] = queue.Queue(maxsize=self.max_in_flight)

        async def pump() -> None:
            try:
                async for r in self.averify(jobs):
                    await asyncio.to_thread(out.put, r)
            except BaseException as e:  # handed to the consumer thread
                out.put(e)
                return
            out.put(None)

        thread = threading.Thread(target=asyncio.run, args=(pump(),), daemon=True, name="pocv-batch")
        thread.start()
        drained = False
        try:
            while True:
                item = out.get()
                if item is None:
                    drained = True  # the loop hands over nothing more: it is only shutting down
                    return
                if isinstance(item, BaseException):
                    drained = True
                    raise item
                yield item
        finally:
            self.cancel()
            while not drained and thread.is_alive():  # closed early: drain what the loop still hands over
                with contextlib.suppress(queue.Empty):
                    out.get_nowait()
                thread.join(DRAIN_POLL_S)
            thread.join()


async def _aiter(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
    if isinstance(jobs, AsyncIterable):
        async for j in jobs:
            yield j
    else:
        for j in jobs:
            yield j


__all__ = ["BatchVerifier", "Executor", "Job", "JobResult", "LocalPool", "Progress", "Task", "TaskResult",
           "ThreadExecutor", "run_task"]
