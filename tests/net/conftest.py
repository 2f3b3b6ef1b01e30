"""Fixtures of the network tests: a worker's traces and its service on loopback, in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.keys import Keypair
from pocv.prover import Prover
from pocv.serve import ServerLimits, WorkerService

WORKER = Keypair.from_seed(bytes([1]) * 32)
VERIFIER = Keypair.from_seed(bytes([2]) * 32)
STRANGER = Keypair.from_seed(bytes([3]) * 32)
SPECS = [resolve_spec(JobSpec(kernel="gemm-int8", steps=40, seed=s, params={"n": 32})) for s in (11, 12, 13)]


class Served:
    """A WorkerService running on its own event loop in a thread (as ``pocv serve`` would)."""

    def __init__(self, service: WorkerService, host: str = "127.0.0.1") -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        host_port = self.call(service.start(host, 0))
        self.url = f"http://{host_port[0]}:{host_port[1]}"

    def call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout=60)

    def close(self) -> None:
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="session")
def traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    root = tmp_path_factory.mktemp("traces")
    ids = []
    for i, spec in enumerate(SPECS):
        c = Prover(trace_dir=root / f"job{i}", key=WORKER, checkpoint_every=4).run(spec)
        ids.append(c.job_id)
    return root, ids


def serve(traces: Path, limits: ServerLimits | None = None, **kw: Any) -> Served:
    return Served(WorkerService(traces=traces, key=WORKER, accept=[bytes(VERIFIER.pubkey())], limits=limits, **kw))


@pytest.fixture
def served(traces: tuple[Path, list[bytes]]) -> Iterator[Served]:
    s = serve(traces[0])
    yield s
    s.close()
