"""``pocv serve`` and ``pocv verify --remote``: the worker service and its client on the command line
(docs/network.md).

``pocv serve`` runs :class:`pocv.serve.WorkerService` until SIGTERM (exit 0) or SIGINT (exit 130);
``pocv verify --remote URL`` runs :func:`pocv.client.averify_remote` and prints the signed verdict
as ``pocv verify`` does. Building these parsers imports nothing heavy: aiohttp, torch and the
verifier load when a handler runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pocv.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    REPORT,
    HelpFormatter,
    add_artifacts_option,
    add_output_option,
    add_verbosity,
    artifact_store,
    emit_record,
    exit_code,
    keypair_help,
    note,
    one_line,
    output_target,
    progress_for,
    resolve_keypair,
    wrap,
    write_stdout,
)
from pocv.errors import InputError, UnsignedResponse, VerificationFailed
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE, DEFAULT_MAX_ANSWER

if TYPE_CHECKING:  # typing only: these load aiohttp and torch
    from pocv.client import RemoteVerdict

__all__ = ["DEFAULT_PORT", "add_net_parsers", "add_remote_options", "cmd_verify_remote", "parse_accept"]

#: the port ``pocv serve`` listens on unless --port says otherwise
DEFAULT_PORT: Final = 8470
#: pocv.client.DEFAULT_DEADLINE_S, repeated here so that building the parser loads no aiohttp or torch
#: (tests/net/test_cli_net.py checks that the two agree)
DEFAULT_DEADLINE_S: Final = 600.0
#: longest accept-list file read (one base58 key per line)
MAX_ACCEPT_FILE_BYTES: Final = 1 << 20

SERVE_EPILOG: Final = """\
TLS:
  pocv serve speaks HTTP. Every request and answer is signed with the parties' ed25519 keys
  (tampering, replays and impostors are refused), but the traffic is readable. Off loopback,
  either terminate TLS in a reverse proxy that forwards to 127.0.0.1:PORT, e.g. Caddy:

    pocv serve TRACES -k worker.json --accept verifier.pub --port 8470
    caddy reverse-proxy --from worker.example.org --to 127.0.0.1:8470

  or nginx (server { listen 443 ssl; ... location / { proxy_pass http://127.0.0.1:8470;
  proxy_buffering off; proxy_read_timeout 600s; } }), or let pocv serve speak TLS itself:

    pocv serve TRACES -k worker.json --accept verifier.pub --host 0.0.0.0 \\
        --tls-cert fullchain.pem --tls-key privkey.pem

  Verifiers then use https://worker.example.org; a certificate from a private CA (or a
  self-signed one) is trusted with pocv verify --remote URL --cacert ca.pem.

stopping:
  SIGTERM stops it cleanly (exit 0), SIGINT (Ctrl-C) too (exit 130); running answers are cut."""


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {v}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return v


# -- pocv serve ---------------------------------------------------------------------------------------


def parse_accept(values: list[str]) -> list[bytes]:
    """The verifier keys of ``--accept``: each a base58 public key, a Solana CLI keypair file (its
    public key), or a file of base58 public keys, one per line (# starts a comment)."""
    from pocv.keys import PublicKey  # base58 keys
    from pocv.store import load_keypair, read_file  # keypair files; bounded reads

    keys: list[bytes] = []
    for value in values:
        path = Path(os.path.expanduser(value))
        if not path.exists():
            try:
                keys.append(bytes(PublicKey.from_string(value)))
            except Exception as e:  # any parse failure: say what was expected
                raise InputError(f"--accept {value[:80]!r}: neither a file nor a base58 public key ({e})") from e
            continue
        data = read_file(path, limit=MAX_ACCEPT_FILE_BYTES, what="accept list")
        if data.lstrip()[:1] == b"[":  # a keypair file: accept its public key
            keys.append(bytes(load_keypair(path).pubkey()))
            continue
        for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                keys.append(bytes(PublicKey.from_string(line)))
            except Exception as e:  # a line that is not a key: one line naming it
                raise InputError(f"{value}:{n}: expected a base58 public key, got {line[:80]!r} ({e})") from e
    if not keys:
        raise InputError("no verifier key to accept: pass --accept KEY|FILE (a base58 public key, a keypair file, "
                         "or a file of keys, one per line)")
    return keys


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal  # the handler reports which signal stopped the service

    from pocv.serve import ServerLimits, WorkerService, run  # aiohttp and the prover (torch)

    for root in args.traces:
        if not Path(root).is_dir():
            raise InputError(f"trace root {root!r} is not a directory (a trace directory from pocv run, or a "
                             "directory of them)")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InputError("--tls-cert and --tls-key go together (the certificate chain and its private key)")
    key = resolve_keypair(args.keypair, "worker")
    accept = parse_accept(args.accept)
    given = {"max_concurrent_answers": args.max_concurrent_answers, "max_queued_answers": args.max_queued_answers,
             "request_timeout_s": args.request_timeout, "header_timeout_s": args.header_timeout,
             "body_timeout_s": args.header_timeout, "max_connections": args.max_connections,
             "max_connections_per_peer": args.max_connections_per_peer}
    limits = ServerLimits(**{k: v for k, v in given.items() if v is not None})  # the rest: ServerLimits' own
    ssl_context = None
    if args.tls_cert is not None:
        import ssl  # only when pocv serve terminates TLS itself

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise InputError(f"cannot load --tls-cert {args.tls_cert!r} / --tls-key {args.tls_key!r}: {e}") from e
    kw: dict[str, Any] = {} if args.max_answer is None else {"max_answer": args.max_answer}
    service = WorkerService(traces=args.traces, key=key, accept=accept, limits=limits, device=args.device,
                            artifacts=artifact_store(args), **kw)
    scheme = "https" if ssl_context is not None else "http"

    def ready(address: tuple[str, int]) -> None:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        url = f"{scheme}://{host}:{address[1]}"
        jobs = len(service._traces)
        if args.output == "json":
            write_stdout(json.dumps({"url": url, "worker": str(key.pubkey()), "jobs": jobs,
                                     "accepted": len(service.accept)}, sort_keys=True))
        else:
            write_stdout(f"serving {jobs} job(s) of worker {key.pubkey()} on {url} to "
                         f"{len(service.accept)} verifier key(s); SIGTERM or Ctrl-C stops")
        if jobs == 0:
            note(f"pocv serve: note: no committed trace under {', '.join(args.traces)} yet; traces that complete "
                 "later are found when asked for")

    try:
        stopped_by = run(service, args.host, args.port, ready=ready, ssl_context=ssl_context)
    except OSError as e:  # the address: in use, not this host's, not allowed
        raise InputError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from e
    if stopped_by == signal.SIGINT:
        note("pocv serve: interrupted; stopped")
        return EXIT_INTERRUPTED
    note("pocv serve: stopped")
    return EXIT_OK


def add_net_parsers(sub: Any) -> None:
    """Add ``pocv serve`` to the subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="serve trace directories to verifiers over HTTP",
        description=wrap(
            "Serve the committed traces under TRACES to the verifiers whose keys are accepted: they fetch "
            "commitments, send signed challenges and receive the response bundles, streamed (pocv verify "
            "--remote). Every request and answer is signed with ed25519 over method, path, body hash and time "
            "(a replayed or stale request is refused). Recomputations, queue, connections and time per request "
            "are bounded. Prints the URL once listening; runs until stopped. Endpoints, limits and status "
            "codes: docs/network.md."),
        epilog=SERVE_EPILOG, formatter_class=HelpFormatter)
    add_output_option(p, REPORT)
    add_verbosity(p)
    p.add_argument("traces", metavar="TRACES", nargs="+",
                   help="a trace directory (from pocv run) or a directory of them, one per job; repeatable")
    p.add_argument("-k", "--keypair", metavar="FILE",
                   help=keypair_help("worker") + "; must be the key that signed the commitments (it signs "
                        "every answer)")
    p.add_argument("--accept", metavar="KEY|FILE", action="append", default=[], required=True,
                   help="a verifier this worker answers: a base58 public key, a Solana CLI keypair file, or a "
                        "file of base58 keys, one per line (# comments); repeatable")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this host only; 0.0.0.0 or :: for every "
                        "interface: then use TLS, see below)")
    p.add_argument("-p", "--port", type=_port, default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one, printed when listening)")
    p.add_argument("--tls-cert", metavar="PEM", default=None,
                   help="serve HTTPS with this certificate chain (with --tls-key); default plain HTTP")
    p.add_argument("--tls-key", metavar="PEM", default=None, help="the private key of --tls-cert")
    p.add_argument("--device", default=None,
                   help="device to recompute answers on (default: the one each run used)")
    add_artifacts_option(p, "the worker")
    p.add_argument("--max-answer", type=_positive_int, default=None, metavar="K",
                   help=f"most challenged steps answered per challenge (default {DEFAULT_MAX_ANSWER}); "
                        "more is refused (422)")
    p.add_argument("--max-concurrent-answers", type=_positive_int, default=None, metavar="N",
                   help="recomputations at once (default 2: CPU or GPU work)")
    p.add_argument("--max-queued-answers", type=_positive_int, default=None, metavar="N",
                   help="challenges waiting for a recomputation (default 32); more get 503 and Retry-After")
    p.add_argument("--request-timeout", type=_seconds, default=None, metavar="S",
                   help="one whole exchange, request to last byte of the answer (default 600; then 504)")
    p.add_argument("--header-timeout", type=_seconds, default=None, metavar="S",
                   help="to send a whole request line, headers and body, and idle time between requests "
                        "(default 15; a slower client is cut off)")
    p.add_argument("--max-connections", type=_positive_int, default=None, metavar="N",
                   help="open connections in all (default 1024)")
    p.add_argument("--max-connections-per-peer", type=_positive_int, default=None, metavar="N",
                   help="open connections from one address (default 64)")
    p.set_defaults(_handler=_cmd_serve)


# -- pocv verify --remote -----------------------------------------------------------------------------


def add_remote_options(p: argparse.ArgumentParser) -> None:
    """Add ``--remote URL`` and the options it needs to ``pocv verify``'s parser."""
    g = p.add_argument_group(
        "remote verification", wrap("with --remote URL, COMMITMENT CHALLENGE RESPONSE are not given: the worker's "
                                    "service (pocv serve) sends the commitment, receives this verifier's challenge "
                                    "and streams its answer"))
    g.add_argument("--remote", metavar="URL", default=None,
                   help="verify a job at a worker's service (http:// or https://): fetch the commitment, "
                        "challenge it, stream the answer into the check. A worker that refuses or does not answer "
                        "within --deadline gets a FAIL with reason REFUSED")
    g.add_argument("--job-id", metavar="ID", default=None,
                   help="with --remote: the job to verify, 64 hex digits (default: the job of --job's spec, "
                        "else the only job the worker serves)")
    g.add_argument("--worker", metavar="PUBKEY", default=None,
                   help="with --remote: the worker's base58 public key; the service must be that worker "
                        "(default: the key the service names, which must have signed the commitment)")
    g.add_argument("--beacon", metavar="HASH|random", default="random",
                   help="with --remote: the challenge beacon, 32 bytes as 64 hex digits or base58, or random "
                        "(default: a fresh verifier nonce)")
    g.add_argument("--beacon-source", default=None, metavar="SOURCE",
                   help="with --remote: where the beacon came from, as pocv challenge records it "
                        "(default nonce:UNIX_SECONDS)")
    g.add_argument("-p", "--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help=f"with --remote: detection probability wanted (default {DEFAULT_CONFIDENCE})")
    g.add_argument("-f", "--cheat-fraction", type=float, default=DEFAULT_CHEAT_FRACTION,
                   help=f"with --remote: smallest fraction of faked steps to catch (default {DEFAULT_CHEAT_FRACTION})")
    g.add_argument("-n", "--count", type=_positive_int, default=None, metavar="K",
                   help="with --remote: challenge exactly K steps")
    g.add_argument("--deadline", type=_seconds, default=DEFAULT_DEADLINE_S, metavar="S",
                   help=f"with --remote: seconds the worker has to deliver its whole answer, retries included "
                        f"(default {DEFAULT_DEADLINE_S:g}); past it the verdict is FAIL, REFUSED")
    g.add_argument("--cacert", metavar="PEM", default=None,
                   help="with an https:// --remote: trust the CA certificates in PEM (a worker's private CA or "
                        "self-signed certificate; default: the system's CAs)")
    g.add_argument("--connect-timeout", type=_seconds, default=10.0, metavar="S",
                   help="with --remote: to open a connection (default 10)")
    g.add_argument("--attempts", type=_positive_int, default=5, metavar="N",
                   help="with --remote: tries per request, for transport errors only (default 5)")
    g.add_argument("--keep", metavar="DIR", default=None,
                   help="with --remote: also write commitment.json, challenge.json and the response bundle "
                        "response.pocv into DIR (created), the evidence behind the verdict")


def _job_id(args: argparse.Namespace, remote: Any) -> Any:
    """The job id to verify: --job-id, else --job's spec, else the worker's only job (a coroutine)."""
    from pocv.client import parse_job_id  # 64 hex digits

    async def pick() -> bytes:
        from pocv.kernels import resolve_spec  # the kernel's version: a spec as pocv run takes it
        from pocv.store import load_spec  # refuses another kind of record

        spec_id = None if args.job is None else resolve_spec(load_spec(args.job)).job_id
        if args.job_id is not None:
            job_id = parse_job_id(args.job_id)
            if spec_id is not None and spec_id != job_id:
                raise InputError(f"--job-id {job_id.hex()[:16]}... is not the job of --job {args.job!r} "
                                 f"({spec_id.hex()[:16]}...)")
            return job_id
        if spec_id is not None:
            return spec_id
        jobs = await remote.jobs()
        if len(jobs) != 1:
            raise InputError(f"the worker at {args.remote} serves {len(jobs)} jobs; say which with --job-id ID "
                             "or --job JOB")
        return parse_job_id(str(jobs[0]["job_id"]))

    return pick()


def _keep(args: argparse.Namespace, r: RemoteVerdict, bundle: Any) -> None:
    from pocv.store import atomic_write, atomic_writer  # written atomically

    d = Path(args.keep)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--keep {args.keep!r}: cannot create the directory: {e.strerror or e}") from e
    atomic_write(d / "commitment.json", (r.commitment.to_json() + "\n").encode())
    atomic_write(d / "challenge.json", (r.challenge.to_json() + "\n").encode())
    if bundle is not None:
        bundle.seek(0)
        with atomic_writer(d / "response.pocv") as f:
            shutil.copyfileobj(bundle, f, 1 << 20)


def cmd_verify_remote(args: argparse.Namespace) -> int:
    """``pocv verify --remote URL``: fetch the commitment, challenge the worker, verify the streamed answer."""
    import asyncio  # the client's event loop

    from pocv.check import Verifier  # torch: the verifier recomputes the challenged steps
    from pocv.cli._common import parse_hash  # the beacon, as pocv challenge parses it
    from pocv.cli._core import _book, _expected_job, verdict_text  # shared with pocv verify; _core imports us
    from pocv.client import ClientLimits, RemoteWorker, averify_remote  # aiohttp

    given = [n.upper() for n in ("commitment", "challenge", "response") if getattr(args, n, None) is not None]
    if given:
        raise InputError(f"--remote fetches the records itself; do not also give {', '.join(given)}")
    beacon = None if args.beacon == "random" else parse_hash(args.beacon, "beacon")
    target = output_target(args.out, "verdict")
    key = resolve_keypair(args.keypair, "verifier")
    verifier = Verifier(key=key, device=args.device, progress=progress_for(args, "verify"), book=_book(args),
                        artifacts=artifact_store(args), workers=args.workers)
    limits = ClientLimits(connect_timeout_s=args.connect_timeout, attempts=args.attempts)
    ssl_context = None
    if args.cacert is not None:
        import ssl  # only for a worker whose certificate the system's CAs do not sign

        try:
            ssl_context = ssl.create_default_context(cafile=args.cacert)
        except (OSError, ssl.SSLError) as e:
            raise InputError(f"cannot load --cacert {args.cacert!r}: {e}") from e
    keep_bundle = args.keep is not None

    async def main() -> tuple[RemoteVerdict, Any]:
        async with RemoteWorker(args.remote, key=key, worker=args.worker, limits=limits,
                                ssl_context=ssl_context) as remote:
            job_id = await _job_id(args, remote)
            spool = None
            if keep_bundle:
                import tempfile  # --keep: the bundle is copied out of a spool kept until then

                spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller
            r = await averify_remote(verifier, remote, job_id, deadline_s=args.deadline, beacon=beacon,
                                     beacon_source=args.beacon_source, confidence=args.confidence,
                                     cheat_fraction=args.cheat_fraction, k=args.count, spool=spool)
            return r, spool

    r, spool = asyncio.run(main())
    try:
        # with --job the job id was the spec's, and the worker's commitment is for it (checked by the client)
        extra = _expected_job(args, r.commitment) if args.job is None else ""
        if args.keep is not None:
            _keep(args, r, spool if r.refused is None else None)
    finally:
        if spool is not None:
            spool.close()
    verdict = r.verdict
    failure: Exception | None = None
    if not verdict.passed:
        failure = (UnsignedResponse("FAIL on a response bundle the worker did not sign: possibly corrupted in "
                                    "transit; verify again", verdict) if not verdict.is_evidence else
                   VerificationFailed(f"FAIL: {len(verdict.failures)} of {len(verdict.outcomes)} challenged steps "
                                      f"rejected; first: step {verdict.failures[0].index} "
                                      f"{verdict.failures[0].reason}: {verdict.failures[0].detail}", verdict))
    code = EXIT_OK if failure is None else exit_code(failure)
    if args.output == "json":
        emit_record(verdict.to_json(), target)
    else:
        if target is not None:
            emit_record(verdict.to_json(), target)
        write_stdout(verdict_text(verdict))
    if r.refused is not None:
        note(f"pocv verify: worker at {args.remote} REFUSED: {one_line(r.refused)}")
    elif failure is not None:
        note(f"pocv verify: {one_line(str(failure))}")
    if extra:
        note(extra)
    sys.stderr.flush()
    return code
