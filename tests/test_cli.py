"""The `pocv` CLI end to end, prover and verifier in separate processes, and the named table
of bad inputs, each with its documented exit code and message."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from solders.keypair import Keypair

from pocv.bundle import MAGIC, Response
from pocv.records import Challenge, save_keypair
from tests.helpers import SMALL

BEACON = "ab" * 32


def pocv(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pocv", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def pocv_here(capsys, *args: str | Path) -> _Result:
    """The same CLI in this process (fast; the table of bad inputs has many rows)."""
    from pocv.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return _Result(code, out.out, out.err)


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> dict[str, Path]:
    """A complete run -> challenge -> respond, each step a separate `pocv` process."""
    d = tmp_path_factory.mktemp("cli")
    save_keypair(Keypair.from_seed(bytes([5]) * 32), d / "worker.json")
    save_keypair(Keypair.from_seed(bytes([6]) * 32), d / "verifier.json")
    (d / "job.json").write_text(SMALL.to_json())
    r = pocv("run", d / "job.json", "--trace", d / "trace", "-k", d / "worker.json", "--checkpoint-every", "8")
    assert r.returncode == 0, r.stderr
    (d / "commitment.json").write_text(r.stdout)
    assert "step 40/40" in r.stderr  # progress on stderr, the record on stdout
    # 12 of 40 steps, so the multiproof is not empty
    r = pocv("challenge", d / "commitment.json", "--beacon", BEACON, "-n", "12", "-f", "0.1",
             "-k", d / "verifier.json", "--job", d / "job.json", "-o", d / "challenge.json")
    assert r.returncode == 0, r.stderr
    r = pocv("respond", d / "trace", d / "challenge.json", "-o", d / "response.pocv")
    assert r.returncode == 0, r.stderr
    return {"dir": d, "commitment": d / "commitment.json", "challenge": d / "challenge.json",
            "response": d / "response.pocv", "vkey": d / "verifier.json", "wkey": d / "worker.json",
            "trace": d / "trace", "job": d / "job.json"}


def test_end_to_end_pass(flow) -> None:
    r = pocv("verify", flow["commitment"], flow["challenge"], flow["response"], "-k", flow["vkey"])
    assert r.returncode == 0, r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["result"] == "PASS"
    assert verdict["checked"] == 12
    r = pocv("verify", flow["commitment"], flow["challenge"], flow["response"], "-k", flow["vkey"],
             "--output", "text", "--job", flow["job"])
    assert r.returncode == 0 and r.stdout.startswith("PASS")
    assert "no --job given" not in r.stderr


def test_rerun_is_idempotent(flow) -> None:
    r = pocv("run", flow["job"], "--trace", flow["trace"], "-k", flow["wkey"], "-q")
    assert r.returncode == 0
    assert json.loads(r.stdout)["root"] == json.loads(flow["commitment"].read_text())["root"]


def test_demo_runs_and_catches_the_cheater() -> None:
    r = pocv("demo", "--steps", "60", "--n", "64", "--output", "json", "--no-market")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [x["result"] for x in doc["rounds"]] == ["PASS", "FAIL"]


def test_demo_settles_on_the_embedded_chain() -> None:
    r = pocv("demo", "--steps", "60", "--n", "64")
    assert r.returncode == 0, r.stderr
    assert "slash" in r.stdout.lower()
    assert "reconciled: tokens yes, lamports yes" in r.stdout


@pytest.mark.parametrize("cmd", ["run", "challenge", "respond", "verify", "demo", "keygen", "kernels"])
def test_every_command_has_help(capsys, cmd: str) -> None:
    r = pocv_here(capsys, cmd, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


# -- the named table of bad inputs ------------------------------------------------------------


def _bundle(flow) -> bytearray:
    return bytearray(flow["response"].read_bytes())


def _layout(data: bytes) -> dict[str, int]:
    """Offsets inside a bundle (see verifier/bundle.py)."""
    pos = len(MAGIC) + 4 + 64
    pos += 8
    (k,) = struct.unpack_from("<I", data, pos)
    idx_at = pos + 4
    pos = idx_at + 8 * k
    (m,) = struct.unpack_from("<I", data, pos)
    pos += 4
    first_state = pos
    for _ in range(m):
        _, length = struct.unpack_from("<QQ", data, pos)
        pos += 16 + length
    return {"indices": idx_at, "first_state": first_state, "proof": pos + 4, "k": k}


def _flip_proof_bit(flow, d: Path) -> list:
    b = _bundle(flow)
    b[_layout(b)["proof"] + 5] ^= 0x10
    (d / "r.pocv").write_bytes(b)
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _flip_state_bit(flow, d: Path) -> list:
    b = _bundle(flow)
    b[len(b) - 40 - 32 * len(Response.from_bytes(bytes(b)).proof)] ^= 1  # inside the last state's data
    (d / "r.pocv").write_bytes(b)
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _truncated(flow, d: Path) -> list:
    b = _bundle(flow)
    (d / "r.pocv").write_bytes(b[: len(b) // 2])
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _wrong_index(flow, d: Path) -> list:
    b = _bundle(flow)
    lay = _layout(b)
    last = lay["indices"] + 8 * (lay["k"] - 1)
    (v,) = struct.unpack_from("<Q", b, last)
    struct.pack_into("<Q", b, last, v + 1 if v < SMALL.steps else v - 1)
    (d / "r.pocv").write_bytes(b)
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _absurd_length(flow, d: Path) -> list:
    b = _bundle(flow)
    struct.pack_into("<Q", b, _layout(b)["first_state"] + 8, 1 << 40)
    (d / "r.pocv").write_bytes(b)
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _absurd_count(flow, d: Path) -> list:
    b = _bundle(flow)
    struct.pack_into("<I", b, _layout(b)["indices"] - 4, 0xFFFFFFFF)
    (d / "r.pocv").write_bytes(b)
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _swapped_states(flow, d: Path) -> list:
    r = Response.from_bytes(bytes(_bundle(flow)))
    keys = sorted(r.states)
    a, b = keys[1], keys[2]
    states = dict(r.states)
    states[a], states[b] = states[b], states[a]
    Response(job_id=r.job_id, root=r.root, tree_size=r.tree_size, indices=r.indices, states=states,
             proof=r.proof).save(d / "r.pocv")
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _wrong_job(flow, d: Path) -> list:
    r = Response.from_bytes(bytes(_bundle(flow)))
    Response(job_id=bytes(32), root=r.root, tree_size=r.tree_size, indices=r.indices, states=r.states,
             proof=r.proof).save(d / "r.pocv")
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _not_a_bundle(flow, d: Path) -> list:
    (d / "r.pocv").write_bytes(b'{"hello": "world"}')
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _missing_response(flow, d: Path) -> list:
    return [flow["commitment"], flow["challenge"], d / "nope.pocv"]


def _missing_commitment(flow, d: Path) -> list:
    return [d / "nope.json", flow["challenge"], flow["response"]]


def _tampered_commitment(flow, d: Path) -> list:
    c = json.loads(flow["commitment"].read_text())
    c["root"] = "00" * 32
    (d / "c.json").write_text(json.dumps(c))
    return [d / "c.json", flow["challenge"], flow["response"]]


def _challenge_for_other_root(flow, d: Path) -> list:
    ch = json.loads(flow["challenge"].read_text())
    ch["root"] = "11" * 32
    (d / "ch.json").write_text(json.dumps(ch))
    return [flow["commitment"], d / "ch.json", flow["response"]]


def _challenge_not_json(flow, d: Path) -> list:
    (d / "ch.json").write_text("{not json")
    return [flow["commitment"], d / "ch.json", flow["response"]]


def _challenge_by_worker(flow, d: Path) -> list:
    """The worker brings its own challenge (signed by itself, with a beacon it picked)."""
    r = pocv("challenge", flow["commitment"], "--beacon", "cd" * 32, "-n", "12", "-k", flow["wkey"],
             "-o", d / "ch.json")
    assert r.returncode == 0, r.stderr
    return [flow["commitment"], d / "ch.json", flow["response"]]


def _other_job_ordered(flow, d: Path) -> list:
    other = json.loads(SMALL.to_json())
    other["steps"] = 1000
    (d / "ordered.json").write_text(json.dumps(other))
    return [flow["commitment"], flow["challenge"], flow["response"], "--job", d / "ordered.json"]


#: name -> (arguments builder, exit code, reason in the verdict or text on stderr)
BAD_VERIFY = {
    "truncated-bundle": (_truncated, 1, "MALFORMED"),
    "flipped-bit-in-proof": (_flip_proof_bit, 1, "BAD_PROOF"),
    "flipped-bit-in-state": (_flip_state_bit, 1, "BAD_PROOF"),
    "wrong-index": (_wrong_index, 1, "WRONG_JOB"),
    "absurd-state-length": (_absurd_length, 1, "MALFORMED"),
    "absurd-index-count": (_absurd_count, 1, "MALFORMED"),
    "swapped-states": (_swapped_states, 1, "BAD_PROOF"),
    "wrong-job-id": (_wrong_job, 1, "WRONG_JOB"),
    "not-a-bundle": (_not_a_bundle, 1, "MALFORMED"),
    "missing-response-file": (_missing_response, 3, "does not exist"),
    "missing-commitment-file": (_missing_commitment, 3, "does not exist"),
    "tampered-commitment": (_tampered_commitment, 3, "signature"),
    "challenge-for-other-root": (_challenge_for_other_root, 3, "signature does not verify"),
    "challenge-not-json": (_challenge_not_json, 3, "not valid JSON"),
    "challenge-signed-by-worker": (_challenge_by_worker, 3, "not by this verifier"),
    "commitment-for-another-job": (_other_job_ordered, 3, "not the ordered job"),
}


@pytest.mark.parametrize("case", sorted(BAD_VERIFY))
def test_bad_verify_inputs(flow, tmp_path, capsys, case: str) -> None:
    build, code, reason = BAD_VERIFY[case]
    r = pocv_here(capsys, "verify", *build(flow, tmp_path), "-k", flow["vkey"])
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    if code == 1:
        verdict = json.loads(r.stdout)
        assert verdict["result"] == "FAIL"
        assert {o["reason"] for o in verdict["outcomes"]} == {reason}
    else:
        assert reason in r.stderr
        assert r.stderr.count("\n") == 1  # one line
        assert r.stdout == ""


BAD_OTHER = {
    "challenge-bad-beacon": (["challenge", "{commitment}", "--beacon", "xyz", "-k", "{wkey}"], 3,
                             "beacon must be 32 bytes"),
    "challenge-no-beacon": (["challenge", "{commitment}"], 2, "--beacon"),
    "challenge-bad-p": (["challenge", "{commitment}", "--beacon", BEACON, "-p", "1.5", "-k", "{wkey}"], 3,
                        "confidence"),
    "run-unknown-kernel": (["run", "{badjob}", "--trace", "{tmp}/t", "-k", "{wkey}"], 3, "unknown kernel"),
    "run-missing-key": (["run", "{job}", "--trace", "{tmp}/t", "-k", "{tmp}/nokey.json"], 3, "cannot read"),
    "run-trace-of-other-job": (["run", "{otherjob}", "--trace", "{trace}", "-k", "{wkey}"], 3, "holds job"),
    "respond-challenge-other-job": (["respond", "{trace}", "{otherchallenge}", "-o", "{tmp}/r"], 3, "this trace"),
    "respond-not-a-trace": (["respond", "{tmp}", "{challenge}", "-o", "{tmp}/r"], 3, "not a pocv trace"),
    "verify-on-missing-cuda": (["verify", "{commitment}", "{challenge}", "{tmp}/r", "-k", "{wkey}", "--device",
                               "cuda:7"], 3, "cuda"),
    "run-trace-is-a-file": (["run", "{job}", "--trace", "{tmp}/badjob.json", "-k", "{wkey}"], 3,
                            "not an empty directory"),
    "run-trace-under-a-file": (["run", "{job}", "--trace", "{tmp}/badjob.json/t", "-k", "{wkey}"], 3,
                               "cannot use"),
    "run-corrupt-trace-json": (["run", "{job}", "--trace", "{corrupt}", "-k", "{wkey}"], 3, "unreadable trace.json"),
    "no-command": ([], 2, "usage"),
    "unknown-command": (["frobnicate"], 2, "invalid choice"),
}


@pytest.mark.parametrize("case", sorted(BAD_OTHER))
def test_bad_inputs_other_commands(flow, tmp_path, capsys, case: str) -> None:
    argv, code, text = BAD_OTHER[case]
    (tmp_path / "badjob.json").write_text('{"kernel": "nope", "steps": 3, "seed": 1}')
    other = json.loads(SMALL.to_json())
    other["seed"] = 99
    (tmp_path / "otherjob.json").write_text(json.dumps(other))
    ch = Challenge.from_json(flow["challenge"].read_text())
    other_ch = dataclasses.replace(ch, job_id=bytes([0x22]) * 32).signed(Keypair())
    (tmp_path / "otherchallenge.json").write_text(other_ch.to_json())
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "trace.json").write_text('{"format": 1, "checkpoint_every": 0, "spec": ' + SMALL.to_json() + "}")
    subs = {"corrupt": tmp_path / "corrupt", "commitment": flow["commitment"], "tmp": tmp_path, "wkey": flow["wkey"], "job": flow["job"],
            "badjob": tmp_path / "badjob.json", "otherjob": tmp_path / "otherjob.json", "trace": flow["trace"],
            "otherchallenge": tmp_path / "otherchallenge.json", "challenge": flow["challenge"]}
    r = pocv_here(capsys, *[a.format(**subs) for a in argv])
    assert r.returncode == code, (r.stdout, r.stderr)
    assert text in r.stderr
    assert "Traceback" not in r.stderr


def test_failed_write_leaves_no_partial_file(flow, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    r = pocv_here(capsys, "respond", flow["trace"], flow["challenge"], "-o", blocker / "r.pocv")
    assert r.returncode == 3 and "cannot write" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_bundle_is_written_atomically(flow, tmp_path, capsys) -> None:
    out = tmp_path / "r.pocv"
    out.write_bytes(b"old")
    assert pocv_here(capsys, "respond", flow["trace"], flow["challenge"], "-o", out).returncode == 0
    assert Response.load(out).root == bytes.fromhex(json.loads(flow["commitment"].read_text())["root"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pocv"]  # no temporary left behind
