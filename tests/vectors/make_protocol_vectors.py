"""Regenerate tests/vectors/protocol.json: `python tests/vectors/make_protocol_vectors.py`.

Pinned protocol bytes: the exact bytes every signed record signs (``signing_bytes``) and its
ed25519 signature, job ids, challenge indices, sample sizes and one complete response bundle,
all from the fixed inputs in ``protocol_inputs.py`` (fixed key seeds, roots, beacons and
metadata; no randomness, no clock, no machine metadata). ``tests/test_protocol_vectors.py``
recomputes every vector with the current code and fails, naming the vector, when any byte
drifts: a worker, verifier or referee built from another version would then no longer agree
on what was signed.

Any deliberate format change bumps the format version and regenerates these vectors together:
bump the version in the domain/context string or the format constant that changed (they are
stored in the file's "constants"), then run this script and commit both. Never regenerate to
make a failing test pass without such a bump.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from blake3 import blake3
from solders.pubkey import Pubkey

sys.path.insert(0, str(Path(__file__).parent))
import protocol_inputs as inp

from pocv.challenge import challenge_seed, derive_indices, sample_size

PATH = Path(__file__).with_name("protocol.json")


def _signed(record: Any, signer_field: str) -> dict[str, Any]:
    return {
        "signer": str(Pubkey.from_bytes(getattr(record, signer_field))),
        "signing_bytes": record.signing_bytes().hex(),
        "signature": record.signature.hex(),
        "record": record.to_dict(),
    }


def build() -> dict[str, Any]:
    out: dict[str, Any] = {
        "about": "pinned protocol bytes; regenerate only with a format version bump: "
                 "python tests/vectors/make_protocol_vectors.py",
        "constants": {f"{m}.{n}": inp.constant(m, n) for m, n in inp.CONSTANTS},
        "keys": {name: {"seed_byte": seed, "pubkey": str(inp.key(name).pubkey())}
                 for name, seed in inp.KEY_SEEDS.items()},
    }
    out["job_ids"] = {}
    for name, d in inp.SPECS.items():
        s = inp.spec(name)
        out["job_ids"][name] = {"spec": d, "canonical_json": s.canonical_json().decode(), "job_id": s.job_id.hex()}
    out["challenge_indices"] = {}
    for name, (spec_name, root, beacon, n, k) in inp.INDICES.items():
        job_id = inp.spec(spec_name).job_id
        out["challenge_indices"][name] = {
            "job_id": job_id.hex(), "root": root.hex(), "beacon": beacon.hex(), "n": n, "k": k,
            "seed": challenge_seed(job_id, root, beacon).hex(),
            "indices": list(derive_indices(job_id, root, beacon, n, k)),
        }
    out["sample_sizes"] = {name: {"confidence": p, "cheat_fraction": f, "k": sample_size(p, f)}
                           for name, (p, f) in inp.SAMPLE_SIZES.items()}
    out["signed"] = {family: {name: _signed(r, inp.SIGNER_FIELD[family]) for name, r in records.items()}
                     for family, records in inp.signed_records().items()}
    run = inp.bundle_run()
    data = run["response"].to_bytes()
    out["bundle"] = {
        "spec": inp.SPECS[inp.BUNDLE_SPEC],
        "root": run["root"].hex(),
        "commitment": _signed(run["commitment"], "worker"),
        "challenge": _signed(run["challenge"], "verifier"),
        "verdict": _signed(run["verdict"], "verifier"),
        "opened_leaves": run["response"].opened(),
        "whole_leaves": sorted(run["response"].states),
        "bundle_size": len(data),
        "bundle_blake3": blake3(data).hexdigest(),
        "bundle": data.hex(),
    }
    return out


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    text = render()
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH} ({len(text.encode())} bytes)")


if __name__ == "__main__":
    main()
