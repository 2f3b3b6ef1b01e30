"""``pocv dispute``: bisect two commitments of one job down to one step, through files.

The referee and the two parties may be different processes on different machines; every
message is a file (JSON records from :mod:`pocv.dispute`, response bundles for the step
round)::

    pocv dispute open A.json B.json -s session.json -q query.json         # referee
    pocv dispute answer TRACE_A query.json -o a.ans                       # party A
    pocv dispute answer TRACE_B query.json -o b.ans                       # party B
    pocv dispute submit session.json a.ans b.ans -q query.json -k referee.json -o outcome.json
    ... repeat answer/submit until submit reports "resolved" (ceil(log2 n) bisect rounds + 1 step round)

``submit`` takes ``-`` for a party that did not answer in time (it loses). When the dispute is
resolved it writes the signed outcome (``-o``) and one signed FAIL verdict per liar
(``--verdicts DIR``: ``verdict-A.json`` / ``verdict-B.json``), which the market settles on.

``pocv dispute run A.json B.json --trace-a DIR --trace-b DIR -k referee.json`` plays all three
roles locally through the same files (in ``--workdir``), and ``pocv dispute equivocation C1 C2``
checks whether one worker signed two roots for one job.

Exit codes: 0 the step (pending) or the dispute (resolved) went through; 1 ``equivocation``
found none; 3 bad or missing input, as everywhere in ``pocv``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from pocv.cli import emit
from pocv.errors import EXIT_FAIL, EXIT_PASS, InputError

__all__ = ["add_dispute_parser", "run_dispute"]


def _read(path: str, *, limit: int, what: str) -> bytes:
    from pocv.store import read_file

    return read_file(path, limit=limit, what=what)


def _key(path: str | None) -> Any:
    from pocv.records import load_keypair

    if path is None:
        raise InputError("the referee signs the outcome: pass -k/--keypair FILE (a Solana CLI keypair)")
    return load_keypair(path)


def _commitment(path: str) -> Any:
    from pocv.prover import load_commitment

    return load_commitment(path)


def _write_result(outcome: Any, verdicts: Any, args: argparse.Namespace) -> None:
    from pocv.store import atomic_write

    if args.verdicts:
        for v in verdicts:
            party = "A" if v.root == outcome.root_a else "B"
            atomic_write(Path(args.verdicts) / f"verdict-{party}.json", (v.to_json() + "\n").encode())
    if args.out:
        emit(outcome.to_json(), args.out)
    if args.output == "json":
        emit(outcome.to_json(), None)
    else:
        who = " and ".join(outcome.liars) or "neither party"
        print(f"resolved after {len(outcome.rounds)} bisection rounds: first divergent step {outcome.step}; "
              f"case {outcome.case}; liar: {who}\n  {outcome.detail}")


def _cmd_open(args: argparse.Namespace) -> int:
    from pocv.dispute import Dispute
    from pocv.store import atomic_write

    d = Dispute.open(_commitment(args.commitment_a), _commitment(args.commitment_b), device=args.device)
    atomic_write(Path(args.session), (d.to_json() + "\n").encode())
    q = d.query()
    atomic_write(Path(args.query), (q.to_json() + "\n").encode())
    _status(args, {"status": "pending", "dispute_id": d.id.hex(), "round": q.round, "kind": q.kind,
                   "leaves": list(q.leaves), "max_bisection_rounds": (d.a.steps - 1).bit_length(),
                   "query": args.query})
    return EXIT_PASS


def _status(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(f"{doc['status']}: round {doc['round']} ({doc['kind']}) opens leaves {doc['leaves']}; "
              f"query in {doc['query']}")


def _cmd_answer(args: argparse.Namespace) -> int:
    from solders.keypair import Keypair

    from pocv.dispute import MAX_DISPUTE_RECORD_BYTES, Opening, Query, answer_query
    from pocv.prover import Prover
    from pocv.store import atomic_write

    q = Query.from_json(_read(args.query, limit=MAX_DISPUTE_RECORD_BYTES, what="dispute query"))
    prover = Prover(trace_dir=args.trace, key=Keypair())  # answering needs no signature
    ans = answer_query(prover, q, device=args.device)
    raw = (ans.to_json() + "\n").encode() if isinstance(ans, Opening) else ans.to_bytes()
    atomic_write(Path(args.out), raw)
    doc = {"answer": args.out, "round": q.round, "kind": q.kind, "leaves": list(q.leaves), "bytes": len(raw)}
    print(json.dumps(doc, indent=2) if args.output == "json" else
          f"wrote {args.out}: round {q.round} ({q.kind}), {len(raw)} bytes")
    return EXIT_PASS


def _cmd_submit(args: argparse.Namespace) -> int:
    from pocv.bundle import MAX_BUNDLE_BYTES
    from pocv.dispute import MAX_DISPUTE_RECORD_BYTES, Dispute
    from pocv.store import atomic_write

    d = Dispute.from_json(_read(args.session, limit=MAX_DISPUTE_RECORD_BYTES, what="dispute session"))
    q = d.query()
    limit = MAX_DISPUTE_RECORD_BYTES if q.kind == "bisect" else MAX_BUNDLE_BYTES
    answers = [None if p == "-" else _read(p, limit=limit, what=f"party {party}'s answer")
               for party, p in (("A", args.answer_a), ("B", args.answer_b))]
    key = _key(args.keypair) if q.kind == "step" or args.keypair else None
    nxt = d.submit(answers[0], answers[1])
    if nxt is None:
        if key is None:
            key = _key(args.keypair)
        outcome, verdicts = d.finish(key)
        _write_result(outcome, verdicts, args)
        return EXIT_PASS
    atomic_write(Path(args.session), (d.to_json() + "\n").encode())
    if not args.query:
        raise InputError("the dispute goes on: pass -q/--query FILE for the next query")
    atomic_write(Path(args.query), (nxt.to_json() + "\n").encode())
    _status(args, {"status": "pending", "dispute_id": d.id.hex(), "round": nxt.round, "kind": nxt.kind,
                   "leaves": list(nxt.leaves), "query": args.query})
    return EXIT_PASS


def _cmd_run(args: argparse.Namespace) -> int:
    from solders.keypair import Keypair

    from pocv.dispute import run_local
    from pocv.prover import Prover
    from pocv.records import parse_beacon

    key = _key(args.keypair)
    a = Prover(trace_dir=args.trace_a, key=Keypair())
    b = Prover(trace_dir=args.trace_b, key=Keypair())
    for name, prover, path in (("A", a, args.commitment_a), ("B", b, args.commitment_b)):
        if prover.commitment() != _commitment(path):
            raise InputError(f"trace {str(prover.trace_dir)!r} does not hold commitment {name} ({path})")
    beacon = None
    if args.beacon == "random":
        beacon = secrets.token_bytes(32)
    elif args.beacon:
        beacon = parse_beacon(args.beacon)
    with tempfile.TemporaryDirectory(prefix="pocv-dispute-") as tmp:
        result = run_local(a, b, key=key, device=args.device, workdir=args.workdir or tmp, beacon=beacon)
    _write_result(result.outcome, result.verdicts, args)
    if result.spot_checks:
        from pocv.store import atomic_write

        for party, v in zip("AB", result.spot_checks):
            sys.stderr.write(f"spot check of party {party}: {'PASS' if v.passed else 'FAIL'} "
                             f"({len(v.failures)}/{len(v.outcomes)} steps rejected)\n")
            if args.verdicts:
                atomic_write(Path(args.verdicts) / f"spot-check-{party}.json", (v.to_json() + "\n").encode())
    return EXIT_PASS


def _cmd_equivocation(args: argparse.Namespace) -> int:
    from pocv.dispute import detect_equivocation
    from pocv.errors import MismatchError

    try:
        ev = detect_equivocation(_commitment(args.first), _commitment(args.second))
    except MismatchError as e:
        sys.stderr.write(f"pocv dispute equivocation: {e}\n")
        return EXIT_FAIL
    if args.keypair and args.verdicts:
        from pocv.store import atomic_write

        for name, v in zip(("first", "second"), ev.verdicts(_key(args.keypair))):
            atomic_write(Path(args.verdicts) / f"verdict-{name}.json", (v.to_json() + "\n").encode())
    emit(ev.to_json(), args.out)
    return EXIT_PASS


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", choices=("json", "text"), default="json",
                   help="json: the record or status on stdout (default); text: a summary for people")


def _result_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", "--keypair", metavar="FILE", help="referee key that signs the outcome and verdicts")
    p.add_argument("-o", "--out", metavar="FILE",
                   help="also write the signed outcome JSON to FILE (atomically; stdout gets it too)")
    p.add_argument("--verdicts", metavar="DIR", help="write the liars' signed FAIL verdicts to DIR")


def add_dispute_parser(subparsers: Any) -> None:
    """Register ``pocv dispute`` and its subcommands on the main parser's subparsers."""
    p = subparsers.add_parser(
        "dispute", help="bisect two commitments of one job to the first divergent step",
        description="Two workers committed to the same job with different roots. Each round both open the "
                    "midpoint leaf with an inclusion proof; after at most ceil(log2 n) rounds the referee "
                    "recomputes the one step where they part and names the party that is wrong (exact "
                    "kernels) or outside the bound (tolerance kernels). Runs across processes via files.")
    sub = p.add_subparsers(dest="dispute_command", metavar="SUBCOMMAND", required=True)

    s = sub.add_parser("open", help="referee: start a dispute, write the session and the first query")
    s.add_argument("commitment_a", metavar="COMMIT_A")
    s.add_argument("commitment_b", metavar="COMMIT_B")
    s.add_argument("-s", "--session", required=True, metavar="FILE", help="session file to create")
    s.add_argument("-q", "--query", required=True, metavar="FILE", help="first query to write")
    s.add_argument("--device", default="cpu", help="device the referee recomputes the step on (default cpu)")
    _output(s)
    s.set_defaults(_dispute=_cmd_open)

    s = sub.add_parser("answer", help="party: answer a query from its trace")
    s.add_argument("trace", metavar="TRACE", help="the party's trace directory")
    s.add_argument("query", metavar="QUERY", help="query JSON from the referee")
    s.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="answer to write: an opening (JSON) or, for the step round, a response bundle")
    s.add_argument("--device", default=None, help="device to recompute states on (default: the run's)")
    _output(s)
    s.set_defaults(_dispute=_cmd_answer)

    s = sub.add_parser("submit", help="referee: take both answers; write the next query or the outcome")
    s.add_argument("session", metavar="SESSION")
    s.add_argument("answer_a", metavar="ANSWER_A", help="party A's answer, or - if it did not answer in time")
    s.add_argument("answer_b", metavar="ANSWER_B", help="party B's answer, or - if it did not answer in time")
    s.add_argument("-q", "--query", metavar="FILE", help="where to write the next query")
    _result_args(s)
    _output(s)
    s.set_defaults(_dispute=_cmd_submit)

    s = sub.add_parser("run", help="all roles locally: both traces, every round through files")
    s.add_argument("commitment_a", metavar="COMMIT_A")
    s.add_argument("commitment_b", metavar="COMMIT_B")
    s.add_argument("--trace-a", required=True, metavar="DIR")
    s.add_argument("--trace-b", required=True, metavar="DIR")
    s.add_argument("--workdir", metavar="DIR", help="keep the exchanged files here (default: a temporary dir)")
    s.add_argument("--device", default="cpu", help="device the referee recomputes the step on (default cpu)")
    s.add_argument("--beacon", metavar="HEX|random",
                   help="tolerance kernels: spot-check both parties with this beacon when both are within the bound")
    _result_args(s)
    _output(s)
    s.set_defaults(_dispute=_cmd_run)

    s = sub.add_parser("equivocation", help="did one worker sign two roots for one job?",
                       description="Exit 0 and print the evidence if both commitments verify, are by the same "
                                   "worker for the same job id and have different roots; exit 1 otherwise.")
    s.add_argument("first", metavar="COMMIT_1")
    s.add_argument("second", metavar="COMMIT_2")
    _result_args(s)
    s.set_defaults(_dispute=_cmd_equivocation, output="json")


def run_dispute(args: argparse.Namespace) -> int:
    """Run the chosen ``pocv dispute`` subcommand (errors are the caller's to print)."""
    code: int = args._dispute(args)
    return code
