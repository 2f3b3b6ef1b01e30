"""Signed records: round trips, signatures over explicit bytes, strict parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.keypair import Keypair

from pocv.errors import EvidenceError, InputError, MalformedError, MismatchError, SignatureError
from pocv.jobs import JobSpec
from pocv.kernels import resolve_spec
from pocv.records import (
    Challenge,
    Commitment,
    Outcome,
    Verdict,
    parse_beacon,
)
from pocv.store import load_keypair, save_keypair

SPEC = resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=7, params={"n": 64}))


def _commitment(key: Keypair) -> Commitment:
    return Commitment.create(spec=SPEC, root=bytes(range(32)), key=key, fingerprint={"accelerator": "none"},
                             environment={"torch": "2.13.0"})


def _verdict(key: Keypair, reasons: tuple[str, ...] = ("OK", "OK")) -> Verdict:
    return Verdict.create(job_id=SPEC.job_id, root=bytes(32), beacon=bytes([9]) * 32, kernel=SPEC.kernel_ref,
                          outcomes=[Outcome(i + 1, r, "") for i, r in enumerate(reasons)], cheat_fraction=0.1,
                          key=key)


def test_commitment_roundtrip_and_signature(worker_key: Keypair) -> None:
    c = _commitment(worker_key)
    c.verify_signature()
    back = Commitment.from_json(c.to_json())
    assert back == c
    assert back.tree_size == SPEC.steps + 1


@pytest.mark.parametrize("field", ["root", "fingerprint", "environment", "signature", "spec.seed"])
def test_commitment_tampering_is_caught(worker_key: Keypair, field: str) -> None:
    d = json.loads(_commitment(worker_key).to_json())
    if field == "root":
        d["root"] = "ff" + d["root"][2:]
    elif field == "fingerprint":
        d["fingerprint"]["accelerator"] = "H100"
    elif field == "environment":
        d["environment"]["torch"] = "9"
    elif field == "signature":
        d["signature"] = "00" + d["signature"][2:]
    else:
        d["spec"]["seed"] = 8
    with pytest.raises((SignatureError, MismatchError)):
        Commitment.from_json(json.dumps(d))


def test_commitment_signed_by_someone_else_fails(worker_key: Keypair) -> None:
    c = _commitment(worker_key)
    d = json.loads(c.to_json())
    d["worker"] = str(Keypair().pubkey())
    with pytest.raises(SignatureError, match="does not verify"):
        Commitment.from_json(json.dumps(d))


def test_verdict_roundtrip_result_and_signature(verifier_key: Keypair) -> None:
    v = _verdict(verifier_key, ("OK", "MISMATCH"))
    assert not v.passed
    assert Verdict.from_json(v.to_json()) == v
    v.verify_signature(expected_verifier=bytes(verifier_key.pubkey()))
    with pytest.raises(SignatureError, match="expected"):
        v.verify_signature(expected_verifier=bytes(Keypair().pubkey()))


@pytest.mark.parametrize(("field", "value"), [("detection", 1.0), ("checked", 7), ("failed", 0), ("version", 1),
                                              ("extra", 1)])
def test_verdict_unsigned_fields_must_agree(verifier_key: Keypair, field: str, value: object) -> None:
    d = json.loads(_verdict(verifier_key, ("OK", "MISMATCH")).to_json())
    d[field] = value
    with pytest.raises(MalformedError):
        Verdict.from_json(json.dumps(d))


def test_full_coverage_means_detection_one(verifier_key: Keypair) -> None:
    v = Verdict.create(job_id=SPEC.job_id, root=bytes(32), beacon=bytes(32), kernel=SPEC.kernel_ref,
                       outcomes=[Outcome(i, "OK") for i in (1, 2, 3)], cheat_fraction=0.1, key=verifier_key, steps=3)
    assert v.detection == 1.0
    assert Verdict.from_json(v.to_json()).detection == 1.0


def test_verdict_cannot_be_flipped_to_pass(verifier_key: Keypair) -> None:
    d = json.loads(_verdict(verifier_key, ("OK", "MISMATCH")).to_json())
    d["outcomes"][1]["reason"] = "OK"
    d["result"] = "PASS"
    with pytest.raises(SignatureError):
        Verdict.from_json(json.dumps(d))
    d = json.loads(_verdict(verifier_key, ("OK", "MISMATCH")).to_json())
    d["result"] = "PASS"  # signature fine, but the result line lies
    with pytest.raises(MalformedError, match="disagrees"):
        Verdict.from_json(json.dumps(d))


def test_challenge_roundtrip_and_validation() -> None:
    ch = Challenge(job_id=SPEC.job_id, root=bytes(32), steps=10, beacon=bytes(32), indices=(1, 5, 9),
                   confidence=0.99, cheat_fraction=0.1).signed(Keypair())
    assert Challenge.from_json(ch.to_json()) == ch
    d = json.loads(ch.to_json())
    d["indices"] = [1, 5, 8]
    with pytest.raises(SignatureError):
        Challenge.from_json(json.dumps(d))
    for bad in [(0,), (11,), (2, 2), ()]:
        with pytest.raises(MalformedError):
            Challenge(job_id=SPEC.job_id, root=bytes(32), steps=10, beacon=bytes(32), indices=bad,
                      confidence=0.99, cheat_fraction=0.1)


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "ab" * 33, "0x" + "g" * 64])
def test_bad_beacons(text: str) -> None:
    with pytest.raises(InputError, match="beacon must be 32 bytes"):
        parse_beacon(text)


def test_beacon_forms() -> None:
    assert parse_beacon("0x" + "AB" * 32) == bytes([0xAB]) * 32


def test_keypair_file_roundtrip(tmp_path) -> None:
    k = Keypair()
    save_keypair(k, tmp_path / "id.json")
    assert bytes(load_keypair(tmp_path / "id.json").pubkey()) == bytes(k.pubkey())
    assert (tmp_path / "id.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "bad.json").write_text("[1,2,3]")
    with pytest.raises(InputError, match="not a Solana keypair"):
        load_keypair(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not exist"):
        load_keypair(tmp_path / "missing.json")


@given(st.text(max_size=300))
def test_record_parsers_never_crash(text: str) -> None:
    for cls in (Commitment, Challenge, Verdict):
        try:
            cls.from_json(text)
        except EvidenceError:
            pass


def test_a_verdict_binds_the_bundle_it_judged(verifier_key: Keypair) -> None:
    # issue 15 class 6: the digest and whether the worker signed it are signed with the verdict
    base = {"job_id": SPEC.job_id, "root": bytes(32), "beacon": bytes(32), "kernel": SPEC.kernel_ref,
            "outcomes": [Outcome(1, "MISMATCH", "x")], "cheat_fraction": 0.1, "key": verifier_key, "steps": 9}
    signed = Verdict.create(**base, bundle=bytes([5]) * 32, bundle_signed=True)
    unsigned = Verdict.create(**base, bundle=bytes([5]) * 32, bundle_signed=False)
    assert signed.is_evidence and not unsigned.is_evidence  # a FAIL on an unsigned bundle: retry
    assert signed.signing_bytes() != unsigned.signing_bytes()
    back = Verdict.from_json(signed.to_json())
    assert back.bundle == bytes([5]) * 32 and back.bundle_signed
    d = json.loads(signed.to_json())
    d["bundle_signed"] = False  # flipping what was bound breaks the signature
    with pytest.raises(SignatureError):
        Verdict.from_json(json.dumps(d))
    refused = Verdict.create(**{**base, "outcomes": [Outcome(1, "REFUSED", "no response")]})
    assert refused.is_evidence  # no bundle came at all: the refusal is the worker's
