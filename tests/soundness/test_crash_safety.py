"""Crash safety: SIGKILL the real ``pocv`` processes at random points, then resume.

* ``pocv run`` is killed while it computes (at a random number of committed leaves, and at
  random times that include start-up and checkpoint writes), as many times as the test says,
  then run to completion: the root equals an uninterrupted run's, and after every kill the
  trace is consistent (every file under its real name parses, every checkpoint matches its
  leaf, nothing half-written);
* ``pocv respond`` and ``pocv verify`` are killed at random times: their output file is either
  absent or a complete, valid bundle / verdict (atomic writes), never a prefix.

Temporary files (``.NAME.XXXX.tmp``) that a kill leaves behind are counted and reported; they
never carry a real name.
"""

from __future__ import annotations

import functools
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import Response
from pocv.encoding import decode_state, digest_encoded
from pocv.kernels import resolve_spec
from pocv.limits import DIGEST_SIZE
from pocv.merkle import MerkleTree
from pocv.records import Commitment, Verdict
from pocv.store import load_response, save_keypair
from pocv.trace import PACK_NAME, TraceStore

#: the job's steps should take about this long on this machine, so kills land mid-run
TARGET_RUN_S = 2.5
STEPS = 300


@functools.cache
def _spec() -> JobSpec:
    """gemm-int8 sized to this machine: int8 matmuls run ~100x faster with AVX-512 VNNI than
    without, so a fixed size is either over before a kill lands or minutes long (a timeout)."""
    a = torch.randint(-128, 127, (512, 512), dtype=torch.int8)
    torch._int_mm(a, a)  # warm up
    t0 = time.perf_counter()
    torch._int_mm(a, a)
    t512 = max(time.perf_counter() - t0, 1e-6)
    per_step = TARGET_RUN_S / STEPS
    if t512 <= per_step:
        n, layers = 512, max(1, min(6, round(per_step / t512)))
    else:
        n, layers = max(16, int(512 * (per_step / t512) ** (1 / 3)) // 16 * 16), 1
    return resolve_spec(JobSpec(kernel="gemm-int8", steps=STEPS, seed=3, params={"n": n, "layers": layers}))


EVERY = 8
#: how long a killed process may take to die, and the longest a resumed run may take
PROCESS_TIMEOUT_S = 300


def pocv_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "pocv", *map(str, args)]


def check_trace(trace: Path) -> dict[str, int]:
    """Invariants of a trace directory after a crash; returns counts of what is there."""
    counts = {"leaves": 0, "checkpoints": 0, "tmp": 0}
    if not trace.exists():
        return counts
    for p in trace.rglob("*"):
        if p.is_dir():
            continue
        if p.name.endswith(".tmp"):
            assert p.name.startswith("."), p  # debris of an interrupted atomic write, never a real name
            counts["tmp"] += 1
            continue
        if p.name == "trace.json":
            json.loads(p.read_text())
        elif p.name == "commitment.json":
            Commitment.from_json(p.read_bytes())
        elif p.suffix == ".state" or p.name == PACK_NAME:
            continue  # the kept states: read below, slot by slot
        elif p.name != "leaves.bin":
            raise AssertionError(f"unexpected file {p}")
    leaves = (trace / "leaves.bin").read_bytes() if (trace / "leaves.bin").exists() else b""
    n = len(leaves) // DIGEST_SIZE
    counts["leaves"] = n
    if not (trace / "trace.json").exists():
        return counts
    # every checkpoint the trace lists (a slot of the pack with its trailer, or a file) parses in
    # full and matches its leaf; the store is built directly, as TraceStore.open would remove
    # the temporaries counted above
    meta = json.loads((trace / "trace.json").read_text())
    store = TraceStore(trace, JobSpec.from_dict(meta["spec"]), checkpoint_every=meta["checkpoint_every"],
                       format=meta["format"])
    try:
        for j in store.checkpoints():
            data = store.read_checkpoint(j)
            decode_state(data)  # parses in full: not a prefix
            counts["checkpoints"] += 1
            if j < n:
                assert digest_encoded(data) == leaves[j * 32 : (j + 1) * 32], f"checkpoint {j} does not match its leaf"
    finally:
        store.close()
    return counts


def _wait_for_leaves(trace: Path, target: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    leaves = trace / "leaves.bin"
    while time.monotonic() < deadline and proc.poll() is None:
        if leaves.exists() and leaves.stat().st_size >= 32 * target:
            return
        time.sleep(0.005)


def kill_run_repeatedly(d: Path, kills: int, rng: random.Random) -> tuple[Commitment, list[dict[str, int]]]:
    trace = d / "trace"
    seen: list[dict[str, int]] = []
    for _ in range(kills):
        if check_trace(trace)["leaves"] == _spec().steps + 1 and (trace / "commitment.json").exists():
            break  # the run completed between kills: nothing left to interrupt
        proc = subprocess.Popen(pocv_cmd("run", d / "job.json", "--trace", trace, "-k", d / "w.json",
                                         "--checkpoint-every", EVERY, "-q"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = check_trace(trace)["leaves"]
        if rng.random() < 0.2:  # early: start-up (imports ~1-3 s), creating the trace, the first steps
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # in the middle of the computation, at a random step a bit further than before
            left = _spec().steps + 1 - done
            target = done + rng.randint(1, max(1, left // 6)) if left > 0 else _spec().steps + 1
            _wait_for_leaves(trace, target, proc, time.monotonic() + 120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=PROCESS_TIMEOUT_S)
        seen.append(check_trace(trace))
    r = subprocess.run(pocv_cmd("run", d / "job.json", "--trace", trace, "-k", d / "w.json",
                                "--checkpoint-every", EVERY, "-q"), capture_output=True, timeout=PROCESS_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    final = check_trace(trace)
    assert final["leaves"] == _spec().steps + 1 and final["checkpoints"] == _spec().steps // EVERY + 1
    c = Commitment.from_json(r.stdout)
    assert Commitment.from_json((trace / "commitment.json").read_bytes()) == c
    assert MerkleTree((trace / "leaves.bin").read_bytes()).root == c.root
    return c, seen


def kill_output_repeatedly(cmd: list[str], out: Path, kills: int, rng: random.Random,
                           parse: object, window: tuple[float, float] = (0.5, 4.5)) -> tuple[int, int]:
    """Kill ``cmd`` at random times; after each kill ``out`` is absent or parses in full."""
    absent = complete = 0
    for _ in range(kills):
        out.unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(*window))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=PROCESS_TIMEOUT_S)
        if out.exists():
            parse(out.read_bytes())  # type: ignore[operator]
            complete += 1
        else:
            absent += 1
    return absent, complete


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Commitment:
    """The uninterrupted run, in-process, with the same key (so the signed record is identical)."""
    key = Keypair.from_seed(bytes([21]) * 32)
    return Prover(trace_dir=tmp_path_factory.mktemp("ref") / "t", key=key, checkpoint_every=EVERY).run(_spec())


def _setup(d: Path) -> None:
    (d / "job.json").write_text(_spec().to_json())
    save_keypair(Keypair.from_seed(bytes([21]) * 32), d / "w.json")
    save_keypair(Keypair.from_seed(bytes([22]) * 32), d / "v.json")


def _crash_and_resume(d: Path, reference: Commitment, *, run_kills: int, respond_kills: int,
                      verify_kills: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    _setup(d)
    c, seen = kill_run_repeatedly(d, run_kills, rng)
    assert c.root == reference.root  # resumed: the same root as the uninterrupted run
    assert any(0 < s["leaves"] < _spec().steps + 1 for s in seen) or run_kills == 0  # some kills landed mid-run
    (d / "commitment.json").write_text(c.to_json())
    ch = Verifier(key=Keypair.from_seed(bytes([22]) * 32)).challenge(c, beacon=bytes([0xCD]) * 32, k=20)
    (d / "challenge.json").write_text(ch.to_json())
    bundle = d / "response.pocv"
    respond = pocv_cmd("respond", d / "trace", d / "challenge.json", "-k", d / "w.json", "-o", bundle)
    resp_stats = kill_output_repeatedly(respond, bundle, respond_kills, rng, Response.from_bytes)
    r = subprocess.run(respond, capture_output=True, timeout=PROCESS_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    verdict_path = d / "verdict.json"
    verify = pocv_cmd("verify", d / "commitment.json", d / "challenge.json", bundle, "-k", d / "v.json",
                      "-o", verdict_path)
    verify_stats = kill_output_repeatedly(verify, verdict_path, verify_kills, rng, Verdict.from_json)
    r = subprocess.run(verify, capture_output=True, timeout=PROCESS_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    assert Verdict.from_json(verdict_path.read_bytes()).passed
    assert load_response(bundle).indices == ch.indices
    tmp_left = sum(1 for p in d.rglob("*.tmp"))
    return {"run_kills": seen, "respond": resp_stats, "verify": verify_stats, "tmp_left": tmp_left}


def test_sigkill_during_run_respond_and_verify(tmp_path, reference) -> None:
    """The short version: 2 kills of the run (mid-computation), 1 of respond, 1 of verify."""
    stats = _crash_and_resume(tmp_path, reference, run_kills=2, respond_kills=1, verify_kills=1, seed=1)
    assert len(stats["run_kills"]) == 2  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_sigkill_many_times(tmp_path, reference, seed: int, capsys) -> None:
    stats = _crash_and_resume(tmp_path, reference, run_kills=15, respond_kills=8, verify_kills=6, seed=seed)
    mid_run = [s["leaves"] for s in stats["run_kills"] if 0 < s["leaves"] < _spec().steps + 1]  # type: ignore[attr-defined]
    assert len(mid_run) >= 5, stats["run_kills"]  # the rest land at start-up or after the last leaf
    with capsys.disabled():
        print(f"\ncrash safety (seed {seed}): run killed at leaves "
              f"{[s['leaves'] for s in stats['run_kills']]}; respond kills absent/complete {stats['respond']}; "
              f"verify kills absent/complete {stats['verify']}; temporary files left {stats['tmp_left']}")


def test_check_trace_catches_a_torn_checkpoint(tmp_path, reference) -> None:
    """The invariant checker itself can fail: a checkpoint cut short is not accepted."""
    trace = tmp_path / "t"
    Prover(trace_dir=trace, key=Keypair(), checkpoint_every=EVERY).run(
        resolve_spec(JobSpec(kernel="gemm-int8", steps=16, seed=3, params={"n": 16})))
    store = TraceStore.open(trace)
    data = store.read_checkpoint(8)
    store.write_checkpoint(8, data[:-5])  # its slot's trailer now says 5 bytes fewer: a state cut short
    store.close()
    with pytest.raises(Exception, match="truncated"):
        check_trace(trace)
    store.write_checkpoint(8, data)
    store.close()
    check_trace(trace)
