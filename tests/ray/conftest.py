"""One local Ray session for every Ray test (num_cpus=2, two logical GPUs: GPU requests are tested
without a GPU), started once per test run; its worker processes warm up (import the verifier)
while the tests make their traces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

#: the local session every Ray test shares
NUM_CPUS = 2
NUM_GPUS = 2


def _warm() -> str:
    import pocv.batch  # noqa: F401 - a Ray worker imports the verifier (torch) once, before the first check

    return "warm"


class RaySession:
    """The ``ray`` module, attached, and the warm-up tasks still running."""

    def __init__(self, ray: Any, warming: list[Any]) -> None:
        self.ray = ray
        self.warming = warming

    def warm(self) -> None:
        """Wait until every CPU slot has a worker process with the verifier imported."""
        self.ray.get(self.warming, timeout=300)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[RaySession]:
    """This process's Ray session: the one already running, else a local one for the tests."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=NUM_CPUS, num_gpus=NUM_GPUS, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
    warm = ray.remote(num_cpus=1)(_warm)
    yield RaySession(ray, [warm.remote() for _ in range(NUM_CPUS)])
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def session(ray_session: RaySession) -> Any:
    """The ``ray`` module of the shared session."""
    return ray_session.ray
