"""The Ray backend on the local Ray session every Ray test shares (tests/ray/conftest.py: num_cpus=2,
two logical GPUs).

Marked ``ray``; skipped where Ray is not installed (the extra ``pocv[ray]``)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from pocv.batch import BatchVerifier, Job, Task
from pocv.check import Verifier
from pocv.prover import Prover
from pocv.store import save_response
from tests.net.conftest import SPECS, VERIFIER, WORKER
from tests.ray.conftest import RaySession

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def made(ray_session: RaySession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Verifier, list[Job]]:
    root = tmp_path_factory.mktemp("ray")
    verifier = Verifier(key=VERIFIER)
    jobs = []
    for i, spec in enumerate(SPECS):
        p = Prover(trace_dir=root / f"job{i}", key=WORKER, checkpoint_every=4)
        c = p.run(spec)
        ch = verifier.challenge(c, beacon=bytes([i + 1]) * 32)
        save_response(p.respond(ch), root / f"b{i}.bin")
        jobs.append(Job(commitment=c, challenge=ch, response=str(root / f"b{i}.bin"), tag=i))
    ray_session.warm()  # the Ray workers imported the verifier meanwhile
    return verifier, jobs


def test_importing_the_backend_starts_no_ray() -> None:
    code = "import pocv.ray_backend, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_batch_on_ray_verifies_and_never_retries(session: Any, made: tuple[Verifier, list[Job]]) -> None:
    from pocv.ray_backend import RayExecutor

    verifier, jobs = made
    ex = RayExecutor()  # reuses this process's session
    assert ex.slots == 2
    opts = ex.options(Task(commitment=jobs[0].commitment.to_json(), challenge="", key=b""))
    assert opts["max_retries"] == 0 and opts["retry_exceptions"] is False and "num_gpus" not in opts
    with BatchVerifier(key=VERIFIER, executor=ex, book=verifier.book) as b:
        results = list(b.verify(jobs))
    assert sorted(r.tag for r in results) == [0, 1, 2] and all(r.passed for r in results)
    node = session.get_runtime_context().get_node_id()
    assert all(r.node == node for r in results)


def test_cuda_checks_request_gpus(session: Any, made: tuple[Verifier, list[Job]]) -> None:
    from pocv.ray_backend import RayExecutor

    verifier, jobs = made
    ex = RayExecutor(num_gpus=1)
    task = Task(commitment=jobs[0].commitment.to_json(), challenge=jobs[0].challenge.to_json(), key=b"",
                device="cuda")
    assert ex.options(task)["num_gpus"] == 1
    # on a host without CUDA the check itself fails (InputError), but Ray gave it a (logical) GPU
    with BatchVerifier(key=VERIFIER, executor=ex, book=verifier.book) as b:
        b.device = "cuda"  # the verifier in this process stays on the CPU; the tasks ask for CUDA
        (r,) = list(b.verify(jobs[:1]))
    assert len(r.gpus) == 1, r
    assert r.passed or (r.verdict is None and r.error_type == "InputError")


def test_a_recomputation_stays_off_the_producing_node(session: Any, made: tuple[Verifier, list[Job]]) -> None:
    from pocv.ray_backend import RayExecutor

    verifier, jobs = made
    node = session.get_runtime_context().get_node_id()
    ex = RayExecutor()
    off = Job(commitment=jobs[0].commitment, challenge=jobs[0].challenge, response=jobs[0].response,
              tag="off", avoid_node=node)
    elsewhere = Job(commitment=jobs[1].commitment, challenge=jobs[1].challenge, response=jobs[1].response,
                    tag="elsewhere", avoid_node="f" * 56)
    assert ex.options(Task(commitment=off.commitment.to_json(), challenge="", key=b"", avoid_node=node)
                      )["label_selector"] == {"ray.io/node-id": f"!{node}"}
    t0 = time.monotonic()
    with BatchVerifier(key=VERIFIER, executor=ex, book=verifier.book, timeout_s=3) as b:
        by = {r.tag: r for r in b.verify([off, elsewhere])}
    # the only node is the producer's: the check is never placed, and times out instead
    assert by["off"].error_type == "Timeout" and by["off"].verdict is None
    assert by["elsewhere"].passed
    assert time.monotonic() - t0 < 30
