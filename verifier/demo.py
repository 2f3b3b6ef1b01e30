"""``pocv demo``: an honest and a cheating worker, end to end, on the embedded defaults.

Everything runs in a temporary directory on the CPU: no GPU, network or validator. The
cheating worker (:class:`pocv.testing.LazyProver`) replays ``s_{i-1}`` as ``s_i`` on a fifth
of its steps (it saves that compute) and otherwise follows the protocol, so only the spot check
can catch it.

:func:`run_demo` prints the story to ``out`` and returns a :class:`DemoResult`; ``ok`` says
whether the honest worker passed (and was paid) and the cheater was caught (and slashed); with
the market, also that the silent verifier's job was paid to the worker by CLAIM. The
library attaches no exit code: the CLI maps ``ok`` to one.
"""

from __future__ import annotations

import io
import json
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import torch

from pocv.check import NOT_JUDGED, Verifier
from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.keys import Keypair
from pocv.prover import Prover
from pocv.records import Challenge, Commitment, Verdict
from pocv.testing.liar import LazyProver

if TYPE_CHECKING:  # the market signs with solders keys
    from solders.keypair import Keypair as SoldersKeypair

CHEAT_FRACTION = 0.2  # the demo cheater skips this fraction of steps
# The demo's jobs are small: torch's intra-op threads cost more than they save on them (a 64x64
# int8 matmul takes 0.5 ms of CPU on one thread, 8 ms on two on a busy 2-core machine). One
# thread gives the same bytes (gemm-int8's honest variants include int_mm-1thread).
DEMO_TORCH_THREADS: Final = 1
# Job size: 200 steps keep the spot check a sample (p = 0.999 against a 10 % cheat challenges 66
# of them); n = 128 keeps each step a real int8 matmul chain. About 12 s of CPU for the whole
# market round on one core (n = 256 took 145 s).
DEMO_STEPS: Final = 200
DEMO_N: Final = 128


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` found: ``ok`` when the honest worker passed and the cheater was
    caught; ``output`` the text or JSON it printed; ``summary`` the same as a JSON-able dict."""

    ok: bool
    output: str
    summary: dict[str, Any] = field(default_factory=dict)


def _round(prover: Prover, verifier: Verifier, spec: JobSpec, workdir: Path, name: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    commitment = prover.run(spec)
    t_run = time.perf_counter() - t0
    (workdir / f"{name}-commitment.json").write_text(commitment.to_json())
    # the beacon is drawn only after the commitment is fixed
    challenge = verifier.challenge(Commitment.from_json(commitment.to_json()), beacon=secrets.token_bytes(32),
                                   confidence=0.999, cheat_fraction=0.1)
    (workdir / f"{name}-challenge.json").write_text(challenge.to_json())
    t1 = time.perf_counter()
    response = prover.respond(Challenge.from_json(challenge.to_json()))
    t_respond = time.perf_counter() - t1
    bundle = response.to_bytes()
    (workdir / f"{name}-response.pocv").write_bytes(bundle)
    t2 = time.perf_counter()
    verdict = verifier.check(commitment, challenge, bundle)
    t_verify = time.perf_counter() - t2
    (workdir / f"{name}-verdict.json").write_text(verdict.to_json())
    Verdict.from_json(verdict.to_json())  # the written verdict parses and its signature verifies
    return {"worker": name, "commitment": commitment, "challenge": challenge, "verdict": verdict,
            "run_s": t_run, "respond_s": t_respond, "verify_s": t_verify, "bundle_bytes": len(bundle),
            "states": len(response.states), "proof_hashes": len(response.proof)}


def run_demo(*, steps: int = DEMO_STEPS, n: int = DEMO_N, output: str = "text", keep: str | None = None,
             market: bool = True, out: Any = None) -> DemoResult:
    """The whole story on embedded defaults; with ``market`` (the default) settled by the pocv job
    program on the embedded Solana chain (LiteSVM): worker offers, a posted job with a commit and
    a verdict deadline, the honest worker matched, run, committed, challenged from the chain
    beacon, verified and paid; a cheating worker caught and its bond handed to the consumer; and a
    job whose verifier never answers, paid to the worker by CLAIM after the verdict deadline,
    with every party's balances before and after (docs/market.md)."""
    out = out or sys.stdout
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=steps, seed=2026, params={"n": n}))
    threads = torch.get_num_threads()
    torch.set_num_threads(DEMO_TORCH_THREADS)
    try:
        with tempfile.TemporaryDirectory(prefix="pocv-demo-") as tmp:
            workdir = Path(keep) if keep else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            if market:
                return _market_demo(spec, workdir, output, out)
            return _protocol_demo(spec, workdir, output, keep, out)
    finally:
        torch.set_num_threads(threads)


def _protocol_demo(spec: JobSpec, workdir: Path, output: str, keep: str | None, out: Any) -> DemoResult:
    """Run, challenge (verifier nonce), respond and verify for an honest and a cheating worker."""
    err = sys.stderr
    honest_key, cheat_key, verifier_key = Keypair(), Keypair(), Keypair()
    verifier = Verifier(key=verifier_key)
    err.write(f"pocv demo: job {spec.job_id.hex()[:16]}... {spec.kernel_ref} n={spec.params['n']}, "
              f"{spec.steps} steps\n")
    err.write("  honest worker running...\n")
    honest = _round(Prover(trace_dir=workdir / "honest-trace", key=honest_key), verifier, spec, workdir, "honest")
    lazy = LazyProver(trace_dir=workdir / "cheater-trace", key=cheat_key, skip_fraction=CHEAT_FRACTION, seed=7)
    err.write(f"  cheating worker running (skips {CHEAT_FRACTION:.0%} of steps)...\n")
    cheat = _round(lazy, verifier, spec, workdir, "cheater")
    cheat["skipped"] = lazy.skipped
    ok = bool(honest["verdict"].passed and not cheat["verdict"].passed)
    doc = {"job_id": spec.job_id.hex(), "kernel": spec.kernel_ref, "steps": spec.steps,
           "rounds": [_summary(r) for r in (honest, cheat)], "ok": ok}
    text = json.dumps(doc, indent=2) + "\n" if output == "json" else _text(spec, honest, cheat, keep)
    out.write(text)
    return DemoResult(ok, text, doc)


def _market_demo(spec: JobSpec, workdir: Path, output: str, out: Any) -> DemoResult:
    from pocv.market.demo import engine_callbacks, run_market_demo  # solders loads only for the market round

    sys.stderr.write(f"pocv demo: {spec.kernel_ref} n={spec.params['n']}, {spec.steps} steps per job, "
                     "settled on the embedded Solana chain (LiteSVM)\n")

    def make_prover(key: SoldersKeypair, honest: bool) -> Prover:
        d = workdir / f"{'honest' if honest else 'cheater'}-{str(key.pubkey())[:8]}-{secrets.token_hex(4)}"
        if honest:
            return Prover(trace_dir=d, key=key)
        return LazyProver(trace_dir=d, key=key, skip_fraction=CHEAT_FRACTION, seed=7)

    commit, verify = engine_callbacks(make_prover)
    story = io.StringIO()
    result: dict[str, Any] = run_market_demo(spec=spec, commit=commit, verify=verify,
                                             out=cast(TextIO, _Tee(out, story)) if output == "text" else None)
    if output == "json":
        text = json.dumps(result, indent=2, default=str) + "\n"
        out.write(text)
    else:
        text = story.getvalue()
    return DemoResult(bool(result.get("ok")), text, result)


class _Tee:
    """Writes to the caller's stream as it goes and keeps a copy (the market round is long)."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for st in self.streams:
            st.write(text)
        return len(text)

    def flush(self) -> None:
        for st in self.streams:
            if hasattr(st, "flush"):
                st.flush()


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    v: Verdict = r["verdict"]
    return {"worker": r["worker"], "root": r["commitment"].root.hex(), "result": "PASS" if v.passed else "FAIL",
            "checked": len(v.outcomes), "failed": len(v.failures), "detection": v.detection,
            "run_s": round(r["run_s"], 4), "respond_s": round(r["respond_s"], 4),
            "verify_s": round(r["verify_s"], 4), "bundle_bytes": r["bundle_bytes"],
            "skipped_steps": r.get("skipped", 0)}


def _text(spec: JobSpec, honest: dict[str, Any], cheat: dict[str, Any], keep: str | None) -> str:
    lines = [f"pocv demo — job {spec.job_id.hex()[:16]}… ({spec.kernel_ref}, n={spec.params['n']}, "
             f"{spec.steps} steps)", ""]
    for r in (honest, cheat):
        v: Verdict = r["verdict"]
        who = "honest worker" if r["worker"] == "honest" else f"cheating worker (skipped {r['skipped']} steps)"
        lines.append(f"{who}")
        lines.append(f"  run + commit   {r['run_s']:.3f} s   root {r['commitment'].root.hex()[:16]}…")
        lines.append(f"  challenge      {r['challenge'].k} of {spec.steps} steps "
                     f"(p = {r['challenge'].confidence}, f = {r['challenge'].cheat_fraction})")
        lines.append(f"  respond        {r['respond_s']:.3f} s   {r['states']} states, "
                     f"{r['proof_hashes']} proof hashes, {r['bundle_bytes'] / 1e6:.1f} MB")
        judged = [o for o in v.failures if not o.detail.startswith(NOT_JUDGED)]  # the rest: after one, in its run
        bad = ", ".join(f"{o.index}" for o in judged[:8]) + (" …" if len(judged) > 8 else "")
        unjudged = len(v.failures) - len(judged)
        result = "PASS" if v.passed else (f"FAIL — {len(judged)} steps rejected ({judged[0].reason}: {bad})"
                                          + (f", {unjudged} after them not judged" if unjudged else ""))
        lines.append(f"  verify         {r['verify_s']:.3f} s   {result}")
        lines.append("")
    ok = honest["verdict"].passed and not cheat["verdict"].passed
    lines.append("result: honest worker PASSED, cheater CAUGHT" if ok else "result: UNEXPECTED — see verdicts")
    if keep:
        lines.append(f"records and traces kept in {keep}")
    return "\n".join(lines) + "\n"
