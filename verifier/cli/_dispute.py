"""pocv dispute: bisect two commitments of one job down to one step, through files.

The referee and the two parties may be different processes on different machines; every
message is a file (JSON records from pocv.dispute, response bundles for the step round):

    pocv dispute open A.json B.json -s session.json -q query.json         # referee
    pocv dispute answer TRACE_A query.json -o a.ans                       # party A
    pocv dispute answer TRACE_B query.json -o b.ans                       # party B
    pocv dispute submit session.json a.ans b.ans -q query.json -k referee.json -o outcome.json
    ... repeat answer/submit until submit reports resolved (ceil(log2 n) bisect rounds + 1 step round)

submit takes - for a party that did not answer in time (it loses). When the dispute is resolved
it writes the signed outcome (-o) and one signed FAIL verdict per liar (--verdicts DIR:
verdict-A.json / verdict-B.json), which the market settles on.

pocv dispute run A.json B.json --trace-a DIR --trace-b DIR -k referee.json plays all three roles
locally through the same files (in --workdir), and pocv dispute equivocation C1 C2 checks whether
one worker signed two roots for one job.

Every subcommand that runs or judges a step takes --artifacts DIR: the store in which that role
resolves the job's artifacts (a calibration record, a data set), each hash-checked before use.
The referee judges with the kernel it installed itself: when neither commitment names that
kernel's provider (distribution==version) it refuses (exit 3, naming both); when one does not,
a note says so and the referee judges with its own.

In pocv dispute, -q is --query; quiet is --quiet (or pocv -q dispute ...).
Exit codes: 0 the step (pending) or the dispute (resolved) went through; 1 equivocation found
none; 3 bad or missing input, as everywhere in pocv.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocv.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    RECORD,
    HelpFormatter,
    add_artifacts_option,
    add_output_option,
    add_verbosity,
    artifact_store,
    emit_record,
    keypair_help,
    note,
    output_target,
    parse_hash,
    resolve_keypair,
    wrap,
    write_stdout,
)
from pocv.errors import InputError

if TYPE_CHECKING:  # typing only: the dispute and prover modules load torch
    from pocv.dispute import DisputeOutcome
    from pocv.keys import Keypair
    from pocv.records import Commitment, Verdict

__all__ = ["add_dispute_parser"]


def _read(path: str, *, limit: int, what: str) -> bytes:
    from pocv.store import read_file  # regular files only, size-limited

    return read_file(path, limit=limit, what=what)


def _referee(path: str | None) -> Keypair:
    return resolve_keypair(path, "referee")


def _commitment(path: str) -> Commitment:
    from pocv.store import load_commitment  # refuses another kind of record

    return load_commitment(path)


def _installed(args: argparse.Namespace, a: Commitment, b: Commitment) -> Any:
    """The referee's artifact store, after :meth:`pocv.dispute.Dispute.installed_kernel` found
    that it runs the kernel the parties ran (ProviderMismatch naming both, exit 3) and holds the
    job's artifacts (ArtifactError naming the hash) and calibration record (NotCalibrated)."""
    from pocv.dispute import Dispute  # the referee's check (0)

    store = artifact_store(args)
    d = Dispute(a, b, device=args.device, artifacts=store)
    d.installed_kernel()
    _notes(d)
    return store


def _notes(d: Any) -> None:
    for text in d.notes:
        note(f"pocv dispute: note: {text}")


def _verdicts_dir(args: argparse.Namespace) -> Path | None:
    if not args.verdicts:
        return None
    d = Path(args.verdicts)
    if d.exists() and not d.is_dir():
        raise InputError(f"--verdicts {args.verdicts!r} is not a directory")
    return d


def _save_verdict(directory: Path, name: str, verdict: Verdict) -> None:
    from pocv.store import atomic_write, output_path  # regular files, written atomically

    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(output_path(directory / name, what="verdict"), (verdict.to_json() + "\n").encode())


def _write_result(outcome: DisputeOutcome, verdicts: Any, args: argparse.Namespace) -> None:
    target = output_target(args.out, "dispute outcome")
    vdir = _verdicts_dir(args)
    if vdir is not None:
        for v in verdicts:
            _save_verdict(vdir, f"verdict-{'A' if v.root == outcome.root_a else 'B'}.json", v)
    if target is not None:
        emit_record(outcome.to_json(), target)
    if args.output == "json":
        write_stdout(outcome.to_json())
    else:
        who = " and ".join(outcome.liars) or "neither party"
        write_stdout(f"resolved after {len(outcome.rounds)} bisection rounds: first divergent step {outcome.step}; "
                     f"case {outcome.case}; liar: {who}\n  {outcome.detail}")


def _status(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.output == "json":
        write_stdout(json.dumps(doc, indent=2))
    else:
        write_stdout(f"{doc['status']}: round {doc['round']} ({doc['kind']}) opens leaves {doc['leaves']}; "
                     f"query in {doc['query']}")


def _cmd_open(args: argparse.Namespace) -> int:
    from pocv.dispute import Dispute  # the referee

    session, query = output_target(args.session, "dispute session"), output_target(args.query, "dispute query")
    if session is None:
        raise InputError("-s/--session must be a file: the referee reads it back at every submit")
    ca, cb = _commitment(args.commitment_a), _commitment(args.commitment_b)
    d = Dispute.open(ca, cb, device=args.device, artifacts=artifact_store(args))  # (0) before anything is written
    _notes(d)
    emit_record(d.to_json(), session)
    q = d.query()
    emit_record(q.to_json(), query)
    _status(args, {"status": "pending", "dispute_id": d.id.hex(), "round": q.round, "kind": q.kind,
                   "leaves": list(q.leaves), "max_bisection_rounds": (d.a.steps - 1).bit_length(),
                   "query": args.query})
    return EXIT_OK


def _party(trace: str, keypair: str | None = None, artifacts: Any = None) -> Any:
    from pocv.keys import Keypair  # cryptography loads with the key
    from pocv.prover import Prover  # torch: states are recomputed from the trace's checkpoints

    key = resolve_keypair(keypair, "party") if keypair else Keypair()  # signs a step-round bundle, if given
    return Prover(trace_dir=trace, key=key, artifacts=artifacts)


def _answer(prover: Any, query: Any, device: str | None) -> Any:
    return prover.answer(query, device=device)


def _cmd_answer(args: argparse.Namespace) -> int:
    from pocv.cli._common import binary_output  # writes stdout's buffer or a file atomically
    from pocv.dispute import MAX_DISPUTE_RECORD_BYTES, Opening, Query  # the records

    q = Query.from_json(_read(args.query, limit=MAX_DISPUTE_RECORD_BYTES, what="dispute query"))
    target = output_target(args.out, "dispute answer")
    ans = _answer(_party(args.trace, args.keypair, artifact_store(args)), q, args.device)
    raw = (ans.to_json() + "\n").encode() if isinstance(ans, Opening) else ans.to_bytes()
    with binary_output(target) as f:
        f.write(raw)
    doc = {"answer": args.out, "round": q.round, "kind": q.kind, "leaves": list(q.leaves), "bytes": len(raw)}
    text = json.dumps(doc, indent=2) if args.output == "json" else (
        f"wrote {args.out}: round {q.round} ({q.kind}), {len(raw)} bytes")
    if target is None:
        note(text)  # stdout carries the answer
    else:
        write_stdout(text)
    return EXIT_OK


def _cmd_submit(args: argparse.Namespace) -> int:
    from pocv.bundle import MAX_BUNDLE_BYTES  # the step round's answers are bundles
    from pocv.dispute import MAX_DISPUTE_RECORD_BYTES, Dispute  # the referee

    session = output_target(args.session, "dispute session")
    if session is None:
        raise InputError("SESSION must be a file")
    d = Dispute.from_json(_read(args.session, limit=MAX_DISPUTE_RECORD_BYTES, what="dispute session"),
                          artifacts=artifact_store(args))
    q = d.query()
    limit = MAX_DISPUTE_RECORD_BYTES if q.kind == "bisect" else MAX_BUNDLE_BYTES
    answers = [None if p == "-" else _read(p, limit=limit, what=f"party {party}'s answer")
               for party, p in (("A", args.answer_a), ("B", args.answer_b))]
    key = _referee(args.keypair) if q.kind == "step" or args.keypair else None
    nxt = d.submit(answers[0], answers[1])  # the step round checks (0) before it runs the kernel
    _notes(d)
    if nxt is None:
        outcome, verdicts = d.finish(key if key is not None else _referee(args.keypair))
        _write_result(outcome, verdicts, args)
        return EXIT_OK
    if not args.query:
        raise InputError("the dispute goes on: pass -q/--query FILE for the next query")
    emit_record(d.to_json(), session)
    emit_record(nxt.to_json(), output_target(args.query, "dispute query"))
    _status(args, {"status": "pending", "dispute_id": d.id.hex(), "round": nxt.round, "kind": nxt.kind,
                   "leaves": list(nxt.leaves), "query": args.query})
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    import pocv.dispute as dispute  # the referee, both parties in this process

    key = _referee(args.keypair)
    ca, cb = _commitment(args.commitment_a), _commitment(args.commitment_b)
    store = _installed(args, ca, cb)
    a, b = _party(args.trace_a, artifacts=store), _party(args.trace_b, artifacts=store)
    for name, prover, c, path in (("A", a, ca, args.commitment_a), ("B", b, cb, args.commitment_b)):
        if prover.commitment() != c:
            raise InputError(f"trace {str(prover.trace_dir)!r} does not hold commitment {name} ({path})")
    beacon = None
    if args.beacon == "random":
        beacon = secrets.token_bytes(32)
    elif args.beacon:
        beacon = parse_hash(args.beacon, "beacon")
    provers = {ca.root: a, cb.root: b}

    def spot_check(c: Commitment) -> Verdict:
        from pocv.check import Verifier  # torch: the fallback spot check recomputes steps

        assert beacon is not None
        v = Verifier(key=key, device=args.device, artifacts=store)
        ch = v.challenge(c, beacon=beacon)  # the referee's nonce: nonce:<now>
        return v.check(c, ch, provers[c.root].respond(ch))

    with tempfile.TemporaryDirectory(prefix="pocv-dispute-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)

        def via_file(name: str, data: bytes) -> bytes:
            from pocv.store import atomic_write, read_file  # every record goes through a file

            atomic_write(workdir / name, data, durable=False)
            return read_file(workdir / name, limit=len(data), what=name)

        result = dispute.run_dispute(ca, cb, lambda q: _answer(a, q, None), lambda q: _answer(b, q, None),
                                     key=key, device=args.device, exchange=via_file, artifacts=store,
                                     spot_check=spot_check if beacon is not None else None)
    _write_result(result.outcome, result.verdicts, args)
    vdir = _verdicts_dir(args)
    for party, v in zip("AB", result.spot_checks):
        note(f"spot check of party {party}: {'PASS' if v.passed else 'FAIL'} "
             f"({len(v.failures)}/{len(v.outcomes)} steps rejected)")
        if vdir is not None:
            _save_verdict(vdir, f"spot-check-{party}.json", v)
    return EXIT_OK


def _cmd_equivocation(args: argparse.Namespace) -> int:
    from pocv.dispute import detect_equivocation  # the evidence record
    from pocv.errors import MismatchError  # "not an equivocation" is this command's FAIL

    target = output_target(args.out, "equivocation evidence")
    try:
        ev = detect_equivocation(_commitment(args.first), _commitment(args.second))
    except MismatchError as e:
        note(f"pocv dispute equivocation: {e}")
        return EXIT_FAIL
    vdir = _verdicts_dir(args)
    if vdir is not None:
        for name, v in zip(("first", "second"), ev.verdicts(_referee(args.keypair))):
            _save_verdict(vdir, f"verdict-{name}.json", v)
    if args.output == "json" or target is not None:
        emit_record(ev.to_json(), target)
    if args.output == "text":
        write_stdout(f"equivocation: worker signed roots {ev.first.root.hex()[:16]}... and "
                     f"{ev.second.root.hex()[:16]}... for job {ev.first.job_id.hex()[:16]}...")
    return EXIT_OK


def _sub(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=wrap(description),
                                                formatter_class=HelpFormatter)
    add_output_option(p, RECORD)
    add_verbosity(p, short_q=False)  # -q is --query in pocv dispute
    return p


def _result_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", "--keypair", metavar="FILE", help=keypair_help("referee") + "; signs the outcome and verdicts")
    p.add_argument("-o", "--out", metavar="FILE",
                   help="also write the signed outcome JSON to FILE atomically (a symlink is followed to its "
                        "target); stdout gets it too")
    p.add_argument("--verdicts", metavar="DIR", help="write the liars' signed FAIL verdicts to DIR")


def add_dispute_parser(subparsers: Any) -> None:
    """Register pocv dispute and its subcommands."""
    p = subparsers.add_parser(
        "dispute", help="bisect two commitments of one job to the first divergent step",
        formatter_class=HelpFormatter,
        description=wrap("Two workers committed to the same job with different roots. Each round both open the "
                         "midpoint leaf with an inclusion proof; after at most ceil(log2 n) rounds the referee "
                         "recomputes the one step where they part and names the party that is wrong (exact "
                         "kernels) or outside the bound (tolerance kernels). Runs across processes via files.")
        + "\n\n" + (__doc__ or "").split("\n\n", 1)[1])
    p.set_defaults(_group_parser=p)
    sub = p.add_subparsers(dest="_subcommand", metavar="SUBCOMMAND")

    s = _sub(sub, "open", "referee: start a dispute, write the session and the first query",
             "Start a dispute between COMMIT_A and COMMIT_B (same job, different roots): write the session "
             "file and the first query for both parties.")
    s.add_argument("commitment_a", metavar="COMMIT_A", help="party A's commitment JSON")
    s.add_argument("commitment_b", metavar="COMMIT_B", help="party B's commitment JSON")
    s.add_argument("-s", "--session", required=True, metavar="FILE", help="session file to create")
    s.add_argument("-q", "--query", required=True, metavar="FILE", help="first query to write (- for stdout)")
    s.add_argument("--device", default="cpu", help="device the referee recomputes the step on (default cpu)")
    add_artifacts_option(s, "the referee")
    s.set_defaults(_handler=_cmd_open)

    s = _sub(sub, "answer", "party: answer a query from its trace",
             "Answer the referee's QUERY from the party's own TRACE: an opening (JSON) for a bisect round, a "
             "response bundle for the step round.")
    s.add_argument("trace", metavar="TRACE", help="the party's trace directory")
    s.add_argument("query", metavar="QUERY", help="query JSON from the referee")
    s.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="answer to write atomically: an opening (JSON) or, for the step round, a response "
                        "bundle (- for stdout)")
    s.add_argument("--device", default=None, help="device to recompute states on (default: the run's)")
    s.add_argument("-k", "--keypair", metavar="FILE",
                   help="the party's keypair file, which signs a step-round bundle (default: none, unsigned)")
    add_artifacts_option(s, "the party")
    s.set_defaults(_handler=_cmd_answer)

    s = _sub(sub, "submit", "referee: take both answers; write the next query or the outcome",
             "Check both parties' answers to the current query. Writes the next query (and updates SESSION), "
             "or, once the dispute is resolved, the signed outcome and the liars' verdicts.")
    s.add_argument("session", metavar="SESSION", help="the session file (from pocv dispute open)")
    s.add_argument("answer_a", metavar="ANSWER_A", help="party A's answer, or - if it did not answer in time")
    s.add_argument("answer_b", metavar="ANSWER_B", help="party B's answer, or - if it did not answer in time")
    s.add_argument("-q", "--query", metavar="FILE", help="where to write the next query")
    add_artifacts_option(s, "the referee (the step round)")
    _result_args(s)
    s.set_defaults(_handler=_cmd_submit)

    s = _sub(sub, "run", "all roles locally: both traces, every round through files",
             "Play the referee and both parties in this process, every record through a file, as separate "
             "processes would.")
    s.add_argument("commitment_a", metavar="COMMIT_A", help="party A's commitment JSON")
    s.add_argument("commitment_b", metavar="COMMIT_B", help="party B's commitment JSON")
    s.add_argument("--trace-a", required=True, metavar="DIR", help="party A's trace directory")
    s.add_argument("--trace-b", required=True, metavar="DIR", help="party B's trace directory")
    s.add_argument("--workdir", metavar="DIR", help="keep the exchanged files here (default: a temporary dir)")
    s.add_argument("--device", default="cpu", help="device the referee recomputes the step on (default cpu)")
    s.add_argument("--beacon", metavar="HASH|random",
                   help="tolerance kernels: spot-check both parties with this beacon (64 hex digits or base58, "
                        "or random) when both are within the bound")
    add_artifacts_option(s, "the referee and both parties")
    _result_args(s)
    s.set_defaults(_handler=_cmd_run)

    s = _sub(sub, "equivocation", "did one worker sign two roots for one job?",
             "Exit 0 and print the evidence if both commitments verify, are by the same worker for the same "
             "job id and have different roots; exit 1 otherwise.")
    s.add_argument("first", metavar="COMMIT_1", help="one commitment JSON")
    s.add_argument("second", metavar="COMMIT_2", help="the other commitment JSON")
    _result_args(s)
    s.set_defaults(_handler=_cmd_equivocation)
