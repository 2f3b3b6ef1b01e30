"""Fault test on loopback: the worker process is killed (SIGKILL) and restarted mid-load.

Every verification ends in a verdict or a retryable error (never a hang), no verdict is lost
or duplicated, and no committed trace is lost: after the restart every job verifies."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pocv.batch import BatchVerifier, Job, ThreadExecutor
from pocv.client import ClientLimits
from tests.net.conftest import VERIFIER, WORKER

SERVER = """
import sys
from pocv.keys import Keypair
from pocv.serve import WorkerService, run
svc = WorkerService(traces=sys.argv[1], key=Keypair.from_bytes(bytes.fromhex(sys.argv[2])),
                    accept=[bytes.fromhex(sys.argv[3])])
run(svc, "127.0.0.1", int(sys.argv[4]), ready=lambda a: print("ready", flush=True))
"""


def _start(traces: Path, port: int) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", SERVER, str(traces), bytes(WORKER).hex(),
                          bytes(VERIFIER.pubkey()).hex(), str(port)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_worker_killed_and_restarted_mid_load(traces: tuple[Path, list[bytes]]) -> None:
    root, ids = traces
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(root, port)
    n = 30
    jobs = [Job(remote=url, job_id=ids[i % len(ids)], worker=bytes(WORKER.pubkey()), tag=i) for i in range(n)]
    limits = ClientLimits(attempts=4, backoff_initial_s=0.1, backoff_max_s=0.5, connect_timeout_s=2,
                          read_timeout_s=10)
    results = []
    state = {"restarted": False}

    def chaos() -> None:
        nonlocal proc
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)
        proc = _start(root, port)
        state["restarted"] = True

    t = threading.Thread(target=chaos)
    t0 = time.monotonic()
    t.start()
    try:
        with BatchVerifier(key=VERIFIER, executor=ThreadExecutor(2), max_in_flight=6, deadline_s=30,
                           client_limits=limits) as b:
            results = list(b.verify(jobs))
        t.join()
        assert time.monotonic() - t0 < 120
        tags = [r.tag for r in results]
        assert sorted(tags) == list(range(n)), "a verdict was lost or duplicated"
        for r in results:
            assert r.passed or (r.verdict is None and r.transient), r
        failed = [r for r in results if not r.passed]
        print(f"\nfault: {n} verifications, {len(failed)} retryable errors, {n - len(failed)} PASS, "
              f"restarted: {state['restarted']}")
        # nothing committed was lost: every job verifies against the restarted worker
        with BatchVerifier(key=VERIFIER, executor=ThreadExecutor(2), client_limits=limits) as b:
            again = list(b.verify([Job(remote=url, job_id=i, tag=i.hex()) for i in ids]))
        assert all(r.passed for r in again), again
    finally:
        t.join()
        proc.kill()
        proc.wait()
