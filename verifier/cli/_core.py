"""The protocol commands: run, challenge, respond, verify; and keygen, kernels, job, calibrate, demo.

Building these parsers imports nothing heavy; each handler imports what it needs (torch through
the prover, verifier and kernels) when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from pocv.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    RECORD,
    REPORT,
    HelpFormatter,
    add_artifacts_option,
    add_output_option,
    add_verbosity,
    artifact_store,
    emit_record,
    exit_code,
    is_stdout,
    keypair_help,
    note,
    one_line,
    output_target,
    parse_hash,
    progress_for,
    resolve_keypair,
    verbosity,
    wrap,
    write_stdout,
)
from pocv.cli._net import add_remote_options
from pocv.errors import InputError, SpecError, UnsignedResponse, VerificationFailed, WrongRecordError
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE

if TYPE_CHECKING:  # typing only: these load torch
    from pocv.jobs import ParamValue
    from pocv.kernels.base import Kernel
    from pocv.records import Commitment, Verdict

#: how much of a response file is read to recognise another pocv record given in its place
MAX_SNIFF_BYTES: Final = 4 * 1024 * 1024



# -- shared -----------------------------------------------------------------------------------------


def _result(args: argparse.Namespace, record: str, text: str, target: Path | None) -> None:
    """The command's record as JSON (to ``-o FILE`` or stdout), or its text summary on stdout
    (the record still goes to ``-o FILE`` when one is given)."""
    if args.output == "json":
        emit_record(record, target)
        return
    if target is not None:
        emit_record(record, target)
    write_stdout(text)


def _expected_job(args: argparse.Namespace, commitment: Commitment) -> str:
    """With --job the commitment must be for that job; without, a note saying which job this is."""
    from pocv.errors import MismatchError  # the commitment is for another job
    from pocv.kernels import resolve_spec  # kernel registry: fills in the version and defaults
    from pocv.store import load_spec  # refuses another kind of record

    if args.job is None:
        return (f"pocv {args.command}: note: no --job given; this is the job the commitment names: "
                f"{commitment.spec.kernel_ref}, {commitment.steps} steps, params {dict(commitment.spec.params)}, "
                f"job id {commitment.job_id.hex()[:16]}...")
    spec = resolve_spec(load_spec(args.job))  # a spec as pocv run takes it: version and defaults filled in
    if spec.job_id != commitment.job_id:
        raise MismatchError(f"the commitment is for job {commitment.job_id.hex()[:16]}... "
                            f"({commitment.spec.kernel_ref}, {commitment.steps} steps), not the ordered job "
                            f"{spec.job_id.hex()[:16]}... ({spec.kernel_ref}, {spec.steps} steps)")
    return ""


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {v}")
    return v


def _add(sub: Any, name: str, help: str, description: str, output: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=wrap(description),
                                                formatter_class=HelpFormatter)
    add_output_option(p, output)
    add_verbosity(p)
    return p


def _out_option(p: argparse.ArgumentParser, what: str, *, required: bool = False) -> None:
    p.add_argument("-o", "--out", metavar="FILE", required=required,
                   help=f"write {what} to FILE atomically (a regular file or a new path; a symlink is "
                        f"followed to its target); - is stdout")


# -- run ----------------------------------------------------------------------------------------------


def _checkpoint_policy(args: argparse.Namespace) -> Any:
    """The checkpoint policy --checkpoint (or its alias --checkpoint-every C) gives; a malformed one
    is a usage error (exit 2)."""
    from pocv.trace import CheckpointPolicy  # the policy and its text forms (pocv.trace)

    text = args.checkpoint if args.checkpoint is not None else (
        f"every:{args.checkpoint_every}" if args.checkpoint_every is not None else "auto")
    try:
        return CheckpointPolicy.parse(text)
    except InputError as e:
        args._parser.error(f"--checkpoint: {e}")


def _cmd_run(args: argparse.Namespace) -> int:
    from pocv.kernels import resolve_spec  # the kernel's version and defaults, for the progress label
    from pocv.prover import Prover  # torch: the worker runs the kernel
    from pocv.store import load_spec  # refuses another kind of record

    policy = _checkpoint_policy(args)
    spec = resolve_spec(load_spec(args.job))
    target = output_target(args.out, "commitment")
    key = resolve_keypair(args.keypair, "worker")
    prover = Prover(trace_dir=args.trace, key=key, checkpoint=policy, artifacts=artifact_store(args),
                    progress=progress_for(args, f"run {spec.kernel_ref}"))
    commitment = prover.run(spec, device=args.device)
    every = commitment.environment.get("checkpoint_every")
    kept = f"\ncheckpoint interval {every} (a state kept every {every} steps)" if every else ""
    _result(args, commitment.to_json(), f"committed job {commitment.job_id.hex()} ({commitment.spec.kernel_ref}, "
            f"{commitment.steps} steps)\nroot {commitment.root.hex()}\ntrace {args.trace}{kept}", target)
    return EXIT_OK


# -- challenge -----------------------------------------------------------------------------------------


#: where the verifier's challenge book lives unless --book or POCV_CHALLENGE_BOOK says otherwise
DEFAULT_BOOK = "~/.local/state/pocv/challenges"


def _book(args: argparse.Namespace) -> Any:
    from pocv.store import ChallengeFile  # light: files only

    where = args.book or os.environ.get("POCV_CHALLENGE_BOOK") or DEFAULT_BOOK
    return ChallengeFile(Path(where).expanduser())


def _book_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--book", metavar="DIR", default=None,
                   help="the verifier's challenge book: pocv challenge records the challenge issued last per "
                        "commitment, pocv verify judges only that one (default: $POCV_CHALLENGE_BOOK or "
                        f"{DEFAULT_BOOK})")


def _cmd_challenge(args: argparse.Namespace) -> int:
    from pocv.check import Verifier  # the verifier's module (torch: it also recomputes steps)
    from pocv.store import load_commitment  # refuses another kind of record

    commitment = load_commitment(args.commitment)
    extra = _expected_job(args, commitment)
    # the source defaults to nonce:<now> (the library's): a nonce the verifier draws or picks now
    beacon = secrets.token_bytes(32) if args.beacon == "random" else parse_hash(args.beacon, "beacon")
    source = args.beacon_source
    target = output_target(args.out, "challenge")
    verifier = Verifier(key=resolve_keypair(args.keypair, "verifier"), book=_book(args),
                        artifacts=artifact_store(args))
    ch = verifier.challenge(commitment, beacon=beacon, confidence=args.confidence,
                            cheat_fraction=args.cheat_fraction, k=args.count, beacon_source=source)
    _result(args, ch.to_json(), f"challenge {ch.k} of {ch.steps} steps; detection >= {ch.detection:.6f} "
            f"for f = {ch.cheat_fraction}; beacon {ch.beacon.hex()}", target)
    if extra:
        note(extra)
    return EXIT_OK


# -- respond --------------------------------------------------------------------------------------------


def _cmd_respond(args: argparse.Namespace) -> int:
    from pocv.cli._common import binary_output  # stdout's buffer or an atomic file
    from pocv.prover import Prover  # torch: states are recomputed from checkpoints
    from pocv.store import load_challenge  # refuses another kind of record

    challenge = load_challenge(args.challenge)
    target = output_target(args.out, "response bundle")
    key = resolve_keypair(args.keypair, "worker")
    prover = Prover(trace_dir=args.trace, key=key,  # the bundle is signed by the committing worker
                    respond_workers=args.workers, artifacts=artifact_store(args),
                    progress=progress_for(args, "respond", unit="state"))  # per opened state
    worker = prover.commitment().worker
    if bytes(key.pubkey()) != worker:
        from pocv.keys import b58encode  # base58, as Solana prints keys

        raise InputError(f"-k {key.pubkey()} is not the worker that signed this trace's commitment "
                         f"({b58encode(worker)}): a verifier would not take the bundle as the worker's")
    t0 = time.perf_counter()
    # streamed: the states are written as they are read or recomputed, a few at a time; to a
    # file through an atomic writer, to stdout through a temporary file (never part of a bundle)
    with binary_output(target) as out:
        if target is not None:
            summary = prover.respond_to(challenge, out, device=args.device)
        else:
            import shutil  # reason: only to copy a finished bundle to stdout
            import tempfile  # reason: stdout gets the bundle only once it is complete

            with tempfile.TemporaryFile() as spool:
                summary = prover.respond_to(challenge, spool, device=args.device)
                spool.seek(0)
                shutil.copyfileobj(spool, out, 1 << 20)
    where = "-" if target is None else args.out
    result = {"response": where, "indices": len(summary.indices), "states": summary.states,
              "values": summary.values, "proof_hashes": summary.proof_hashes, "bytes": summary.size,
              "seconds": round(time.perf_counter() - t0, 3)}
    text = (json.dumps(result, indent=2) if args.output == "json" else
            f"wrote {where}: {summary.states} states and {summary.values} leaf values for {len(summary.indices)} "
            f"steps, {summary.proof_hashes} proof hashes, {summary.size} bytes")
    if target is None:
        note(text)  # stdout carries the bundle
    else:
        write_stdout(text)
    return EXIT_OK


# -- verify ----------------------------------------------------------------------------------------------


def open_response(path: str) -> BinaryIO:
    """The response bundle at ``path``, open for reading: a regular file (a FIFO is refused, not
    waited on) that is not recognisably another pocv record (WrongRecordError)."""
    from pocv.store import identify, open_input  # regular files only; another record is recognised

    f = open_input(path, what="response bundle")
    try:
        head = f.read(64)
        if head.lstrip()[:1] == b"{":
            kind = identify(head + f.read(MAX_SNIFF_BYTES - len(head)))
            if kind is not None:
                raise WrongRecordError(f"{path!r} is a {kind}, expected a response bundle")
        f.seek(0)
        return f
    except BaseException:
        f.close()
        raise


def verdict_text(verdict: Verdict) -> str:
    head = (f"{'PASS' if verdict.passed else 'FAIL'} job {verdict.job_id.hex()[:16]}... ({verdict.kernel}): "
            f"{len(verdict.outcomes) - len(verdict.failures)}/{len(verdict.outcomes)} challenged steps verified; "
            f"detection >= {verdict.detection:.6f} for f = {verdict.cheat_fraction}")
    lines = [head] + [f"  step {o.index}: {o.reason} {o.detail}".rstrip() for o in verdict.failures[:10]]
    if len(verdict.failures) > 10:
        lines.append(f"  ... {len(verdict.failures) - 10} more")
    return "\n".join(lines)


def _cmd_verify(args: argparse.Namespace) -> int:
    if args.remote is not None:  # the worker's service answers: pocv.cli._net
        from pocv.cli._net import cmd_verify_remote  # light; the client imports aiohttp when it runs

        return cmd_verify_remote(args)
    missing = [n.upper() for n in ("commitment", "challenge", "response") if getattr(args, n) is None]
    if missing:
        args._parser.error(f"the following arguments are required: {', '.join(missing)} (or --remote URL)")
    from pocv.check import Verifier  # torch: the verifier recomputes the challenged steps
    from pocv.store import load_challenge, load_commitment  # refuse another kind of record

    commitment = load_commitment(args.commitment)
    extra = _expected_job(args, commitment)
    challenge = load_challenge(args.challenge)
    target = output_target(args.out, "verdict")
    key = resolve_keypair(args.keypair, "verifier")
    verifier = Verifier(key=key, device=args.device, progress=progress_for(args, "verify"),  # checks --device
                        book=_book(args), artifacts=artifact_store(args), workers=args.workers)
    failure: VerificationFailed | UnsignedResponse | None = None
    with open_response(args.response) as f:  # before anything is signed: another record is refused
        try:
            verdict = verifier.verify(commitment, challenge, f)
        except (VerificationFailed, UnsignedResponse) as e:  # a signed FAIL verdict all the same
            verdict, failure = e.verdict, e
    code = EXIT_OK if failure is None else exit_code(failure)  # decided before any output is written
    text = verdict_text(verdict)
    if commitment.spec.sample_chunks:  # the detection above assumes a faked step is caught when challenged
        text += (f"\n  each s_i compared on {commitment.spec.sample_chunks} sampled chunks: the detection above holds "
                 f"for steps faked in every chunk; a step faked in fewer is caught with the probability its "
                 f"outcome states")
    _result(args, verdict.to_json(), text, target)
    if failure is not None:  # why, in one line; the verdict itself is on stdout
        note(f"pocv verify: {one_line(str(failure))}")
    if extra:
        note(extra)
    return code


# -- keygen, kernels ----------------------------------------------------------------------------------------


def _cmd_keygen(args: argparse.Namespace) -> int:
    from pocv.keys import Keypair  # cryptography loads with the key
    from pocv.store import save_keypair  # written atomically, owner-only

    key = Keypair()
    if is_stdout(args.out):
        write_stdout(key.to_solana_json())
        note(f"pubkey: {key.pubkey()}")
        return EXIT_OK
    target = output_target(args.out, "keypair file")
    assert target is not None
    if target.exists() and not args.force:
        raise InputError(f"{args.out!r} exists; pass --force to overwrite it")
    save_keypair(key, target)
    if args.output == "json":
        write_stdout(json.dumps({"pubkey": str(key.pubkey()), "keypair": args.out}))
    else:
        write_stdout(str(key.pubkey()))
    return EXIT_OK


def _param_text(name: str, d: dict[str, Any]) -> str:
    """One declared parameter for people: name, type, default and bounds or choices."""
    kind = d.get("type", "int")
    if kind in ("int", "float"):
        bounds = f" in {d['min']:g}..{d['max']:g}" if kind == "float" else f" in {d['min']}..{d['max']}"
    elif kind == "enum":
        bounds = f" one of {'|'.join(d['choices'])}"
    elif kind == "artifact":
        bounds = " blake3:<64 hex>" + (" (required)" if d.get("required") else "")
    elif kind == "str":
        bounds = f" of at most {d['max_len']} characters"
    else:
        bounds = ""
    default = d.get("default")
    shown = "none" if default == "" and kind == "artifact" else json.dumps(default)
    what = f"  ({d['what']})" if kind == "artifact" and d.get("what") not in (None, "artifact") else ""
    return f"    {name:<16} {kind}{bounds}, default {shown}{what}"


def _cmd_kernels(args: argparse.Namespace) -> int:
    from pocv.kernels import get_kernel, kernel_table  # each kernel's module loads torch

    if args.kernel is not None:
        info = [get_kernel(args.kernel).describe()]  # SpecError names the kernels there are
    else:
        info = kernel_table()  # built-in and installed plugin kernels, each with its provider
    if args.output == "json":
        write_stdout(json.dumps(info if args.kernel is None else info[0], indent=2))
        return EXIT_OK
    lines = []
    for k in info:
        if "error" in k:  # a plugin that cannot be loaded: listed with the reason
            lines.append(f"{k['name']:<26} (cannot be loaded: {one_line(k['error'], 300)})")
            continue
        ref = f"{k['name']}@{k['version']}"
        lines.append(f"{ref:<26} {k['mode']:<9} {','.join(k['devices']):<9} {k.get('provider', '?')}\n"
                     f"    {k['summary']}")
        if args.kernel is not None:
            lines.append("  parameters (pocv job / pocv calibrate --param NAME=VALUE):")
            lines.extend(_param_text(n, d) for n, d in k["params"].items())
        else:
            lines.append("    params: " + ", ".join(f"{p}={'' if v['default'] == '' else v['default']}"
                                                   for p, v in k["params"].items()))
    write_stdout("\n".join(lines))
    return EXIT_OK


# -- typed parameters from the command line -----------------------------------------------------------------


def _param_item(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return text


def parse_params(kernel: Kernel, items: Sequence[str]) -> dict[str, ParamValue]:
    """``NAME=VALUE`` texts read by ``kernel``'s declared parameters (an int, a float written as its
    canonical text, true/false, text, a choice, an artifact reference); SpecError names the
    parameter, what it expects and the value that came."""
    declared = kernel.declared_params()
    owner = f"{kernel.name}@{kernel.version}"
    out: dict[str, ParamValue] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name in out:
            raise SpecError(f"parameter {name!r} is given twice")
        p = declared.get(name)
        if p is None:
            raise SpecError(f"kernel {owner} has no parameter {name!r}; its parameters are "
                            f"{', '.join(sorted(declared))} (pocv kernels {kernel.name} describes them)")
        try:
            out[name] = p.check(name, p.parse_text(value), owner)
        except SpecError:
            if p.kind != "float":
                raise
            bounds = p.describe()  # the library's message tells a spec's author to quote floats: not here
            raise SpecError(f"{owner} parameter {name!r} must be a float in {bounds['min']:g}..{bounds['max']:g}, "
                            f"got {value!r:.80}") from None
    return out


def _params_or_usage(args: argparse.Namespace, kernel: Kernel) -> dict[str, ParamValue]:
    """The --param values, typed; a value the kernel rejects is a usage error (exit 2)."""
    try:
        return parse_params(kernel, args.param)
    except SpecError as e:
        args._parser.error(f"--param: {e}")
        raise  # pragma: no cover - error() raises SystemExit


def _param_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", type=_param_item, action="append", default=[], metavar="NAME=VALUE",
                   help="a kernel parameter (repeatable), read by the kernel's declared type: an integer, a "
                        "float (e.g. lr=0.05), true/false, text, one of an enumeration, or an artifact reference "
                        "blake3:<64 hex> (pocv artifact add prints one); pocv kernels KERNEL lists them with "
                        "their bounds. A value out of type or bounds is a usage error naming the parameter, what "
                        "it expects and the value given")


# -- job ------------------------------------------------------------------------------------------------------


def _cmd_job(args: argparse.Namespace) -> int:
    from pocv.jobs import JobSpec  # the spec record
    from pocv.kernels import get_kernel, resolve_spec  # the kernel's declared parameters (torch)

    kernel = get_kernel(args.kernel, args.kernel_version)  # SpecError (exit 3) for an unknown kernel
    params = _params_or_usage(args, kernel)
    target = output_target(args.out, "job spec")
    try:
        spec = resolve_spec(JobSpec(kernel=args.kernel, version=kernel.version, steps=args.steps, seed=args.seed,
                                    params=params, sample_chunks=args.sample_chunks))
    except SpecError as e:  # a required parameter not given, a size over the limits: the arguments' fault
        args._parser.error(str(e))
    refs = kernel.artifacts(spec)
    text = (f"job {spec.job_id.hex()} ({spec.kernel_ref}, {spec.steps} steps, seed {spec.seed})\n"
            f"params {json.dumps(dict(spec.params), sort_keys=True)}"
            + (f"\ns_i compared on {spec.sample_chunks} sampled chunks" if spec.sample_chunks else ""))
    _result(args, spec.to_json(), text, target)
    if refs:
        store = artifact_store(args)
        missing = [r for r in refs if r not in store]
        if missing:
            note(f"pocv job: note: artifact(s) {', '.join(missing)} are not in the artifact store "
                 f"{str(store.root)!r}; a worker or verifier needs them in its own store (pocv artifact add PATH)")
    return EXIT_OK


# -- calibrate ----------------------------------------------------------------------------------------------


def _trials(text: str) -> int:
    v = _positive(text)
    if v > 100_000:  # pocv.kernels.calibrate.MAX_TRIALS (not imported here: it loads torch)
        raise argparse.ArgumentTypeError(f"at most 100000 trials, got {v}")
    return v


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from pocv.kernels import calibrate as cal  # torch and numpy: the kernels run here
    from pocv.kernels import get_kernel  # the kernel's declared parameters

    kernel = get_kernel(args.kernel)  # SpecError (exit 3) for an unknown kernel
    params = _params_or_usage(args, kernel)
    wants_record = args.record is not None or args.add
    if wants_record and not getattr(kernel, "calibrated_by_record", False):
        raise InputError(f"kernel {kernel.name}@{kernel.version} ships its own bound; it takes no calibration "
                         f"record: --record/--add apply to kernels whose bound comes from a record (training "
                         f"kernels, pocv.kernels.training.TorchTraining)")
    target = output_target(args.out, "calibration report")
    record_target = output_target(args.record, "calibration record") if args.record is not None else None
    if args.record is not None and record_target is None:
        raise InputError("--record needs a file (the record's bytes are what its reference hashes), not -")
    store = artifact_store(args)
    report = cal.calibrate(args.kernel, trials=args.trials, max_walk=args.max_walk, seed=args.seed, params=params,
                           margin=args.margin, artifacts=store,
                           progress=progress_for(args, f"calibrate {args.kernel}", unit="trial"))
    failed = cal.report_failed(report)
    if target is not None:
        emit_record(json.dumps(report, indent=2), target)
    if not wants_record:
        if args.output == "json":
            if target is None:
                emit_record(json.dumps(report, indent=2), None)
        else:
            write_stdout(cal._format(report))
        return EXIT_FAIL if failed else EXIT_OK
    if failed:  # a failing calibration never becomes a job's bound
        note(cal._format(report))
        note("pocv calibrate: FAIL: a false FAIL or a missed downgrade (above); no calibration record written")
        return EXIT_FAIL
    from pocv.artifacts import hash_bytes  # the record's reference: BLAKE3 of its bytes
    data = cal.record_bytes(args.kernel, report)  # the kernel's record format
    ref = hash_bytes(data)
    if record_target is not None:
        from pocv.store import atomic_write  # the record file, written atomically, byte for byte

        atomic_write(record_target, data)
    if args.add and store.add_bytes(data) != ref:  # pragma: no cover - the store hashes as hash_bytes does
        raise InputError(f"the artifact store gave another reference than {ref} for the calibration record")
    if verbosity(args) >= 0:  # the report for people on stderr; stdout carries the reference
        where = " and ".join(filter(None, (f"written to {args.record}" if record_target is not None else "",
                                           f"added to {store.root}" if args.add else "")))
        note(cal._format(report))
        note(f"pocv calibrate: calibration record {ref} ({where}); name it in the job: --param calibration={ref}")
    if args.output == "json":
        write_stdout(json.dumps({"calibration": ref, "record": args.record, "artifacts":
                                 str(store.root) if args.add else None, "report": report}, indent=2))
    else:
        write_stdout(ref)
    return EXIT_OK


# -- demo -------------------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from pocv.demo import run_demo  # the whole protocol, and the embedded chain unless --no-market

    result: Any = run_demo(steps=args.steps, n=args.n, output=args.output, keep=args.keep, market=not args.no_market)
    if isinstance(result, bool):
        return EXIT_OK if result else EXIT_FAIL
    if isinstance(result, int):
        return result
    ok = result.get("ok") if isinstance(result, dict) else getattr(result, "ok", None)
    return EXIT_OK if ok else EXIT_FAIL


# -- parsers --------------------------------------------------------------------------------------------------------


def add_core_parsers(sub: Any) -> None:
    p = _add(sub, "run", "run a job, commit to every state, sign the root",
             "Run the job spec JOB (JSON: kernel, steps, seed, params; pocv job writes one) and write its trace "
             "and signed commitment. Every artifact the job references is hash-checked in the worker's store "
             "before any work. A killed run resumes where it stopped. Progress on stderr.", RECORD)
    p.add_argument("job", metavar="JOB", help="job spec JSON file")
    p.add_argument("--trace", required=True, metavar="DIR",
                   help="trace directory (created; resumed if it holds this job)")
    p.add_argument("-k", "--keypair", metavar="FILE", help=keypair_help("worker"))
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--checkpoint", metavar="POLICY", default=None,
                   help="which states the trace keeps, to answer challenges from: auto (default: the fewest "
                        "states such that answering a challenge of the default size recomputes at most 5%% of "
                        "the job, within 8 GiB of disk), auto:SIZE (the same within SIZE), all (every state: "
                        "fastest answers, most disk), every:C (every C-th state) or budget:SIZE (as many as fit "
                        "in SIZE, e.g. budget:2GiB or budget:500MB)")
    g.add_argument("--checkpoint-every", type=_positive, default=None, metavar="C",
                   help="keep every C-th state: the same as --checkpoint every:C")
    add_artifacts_option(p, "the worker")
    _out_option(p, "the commitment JSON")
    p.set_defaults(_handler=_cmd_run, _parser=p)

    p = _add(sub, "challenge", "derive the steps to open from a beacon",
             "Draw k distinct steps from (job id, root, BEACON). k follows from -p and -f "
             "(k = ceil(ln(1-p)/ln(1-f))) unless -n gives it. The beacon must be one the worker could not "
             "know before committing.", RECORD)
    p.add_argument("commitment", metavar="COMMITMENT", help="commitment JSON (from pocv run)")
    p.add_argument("--beacon", required=True, metavar="HASH|random",
                   help="32 bytes as 64 hex digits or base58 (e.g. a blockhash after the commitment landed), "
                        "or random for a fresh verifier nonce")
    p.add_argument("--beacon-source", default=None, metavar="SOURCE",
                   help="where the beacon came from, recorded checkably: nonce:UNIX_SECONDS (a verifier nonce; "
                        "default: nonce and the time now), slot:S:after:C (the blockhash of slot S, after the "
                        "commitment landed in slot C) or dispute:ID")
    p.add_argument("-p", "--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help=f"detection probability wanted (default {DEFAULT_CONFIDENCE})")
    p.add_argument("-f", "--cheat-fraction", type=float, default=DEFAULT_CHEAT_FRACTION,
                   help=f"smallest fraction of faked steps to catch (default {DEFAULT_CHEAT_FRACTION})")
    p.add_argument("-n", "--count", type=_positive, default=None, metavar="K", help="challenge exactly K steps")
    p.add_argument("-k", "--keypair", metavar="FILE",
                   help=keypair_help("verifier") + "; pocv verify accepts only challenges signed by its own key")
    p.add_argument("--job", metavar="JOB", help="the job spec that was ordered: refuse a commitment for another job")
    _book_option(p)
    add_artifacts_option(p, "the verifier (before it challenges: it must be able to judge the answer)")
    _out_option(p, "the challenge JSON")
    p.set_defaults(_handler=_cmd_challenge)

    p = _add(sub, "respond", "open the challenged states with a multiproof",
             "Answer CHALLENGE from the trace: the states i-1 and i of every challenged step, s_0, and one "
             "Merkle multiproof, in one binary bundle. Progress (per opened state) on stderr.", RECORD)
    p.add_argument("trace", metavar="TRACE", help="trace directory of a completed run")
    p.add_argument("challenge", metavar="CHALLENGE", help="challenge JSON (from pocv challenge)")
    p.add_argument("-k", "--keypair", metavar="FILE",
                   help=keypair_help("worker") + "; must be the key that signed the commitment (it signs the bundle)")
    _out_option(p, "the binary response bundle (with -o - the bundle goes to stdout, the summary to stderr)",
                required=True)
    p.add_argument("--device", default=None, help="device to recompute on (default: the one the run used)")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="segments between checkpoints recomputed at once (default: automatic, 1 on a CPU whose "
                        "cores the kernel's own threads already use)")
    add_artifacts_option(p, "the worker")
    p.set_defaults(_handler=_cmd_respond)

    p = _add(sub, "verify", "check a response and sign the verdict",
             "Check RESPONSE against COMMITMENT and CHALLENGE: every opening against the root, s_0 against the "
             "spec, each challenged step recomputed. Prints the signed verdict; exits 0 on PASS, 1 on FAIL. "
             "A response that does not parse is the worker's FAIL; a file that is another pocv record is "
             "refused (exit 3) and nothing is signed. Progress (per checked step) on stderr.", RECORD)
    p.add_argument("commitment", metavar="COMMITMENT", nargs="?", help="commitment JSON (from pocv run)")
    p.add_argument("challenge", metavar="CHALLENGE", nargs="?", help="challenge JSON signed by this verifier")
    p.add_argument("response", metavar="RESPONSE", nargs="?", help="response bundle (from pocv respond)")
    p.add_argument("-k", "--keypair", metavar="FILE", help=keypair_help("verifier"))
    p.add_argument("--job", metavar="JOB", help="the job spec that was ordered: refuse a commitment for another job")
    p.add_argument("--device", default="cpu", help="device to recompute on (default cpu)")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="challenged steps recomputed at once on the CPU for a kernel whose step is pure (default: "
                        "automatic, the cores torch's own threads leave free; the verdict is the same)")
    _book_option(p)
    add_artifacts_option(p, "the verifier")
    _out_option(p, "the verdict JSON")
    add_remote_options(p)  # --remote URL: pocv.cli._net
    p.set_defaults(_handler=_cmd_verify, _parser=p)

    p = _add(sub, "keygen", "make an ed25519 key (Solana CLI keypair file)",
             "Make a new ed25519 keypair and write it as a Solana CLI keypair file (readable by its owner "
             "only). Prints the public key (base58).", RECORD)
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="keypair file to write atomically (a symlink is followed to its target); - prints the "
                        "keypair JSON on stdout")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(_handler=_cmd_keygen)

    p = _add(sub, "kernels", "list the job kernels, built-in and plugins, with their provider",
             "List every job kernel this installation can run: the built-in ones and those of installed plugins "
             "(entry points of group pocv.kernels): name@version, exact or tolerance, devices, provider (pocv "
             "for a built-in kernel, else the plugin's distribution==version, which every commitment records "
             "and a verifier must have installed), summary and parameters. With KERNEL: that kernel's typed "
             "parameters with their types, defaults and bounds.", REPORT)
    p.add_argument("kernel", metavar="KERNEL", nargs="?", default=None,
                   help="describe this kernel's parameters in full (default: list every kernel)")
    p.set_defaults(_handler=_cmd_kernels)

    p = _add(sub, "job", "write a job spec from the command line, parameters typed",
             "Write the job spec for KERNEL: its current version (or --kernel-version), steps, seed and the "
             "--param values, each read by the kernel's declared type and checked against its bounds, with every "
             "other parameter at its default. Floats are written in one canonical text, so equal jobs have equal "
             "job ids. Artifacts (data sets, weights, the calibration record of a training kernel) are named by "
             "their references, e.g. --param calibration=blake3:... (from pocv calibrate --add).", RECORD)
    p.add_argument("kernel", metavar="KERNEL", help="kernel name (see pocv kernels)")
    p.add_argument("--steps", type=_positive, required=True, metavar="N", help="number of steps")
    p.add_argument("--seed", type=int, default=0, help="seed the initial state derives from (default 0)")
    p.add_argument("--kernel-version", type=_positive, default=None, metavar="V",
                   help="the kernel version (default: the current one)")
    _param_option(p)
    p.add_argument("--sample-chunks", type=int, default=0, metavar="M",
                   help="a tolerance kernel's challenged state is compared on M chunks of 256 KiB drawn from the "
                        "beacon instead of whole (fewer bytes; a step that differs in one of C chunks is caught "
                        "with probability M/C, stated in each verdict); 0, the default: whole states")
    add_artifacts_option(p, what="checked for the artifacts the job names (a note lists those missing there)")
    _out_option(p, "the job spec JSON")
    p.set_defaults(_handler=_cmd_job, _parser=p)

    p = _add(sub, "calibrate", "measure honest deviation of a kernel and the bound it needs",
             "Run the honest implementations of KERNEL (thread counts, op orders, a float64 reference, every "
             "CUDA device) against each other over random steps, report the percentiles of the deviation in "
             "units of the kernel's bound, and check that precision downgrades (TF32, fp16, bf16) are caught. "
             "Exits 1 on a false FAIL or a missed downgrade. For a training kernel, whose bound comes from a "
             "calibration record, --add stores the record in the artifact store and --record FILE writes it; "
             "stdout then carries only the record's reference (the report goes to stderr), which the job names "
             "as --param calibration=REF. A failing calibration writes no record.", REPORT)
    p.add_argument("kernel", metavar="KERNEL", help="kernel name, e.g. gemm-fp32 (see pocv kernels)")
    p.add_argument("--trials", type=_trials, default=20, help="random states to compare at (default 20)")
    p.add_argument("--max-walk", type=_positive, default=8, help="random steps walked before each trial (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random states (default 0)")
    p.add_argument("--margin", type=float, default=4.0,
                   help="suggested tau = margin x the largest honest ratio (default 4)")
    _param_option(p)
    p.add_argument("--record", metavar="FILE", default=None,
                   help="write the calibration record (training kernels) to FILE atomically, byte for byte: "
                        "pocv artifact add FILE gives the reference printed")
    p.add_argument("--add", action="store_true",
                   help="add the calibration record (training kernels) to the artifact store (--artifacts) and "
                        "print its reference")
    add_artifacts_option(p, "the calibration")
    _out_option(p, "the report JSON")
    p.set_defaults(_handler=_cmd_calibrate, _parser=p)

    p = _add(sub, "demo", "an honest and a cheating worker, end to end, on embedded defaults",
             "A whole marketplace round on the embedded Solana chain (LiteSVM): the pocv job program is deployed "
             "through the upgradeable loader and workers write their offers into worker accounts; a job is posted "
             "with a commit and a verdict deadline (slots), the honest worker is matched, runs and commits, the "
             "verifier challenges with the hash of a slot after the commit and its VERDICT pays the worker; a "
             "cheating worker (who skips 20% of its steps) is caught and its bond goes to the consumer; a job "
             "whose verifier never answers is paid to the worker by a CLAIM after the verdict deadline. Every "
             "token and lamport is reconciled at the end. No GPU, network or validator needed.", REPORT)
    p.add_argument("--no-market", action="store_true",
                   help="protocol only: run, challenge (verifier nonce), respond, verify; no chain")
    p.add_argument("--steps", type=_positive, default=200, help="steps per job (default 200)")
    p.add_argument("--n", type=_positive, default=128, help="gemm-int8 matrix size (default 128)")
    p.add_argument("--keep", metavar="DIR", default=None, help="keep the traces and records in DIR")
    p.set_defaults(_handler=_cmd_demo)


__all__ = ["add_core_parsers", "open_response", "verdict_text"]
