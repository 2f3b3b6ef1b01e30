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
import time
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
from pocv.limits import DEFAULT_CONFIDENCE

if TYPE_CHECKING:  # typing only: solders and the backends load on use
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

    from pocv.market.backend import Backend
    from pocv.market.escrow import ChainBeacon
    from pocv.market.indexer import Indexer, JobHistory

DEFAULT_DEADLINE_S: Final = 3_600
MAX_PARTIAL_BYTES: Final = 64 * 1024
MAX_FINGERPRINT_BYTES: Final = 64 * 1024
SUBCOMMANDS: Final = ("offer", "post", "match", "commit", "settle", "status", "history")

DESCRIPTION: Final = """\
Offers, jobs, matching, commits, settlement, status and history on Solana.

Backends, as in the Solana CLI: -u/--url takes a JSON-RPC URL or a moniker (l or localhost, d or
devnet, t or testnet, m or mainnet-beta; -ul, -ud, -ut, -um work). Without -u the embedded LiteSVM
chain kept in --ledger (default ./.pocv-ledger) is used, with a sandbox mint and a faucet that
funds new keys; pocv market never talks to a cluster unless -u is given (the json_rpc_url of the
Solana CLI config is not used implicitly). -k/--keypair defaults to keypair_path in
~/.config/solana/cli/config.yml, else ~/.config/solana/id.json. Job ids, roots and public keys are
accepted as hex or base58.

Exit codes as for every pocv command: 0 done (PASS, TIMEOUT, or no verdict involved), 1 a FAIL
verdict settled or found, 2 usage, 3 bad or missing input (including an escrow that fails its
checks), 4 chain or network error, 70 a bug."""


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
        "market", help="Solana marketplace and escrow: offer, post, match, commit, settle, status, history",
        description=DESCRIPTION, formatter_class=HelpFormatter)
    market.set_defaults(_group_parser=market)
    sub = market.add_subparsers(dest="_subcommand", metavar="{" + ",".join(SUBCOMMANDS) + "}")

    p = _sub(sub, "offer", "publish a worker's offer (device, price, bond, kernels)")
    p.add_argument("--price", type=int, required=True, help="price per job, token base units")
    p.add_argument("--bond", type=int, required=True, help="bond the worker puts up per job")
    p.add_argument("--kernels", required=True, help="comma-separated kernel names, e.g. gemm-int8,mlp-sgd")
    p.add_argument("--device", default="cpu", help="device class, e.g. cpu, h100 (default cpu)")
    p.add_argument("--fingerprint", default=None, metavar="FILE",
                   help="device fingerprint JSON file (its digest goes on chain)")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_offer)

    p = _sub(sub, "post", "post a job: create the escrow and deposit the price (the consumer)")
    p.add_argument("spec", metavar="SPEC", help="job spec JSON file")
    p.add_argument("--verifier", required=True, help="the verifier's public key (base58)")
    p.add_argument("--worker", default=None, help="worker public key; without it the matcher picks one")
    p.add_argument("--price", type=int, default=None, help="price (with --worker; else the matched offer's)")
    p.add_argument("--bond", type=int, default=None, help="bond (with --worker; else the matched offer's)")
    p.add_argument("--max-price", type=int, default=None, help="highest acceptable price when matching")
    p.add_argument("--min-bond", type=int, default=0, help="lowest acceptable bond when matching (default 0)")
    p.add_argument("--device", default=None, help="required device class when matching")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help=f"detection probability wanted from the verifier (recorded on chain; "
                        f"default {DEFAULT_CONFIDENCE})")
    p.add_argument("--deadline", type=int, default=DEFAULT_DEADLINE_S, help="seconds from now (default 3600)")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_post)

    p = _sub(sub, "match", "pick the cheapest qualified worker, weighted by verdict history")
    p.add_argument("--kernel", required=True, help="kernel name or name@version")
    p.add_argument("--max-price", type=int, required=True, help="highest acceptable price")
    p.add_argument("--min-bond", type=int, default=0, help="lowest acceptable bond (default 0)")
    p.add_argument("--device", default=None, help="required device class (default any)")
    _common(p, keypair=False)
    p.set_defaults(_handler=_run, _market=_cmd_match)

    p = _sub(sub, "commit", "bond and commit the Merkle root (the worker; checks the escrow first)")
    p.add_argument("job_id", metavar="JOB_ID", help="job id (64 hex digits or base58)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--commitment", metavar="FILE", help="the signed commitment JSON (pocv run)")
    g.add_argument("--root", help="the root, 64 hex digits or base58")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_commit)

    p = _sub(sub, "settle", "settle a job: verdict (verifier + beneficiary) or timeout (consumer + worker)",
             "Full: -k VERIFIER --cosigner BENEFICIARY. Two steps: -k VERIFIER -o FILE (durable nonce), then "
             "--cosign FILE -k BENEFICIARY, who rebuilds the expected transaction and compares bytes before "
             "signing. --timeout: -k CONSUMER with the worker as co-signer.")
    p.add_argument("job_id", metavar="JOB_ID", help="job id (64 hex digits or base58)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--verdict", metavar="FILE", help="the signed verdict JSON (pocv verify)")
    g.add_argument("--timeout", action="store_true", help="no verdict: consumer and worker settle")
    g2 = p.add_mutually_exclusive_group()
    g2.add_argument("--cosigner", metavar="FILE", help="second signer's keypair file: sign both and submit")
    g2.add_argument("-o", "--out", metavar="FILE",
                    help="write the partially signed settlement to FILE atomically (first signer; a symlink is "
                         "followed to its target; - is stdout)")
    g2.add_argument("--cosign", metavar="FILE",
                    help="a partially signed settlement to check, sign and submit (second signer)")
    _common(p)
    p.set_defaults(_handler=_run, _market=_cmd_settle)

    p = _sub(sub, "status", "one job's escrow, events, and beacon, from the chain")
    p.add_argument("job_id", metavar="JOB_ID", help="job id (64 hex digits or base58)")
    _common(p, keypair=False)
    p.set_defaults(_handler=_run, _market=_cmd_status)

    p = _sub(sub, "history", "every job and each worker's reputation, rebuilt from the chain")
    p.add_argument("--worker", default=None, help="only this worker's jobs (base58 public key)")
    _common(p, keypair=False)
    p.set_defaults(_handler=_run, _market=_cmd_history)


# -- session ----------------------------------------------------------------------------------------


@dataclass
class _Session:
    backend: Backend
    mint: Pubkey
    index_path: Path | None
    ledger: Any  # EmbeddedLedger | None
    notes: list[str] = field(default_factory=list)

    def signer(self, path: str | None) -> Keypair:
        key = resolve_keypair(path, "signer").to_solders()
        self.fund(key.pubkey())
        return key

    def fund(self, pk: Pubkey) -> None:
        if self.ledger is not None and self.ledger.ensure_funded(pk):
            self.notes.append(f"sandbox faucet funded {pk} (embedded chain)")

    def indexer(self) -> Indexer:
        from pocv.market.indexer import Indexer  # the chain's history

        return Indexer(self.backend, self.mint, cache=self.index_path)


@contextlib.contextmanager
def _session(args: argparse.Namespace) -> Iterator[_Session]:
    mint_arg = _pubkey(args.mint, "--mint") if args.mint else None
    if args.url is None:
        from pocv.market.ledger import DEFAULT_LEDGER, EmbeddedLedger  # LiteSVM, in this process

        with EmbeddedLedger(args.ledger or DEFAULT_LEDGER, token_program=args.token_program) as ledger:
            if mint_arg is not None and mint_arg != ledger.mint:
                raise InputError(f"--mint {mint_arg} is not the embedded ledger's mint {ledger.mint}")
            index = Path(args.index) if args.index else ledger.index_path
            yield _Session(ledger.backend, ledger.mint, index, ledger)
        return
    url = resolve_url(args.url)
    from pocv.market.rpc import RpcBackend  # solana-py's client

    if mint_arg is None:
        raise InputError("--mint is required with --url (the payment token's mint address)")
    be = RpcBackend(url)
    try:
        index = Path(args.index) if args.index else (
            Path(os.path.expanduser("~/.cache/pocv")) / f"market-{str(mint_arg)[:12]}.sqlite")
        index.parent.mkdir(parents=True, exist_ok=True)
        yield _Session(be, mint_arg, index, None)
    finally:
        be.close()


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
        raise InputError(f"job {job_id.hex()} is not posted on this chain (mint {s.mint})")
    return job


def _tx(o: Any) -> dict[str, Any]:
    return {"signature": str(o.signature), "ok": o.ok, "slot": o.slot, "fee": o.fee, "compute_units": o.compute_units,
            "error": o.error}


def _must_land(o: Any, what: str) -> None:
    if not o.ok:
        from pocv.errors import ChainError  # a transaction the chain refused

        raise ChainError(f"{what} transaction {o.signature} failed: {o.error}")


# -- commands -------------------------------------------------------------------------------------


def _cmd_offer(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv._fields import meta_hash  # the fingerprint's digest
    from pocv.market.market import Offer, publish_offer  # the offer board
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
    offer = Offer(worker=key.pubkey(), device_class=args.device, fingerprint=meta_hash(fp_meta), price=args.price,
                  bond=args.bond, kernels=tuple(k.strip() for k in args.kernels.split(",") if k.strip()))
    o = publish_offer(s.backend, offer, key, s.mint)
    _must_land(o, "offer")
    return EXIT_OK, {"offer": offer.to_dict(), "transaction": _tx(o)}


def _cmd_match(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv.market.indexer import reputations  # trust from verdict history
    from pocv.market.market import JobRequest, match  # the matcher

    req = JobRequest(kernel=args.kernel, max_price=args.max_price, min_bond=args.min_bond,
                     device_class=args.device)
    offers, jobs = s.indexer().refresh()
    reps = reputations(jobs)
    m = match(req, offers, reps)
    table = [{**o.to_dict(), "trust": reps[o.worker].trust if o.worker in reps else 0.5} for o in offers]
    if m is None:
        raise InputError(f"no offer qualifies ({len(offers)} offers on the board) for kernel {args.kernel}, "
                         f"max price {args.max_price}, min bond {args.min_bond}")
    return EXIT_OK, {"match": m.offer.to_dict(), "score": m.score, "qualified": m.qualified,
                     "considered": m.considered, "offers": table}


def _cmd_post(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from blake3 import blake3  # the spec hash on chain

    from pocv.kernels import resolve_spec  # the kernel's version and defaults give the job id
    from pocv.market.escrow import Escrow, EscrowAddresses, JobTerms  # the escrow program
    from pocv.market.indexer import reputations  # trust from verdict history
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
        offers, jobs = s.indexer().refresh()
        m = match(JobRequest(kernel=spec.kernel_ref, max_price=max_price, min_bond=args.min_bond,
                             device_class=args.device, confidence=args.confidence), offers, reputations(jobs))
        if m is None:
            raise InputError(f"no offer qualifies for {spec.kernel_ref} at max price {max_price} "
                             f"({len(offers)} offers on the board)")
        worker, price, bond = m.offer.worker, m.offer.price, m.offer.bond
        matched = {"score": m.score, "qualified": m.qualified, "considered": m.considered}
    s.fund(verifier)
    s.fund(worker)
    terms = JobTerms(job_id=spec.job_id, spec_hash=bytes(blake3(spec.canonical_json()).digest()),
                     kernel=spec.kernel_ref, mint=s.mint, consumer=key.pubkey(), worker=worker, verifier=verifier,
                     price=price, bond=bond, deadline=int(time.time()) + args.deadline,
                     device_class=args.device or "any", confidence_ppm=round(args.confidence * 1_000_000))
    o = Escrow(s.backend).post(terms, key)
    _must_land(o, "POST")
    a = EscrowAddresses.derive(terms)
    return EXIT_OK, {"job_id": spec.job_id.hex(), "kernel": spec.kernel_ref, "worker": str(worker),
                     "verifier": str(verifier), "price": price, "bond": bond, "vault": str(a.vault),
                     "multisig": str(a.multisig), "matched": matched, "transaction": _tx(o)}


def _beacon_dict(b: ChainBeacon | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"beacon": b.value.hex(), "slot": b.slot, "commit_slot": b.commit_slot, "source": b.source}


def _cmd_commit(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from solders.pubkey import Pubkey  # to name the commitment's signer

    from pocv.errors import MismatchError  # a commitment for another job or key
    from pocv.market.escrow import Escrow, chain_beacon, find_commit  # the escrow program
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
    o = Escrow(s.backend).commit(job.terms, root, key)
    _must_land(o, "COMMIT")
    committed = find_commit(s.backend, job.terms)
    beacon = chain_beacon(s.backend, committed) if committed is not None else None
    return EXIT_OK, {"job_id": job_id.hex(), "root": root.hex(), "transaction": _tx(o),
                     "beacon": _beacon_dict(beacon)}


def _cmd_settle(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from solders.transaction import Transaction  # the partially signed settlement

    from pocv.market.escrow import Escrow, create_nonce, find_commit  # the escrow program
    from pocv.store import load_verdict, read_file  # regular files only, size-limited

    job_id = _job_id(args.job_id)
    target = output_target(args.out, "partial settlement") if args.out else None
    key = s.signer(args.keypair)
    job = _job(s, job_id)
    terms = job.terms
    escrow = Escrow(s.backend)
    verdict = load_verdict(args.verdict) if args.verdict else None
    committed = find_commit(s.backend, terms)
    root = committed.root if committed is not None else b""
    result = "TIMEOUT" if verdict is None else ("PASS" if verdict.passed else "FAIL")
    out: dict[str, Any] = {"job_id": job_id.hex(), "result": result}
    if args.cosign:
        raw = read_file(args.cosign, limit=MAX_PARTIAL_BYTES, what="partial settlement")
        try:
            doc = json.loads(raw)
            tx = Transaction.from_bytes(base64.b64decode(doc["transaction"]))
            nonce = _pubkey(doc["nonce"], "nonce") if doc.get("nonce") else None
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{args.cosign!r} is not a pocv partial settlement: {e}") from e
        signed = escrow.cosign_settlement(tx, terms, root=root, verdict=verdict, key=key, nonce_account=nonce)
        o = escrow.submit(signed)
        _must_land(o, "SETTLE")
        out["transaction"] = _tx(o)
    else:
        nonce = create_nonce(s.backend, key) if args.out else None
        tx = escrow.start_settlement(terms, root=root, verdict=verdict, key=key, nonce_account=nonce)
        if args.out:
            doc = {"type": "pocv-partial-settlement", "job_id": job_id.hex(), "result": result,
                   "nonce": str(nonce), "signed_by": str(key.pubkey()),
                   "transaction": base64.b64encode(bytes(tx)).decode()}
            emit_record(json.dumps(doc, indent=2), target)
            out["partial"] = args.out
            out["next"] = f"pocv market settle {job_id.hex()} --cosign {args.out} -k <co-signer keypair>" + (
                f" --verdict {args.verdict}" if args.verdict else " --timeout")
            return EXIT_OK, out
        if not args.cosigner:
            raise InputError("give --cosigner KEYPAIR (sign both here) or -o FILE (hand it to the co-signer)")
        co = s.signer(args.cosigner)
        signed = escrow.cosign_settlement(tx, terms, root=root, verdict=verdict, key=co)
        o = escrow.submit(signed)
        _must_land(o, "SETTLE")
        out["transaction"] = _tx(o)
    return (EXIT_FAIL if result == "FAIL" else EXIT_OK), out


def _cmd_status(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv.errors import ChainError  # no beacon yet is shown, not raised
    from pocv.market.escrow import EscrowAddresses, chain_beacon, find_commit  # the escrow program

    job = _job(s, _job_id(args.job_id))
    d = job.to_dict()
    committed = find_commit(s.backend, job.terms)
    if committed is not None:
        try:
            d["beacon"] = _beacon_dict(chain_beacon(s.backend, committed, timeout_s=0.0))
        except ChainError as e:
            d["beacon"] = {"error": str(e)}
    vault = s.backend.get_account(EscrowAddresses.derive(job.terms).vault)
    d["vault_open"] = vault is not None
    return (EXIT_FAIL if job.status == "FAIL" else EXIT_OK), d


def _cmd_history(args: argparse.Namespace, s: _Session) -> tuple[int, dict[str, Any]]:
    from pocv.market.indexer import reputations  # trust from verdict history

    offers, jobs = s.indexer().refresh()
    worker = _pubkey(args.worker, "--worker") if args.worker else None
    shown = [j for j in jobs if worker is None or j.terms.worker == worker]
    reps = reputations(jobs)
    return EXIT_OK, {"mint": str(s.mint), "jobs": [j.to_dict() for j in shown],
                     "reputation": [r.to_dict() for r in reps.values() if worker is None or r.worker == worker],
                     "offers": [o.to_dict() for o in offers]}


# -- output ---------------------------------------------------------------------------------------


def _text(cmd: str, d: dict[str, Any]) -> str:
    lines: list[str] = []
    if cmd == "history":
        lines.append(f"mint {d['mint']}: {len(d['jobs'])} jobs, {len(d['offers'])} offers")
        for j in d["jobs"]:
            lines.append(f"  {j['job_id'][:16]}…  {j['status']:<9} worker {j['worker'][:10]}…  price {j['price']}  "
                         f"bond {j['bond']}  paid {j['paid']}" + (f"  anomalies {len(j['anomalies'])}"
                                                                  if j["anomalies"] else ""))
        for r in d["reputation"]:
            lines.append(f"  worker {r['worker']}: PASS {r['passes']}  FAIL {r['fails']}  TIMEOUT {r['timeouts']}  "
                         f"slashed {r['slashed']}  trust {r['trust']:.3f}")
        return "\n".join(lines)
    if cmd == "status":
        lines.append(f"job {d['job_id']}: {d['status']}  ({d['kernel']}, price {d['price']}, bond {d['bond']})")
        lines.append(f"  consumer {d['consumer']}\n  worker   {d['worker']}\n  verifier {d['verifier']}")
        lines.append(f"  vault    {d['vault']} ({'open' if d['vault_open'] else 'closed'})")
        if d.get("root"):
            lines.append(f"  root     {d['root']}")
        b = d.get("beacon")
        if b:
            lines.append(f"  beacon   {b.get('beacon', b.get('error'))}  ({b.get('source', '')})")
        for e in d["events"]:
            lines.append(f"  {e['kind']:<7} slot {e['slot']}  {e['signature'][:20]}…  {e['detail']}")
        for a in d["anomalies"]:
            lines.append(f"  ignored: {a}")
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
