"""The ``pocv`` command.

Results go to stdout (JSON records by default, ``--output text`` for people), progress and
errors to stderr. Exit codes (also in the README)::

    0  success / PASS          1  FAIL (the evidence was checked and rejected)
    2  usage error             3  bad or missing input (files, records, arguments)
    4  chain or network error  70  internal error (a bug)   130 interrupted

Every error the library raises on purpose is printed as one line; set POCV_DEBUG=1 to see a
traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pocv.errors import EXIT_FAIL, EXIT_INTERNAL, EXIT_PASS, EXIT_USAGE, PocvError

PROG = "pocv"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on usage errors; keep it one line
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def emit(text: str, path: str | None) -> None:
    """Write a result to stdout, or atomically to ``path``."""
    if path:
        from pocv.store import atomic_write

        atomic_write(Path(path), (text + "\n").encode())
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class _ProgressLine:
    """A progress line on stderr: rewritten in place on a terminal, a line per 10% otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.tty = self.stream.isatty()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        dt = time.perf_counter() - self.t0
        rate = done / dt if dt > 0 else 0.0
        msg = f"{self.label}: step {done}/{total} ({100 * done / total:.0f}%, {rate:.0f} steps/s)"
        if self.tty:
            self.stream.write("\r" + msg + ("\n" if done == total else ""))
        else:
            decile = 10 * done // total
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(msg + "\n")
        self.stream.flush()


def _key(path: str | None, role: str) -> Any:
    from pocv.records import load_keypair

    if path is None:
        default = Path.home() / ".config" / "solana" / "id.json"
        if not default.exists():
            from pocv.errors import InputError

            raise InputError(f"no {role} key: pass -k/--keypair FILE (a Solana CLI keypair; "
                             f"`pocv keygen -o FILE` makes one)")
        path = str(default)
    return load_keypair(path)


# -- commands --------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from pocv.prover import Prover, load_spec

    spec = load_spec(args.job)
    progress = _ProgressLine(f"run {spec.kernel_ref}", quiet=args.quiet)
    prover = Prover(trace_dir=args.trace, key=_key(args.keypair, "worker"),
                    checkpoint_every=args.checkpoint_every, progress=progress)
    commitment = prover.run(spec, device=args.device)
    if args.output == "json":
        emit(commitment.to_json(), args.out)
    else:
        if args.out:
            emit(commitment.to_json(), args.out)
        print(f"committed job {commitment.job_id.hex()} ({spec.kernel_ref}, {spec.steps} steps)\n"
              f"root {commitment.root.hex()}\ntrace {args.trace}")
    return EXIT_PASS


def _expected_job(args: argparse.Namespace, commitment: Any) -> str:
    """With --job, the commitment must be for that job; without, a note saying which job this is."""
    from pocv.errors import MismatchError
    from pocv.prover import load_spec

    if args.job is None:
        return (f"{PROG} {args.command}: note: no --job given; this is the job the commitment names: "
                f"{commitment.spec.kernel_ref}, {commitment.steps} steps, params {dict(commitment.spec.params)}, "
                f"job id {commitment.job_id.hex()[:16]}...\n")
    spec = load_spec(args.job)
    if spec.job_id != commitment.job_id:
        raise MismatchError(f"the commitment is for job {commitment.job_id.hex()[:16]}... "
                            f"({commitment.spec.kernel_ref}, {commitment.steps} steps), not the ordered job "
                            f"{spec.job_id.hex()[:16]}... ({spec.kernel_ref}, {spec.steps} steps)")
    return ""


def _cmd_challenge(args: argparse.Namespace) -> int:
    from pocv.check import Verifier
    from pocv.prover import load_commitment
    from pocv.records import parse_beacon

    commitment = load_commitment(args.commitment)
    note = _expected_job(args, commitment)
    if args.beacon == "random":
        beacon, source = secrets.token_bytes(32), "verifier nonce (random, drawn after the commitment)"
    else:
        beacon, source = parse_beacon(args.beacon), args.beacon_source
    verifier = Verifier(key=_key(args.keypair, "verifier"))
    ch = verifier.challenge(commitment, beacon=beacon, confidence=args.confidence,
                            cheat_fraction=args.cheat_fraction, k=args.count, beacon_source=source)
    if args.output == "json":
        emit(ch.to_json(), args.out)
    else:
        if args.out:
            emit(ch.to_json(), args.out)
        print(f"challenge {ch.k} of {ch.steps} steps; detection >= {ch.detection:.6f} "
              f"for f = {ch.cheat_fraction}; beacon {ch.beacon.hex()}")
    sys.stderr.write(note)
    return EXIT_PASS


def _cmd_respond(args: argparse.Namespace) -> int:
    from solders.keypair import Keypair

    from pocv.prover import Prover, load_challenge

    challenge = load_challenge(args.challenge)
    prover = Prover(trace_dir=args.trace, key=Keypair())  # answering needs no signature
    t0 = time.perf_counter()
    response = prover.respond(challenge, device=args.device)
    response.save(args.out)
    size = Path(args.out).stat().st_size
    summary = {"response": args.out, "indices": len(response.indices), "states": len(response.states),
               "proof_hashes": len(response.proof), "bytes": size,
               "seconds": round(time.perf_counter() - t0, 3)}
    if args.output == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {args.out}: {len(response.states)} states for {len(response.indices)} steps, "
              f"{len(response.proof)} proof hashes, {size} bytes")
    return EXIT_PASS


def _cmd_verify(args: argparse.Namespace) -> int:
    from pocv.check import Verifier
    from pocv.prover import load_challenge, load_commitment

    commitment = load_commitment(args.commitment)
    note = _expected_job(args, commitment)
    challenge = load_challenge(args.challenge)
    verifier = Verifier(key=_key(args.keypair, "verifier"), device=args.device)
    verdict = verifier.check(commitment, challenge, Path(args.response))  # streamed, limits checked
    if args.output == "json":
        emit(verdict.to_json(), args.out)
    else:
        if args.out:
            emit(verdict.to_json(), args.out)
        print(_verdict_text(verdict))
    sys.stderr.write(note)
    return EXIT_PASS if verdict.passed else EXIT_FAIL


def _verdict_text(verdict: Any) -> str:
    head = (f"{'PASS' if verdict.passed else 'FAIL'} job {verdict.job_id.hex()[:16]}... ({verdict.kernel}): "
            f"{len(verdict.outcomes) - len(verdict.failures)}/"
            f"{len(verdict.outcomes)} challenged steps verified; detection >= {verdict.detection:.6f} "
            f"for f = {verdict.cheat_fraction}")
    lines = [head] + [f"  step {o.index}: {o.reason} {o.detail}".rstrip() for o in verdict.failures[:10]]
    if len(verdict.failures) > 10:
        lines.append(f"  ... {len(verdict.failures) - 10} more")
    return "\n".join(lines)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from solders.keypair import Keypair

    from pocv.errors import InputError
    from pocv.records import save_keypair

    if Path(args.out).exists() and not args.force:
        raise InputError(f"{args.out!r} exists; pass --force to overwrite it")
    key = Keypair()
    save_keypair(key, args.out)
    print(str(key.pubkey()))
    return EXIT_PASS


def _cmd_kernels(args: argparse.Namespace) -> int:
    from pocv.kernels import get_kernel, kernel_names

    info = [get_kernel(n).describe() for n in kernel_names()]
    if args.output == "json":
        print(json.dumps(info, indent=2))
    else:
        for k in info:
            params = ", ".join(f"{p}={v['default']}" for p, v in k["params"].items())
            ref = f"{k['name']}@{k['version']}"
            print(f"{ref:<22} {k['mode']:<9} {','.join(k['devices']):<9} {params}\n    {k['summary']}")
    return EXIT_PASS


def _cmd_demo(args: argparse.Namespace) -> int:
    from pocv.demo import run_demo

    return run_demo(steps=args.steps, n=args.n, output=args.output, keep=args.keep, market=not args.no_market)


# -- parser ----------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, out_help: str | None = None) -> None:
    p.add_argument("--output", choices=("json", "text"), default="json",
                   help="json: the record on stdout (default); text: a summary for people")
    if out_help:
        p.add_argument("-o", "--out", metavar="FILE", help=out_help)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="pocv: proof-of-compute verification. A worker runs a job and commits to every "
                    "state with a BLAKE3 Merkle root; a verifier challenges random steps with a beacon "
                    "the worker could not predict, and recomputes them.",
        epilog="exit codes: 0 success/PASS, 1 FAIL, 2 usage, 3 bad or missing input, 4 chain/network. "
               "Typical flow: pocv keygen -o worker.json; pocv run job.json --trace T -k worker.json -o "
               "commitment.json; pocv challenge commitment.json --beacon random -o challenge.json; "
               "pocv respond T challenge.json -o response.pocv; pocv verify commitment.json challenge.json "
               "response.pocv -k verifier.json",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("run", help="run a job, commit to every state, sign the root",
                       description="Run the job spec JOB (JSON: kernel, steps, seed, params) and write its "
                                   "trace and signed commitment. A killed run resumes where it stopped.")
    p.add_argument("job", metavar="JOB", help="job spec JSON file")
    p.add_argument("--trace", required=True, metavar="DIR",
                   help="trace directory (created; resumed if it holds this job)")
    p.add_argument("-k", "--keypair", metavar="FILE",
                   help="worker key (Solana keypair JSON; default ~/.config/solana/id.json)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--checkpoint-every", type=int, default=16, metavar="C",
                   help="keep every C-th state (default 16): more disk, faster answers")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    _common(p, out_help="also write the commitment JSON to FILE (atomically)")
    commands["run"] = _cmd_run

    p = sub.add_parser("challenge", help="derive the steps to open from a beacon",
                       description="Draw k distinct steps from (job id, root, BEACON). k follows from -p/-f "
                                   "(k = ceil(ln(1-p)/ln(1-f))) unless -n gives it. The beacon must be one "
                                   "the worker could not know before committing.")
    p.add_argument("commitment", metavar="COMMITMENT", help="commitment JSON")
    p.add_argument("--beacon", required=True, metavar="HEX|random",
                   help="32 bytes as 64 hex digits (e.g. a blockhash after the commitment landed), or "
                        "'random' for a fresh verifier nonce")
    p.add_argument("--beacon-source", default="given", help="where the beacon came from (recorded)")
    p.add_argument("-p", "--confidence", type=float, default=0.999, help="detection probability wanted (default 0.999)")
    p.add_argument("-f", "--cheat-fraction", type=float, default=0.1,
                   help="smallest fraction of faked steps to catch (default 0.1)")
    p.add_argument("-n", "--count", type=int, default=None, metavar="K", help="challenge exactly K steps")
    p.add_argument("-k", "--keypair", metavar="FILE",
                   help="verifier key that signs the challenge (default ~/.config/solana/id.json); "
                        "`pocv verify` accepts only challenges signed by its own key")
    p.add_argument("--job", metavar="JOB", help="the job spec that was ordered: refuse a commitment for another job")
    _common(p, out_help="also write the challenge JSON to FILE (atomically)")
    commands["challenge"] = _cmd_challenge

    p = sub.add_parser("respond", help="open the challenged states with a multiproof",
                       description="Answer CHALLENGE from the trace: the states i-1 and i of every challenged "
                                   "step, s_0, and one Merkle multiproof, in one binary bundle.")
    p.add_argument("trace", metavar="TRACE", help="trace directory of a completed run")
    p.add_argument("challenge", metavar="CHALLENGE", help="challenge JSON")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="response bundle to write (atomically)")
    p.add_argument("--device", default=None, help="device to recompute on (default: the one the run used)")
    _common(p)
    commands["respond"] = _cmd_respond

    p = sub.add_parser("verify", help="check a response and sign the verdict",
                       description="Check RESPONSE against COMMITMENT and CHALLENGE: every opening against the "
                                   "root, s_0 against the spec, each challenged step recomputed. Prints the "
                                   "signed verdict; exits 0 on PASS, 1 on FAIL.")
    p.add_argument("commitment", metavar="COMMITMENT")
    p.add_argument("challenge", metavar="CHALLENGE")
    p.add_argument("response", metavar="RESPONSE", help="response bundle from `pocv respond`")
    p.add_argument("-k", "--keypair", metavar="FILE", help="verifier key (default ~/.config/solana/id.json)")
    p.add_argument("--job", metavar="JOB", help="the job spec that was ordered: refuse a commitment for another job")
    p.add_argument("--device", default="cpu", help="device to recompute on (default cpu)")
    _common(p, out_help="also write the verdict JSON to FILE (atomically)")
    commands["verify"] = _cmd_verify

    p = sub.add_parser("demo", help="an honest and a cheating worker, end to end, on embedded defaults",
                       description="A whole marketplace round on the embedded Solana chain (LiteSVM): workers "
                                   "offer, a consumer posts a job in escrow, the honest worker is matched, runs "
                                   "and commits, the verifier challenges with a beacon taken from the chain after "
                                   "the commit, verifies and settles; then a cheating worker (who skips 20%% of its "
                                   "steps) is caught and its bond slashed. Balances are printed before and after. "
                                   "No GPU, network or validator needed.")
    p.add_argument("--no-market", action="store_true",
                   help="protocol only: run, challenge (verifier nonce), respond, verify; no chain")
    p.add_argument("--steps", type=int, default=200, help="steps per job (default 200)")
    p.add_argument("--n", type=int, default=256, help="gemm-int8 matrix size (default 256)")
    p.add_argument("--keep", metavar="DIR", default=None, help="keep the traces and records in DIR")
    p.add_argument("--output", choices=("json", "text"), default="text", help="text (default) or json")
    commands["demo"] = _cmd_demo

    p = sub.add_parser("keygen", help="make an ed25519 key (Solana CLI keypair file)")
    p.add_argument("-o", "--out", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    commands["keygen"] = _cmd_keygen

    p = sub.add_parser("kernels", help="list the job kernels")
    _common(p)
    commands["kernels"] = _cmd_kernels

    for extra in _EXTENSIONS:
        extra(sub, commands)
    parser.set_defaults(_commands=commands)
    return parser


def _ext_market(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    try:
        from pocv.market.cli import add_market_parser, run_market
    except ImportError:
        return
    add_market_parser(sub)
    commands["market"] = run_market


def _ext_calibrate(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    p = sub.add_parser("calibrate", help="measure honest deviation of a kernel and the bound it needs",
                       description="Run the honest implementations of KERNEL (thread counts, op orders, a float64 "
                                   "reference) against each other over random steps, report the percentiles of "
                                   "the deviation in units of the kernel's bound, and check that precision "
                                   "downgrades (TF32, fp16, bf16) are caught. Exits 1 on a false FAIL or a missed "
                                   "downgrade.")
    p.add_argument("kernel", metavar="KERNEL")
    p.add_argument("--trials", type=int, default=20, help="random states to compare at (default 20)")
    p.add_argument("--max-walk", type=int, default=8, help="random steps walked before each trial (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--margin", type=float, default=4.0, help="suggested tau = margin x the largest honest ratio")
    p.add_argument("--param", action="append", default=[], metavar="NAME=INT", help="kernel parameter (repeatable)")
    p.add_argument("--output", choices=("json", "text"), default="text")
    commands["calibrate"] = _cmd_calibrate


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from pocv.kernels.calibrate import calibrate_main

    argv = [args.kernel, "--trials", str(args.trials), "--max-walk", str(args.max_walk), "--seed", str(args.seed),
            "--margin", str(args.margin)]
    for p in args.param:
        argv += ["--param", p]
    if args.output == "json":
        argv.append("--json")
    return calibrate_main(argv)


def _ext_dispute(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    try:
        from pocv.dispute_cli import add_dispute_parser, run_dispute
    except ImportError:
        return
    add_dispute_parser(sub)
    commands["dispute"] = run_dispute


def _ext_bench(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    try:
        from pocv.bench_cli import add_bench_parser, run_bench
    except ImportError:
        return
    add_bench_parser(sub)
    commands["bench"] = run_bench


_EXTENSIONS: list[Callable[[Any, dict[str, Callable[[argparse.Namespace], int]]], None]] = [
    _ext_market, _ext_calibrate, _ext_dispute, _ext_bench]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args._commands[args.command]
    try:
        return handler(args)
    except PocvError as e:
        if os.environ.get("POCV_DEBUG"):
            raise
        sys.stderr.write(f"{PROG} {args.command}: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_PASS
    except Exception as e:  # a bug: still one line, and never the FAIL code
        if os.environ.get("POCV_DEBUG"):
            raise
        sys.stderr.write(f"{PROG} {args.command}: internal error: {type(e).__name__}: {e} "
                         f"(a bug in pocv; POCV_DEBUG=1 shows the traceback)\n")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
