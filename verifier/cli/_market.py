"""pocv market: offers, jobs, matching, commits, settlement, status and history on Solana.

Building the parser imports nothing heavy; each handler imports solders and the chain backend
when it runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pocv.cli._common import (
    EXIT_FAIL,
    EXIT_OK,
    REPORT,
    HelpFormatter,
    add_output_option,
    add_verbosity,
    emit_record,
    keypair_help,
    note,
    output_target,
    parse_hash,
    resolve_keypair,
    resolve_url,
    wrap,
    write_stdout,
)
from pocv.errors import InputError

if TYPE_CHECKING:  # typing only: solders and the backends load on use
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from pocv.market.backend import Backend
    from pocv.market.escrow import ChainBeacon
    from pocv.market.indexer import Indexer, JobHistory
    from pocv.market.jobprogram import JobProgram
    from pocv.market.market import Capabilities

DEFAULT_COMMIT_WINDOW: Final = 300  # slots (~2 minutes at 400 ms)
DEFAULT_VERDICT_WINDOW: Final = 9_000  # slots (~1 hour)
MAX_PARTIAL_BYTES: Final = 64 * 1024
MAX_FINGERPRINT_BYTES: Final = 64 * 1024
MAX_CAPABILITIES_BYTES: Final = 1024 * 1024
MAX_PROGRAM_FILE_BYTES: Final = 1 << 20
SUBCOMMANDS: Final = ("offer", "post", "match", "commit", "settle", "claim", "status", "history", "deploy")

DESCRIPTION: Final = """\
Offers, jobs, matching, commits, verdicts, claims, status and history on Solana, held by the pocv
job program (programs/README.md): a job account with the terms and deadlines (slots), a vault
owned by it, worker accounts with offers and the records only the program writes.

Backends, as in the Solana CLI: -u/--url takes a JSON-RPC URL or a moniker (l or localhost, d or
devnet, t or testnet, m or mainnet-beta; -ul, -ud, -ut, -um work). Without -u the embedded LiteSVM
chain kept in --ledger (default ./.pocv-ledger) is used, with the job program deployed, a sandbox
mint and a faucet that funds new keys; pocv market never talks to a cluster unless -u is given
(the json_rpc_url of the Solana CLI config is not used implicitly). With -u, --mint and --program
name the payment token and the deployed job program (pocv market deploy -u URL deploys one).
-k/--keypair defaults to keypair_path in ~/.config/solana/cli/config.yml, else
~/.config/solana/id.json. Job ids, roots and public keys are accepted as hex or base58.

Exit codes as for every pocv command: 0 done (PASS, a CLAIM, or no verdict involved), 1 a FAIL
verdict settled or found, 2 usage, 3 bad or missing input (including terms or a job account that
fail their checks), 4 chain or network error, 70 a bug."""


# -- parser ---------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, keypair: bool = True) -> None:
    add_output_option(p, REPORT)
    add_verbosity(p)
    p.add_argument("-u", "--url", default=None, metavar="URL_OR_MONIKER",
                   help="JSON-RPC URL or moniker l, d, t, m (localhost, devnet, testnet, mainnet-beta); "
                        "default: the embedded LiteSVM chain")
    p.add_argument("--ledger", default=None, metavar="DIR",
                   help="embedded chain directory (default ./.pocv-ledger; ignored with --url)")
    p.add_argument("--mint", default=None,
                   help="payment token mint, base58 (required with --url; embedded: the sandbox mint)")
    p.add_argument("--program", default=None,
                   help="the job program's address, base58 (required with --url; embedded: the ledger's)")
    p.add_argument("--capabilities", default=None, metavar="FILE",
                   help="JSON file of capabilities documents by hash, as pocv market offer writes it "
                        "(embedded: kept in the ledger)")
    p.add_argument("--index", default=None, metavar="FILE",
                   help="SQLite index cache (default: in the ledger, or ~/.cache/pocv)")
    p.add_argument("--token-program", choices=("p-token", "classic"), default="p-token",
                   help="embedded chain only, for a new ledger: LiteSVM's p-token or the classic SPL Token build "
                        "(default p-token)")
    if keypair:
        p.add_argument("-k", "--keypair", default=None, metavar="FILE", help=keypair_help("signer"))


def _sub(sub: Any, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    text = description or help[:1].upper() + help[1:]
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=wrap(text), formatter_class=HelpFormatter)
    return p


def add_market_parser(subparsers: Any) -> None:
    """Add market and its subcommands to the pocv parser's subparsers."""
    market = subparsers.add_parser(
        "market", help="Solana marketplace and escrow: offer, post, match, commit, settle, claim, status, history, "
                       "deploy",
        description=DESCRIPTION, formatter_class=HelpFormatter)
    market.set_defaults(_group_parser=market)
    sub = market.add_subparsers(dest="_subcommand", metavar="{" + ",".join(SUBCOMMANDS) + "}")

    p = _sub(sub, "offer", "write a worker's offer into its worker account (price, bond range, verifiers, kernels)")
    p.add_argument("--price", type=int, required=True, help="least price per job, token base units")
    p.add_argument("--min-bond", type=int, required=True, help="least bond the worker puts up per job")
    p.add_argument("--max-bond", type=int, default=None, help="largest bond it accepts (default: --min-bond)")
    p.add_argument("--verifiers", required=True,
                   help="comma-separated public keys of the verifiers the worker accepts (1 to 4)")
    p.add_argument("--kernels", required=True, help="comma-separated kernel names, e.g. gemm-int8,mlp-sgd")
    p.add_argument("--device", default="cpu", help="device class, e.g. cpu, h100 (default cpu)")
    p.add_argument("--fingerprint", default=None, metavar="FILE",
                   help="device fingerprint JSON file (its digest goes on chain)")
    p.add_argument("--withdraw", action="store_true", help="mark the offer inactive (no new jobs)")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_offer)

    p = _sub(sub, "post", "post a job: the job account, its vault and the price (the consumer)")
    p.add_argument("spec", metavar="SPEC", help="job spec JSON file")
    p.add_argument("--verifier", required=True, help="the verifier's public key (base58)")
    p.add_argument("--worker", default=None, help="worker public key; without it the matcher picks one")
    p.add_argument("--price", type=int, default=None, help="price (with --worker; else the matched offer's)")
    p.add_argument("--bond", type=int, default=None, help="bond (with --worker; else the matched offer's least)")
    p.add_argument("--max-price", type=int, default=None, help="highest acceptable price when matching")
    p.add_argument("--min-bond", type=int, default=0, help="lowest acceptable bond when matching (default 0)")
    p.add_argument("--device", default=None, help="required device class when matching")
    p.add_argument("--commit-window", type=int, default=DEFAULT_COMMIT_WINDOW,
                   help=f"slots from now to the commit deadline (default {DEFAULT_COMMIT_WINDOW})")
    p.add_argument("--verdict-window", type=int, default=DEFAULT_VERDICT_WINDOW,
                   help=f"slots from the commit deadline to the verdict deadline (default {DEFAULT_VERDICT_WINDOW})")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_post)

    p = _sub(sub, "match", "pick the cheapest qualified worker, weighted by its on-chain record")
    p.add_argument("--kernel", required=True, help="kernel name or name@version")
    p.add_argument("--max-price", type=int, required=True, help="highest acceptable price")
    p.add_argument("--min-bond", type=int, default=0, help="lowest acceptable bond (default 0)")
    p.add_argument("--device", default=None, help="required device class (default any)")
    p.add_argument("--verifier", default=None, help="only workers accepting this verifier (base58)")
    _common(p, keypair=False)
    p.set_defaults(_handler=_run, _market=_cmd_match)

    p = _sub(sub, "commit", "bond and commit the Merkle root (the named worker; checks the job account first)")
    p.add_argument("job_id", metavar="JOB_ID", help="job id (64 hex digits or base58)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--commitment", metavar="FILE", help="the signed commitment JSON (pocv run)")
    g.add_argument("--root", help="the root, 64 hex digits or base58")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_commit)

    p = _sub(sub, "settle", "settle a job by its verdict (the named verifier alone)",
             "-k VERIFIER --verdict FILE sends VERDICT now. With -o FILE the verifier signs it against a durable "
             "nonce of its own for this job and writes it; anyone submits it later with --submit FILE.")
    p.add_argument("job_id", metavar="JOB_ID", help="job id (64 hex digits or base58)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--verdict", metavar="FILE", help="the signed verdict JSON (pocv verify)")
    g.add_argument("--submit", metavar="FILE", help="a pre-signed settlement (written by -o) to submit")
    p.add_argument("-o", "--out", metavar="FILE",
                   help="write the pre-signed settlement to FILE atomically instead of sending it (a symlink is "
                        "followed to its target; - is stdout)")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_settle)

    p = _sub(sub, "claim", "after a deadline, anyone: refund the consumer (no commit) or pay the worker (no verdict)")
    p.add_argument("job_id", metavar="JOB_ID", help="job id (64 hex digits or base58)")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_claim)

    p = _sub(sub, "status", "one job: terms, deadlines, state, events and beacon, from the chain")
    p.add_argument("job_id", metavar="JOB_ID", help="job id (64 hex digits or base58)")
    _common(p, keypair=False)
    p.set_defaults(_handler=_run, _market=_cmd_status)

    p = _sub(sub, "history", "every job and each worker's record, from the job program")
    p.add_argument("--worker", default=None, help="only this worker's jobs (base58 public key)")
    _common(p, keypair=False)
    p.set_defaults(_handler=_run, _market=_cmd_history)

    p = _sub(sub, "deploy", "deploy the job program through the upgradeable loader (-k pays and is the upgrade "
                            "authority)")
    p.add_argument("--program-keypair", default=None, metavar="FILE",
                   help="keypair file of the program's address (default: a new one; it signs the deployment only, "
                        "the upgrade authority is -k)")
    p.add_argument("--so", default=None, metavar="FILE", help="the program ELF (default: the build shipped with pocv)")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_deploy)


# -- session ----------------------------------------------------------------------------------------


@dataclass
class _Session:
    backend: Backend
    mint: Pubkey
    program: JobProgram | None
    index_path: Path | None
    ledger: Any  # EmbeddedLedger | None
    capabilities_file: Path | None
    notes: list[str] = field(default_factory=list)

    def signer(self, path: str | None) -> Keypair:
        key = resolve_keypair(path, "signer").to_solders()
        self.fund(key.pubkey())
        return key

    def fund(self, pk: Pubkey) -> None:
        if self.ledger is not None and self.ledger.ensure_funded(pk):
            self.notes.append(f"sandbox faucet funded {pk} (embedded chain)")

    def job_program(self) -> JobProgram:
        if self.program is None:
            raise InputError("--program is required with --url (the job program's address; "
                             "pocv market deploy -u URL deploys one)")
        return self.program

    def book(self) -> dict[bytes, Capabilities]:
        from pocv.market.market import Capabilities  # the documents behind the capability hashes

        book: dict[bytes, Capabilities] = dict(self.ledger.capabilities()) if self.ledger is not None else {}
        if self.capabilities_file is not None and self.capabilities_file.exists():
            from pocv.store import read_file  # regular files only, size-limited

            raw = read_file(str(self.capabilities_file), limit=MAX_CAPABILITIES_BYTES, what="capabilities")
            try:
                docs = json.loads(raw)
                for h, d in docs.items():
                    c = Capabilities.from_dict(d)
                    if c.digest() == bytes.fromhex(h):
                        book[c.digest()] = c
            except (ValueError, AttributeError) as e:
                raise InputError(f"{str(self.capabilities_file)!r} is not a capabilities file: {e}") from e
        return book

    def remember(self, caps: Capabilities) -> str | None:
        """Keep a capabilities document where matchers find it; returns the file written."""
        if self.capabilities_file is not None:
            docs: dict[str, Any] = {}
            if self.capabilities_file.exists():
                from pocv.store import read_file  # regular files only, size-limited

                raw = read_file(str(self.capabilities_file), limit=MAX_CAPABILITIES_BYTES, what="capabilities")
                try:
                    docs = dict(json.loads(raw))
                except (ValueError, TypeError) as e:
                    raise InputError(f"{str(self.capabilities_file)!r} is not a capabilities file: {e}") from e
            docs[caps.digest().hex()] = caps.to_dict()
            emit_record(json.dumps(docs, indent=1, sort_keys=True), output_target(str(self.capabilities_file),
                                                                                  "capabilities"))
            return str(self.capabilities_file)
        if self.ledger is not None:
            self.ledger.remember(caps)
            return str(self.ledger.path / "capabilities.json")
        return None

    def indexer(self) -> Indexer:
        from pocv.market.indexer import Indexer  # the chain's history

        return Indexer(self.backend, self.job_program(), book=self.book(), cache=self.index_path)


@contextlib.contextmanager
def _session(args: argparse.Namespace) -> Iterator[_Session]:
    mint_arg = _pubkey(args.mint, "--mint") if args.mint else None
    program_arg = _pubkey(args.program, "--program") if args.program else None
    caps = Path(args.capabilities) if args.capabilities else None
    if args.url is None:
        from pocv.market.jobprogram import JobProgram  # the program's client
        from pocv.market.ledger import DEFAULT_LEDGER, EmbeddedLedger  # LiteSVM, in this process

        with EmbeddedLedger(args.ledger or DEFAULT_LEDGER, token_program=args.token_program) as ledger:
            if mint_arg is not None and mint_arg != ledger.mint:
                raise InputError(f"--mint {mint_arg} is not the embedded ledger's mint {ledger.mint}")
            index = Path(args.index) if args.index else ledger.index_path
            program = JobProgram(program_arg) if program_arg is not None else ledger.program
            yield _Session(ledger.backend, ledger.mint, program, index, ledger, caps)
        return
    url = resolve_url(args.url)
    from pocv.market.jobprogram import JobProgram  # the program's client
    from pocv.market.rpc import RpcBackend  # solana-py's client

    if mint_arg is None and args._subcommand != "deploy":
        raise InputError("--mint is required with --url (the payment token's mint address)")
    be = RpcBackend(url)
    try:
        index = Path(args.index) if args.index else (
            Path(os.path.expanduser("~/.cache/pocv")) / f"market-{str(program_arg)[:12]}.sqlite")
        index.parent.mkdir(parents=True, exist_ok=True)
        yield _Session(be, mint_arg or _no_mint(), JobProgram(program_arg) if program_arg else None, index,
                       None, caps)
    finally:
        be.close()


def _no_mint() -> Pubkey:
    from solders.pubkey import Pubkey  # no mint: only pocv market deploy gets here

    return Pubkey.default()


def _pubkey(text: str, what: str) -> Pubkey:
    from solders.pubkey import Pubkey  # the chain's key type

    from pocv.errors import MalformedError  # a bad base58 key given on the command line
    from pocv.keys import PublicKey  # base58 with a clear message

    try:
        return Pubkey.from_bytes(bytes(PublicKey.from_string(text)))
    except MalformedError as e:
        raise InputError(f"{what} is not a base58 public key: {text[:60]!r}") from e


def _job_id(text: str, what: str = "job id") -> bytes:
    return parse_hash(text, what)


def _job(s: _Session, job_id: bytes) -> JobHistory:
    job = s.indexer().job(job_id)
    if job is None:
        raise InputError(f"job {job_id.hex()} is not posted on this chain (program {s.job_program().program_id})")
    return job


def _tx(o: Any) -> dict[str, Any]:
    return {"signature": str(o.signature), "ok": o.ok, "slot": o.slot, "fee": o.fee, "compute_units": o.compute_units,
            "error": o.error}


def _must_land(o: Any, what: str, program: JobProgram | None = None) -> None:
    if not o.ok:
        from pocv.errors import ChainError  # a transaction the chain refused
        from pocv.market.jobprogram import program_error  # the program's own error code, by name

        code = program_error(o.error)
        # the code is the job program's only when the job program itself failed with it (the last failure logged)
        failed = [line for line in o.logs if " failed: " in line]
        ours = (code is not None and program is not None and bool(failed)
                and failed[-1] == f"Program {program.program_id} failed: custom program error: 0x{int(code):x}")
        raise ChainError(f"{what} transaction {o.signature} failed: {o.error}"
                         + (f" (job program: {code.name})" if ours and code is not None else ""))


# -- commands -------------------------------------------------------------------------------------


def _cmd_offer(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv._fields import meta_hash  # the fingerprint's digest
    from pocv.market.market import Capabilities, publish_offer  # worker accounts
    from pocv.store import read_file  # regular files only, size-limited

    key = s.signer(args.keypair)
    if args.fingerprint:
        raw = read_file(args.fingerprint, limit=MAX_FINGERPRINT_BYTES, what="fingerprint")
        try:
            fp_meta = json.loads(raw)
        except ValueError as e:
            raise InputError(f"fingerprint {args.fingerprint!r} is not JSON: {e}") from e
        if not isinstance(fp_meta, dict):
            raise InputError("fingerprint JSON must be an object")
    else:
        fp_meta = {"device": args.device}
    caps = Capabilities(device_class=args.device,
                        kernels=tuple(k.strip() for k in args.kernels.split(",") if k.strip()))
    verifiers = tuple(_pubkey(v.strip(), "--verifiers") for v in args.verifiers.split(",") if v.strip())
    offer, o = publish_offer(s.backend, s.job_program(), key, mint=s.mint, price=args.price, min_bond=args.min_bond,
                             max_bond=args.max_bond if args.max_bond is not None else args.min_bond,
                             verifiers=verifiers, fingerprint=meta_hash(fp_meta), capabilities=caps,
                             active=not args.withdraw)
    _must_land(o, "OFFER", s.program)
    kept = s.remember(caps)
    return EXIT_OK, {"offer": offer.to_dict(), "capabilities_file": kept, "transaction": _tx(o)}


def _cmd_match(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv.market.market import JobRequest, match  # the matcher

    req = JobRequest(kernel=args.kernel, max_price=args.max_price, min_bond=args.min_bond, device_class=args.device,
                     verifier=_pubkey(args.verifier, "--verifier") if args.verifier else None)
    ix = s.indexer()
    offers, _ = ix.refresh()
    reps = ix.reputations()
    m = match(req, offers, reps, mint=s.mint)
    table = [{**o.to_dict(), "trust": reps[o.worker].trust if o.worker in reps else 0.5} for o in offers]
    if m is None:
        raise InputError(f"no offer qualifies ({len(offers)} worker accounts) for kernel {args.kernel}, "
                         f"max price {args.max_price}, min bond {args.min_bond}")
    return EXIT_OK, {"match": m.offer.to_dict(), "bond": m.bond, "score": m.score, "qualified": m.qualified,
                     "considered": m.considered, "offers": table}


def _cmd_post(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from blake3 import blake3  # the spec hash on chain

    from pocv.kernels import resolve_spec  # the kernel's version and defaults give the job id
    from pocv.market.escrow import Escrow  # the job program
    from pocv.market.market import JobRequest, match  # the matcher
    from pocv.store import load_spec  # refuses another kind of record

    spec = resolve_spec(load_spec(args.spec))
    key = s.signer(args.keypair)
    verifier = _pubkey(args.verifier, "--verifier")
    matched: dict[str, Any] | None = None
    if args.worker:
        worker = _pubkey(args.worker, "--worker")
        if args.price is None or args.bond is None:
            raise InputError("--price and --bond are required with --worker")
        price, bond = args.price, args.bond
    else:
        max_price = args.max_price if args.max_price is not None else args.price
        if max_price is None:
            raise InputError("give --worker (with --price and --bond), or --max-price for the matcher")
        ix = s.indexer()
        offers, _ = ix.refresh()
        m = match(JobRequest(kernel=spec.kernel_ref, max_price=max_price, min_bond=args.min_bond,
                             device_class=args.device, verifier=verifier), offers, ix.reputations(), mint=s.mint)
        if m is None:
            raise InputError(f"no offer qualifies for {spec.kernel_ref} at max price {max_price} with verifier "
                             f"{verifier} ({len(offers)} worker accounts)")
        worker, price, bond = m.offer.worker, m.offer.price, m.bond
        matched = {"score": m.score, "qualified": m.qualified, "considered": m.considered}
    if args.commit_window < 1 or args.verdict_window < 2:
        raise InputError("--commit-window must be at least 1 slot and --verdict-window at least 2")
    s.fund(verifier)
    s.fund(worker)
    escrow = Escrow(s.backend, s.job_program())
    terms = escrow.terms(job_id=spec.job_id, spec_hash=bytes(blake3(spec.canonical_json()).digest()),
                         consumer=key.pubkey(), worker=worker, verifier=verifier, mint=s.mint, price=price, bond=bond,
                         commit_window=args.commit_window, verdict_window=args.verdict_window)
    o = escrow.post(terms, key)
    _must_land(o, "POST", s.program)
    a = escrow.program.addresses(terms)
    return EXIT_OK, {"job_id": spec.job_id.hex(), "kernel": spec.kernel_ref, "worker": str(worker),
                     "verifier": str(verifier), "price": price, "bond": bond, "job": str(a.job),
                     "vault": str(a.vault), "commit_deadline": terms.commit_deadline,
                     "verdict_deadline": terms.verdict_deadline, "matched": matched, "transaction": _tx(o)}


def _beacon_dict(b: ChainBeacon | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"beacon": b.value.hex(), "slot": b.slot, "commit_slot": b.commit_slot, "source": b.source}


def _cmd_commit(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from solders.pubkey import Pubkey  # to name the commitment's signer

    from pocv.errors import MismatchError  # a commitment for another job or key
    from pocv.market.escrow import Escrow  # the job program
    from pocv.store import load_commitment  # refuses another kind of record; verifies the signature

    job_id = _job_id(args.job_id)
    key = s.signer(args.keypair)
    job = _job(s, job_id)
    if args.commitment:
        c = load_commitment(args.commitment)
        if c.job_id != job_id:
            raise MismatchError(f"commitment is for job {c.job_id.hex()}, not {job_id.hex()}")
        if c.worker != bytes(key.pubkey()):
            raise MismatchError(f"commitment is signed by {Pubkey.from_bytes(c.worker)}, but -k is {key.pubkey()}")
        root = c.root
    else:
        root = parse_hash(args.root, "--root")
    escrow = Escrow(s.backend, s.job_program())
    o = escrow.commit(job.terms, root, key)
    _must_land(o, "COMMIT", s.program)
    beacon = escrow.beacon(job.terms)
    return EXIT_OK, {"job_id": job_id.hex(), "root": root.hex(), "transaction": _tx(o),
                     "verdict_deadline": job.terms.verdict_deadline, "beacon": _beacon_dict(beacon)}


def _cmd_settle(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from solders.transaction import Transaction  # the pre-signed settlement

    from pocv.market.escrow import Escrow  # the job program
    from pocv.market.jobprogram import job_settlement  # how the program logged the end
    from pocv.store import load_verdict, read_file  # regular files only, size-limited

    job_id = _job_id(args.job_id)
    job = _job(s, job_id)
    escrow = Escrow(s.backend, s.job_program())
    out: dict[str, Any] = {"job_id": job_id.hex()}
    if args.submit:
        if args.out:
            raise InputError("-o writes a settlement to submit later; it does not go with --submit")
        raw = read_file(args.submit, limit=MAX_PARTIAL_BYTES, what="pre-signed settlement")
        try:
            doc = json.loads(raw)
            if doc.get("type") != "pocv-presigned-settlement" or doc.get("job_id") != job_id.hex():
                raise ValueError(f"not a pre-signed settlement of job {job_id.hex()}")
            tx = Transaction.from_bytes(base64.b64decode(doc["transaction"]))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{args.submit!r} is not a pocv pre-signed settlement: {e}") from e
        o = escrow.submit(tx)
        _must_land(o, "VERDICT", s.program)
        out["result"] = job_settlement(o.logs)
        out["transaction"] = _tx(o)
        return (EXIT_FAIL if out["result"] == "FAILED" else EXIT_OK), out
    target = output_target(args.out, "pre-signed settlement") if args.out else None
    key = s.signer(args.keypair)
    verdict = load_verdict(args.verdict)
    result = "PASS" if verdict.passed else "FAIL"
    out["result"] = result
    if args.out:
        tx = escrow.presign_verdict(job.terms, verdict, key)
        doc = {"type": "pocv-presigned-settlement", "job_id": job_id.hex(), "result": result,
               "signed_by": str(key.pubkey()), "nonce": str(tx.message.account_keys[1]),
               "transaction": base64.b64encode(bytes(tx)).decode()}
        emit_record(json.dumps(doc, indent=2), target)
        out["presigned"] = args.out
        out["next"] = f"pocv market settle {job_id.hex()} --submit {args.out}"
        return EXIT_OK, out
    o = escrow.verdict(job.terms, verdict, key)
    _must_land(o, "VERDICT", s.program)
    out["transaction"] = _tx(o)
    return (EXIT_FAIL if result == "FAIL" else EXIT_OK), out


def _cmd_claim(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv.market.escrow import Escrow  # the job program
    from pocv.market.jobprogram import job_settlement  # how the program logged the end

    job_id = _job_id(args.job_id)
    key = s.signer(args.keypair)
    job = _job(s, job_id)
    o = Escrow(s.backend, s.job_program()).claim(job.terms, key)
    _must_land(o, "CLAIM", s.program)
    return EXIT_OK, {"job_id": job_id.hex(), "result": job_settlement(o.logs), "transaction": _tx(o)}


def _cmd_status(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv.errors import ChainError  # no beacon yet is shown, not raised
    from pocv.market.escrow import chain_beacon  # the beacon after the commit

    job = _job(s, _job_id(args.job_id))
    d = job.to_dict()
    d["slot"] = s.backend.slot()
    if job.commit_slot is not None and not job.settled:
        try:
            d["beacon"] = _beacon_dict(chain_beacon(s.backend, job.commit_slot, timeout_s=0.0))
        except ChainError as e:
            d["beacon"] = {"error": str(e)}
    d["open"] = s.backend.get_account(job.job) is not None
    return (EXIT_FAIL if job.status == "FAILED" else EXIT_OK), d


def _cmd_history(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    ix = s.indexer()
    offers, jobs = ix.refresh()
    worker = _pubkey(args.worker, "--worker") if args.worker else None
    shown = [j for j in jobs if worker is None or j.terms.worker == worker]
    reps = ix.reputations()
    return EXIT_OK, {"mint": str(s.mint), "program": str(s.job_program().program_id),
                     "jobs": [j.to_dict() for j in shown],
                     "reputation": [r.to_dict() for r in reps.values() if worker is None or r.worker == worker],
                     "offers": [o.to_dict() for o in offers]}


def _cmd_deploy(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from solders.keypair import Keypair  # the program's address

    from pocv.market.jobprogram import deploy, program_elf  # the upgradeable loader
    from pocv.store import read_file  # regular files only, size-limited

    if s.ledger is not None:
        raise InputError(f"the embedded ledger has the job program at {s.ledger.program.program_id} already; "
                         f"pocv market deploy is for a cluster: give -u URL")
    key = s.signer(args.keypair)
    elf = read_file(args.so, limit=MAX_PROGRAM_FILE_BYTES, what="program") if args.so else program_elf()
    program = resolve_keypair(args.program_keypair, "program").to_solders() if args.program_keypair else Keypair()
    if s.backend.get_account(program.pubkey()) is not None:
        raise InputError(f"{program.pubkey()} is in use: give another --program-keypair")
    outs = deploy(s.backend, key, program, elf)
    return EXIT_OK, {"program": str(program.pubkey()), "authority": str(key.pubkey()), "bytes": len(elf),
                     "transactions": len(outs), "fees": sum(o.fee for o in outs),
                     "next": f"pass --program {program.pubkey()} to every pocv market command on this cluster"}


# -- output ---------------------------------------------------------------------------------------


def _text(cmd: str, d: dict[str, Any]) -> str:
    lines: list[str] = []
    if cmd == "history":
        lines.append(f"mint {d['mint']}: {len(d['jobs'])} jobs, {len(d['offers'])} offers")
        for j in d["jobs"]:
            lines.append(f"  {j['job_id'][:16]}…  {j['status']:<9} worker {j['worker'][:10]}…  price {j['price']}  "
                         f"bond {j['bond']}  paid to {j['paid']}")
        for r in d["reputation"]:
            lines.append(f"  worker {r['worker']}: PASS {r['passes']}  FAIL {r['fails']}  "
                         f"paid by CLAIM {r['expired']}  lapsed {r['lapsed']}  slashed {r['slashed']}  "
                         f"distinct consumers {r['distinct_consumers']}  "
                         f"trust {r['trust']:.3f}")
        return "\n".join(lines)
    if cmd == "status":
        lines.append(f"job {d['job_id']}: {d['status']}  (price {d['price']}, bond {d['bond']}; slot now {d['slot']})")
        lines.append(f"  consumer {d['consumer']}\n  worker   {d['worker']}\n  verifier {d['verifier']}")
        lines.append(f"  account  {d['job']} ({'open' if d['open'] else 'closed'}); commit by slot "
                     f"{d['commit_deadline']}, verdict by slot {d['verdict_deadline']}")
        if d.get("root"):
            lines.append(f"  root     {d['root']}")
        b = d.get("beacon")
        if b:
            lines.append(f"  beacon   {b.get('beacon', b.get('error'))}  ({b.get('source', '')})")
        for e in d["events"]:
            lines.append(f"  {e['kind']:<7} slot {e['slot']}  {e['signature'][:20]}…  {e['detail']}")
        return "\n".join(lines)
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"{k}:")
            lines.extend(f"  {k2}: {v2}" for k2, v2 in v.items())
        elif isinstance(v, list):
            lines.append(f"{k}: {len(v)}")
            lines.extend(f"  {json.dumps(x)}" for x in v)
        else:
            lines.append(f"{k}: {v}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    """Handler of every pocv market subcommand: errors propagate to the one exit-code table."""
    cmd: str = args._subcommand
    with _session(args) as s:
        code, doc = args._market(args, s)
        notes = list(s.notes)
    for n in notes:
        note(f"pocv market {cmd}: {n}")
    if args.output == "json":
        write_stdout(json.dumps({"command": f"market {cmd}", **doc}, indent=2, sort_keys=True, default=str))
    else:
        write_stdout(_text(cmd, doc))
    code_: int = code
    return code_


__all__ = ["add_market_parser"]
