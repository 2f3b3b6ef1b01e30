"""Pinned protocol bytes: every vector in tests/vectors/protocol.json, recomputed by the current code.

The fixed inputs live in tests/vectors/protocol_inputs.py (shared with the generator,
make_protocol_vectors.py, which this test does not import). A failure names the vector family,
the vector and the field that drifted. Any deliberate format change bumps the format version and
regenerates these vectors together: ``python tests/vectors/make_protocol_vectors.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from solders.pubkey import Pubkey
from solders.signature import Signature

from pocv.bundle import Expected, Response, whole_leaves
from pocv.challenge import challenge_seed, derive_indices, sample_size
from pocv.check import Verifier
from pocv.dispute import DisputeOutcome
from pocv.records import Challenge, Commitment, Verdict

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
import protocol_inputs as inp  # noqa: E402

REGEN = "python tests/vectors/make_protocol_vectors.py"
FILE: dict[str, Any] = json.loads((VECTORS / "protocol.json").read_text(encoding="utf-8"))
PARSERS: dict[str, Any] = {"commitment": Commitment, "challenge": Challenge, "verdict": Verdict,
                           "dispute_outcome": DisputeOutcome, "equivocation_verdict": Verdict}


def _drift(family: str, name: str, what: str) -> str:
    return (f"{family} vector {name!r}: {what} drifted from tests/vectors/protocol.json. A deliberate format "
            f"change bumps the format version and regenerates the vectors together ({REGEN}).")


def _first_difference(a: str, b: str) -> str:
    """Where two hex strings first differ, in bytes."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at byte {n // 2} (lengths {len(a) // 2} and {len(b) // 2} bytes)"


def _check_signed(family: str, name: str, record: Any, stored: dict[str, Any], signer_field: str) -> None:
    sb = record.signing_bytes().hex()
    assert sb == stored["signing_bytes"], (
        _drift(family, name, "signing_bytes") + " " + _first_difference(sb, stored["signing_bytes"]))
    assert record.signature.hex() == stored["signature"], _drift(family, name, "signature")
    assert str(Pubkey.from_bytes(getattr(record, signer_field))) == stored["signer"], _drift(family, name, "signer")
    assert record.to_dict() == stored["record"], _drift(family, name, "JSON record (to_dict)")


def _signed_cases() -> list[Any]:
    return [pytest.param(family, name, id=f"{family}/{name}")
            for family, records in FILE["signed"].items() for name in records]


# -- the file covers exactly the inputs --------------------------------------------------------


def test_vector_sets_match_the_inputs() -> None:
    """An input added (or removed) without regenerating the file is caught here."""
    assert set(FILE["constants"]) == {f"{m}.{n}" for m, n in inp.CONSTANTS}
    assert set(FILE["keys"]) == set(inp.KEY_SEEDS)
    assert set(FILE["job_ids"]) == set(inp.SPECS)
    assert set(FILE["challenge_indices"]) == set(inp.INDICES)
    assert set(FILE["sample_sizes"]) == set(inp.SAMPLE_SIZES)
    records = inp.signed_records()
    assert set(FILE["signed"]) == set(records)
    for family, recs in records.items():
        assert set(FILE["signed"][family]) == set(recs), f"{family} vectors differ from the inputs; run {REGEN}"


# -- declared versions, domains, contexts ------------------------------------------------------


@pytest.mark.parametrize("qualname", list(FILE["constants"]))
def test_constants(qualname: str) -> None:
    module, name = qualname.rsplit(".", 1)
    assert inp.constant(module, name) == FILE["constants"][qualname], _drift("constant", qualname, "value")


@pytest.mark.parametrize("name", list(FILE["keys"]))
def test_keys(name: str) -> None:
    stored = FILE["keys"][name]
    assert stored["seed_byte"] == inp.KEY_SEEDS[name]
    assert str(inp.key(name).pubkey()) == stored["pubkey"], _drift("key", name, "public key from seed")


# -- job ids, challenge derivation, sample sizes -----------------------------------------------


@pytest.mark.parametrize("name", list(FILE["job_ids"]))
def test_job_ids(name: str) -> None:
    stored = FILE["job_ids"][name]
    assert stored["spec"] == inp.SPECS[name], _drift("job id", name, "input spec")
    spec = inp.spec(name)
    assert spec.canonical_json().decode() == stored["canonical_json"], _drift("job id", name, "canonical JSON")
    assert spec.job_id.hex() == stored["job_id"], _drift("job id", name, "job_id")


@pytest.mark.parametrize("name", list(FILE["challenge_indices"]))
def test_challenge_indices(name: str) -> None:
    stored = FILE["challenge_indices"][name]
    spec_name, root, beacon, n, k = inp.INDICES[name]
    job_id = inp.spec(spec_name).job_id
    assert (job_id.hex(), root.hex(), beacon.hex(), n, k) == (
        stored["job_id"], stored["root"], stored["beacon"], stored["n"], stored["k"]), _drift(
        "challenge indices", name, "inputs (job id, root, beacon, n, k)")
    assert challenge_seed(job_id, root, beacon).hex() == stored["seed"], _drift("challenge indices", name, "seed")
    indices = derive_indices(job_id, root, beacon, n, k)
    assert list(indices) == stored["indices"], _drift("challenge indices", name, "indices")
    assert len(indices) == min(n, k) and list(indices) == sorted(set(indices))


@pytest.mark.parametrize("name", list(FILE["sample_sizes"]))
def test_sample_sizes(name: str) -> None:
    stored = FILE["sample_sizes"][name]
    p, f = inp.SAMPLE_SIZES[name]
    assert (p, f) == (stored["confidence"], stored["cheat_fraction"])
    assert sample_size(p, f) == stored["k"], _drift("sample size", name, "k")


# -- signed records ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records() -> dict[str, dict[str, Any]]:
    return inp.signed_records()


@pytest.mark.parametrize(("family", "name"), _signed_cases())
def test_signed_records(records: dict[str, dict[str, Any]], family: str, name: str) -> None:
    _check_signed(family, name, records[family][name], FILE["signed"][family][name], inp.SIGNER_FIELD[family])


@pytest.mark.parametrize(("family", "name"), _signed_cases())
def test_recorded_signatures_verify(records: dict[str, dict[str, Any]], family: str, name: str) -> None:
    """The stored signature verifies over the stored bytes, and the stored JSON record parses
    (re-validated, signature checked) into the record the inputs build."""
    stored = FILE["signed"][family][name]
    message = bytes.fromhex(stored["signing_bytes"])
    assert Signature.from_bytes(bytes.fromhex(stored["signature"])).verify(
        Pubkey.from_string(stored["signer"]), message), f"{family} vector {name!r}: stored signature does not verify"
    parsed = PARSERS[family].from_json(json.dumps(stored["record"]))
    assert parsed.signing_bytes() == message, _drift(family, name, "signing_bytes of the parsed JSON record")
    assert parsed == records[family][name], _drift(family, name, "record parsed from the stored JSON")


# -- a complete response bundle ------------------------------------------------------------------

BUNDLE: dict[str, Any] = FILE["bundle"]
BUNDLE_BYTES = bytes.fromhex(BUNDLE["bundle"])


@pytest.fixture(scope="module")
def bundle_run() -> dict[str, Any]:
    return inp.bundle_run()


def test_bundle_job_and_records(bundle_run: dict[str, Any]) -> None:
    assert BUNDLE["spec"] == inp.SPECS[inp.BUNDLE_SPEC], _drift("bundle", "spec", "input spec")
    assert bundle_run["root"].hex() == BUNDLE["root"], _drift("bundle", "root", "Merkle root of the real run")
    for name in ("commitment", "challenge", "verdict"):
        field = "worker" if name == "commitment" else "verifier"
        _check_signed("bundle", name, bundle_run[name], BUNDLE[name], field)
    assert bundle_run["verdict"].passed


def test_bundle_bytes(bundle_run: dict[str, Any]) -> None:
    response: Response = bundle_run["response"]
    data = response.to_bytes()
    assert data.hex() == BUNDLE["bundle"], (
        _drift("bundle", "response", "Response.to_bytes()") + " " + _first_difference(data.hex(), BUNDLE["bundle"]))
    assert len(data) == BUNDLE["bundle_size"]
    assert blake3(data).hexdigest() == BUNDLE["bundle_blake3"], _drift("bundle", "response", "BLAKE3 of the bundle")
    assert response.opened() == BUNDLE["opened_leaves"], _drift("bundle", "response", "opened leaves")
    assert sorted(response.states) == BUNDLE["whole_leaves"], _drift("bundle", "response", "leaves opened whole")
    # the challenge (2, 6, 7) has a run: s_6 is the verifier's own from step 6, so only s_1 and s_5
    # are whole (docs/protocol.md §8); the leaves opened, root and digests are unchanged by this rule
    assert BUNDLE["whole_leaves"] == sorted(whole_leaves(response.indices, exact=True, chain=True)) == [1, 5]


def test_stored_bundle_parses_and_reserialises_identically(bundle_run: dict[str, Any]) -> None:
    assert blake3(BUNDLE_BYTES).hexdigest() == BUNDLE["bundle_blake3"], "protocol.json: bundle hex and hash disagree"
    assert len(BUNDLE_BYTES) == BUNDLE["bundle_size"]
    commitment = Commitment.from_json(json.dumps(BUNDLE["commitment"]["record"]))
    state_bytes = {len(s) for s in bundle_run["response"].states.values()}
    assert len(state_bytes) == 1
    expect = Expected(job_id=commitment.job_id, root=commitment.root, tree_size=commitment.tree_size,
                      state_bytes=state_bytes.pop())
    for parsed in (Response.from_bytes(BUNDLE_BYTES), Response.from_bytes(BUNDLE_BYTES, expect=expect)):
        assert parsed.to_bytes() == BUNDLE_BYTES, "the stored bundle does not re-serialise to the same bytes"
        assert parsed == bundle_run["response"]
        assert parsed.opened() == BUNDLE["opened_leaves"]
        assert list(parsed.states) == BUNDLE["whole_leaves"]


def test_stored_bundle_still_passes_the_verifier() -> None:
    """The stored commitment, challenge and bundle, checked by today's verifier, give the stored verdict."""
    commitment = Commitment.from_json(json.dumps(BUNDLE["commitment"]["record"]))
    challenge = Challenge.from_json(json.dumps(BUNDLE["challenge"]["record"]))
    verdict = Verifier(key=inp.key("verifier")).check(commitment, challenge, BUNDLE_BYTES)
    assert verdict.passed, [(o.index, o.reason, o.detail) for o in verdict.failures]
    assert verdict.signing_bytes().hex() == BUNDLE["verdict"]["signing_bytes"], _drift(
        "bundle", "verdict", "signing_bytes of the verdict on the stored bundle")
