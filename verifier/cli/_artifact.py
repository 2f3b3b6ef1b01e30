"""pocv artifact: the local content-addressed artifact store (docs/kernels.md §3, pocv.artifacts).

    pocv artifact add PATH            store a file or directory, print its reference blake3:<64 hex>
    pocv artifact hash PATH           print the reference without storing anything
    pocv artifact list                what the store holds (reference, file or directory, bytes)
    pocv artifact verify [REF ...]    re-hash stored artifacts (all without REF); exit 3 naming a bad one

A job names its artifacts (data sets, weights, tokenizers, calibration records) by these
references; worker and verifier resolve them in their own store (--artifacts DIR, else
$POCV_ARTIFACTS, else under the user's cache directory) and check the hash before any use.

The text output of add and hash is the reference alone, so REF=$(pocv artifact add PATH) works.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path
from typing import Any

from pocv.cli._common import (
    EXIT_OK,
    REPORT,
    HelpFormatter,
    add_artifacts_option,
    add_output_option,
    add_verbosity,
    artifact_store,
    note,
    wrap,
    write_stdout,
)
from pocv.errors import ArtifactError

__all__ = ["add_artifact_parser"]


def _size(path: Path) -> tuple[str, int]:
    """("file" | "directory", bytes) of a stored artifact, without hashing it."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        total = 0
        for dirpath, _dirs, files in os.walk(path, followlinks=False):
            for f in files:
                total += os.lstat(os.path.join(dirpath, f)).st_size
        return "directory", total
    return "file", st.st_size


def _cmd_add(args: argparse.Namespace) -> int:
    store = artifact_store(args)
    ref = store.add(args.path)
    kind, size = _size(store.location(ref))
    if args.output == "json":
        write_stdout(json.dumps({"ref": ref, "path": args.path, "kind": kind, "bytes": size,
                                 "store": str(store.root)}, indent=2))
    else:
        write_stdout(ref)
        note(f"pocv artifact add: {args.path} ({kind}, {size} bytes) is {ref} in {store.root}")
    return EXIT_OK


def _cmd_hash(args: argparse.Namespace) -> int:
    from pocv.artifacts import hash_path  # blake3 over the file or the directory's manifest

    ref = hash_path(args.path)
    if args.output == "json":
        write_stdout(json.dumps({"ref": ref, "path": args.path}, indent=2))
    else:
        write_stdout(ref)
    return EXIT_OK


def _listing(store: Any) -> list[dict[str, Any]]:
    rows = []
    for ref in store.refs():
        kind, size = _size(store.location(ref))
        rows.append({"ref": ref, "kind": kind, "bytes": size})
    return rows


def _cmd_list(args: argparse.Namespace) -> int:
    store = artifact_store(args)
    rows = _listing(store)
    if args.output == "json":
        write_stdout(json.dumps({"store": str(store.root), "artifacts": rows}, indent=2))
    elif rows:
        write_stdout("\n".join(f"{r['ref']}  {r['kind']:<9} {r['bytes']:>12,} bytes" for r in rows))
    else:
        note(f"pocv artifact list: the store {str(store.root)!r} holds no artifact")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    store = artifact_store(args)
    refs = list(args.refs) or store.refs()
    rows: list[dict[str, str]] = []
    bad: list[ArtifactError] = []
    for ref in refs:
        try:
            store.path(ref)  # recomputes the hash (InputError for a malformed reference: exit 3 at once)
            rows.append({"ref": ref, "status": "ok"})
        except ArtifactError as e:
            bad.append(e)
            rows.append({"ref": ref, "status": "missing" if ref not in store else "altered", "error": str(e)})
    if args.output == "json":
        write_stdout(json.dumps({"store": str(store.root), "artifacts": rows}, indent=2))
    else:
        if rows:
            write_stdout("\n".join(f"{r['status']:<8} {r['ref']}" for r in rows))
        else:
            note(f"pocv artifact verify: the store {str(store.root)!r} holds no artifact")
    if bad:
        more = f" ({len(bad) - 1} more listed above)" if len(bad) > 1 else ""
        raise ArtifactError(f"{bad[0]}{more}")
    return EXIT_OK


def _sub(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=wrap(description),
                                                formatter_class=HelpFormatter)
    add_output_option(p, REPORT)
    add_verbosity(p)
    return p


def add_artifact_parser(subparsers: Any) -> None:
    """Register pocv artifact and its subcommands."""
    p = subparsers.add_parser(
        "artifact", help="the local artifact store: add, hash, list, verify",
        formatter_class=HelpFormatter,
        description=wrap("Model weights, data sets, tokenizers and calibration records are referenced from a job "
                         "spec by their BLAKE3 content hash, blake3:<64 hex> (a file: BLAKE3 of its bytes, as b3sum "
                         "prints it; a directory: a hash of its sorted listing of file hashes). Worker and verifier "
                         "each resolve the references in their own store and check the hash before any use.")
        + "\n\n" + (__doc__ or "").split("\n\n", 1)[1])
    p.set_defaults(_group_parser=p)
    sub = p.add_subparsers(dest="_subcommand", metavar="SUBCOMMAND")

    s = _sub(sub, "add", "store a file or directory; print its reference",
             "Copy the file or directory PATH into the artifact store (a no-op when it is there already) and "
             "print its reference blake3:<64 hex>, which a job spec names (pocv job --param NAME=REF). Symbolic "
             "links and special files inside a directory are refused.")
    s.add_argument("path", metavar="PATH", help="the file or directory to store")
    add_artifacts_option(s)
    s.set_defaults(_handler=_cmd_add)

    s = _sub(sub, "hash", "print the reference of a file or directory (nothing is stored)",
             "Print the reference blake3:<64 hex> of PATH, as pocv artifact add would store it, without "
             "storing anything.")
    s.add_argument("path", metavar="PATH", help="the file or directory to hash")
    s.set_defaults(_handler=_cmd_hash)

    s = _sub(sub, "list", "list what the artifact store holds",
             "List every artifact in the store: its reference, whether it is a file or a directory, and its "
             "size in bytes. Nothing is hashed (pocv artifact verify does that).")
    add_artifacts_option(s)
    s.set_defaults(_handler=_cmd_list)

    s = _sub(sub, "verify", "re-hash stored artifacts; exit 3 naming a missing or altered one",
             "Recompute the hash of each REF in the store (every stored artifact without REF) and report ok, "
             "missing or altered per reference. Exit 0 when all are intact, 3 otherwise (the error names the "
             "hash).")
    s.add_argument("refs", metavar="REF", nargs="*", help="artifact references blake3:<64 hex> (default: all)")
    add_artifacts_option(s)
    s.set_defaults(_handler=_cmd_verify)
