"""Measure the digits example: commitment overhead (run + commit) / run, and verifier time / worker
time at n steps, p = 0.999, f = 0.1 (issue 11's targets).

    python examples/digits/measure.py --steps 1000 --threads 1 --calibration-trials 4

The bare steps and ``Prover.run`` alternate ``--repeat`` times and the fastest of each counts
(the wall clock of a shared machine drifts by 10-30% between identical runs); the CPU time of
the process and the load average are printed beside them.

Whole runs seconds apart see different machines on a VM whose speed drifts by up to 20% within
seconds, so the overhead is also measured interleaved ("overhead_interleaved"): in each of
``--repeat`` more runs, every time the prover reports progress (every 64 steps,
pocv.prover.PROGRESS_EVERY) the same number of bare steps of the same job runs on a copy of its
own, inside the callback; the run's wall time less the callback's is the prover's, the
callback's the bare steps', so both see the same stretch of the machine's speed. The digits
job's states (0.3 MB) are below pocv.prover.BACKGROUND_MIN_BYTES: after its first 8 states the
committer hands them to a forked commit process (Linux), which reads each one from the
prover's memory (the digits step is pure: DigitsCnn.pure_step) and has finished the last state
handed over long before a bare block (64 steps) ends, and waits idle meanwhile.

The verifier judges the challenged steps on ``cores // torch threads`` threads at once (2 with
``--threads 1`` on 2 cores: Verifier(workers=None)); "verifier_over_worker" is the ratio of wall
times, "verifier_over_worker_cpu" the ratio of CPU times (every thread, the prover's commit
process included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from pocv_digits.cli import digits_tensors
from safetensors.torch import save_file
from solders.keypair import Keypair

from pocv.artifacts import ArtifactStore
from pocv.check import Verifier
from pocv.device import deterministic
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.calibrate import calibrate
from pocv.kernels.params import use_artifacts
from pocv.kernels.training import make_record
from pocv.prover import Prover


def cpu() -> float:
    """CPU seconds of this process (every thread) and of its children once reaped (the commit
    process: the prover reaps it at the end of a run)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration-trials", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(tmp) / "store")
        save_file(digits_tensors(), str(Path(tmp) / "d.safetensors"))  # type: ignore[arg-type]
        data = store.add(Path(tmp) / "d.safetensors")
        report = calibrate("digits-cnn", trials=args.calibration_trials, params={"data": data}, artifacts=store)
        cal = store.add_bytes(make_record(report))
        spec = resolve_spec(JobSpec(kernel="digits-cnn", steps=args.steps, seed=0,
                                    params={"data": data, "calibration": cal}))
        k = kernel_for(spec)
        raws, runs, raw_cpu, run_cpu, loads = [], [], [], [], []
        checks, check_cpu, responds = [], [], []
        verifier = Verifier(key=Keypair(), artifacts=store)
        for rep in range(args.repeat):  # alternate, and keep the fastest of each: a shared box is noisy
            loads.append(os.getloadavg()[0])
            with use_artifacts(store), deterministic(threads=args.threads):
                state = k.init_state(spec)
                c0, t0 = cpu(), time.perf_counter()
                for i in range(1, spec.steps + 1):
                    state = k.step(state, i, spec)
                raws.append(time.perf_counter() - t0)
                raw_cpu.append(cpu() - c0)
            if rep:  # the previous trace's disk space back before this run
                shutil.rmtree(Path(tmp) / f"trace{rep - 1}")
            worker = Prover(trace_dir=Path(tmp) / f"trace{rep}", key=Keypair(), artifacts=store)
            c0, t0 = cpu(), time.perf_counter()
            commitment = worker.run(spec)
            runs.append(time.perf_counter() - t0)
            run_cpu.append(cpu() - c0)
            # one answer and one check right after each run: worker and verifier see the same load
            challenge = verifier.challenge(commitment, beacon=bytes(range(32)))
            t0 = time.perf_counter()
            response = worker.respond(challenge)
            responds.append(time.perf_counter() - t0)
            data = response.to_bytes()
            c0, t0 = cpu(), time.perf_counter()
            verdict = verifier.check(commitment, challenge, data)
            checks.append(time.perf_counter() - t0)
            check_cpu.append(cpu() - c0)
            if not verdict.passed:
                raise SystemExit(f"an honest run failed its check: {verdict}")
        interleaved = []
        for rep in range(args.repeat):  # bare blocks inside the run (see the module docstring)
            shutil.rmtree(Path(tmp) / f"trace{args.repeat - 1 + rep}", ignore_errors=True)
            bare = {"state": None, "done": 0, "s": 0.0}

            def blocks(done: int, total: int, bare: dict = bare) -> None:
                t0 = time.perf_counter()
                s = bare["state"] if bare["state"] is not None else k.init_state(spec)
                for i in range(bare["done"] + 1, done + 1):
                    s = k.step(s, i, spec)
                bare["state"], bare["done"] = s, done
                bare["s"] += time.perf_counter() - t0

            worker = Prover(trace_dir=Path(tmp) / f"trace{args.repeat + rep}", key=Keypair(), artifacts=store,
                            progress=blocks)
            t0 = time.perf_counter()
            with use_artifacts(store), deterministic(threads=args.threads):
                worker.run(spec)
            whole = time.perf_counter() - t0
            interleaved.append((whole - bare["s"]) / bare["s"])
        raw, run = min(raws), min(runs)
        respond, check = min(responds), min(checks)
        state_bytes = sum(t.numel() * t.element_size() for t in state.values())
        print(json.dumps({
            "steps": spec.steps, "threads": args.threads, "state_bytes": state_bytes,
            "tau_by_group": report["tau_by_group"],
            # the figure for the target: bare blocks interleaved with the run's (the module
            # docstring), the median of --repeat runs, and each run's
            "overhead_interleaved": statistics.median(interleaved), "overhead_interleaved_per_run": interleaved,
            "run_s_steps_only": raw, "run_and_commit_s": run, "overhead": run / raw,
            # per repeat (bare and run alternate): the spread, the CPU time of every thread of this
            # process and of its commit process (what the commitment costs in cores, whatever else
            # the machine runs) and the
            # 1-minute load average when each repeat began (the figures mean little above ~1.5 on
            # a 2-core machine)
            "overhead_per_repeat": [r / b for r, b in zip(runs, raws, strict=True)],
            "cpu_overhead": min(run_cpu) / min(raw_cpu), "load_avg_1m": loads,
            "k": challenge.k, "k_over_n_plus_0_02": challenge.k / spec.steps + 0.02,
            "respond_s": respond, "verify_s": check, "verify_s_per_repeat": checks,
            "verifier_over_worker": check / run,
            # CPU time of the check (every thread: it recomputes steps on several at once) against
            # the run's (its commit process included): the same work on a machine with no idle core
            "verify_cpu_s": min(check_cpu), "verifier_over_worker_cpu": min(check_cpu) / min(run_cpu),
            "bundle_bytes": len(data), "passed": verdict.passed,
        }, indent=2))


if __name__ == "__main__":
    main()
