"""Checks as Ray tasks, for clusters (the extra ``pocv[ray]``; docs/network.md §7).

:class:`RayExecutor` is a :class:`pocv.batch.Executor`: ``BatchVerifier(executor=RayExecutor())``
fans a batch out over a Ray cluster.

- **Never starts Ray at import.** Importing this module does not import Ray; the executor
  attaches when it is built: to the session this process already has (``ray.is_initialized()``),
  else to ``address`` (``"auto"``, the default: the cluster this host belongs to, or an explicit
  ``ray://`` or ``host:port`` address). It never starts a local cluster of its own.
- **GPUs per task.** A check on a CUDA device asks for ``num_gpus`` (default 1) so Ray places
  it on a GPU node and sets ``CUDA_VISIBLE_DEVICES``; a CPU check asks for ``num_cpus`` only.
- **No silent retries.** Every task runs with ``max_retries=0`` and ``retry_exceptions=False``:
  a check that dies with its worker or node is reported as a transient error, never re-run
  behind the scheduler's back (a verdict is signed once, for one judged bundle).
- **Off the worker's node.** A job's ``avoid_node`` (a Ray node id, e.g. of the node that ran
  the work) becomes a label selector ``ray.io/node-id != <id>``: the recomputation never runs
  where the work was produced. ``node_of(commitment)`` fills it for every job that has none.

The verifier's key travels with each task (in the Task), so the cluster is trusted with it;
bundle files are read here and shipped as bytes unless ``shared_files=True`` says every node
sees the same paths.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final

from pocv.batch import Executor, Task, TaskResult, run_task
from pocv.errors import InputError, TransientError
from pocv.records import Commitment

log = logging.getLogger(__name__)

#: the label every Ray node carries with its node id
NODE_ID_LABEL: Final = "ray.io/node-id"


def _ray_task(task: Task) -> TaskResult:
    """The body of one Ray task: the check, with where it ran."""
    import ray  # in a Ray worker: the runtime context names the node and its GPUs

    ctx = ray.get_runtime_context()
    gpus = tuple(str(g) for g in ctx.get_accelerator_ids().get("GPU", []))
    return run_task(task, node=ctx.get_node_id(), gpus=gpus)


class RayExecutor(Executor):
    """Runs checks as Ray tasks on the cluster this process is attached to (or attaches to)."""

    def __init__(self, *, address: str | None = "auto", num_cpus: float = 1, num_gpus: float = 1,
                 slots: int | None = None, shared_files: bool = False,
                 node_of: Callable[[Commitment], str | None] | None = None, **init_kwargs: Any) -> None:
        try:
            import ray  # the optional extra pocv[ray]: loaded when a Ray executor is built
        except ImportError as e:
            raise InputError("the Ray backend needs Ray: pip install 'pocv[ray]'") from e
        self._ray = ray
        if not ray.is_initialized():
            if address is None:
                raise InputError("no Ray session in this process and no address to attach to (address='auto' "
                                 "attaches to this host's cluster)")
            try:
                ray.init(address=address, **init_kwargs)
            except ConnectionError as e:
                raise TransientError(f"cannot attach to the Ray cluster at {address!r}: {e}") from e
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.shared_files = shared_files
        self.node_of = node_of
        cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call,unused-ignore]  # untyped only where ray is installed
        self.slots = slots or max(1, int(cpus // max(num_cpus, 1e-9)))
        self._remote = ray.remote(_ray_task)
        self._refs: dict[Future[TaskResult], Any] = {}
        self._lock = threading.Lock()

    def options(self, task: Task) -> dict[str, Any]:
        """The Ray options of one task (public so a scheduler can see what is asked)."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "max_retries": 0, "retry_exceptions": False}
        if task.device.startswith("cuda"):
            opts["num_gpus"] = self.num_gpus
        avoid = task.avoid_node
        if avoid is None and self.node_of is not None:
            avoid = self.node_of(Commitment.from_json(task.commitment))
        if avoid is not None:
            opts["label_selector"] = {NODE_ID_LABEL: f"!{avoid}"}
        return opts

    def submit(self, task: Task, timeout_s: float | None = None) -> Future[TaskResult]:
        out: Future[TaskResult] = Future()
        if task.bundle_path is not None and not self.shared_files:
            with open(task.bundle_path, "rb") as f:  # ship the bytes: the node may not see this path
                task = dataclasses.replace(task, bundle=f.read(), bundle_path=None)
        ref = self._remote.options(**self.options(task)).remote(task)
        with self._lock:
            self._refs[out] = ref
        timer: threading.Timer | None = None
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, self._stop, (out, f"check took longer than {timeout_s:g} s (timeout)"))
            timer.daemon = True
            timer.start()

        def done(f: Future[Any]) -> None:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._refs.pop(out, None)
            if out.done():
                return
            try:
                result: TaskResult = f.result()
            except Exception as e:  # the task died, its worker or node was lost, or it was cancelled
                cancelled = type(e).__name__ in ("TaskCancelledError", "CancelledError")
                result = TaskResult(error="cancelled" if cancelled else f"Ray task failed: {e}",
                                    error_type="Cancelled" if cancelled else type(e).__name__, transient=True)
            _settle(out, result)

        ref.future().add_done_callback(done)
        return out

    def _stop(self, fut: Future[TaskResult], why: str) -> None:
        with self._lock:
            ref = self._refs.pop(fut, None)
        if ref is not None:
            _settle(fut, TaskResult(error=why, error_type="Timeout" if "timeout" in why else "Cancelled",
                                    transient=True))
            try:
                self._ray.cancel(ref, force=True)
            except Exception as e:  # already finished, or the cluster is gone: the result stands
                log.debug("ray cancel: %s", e)

    def cancel(self, future: Future[TaskResult]) -> None:
        self._stop(future, "cancelled")

    def shutdown(self) -> None:
        """Cancel what is still running; the Ray session stays (it is the caller's)."""
        with self._lock:
            futures = list(self._refs)
        for f in futures:
            self.cancel(f)


def _settle(fut: Future[TaskResult], result: TaskResult) -> None:
    if not fut.done():
        try:
            fut.set_result(result)
        except Exception as e:  # raced with the other side
            log.debug("settle: %s", e)


__all__ = ["NODE_ID_LABEL", "RayExecutor"]
