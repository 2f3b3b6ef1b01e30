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

from pocv.bundle import MAGIC, Response
from pocv.keys import Keypair
from pocv.records import Challenge
from pocv.store import save_keypair
from tests.helpers import SMALL

BEACON = "ab" * 32
WORKER = Keypair.from_seed(bytes([5]) * 32)


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
    save_keypair(WORKER, d / "worker.json")
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
    r = pocv("respond", d / "trace", d / "challenge.json", "-o", d / "response.pocv", "-k", d / "worker.json")
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


@pytest.mark.parametrize("cmd", ["run", "challenge", "respond", "verify", "demo", "keygen", "kernels", "job",
                                 "calibrate", "artifact"])
def test_every_command_has_help(capsys, cmd: str) -> None:
    r = pocv_here(capsys, cmd, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


# -- the named table of bad inputs ------------------------------------------------------------


def _bundle(flow) -> bytearray:
    return bytearray(flow["response"].read_bytes())


TRAILER = 32 + 64  # the worker's public key and its signature of the body


def _signed(body: bytes) -> bytes:
    """``body`` with a trailer signed by the committing worker: whatever it says is the worker's word."""
    from blake3 import blake3

    from pocv.bundle import BUNDLE_DOMAIN

    key = Keypair.from_seed(bytes([5]) * 32)  # the flow's worker
    return bytes(body) + bytes(key.pubkey()) + key.sign_message(BUNDLE_DOMAIN + blake3(bytes(body)).digest())


def _resigned(b: bytes | bytearray) -> bytes:
    return _signed(bytes(b[:-TRAILER]))


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
    (d / "r.pocv").write_bytes(_resigned(b))
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _flip_in_transit(flow, d: Path) -> list:
    """A relay flips a bit: the worker's signature no longer covers the bytes."""
    b = _bundle(flow)
    b[_layout(b)["proof"] + 5] ^= 0x10
    (d / "r.pocv").write_bytes(b)
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _flip_state_bit(flow, d: Path) -> list:
    b = _bundle(flow)
    b[len(b) - TRAILER - 40 - 32 * len(Response.from_bytes(bytes(b)).proof)] ^= 1  # inside the last state's data
    (d / "r.pocv").write_bytes(_resigned(b))
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _truncated(flow, d: Path) -> list:
    b = _bundle(flow)
    (d / "r.pocv").write_bytes(_signed(b[: len(b) // 2]))
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _wrong_index(flow, d: Path) -> list:
    b = _bundle(flow)
    lay = _layout(b)
    last = lay["indices"] + 8 * (lay["k"] - 1)
    (v,) = struct.unpack_from("<Q", b, last)
    struct.pack_into("<Q", b, last, v + 1 if v < SMALL.steps else v - 1)
    (d / "r.pocv").write_bytes(_resigned(b))
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _absurd_length(flow, d: Path) -> list:
    b = _bundle(flow)
    struct.pack_into("<Q", b, _layout(b)["first_state"] + 8, 1 << 40)
    (d / "r.pocv").write_bytes(_resigned(b))
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _absurd_count(flow, d: Path) -> list:
    b = _bundle(flow)
    struct.pack_into("<I", b, _layout(b)["indices"] - 4, 0xFFFFFFFF)
    (d / "r.pocv").write_bytes(_resigned(b))
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _swapped_states(flow, d: Path) -> list:
    r = Response.from_bytes(bytes(_bundle(flow)))
    keys = sorted(r.states)
    a, b = keys[1], keys[2]
    states = dict(r.states)
    states[a], states[b] = states[b], states[a]
    (d / "r.pocv").write_bytes(Response(job_id=r.job_id, root=r.root, tree_size=r.tree_size, indices=r.indices,
                                        states=states, proof=r.proof).signed(WORKER).to_bytes())
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _wrong_job(flow, d: Path) -> list:
    r = Response.from_bytes(bytes(_bundle(flow)))
    (d / "r.pocv").write_bytes(Response(job_id=bytes(32), root=r.root, tree_size=r.tree_size, indices=r.indices,
                                        states=r.states, proof=r.proof).signed(WORKER).to_bytes())
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _not_a_bundle(flow, d: Path) -> list:
    (d / "r.pocv").write_bytes(_signed(b'{"hello": "world"}'))
    return [flow["commitment"], flow["challenge"], d / "r.pocv"]


def _not_a_bundle_unsigned(flow, d: Path) -> list:
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
    # not the worker's word: a FAIL verdict that is no evidence, exit 4 (fetch the bundle again)
    "flipped-in-transit": (_flip_in_transit, 4, "BAD_PROOF"),
    "not-a-bundle-unsigned": (_not_a_bundle_unsigned, 4, "MALFORMED"),
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
    if code in (1, 4):  # a signed FAIL verdict either way; 4: the bundle was not the worker's word
        verdict = json.loads(r.stdout)
        assert verdict["result"] == "FAIL"
        assert {o["reason"] for o in verdict["outcomes"]} == {reason}
        assert verdict["bundle_signed"] is (code == 1)
        assert ("fetch it again" in r.stderr) is (code == 4)
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
    "respond-challenge-other-job": (["respond", "{trace}", "{otherchallenge}", "-o", "{tmp}/r", "-k", "{wkey}"], 3,
                                    "this trace"),
    "respond-not-a-trace": (["respond", "{tmp}", "{challenge}", "-o", "{tmp}/r", "-k", "{wkey}"], 3, "not a pocv trace"),
    "respond-not-the-worker": (["respond", "{trace}", "{challenge}", "-o", "{tmp}/r", "-k", "{vkey}"], 3,
                               "is not the worker that signed"),
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
            "otherchallenge": tmp_path / "otherchallenge.json", "challenge": flow["challenge"], "vkey": flow["vkey"]}
    r = pocv_here(capsys, *[a.format(**subs) for a in argv])
    assert r.returncode == code, (r.stdout, r.stderr)
    assert text in r.stderr
    assert "Traceback" not in r.stderr


def test_a_retired_kernel_is_refused_with_what_replaces_it(flow, tmp_path, capsys) -> None:
    """transformer-decode was retired (issue 12): a job spec or a commitment naming it is refused in one
    line, exit 3, saying so and naming hf-causal-lm; no traceback, nothing on stdout."""
    from pocv.jobs import JobSpec
    from pocv.records import Commitment

    retired = JobSpec(kernel="transformer-decode", steps=4, seed=1, params={"width": 64}, version=1)
    (tmp_path / "job.json").write_text(retired.to_json())
    (tmp_path / "commitment.json").write_text(Commitment.create(spec=retired, root=bytes(32), key=WORKER).to_json())
    for argv in (["run", tmp_path / "job.json", "--trace", tmp_path / "t", "-k", flow["wkey"]],
                 ["job", "transformer-decode", "--steps", "4"],
                 ["kernels", "transformer-decode"],
                 ["verify", tmp_path / "commitment.json", flow["challenge"], flow["response"], "-k", flow["vkey"]]):
        r = pocv_here(capsys, *argv)
        assert r.returncode == 3, (argv, r.stdout, r.stderr)
        assert "'transformer-decode' was retired" in r.stderr and "'hf-causal-lm'" in r.stderr, (argv, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stdout == "", (argv, r.stderr)
    assert not (tmp_path / "t").exists()
    r = pocv_here(capsys, "kernels")
    assert r.returncode == 0 and "transformer-decode" not in r.stdout and "hf-causal-lm" in r.stdout


def test_failed_write_leaves_no_partial_file(flow, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    r = pocv_here(capsys, "respond", flow["trace"], flow["challenge"], "-o", blocker / "r.pocv", "-k", flow["wkey"])
    assert r.returncode == 3 and "cannot be written" in r.stderr  # refused before any work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_bundle_is_written_atomically(flow, tmp_path, capsys) -> None:
    out = tmp_path / "r.pocv"
    out.write_bytes(b"old")
    assert pocv_here(capsys, "respond", flow["trace"], flow["challenge"], "-o", out, "-k", flow["wkey"]).returncode == 0
    assert Response.from_bytes(out.read_bytes()).root == bytes.fromhex(json.loads(flow["commitment"].read_text())["root"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pocv"]  # no temporary left behind


# -- Foundation v2: one exit-code table ----------------------------------------------------------


def test_exit_code_table() -> None:
    from pocv import errors as E
    from pocv.cli._common import EXIT_TABLE, exit_code

    table = {
        E.VerificationFailed("x", None): 1,  # type: ignore[arg-type]
        E.InputError("x"): 3, E.WrongRecordError("x"): 3, E.EvidenceError("x"): 3, E.MalformedError("x"): 3,
        E.SignatureError("x"): 3, E.MismatchError("x"): 3, E.StorageError("x"): 3, E.ChainError("x"): 4,
        E.TransientError("x"): 4, KeyboardInterrupt(): 130, RuntimeError("x"): 70, ValueError("x"): 70,
        E.SetupError("x"): 3, E.ProviderMismatch("x"): 3, E.ArtifactError("x"): 3, E.NotCalibrated("x"): 3,
        BrokenPipeError(): 70,
    }
    for exc, code in table.items():
        assert exit_code(exc) == code, exc
    assert [c for c, _ in EXIT_TABLE] == [0, 1, 2, 3, 4, 70, 130]


def test_help_documents_the_exit_codes(capsys) -> None:
    r = pocv_here(capsys, "--help")
    assert r.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "70 ", "130 "):
        assert f"\n  {code}" in r.stdout
    assert "json" in r.stdout and "symlink" in r.stdout


def test_market_bug_exits_70_not_4(tmp_path, capsys, monkeypatch) -> None:
    """A bug anywhere (here inside pocv market) is exit 70 and one line, through the same table."""
    import pocv.cli._market as m

    def broken(args, s):
        raise RuntimeError("boom")

    monkeypatch.setattr(m, "_cmd_history", broken)
    r = pocv_here(capsys, "market", "history", "--ledger", tmp_path / "ledger")
    assert r.returncode == 70, r.stderr
    assert r.stderr.count("\n") == 1 and "internal error: RuntimeError: boom" in r.stderr
    assert "Traceback" not in r.stderr

    class Panic(BaseException):  # solders' PanicException is a BaseException
        pass

    def panics(args, s):
        raise Panic("rust panicked")

    monkeypatch.setattr(m, "_cmd_history", panics)
    assert pocv_here(capsys, "market", "history", "--ledger", tmp_path / "ledger").returncode == 70
    monkeypatch.setenv("POCV_DEBUG", "1")
    r = pocv_here(capsys, "market", "history", "--ledger", tmp_path / "ledger")
    assert r.returncode == 70 and "Traceback" in r.stderr  # POCV_DEBUG adds the traceback, same code
    monkeypatch.delenv("POCV_DEBUG")
    r = pocv_here(capsys, "-vv", "market", "history", "--ledger", tmp_path / "ledger")
    assert r.returncode == 70 and "Traceback" in r.stderr


def test_interrupt_exits_130(capsys, monkeypatch) -> None:
    import pocv.cli._core as core

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "_cmd_kernels", interrupted)
    r = pocv_here(capsys, "kernels")
    assert r.returncode == 130 and "interrupted" in r.stderr


def test_chain_error_exits_4(tmp_path, capsys) -> None:
    """Nothing listens at the URL: a chain error, which may be retried."""
    r = pocv_here(capsys, "market", "status", "ab" * 32, "-u", "http://127.0.0.1:9", "--mint",
                  str(Keypair().pubkey()), "--program", str(Keypair().pubkey()), "--index", tmp_path / "i.sqlite")
    assert r.returncode == 4, r.stderr


# -- a reader that goes away ----------------------------------------------------------------------


def _fail_bundle(flow, d: Path) -> Path:
    b = _bundle(flow)
    b[_layout(b)["proof"] + 5] ^= 0x10
    (d / "bad.pocv").write_bytes(_resigned(b))
    return d / "bad.pocv"


@pytest.mark.parametrize("fail", [False, True])
def test_closed_stdout_keeps_the_exit_code(flow, tmp_path, fail: bool) -> None:
    """stdout's reader closed before pocv writes: a FAIL stays 1 and a PASS 0, with no traceback."""
    import os

    response = _fail_bundle(flow, tmp_path) if fail else flow["response"]
    r, w = os.pipe()
    os.close(r)  # no reader at all: the first write gets EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "pocv", "verify", str(flow["commitment"]), str(flow["challenge"]),
                            str(response), "-k", str(flow["vkey"]), "-q"],
                           stdout=w, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(w)
    assert p.returncode == (1 if fail else 0), p.stderr
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr


def test_pipefail_head_c0(flow, tmp_path) -> None:
    """The shell form: set -o pipefail; pocv verify ... | head -c0 exits 1 on a FAIL."""
    import shlex
    import shutil

    if shutil.which("bash") is None or shutil.which("head") is None:
        pytest.skip("needs bash and head")
    cmd = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "pocv", "verify", flow["commitment"],
                                                 flow["challenge"], _fail_bundle(flow, tmp_path), "-k", flow["vkey"],
                                                 "-q"])
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -c0"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr


# -- --version, -v/-q, progress -------------------------------------------------------------------


def test_version(capsys) -> None:
    r = pocv_here(capsys, "--version")
    assert r.returncode == 0 and r.stdout.strip() == "pocv 0.1.0"


def test_verbosity_sets_up_the_pocv_logger(capsys) -> None:
    import logging

    from pocv.cli import main

    for argv, level in ((["kernels"], logging.WARNING), (["-v", "kernels"], logging.INFO),
                        (["kernels", "-vv"], logging.DEBUG), (["-q", "kernels"], logging.ERROR),
                        (["kernels", "--quiet"], logging.ERROR)):
        assert main(argv) == 0
        assert logging.getLogger("pocv").level == level, argv
    assert main(["kernels"]) == 0  # back to the default: warnings shown
    capsys.readouterr()
    logging.getLogger("pocv.test").warning("shown")
    logging.getLogger("pocv.test").info("hidden")
    err = capsys.readouterr().err
    assert "shown" in err and "hidden" not in err


def test_progress_line_not_a_tty() -> None:
    import io

    from pocv.cli._common import ProgressLine

    s = io.StringIO()
    p = ProgressLine("verify", stream=s)
    for i in range(1, 1001):
        p(i, 1000)
    assert len(s.getvalue().splitlines()) <= 11  # at most a line per 10%
    assert "verify: step 1000/1000 (100%" in s.getvalue()
    s = io.StringIO()
    q = ProgressLine("verify", stream=s, quiet=True)
    q(1, 1)
    assert s.getvalue() == ""


def test_progress_on_stderr_and_quiet(flow, capsys) -> None:
    args = ["verify", flow["commitment"], flow["challenge"], flow["response"], "-k", flow["vkey"], "--job", flow["job"]]
    r = pocv_here(capsys, *args)
    assert r.returncode == 0 and "verify: step 12/12" in r.stderr
    r = pocv_here(capsys, *args, "-q")
    assert r.returncode == 0 and r.stderr == ""
    r = pocv_here(capsys, "respond", flow["trace"], flow["challenge"], "-o", flow["dir"] / "again.pocv", "-k",
                  flow["wkey"])
    assert r.returncode == 0 and "respond: state" in r.stderr


# -- -o FILE --------------------------------------------------------------------------------------


def _challenge_args(flow) -> list:
    return ["challenge", flow["commitment"], "--beacon", BEACON, "-n", "12", "-k", flow["vkey"]]


def test_output_to_dev_null_is_refused(flow, capsys) -> None:
    import os
    import stat

    r = pocv_here(capsys, *_challenge_args(flow), "-o", "/dev/null")
    assert r.returncode == 3 and "character device" in r.stderr and r.stderr.count("\n") == 1
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_output_to_a_fifo_is_refused_without_hanging(flow, tmp_path) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "pocv", *map(str, _challenge_args(flow)), "-o", str(fifo)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "FIFO" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pocv", "verify", str(flow["commitment"]), str(flow["challenge"]),
                        str(fifo), "-k", str(flow["vkey"])], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "FIFO" in r.stderr and r.stdout == ""


def test_output_to_a_directory_is_refused(flow, tmp_path, capsys) -> None:
    r = pocv_here(capsys, *_challenge_args(flow), "-o", tmp_path)
    assert r.returncode == 3 and "directory" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_output_through_a_symlink_writes_its_target(flow, tmp_path, capsys) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert pocv_here(capsys, *_challenge_args(flow), "-o", link).returncode == 0
    assert link.is_symlink() and link.resolve() == target
    assert Challenge.from_json(target.read_text()).k == 12
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "new.json")
    assert pocv_here(capsys, *_challenge_args(flow), "-o", dangling).returncode == 0
    assert dangling.is_symlink() and Challenge.from_json((tmp_path / "new.json").read_text()).k == 12


def test_output_dash_is_stdout(flow, tmp_path, capsys) -> None:
    r = pocv_here(capsys, *_challenge_args(flow), "-o", "-")
    assert r.returncode == 0 and Challenge.from_json(r.stdout).k == 12
    assert not (tmp_path / "-").exists()


def test_respond_streams_the_bundle_to_stdout(flow) -> None:
    r = subprocess.run([sys.executable, "-m", "pocv", "respond", str(flow["trace"]), str(flow["challenge"]), "-o", "-",
                        "-k", str(flow["wkey"])], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == flow["response"].read_bytes()
    assert b'"response": "-"' in r.stderr  # the summary goes to stderr, stdout carries the bundle


def test_keygen(tmp_path, capsys) -> None:
    from pocv.store import load_keypair

    r = pocv_here(capsys, "keygen", "-o", tmp_path / "k.json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["pubkey"] == str(load_keypair(tmp_path / "k.json").pubkey())
    r = pocv_here(capsys, "keygen", "-o", tmp_path / "k.json")
    assert r.returncode == 3 and "--force" in r.stderr
    r = pocv_here(capsys, "keygen", "-o", tmp_path / "k.json", "--force", "--output", "text")
    assert r.returncode == 0 and r.stdout.strip() == str(load_keypair(tmp_path / "k.json").pubkey())
    assert (tmp_path / "k.json").stat().st_mode & 0o077 == 0
    assert pocv_here(capsys, "keygen", "-o", "/dev/null").returncode == 3


# -- --output defaults ----------------------------------------------------------------------------


def _leaves(parser, path=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, (*path, name))


def test_output_defaults_follow_one_rule() -> None:
    """Records (run, challenge, respond, verify, keygen, dispute ...) default to json; reports for people
    (kernels, calibrate, demo, market ..., bench) to text."""
    from pocv.cli import build_parser

    records = {"run", "challenge", "respond", "verify", "keygen", "job", "dispute"}
    # artifact's text is the bare reference (REF=$(pocv artifact add PATH)); serve reports to a person
    reports = {"kernels", "calibrate", "demo", "market", "bench", "artifact", "serve"}
    seen = set()
    for path, p in _leaves(build_parser()):
        seen.add(path[0])
        output = next(a for a in p._actions if a.dest == "output")
        assert output.choices == ("json", "text"), path
        want = "json" if path[0] in records else "text"
        assert path[0] in records | reports, path
        assert output.default == want, path
        assert f"default {want}" in output.help, path
    assert seen == records | reports


# -- help texts -----------------------------------------------------------------------------------


def test_every_subcommand_and_option_is_described() -> None:
    import argparse
    import re

    from pocv.cli import build_parser

    # reST/markdown markup: a backtick, bold, or a literal-block "word::" (the IPv6 address :: is text)
    markup = re.compile(r"`|\*\*|\w::")

    def walk(p, path):
        assert p.description and p.description.strip(), f"{path}: no description"
        for text in (p.description, p.epilog or ""):
            m = markup.search(text)
            assert m is None, f"{path}: markup {m.group()!r} in the description"
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, f"{path} {name}")
                continue
            assert a.help and a.help is not argparse.SUPPRESS, f"{path}: {a.option_strings or a.dest} has no help"
            m = markup.search(a.help)
            assert m is None, f"{path}: markup {m.group()!r} in the help of {a.option_strings or a.dest}"

    parser = build_parser()
    walk(parser, "pocv")
    names = {n for n, _ in _leaves(parser)}
    assert {("run",), ("verify",), ("dispute", "open"), ("market", "settle"), ("bench",), ("calibrate",)} <= names


@pytest.mark.parametrize("group", ["market", "dispute"])
def test_a_group_without_subcommand_is_usage(capsys, group: str) -> None:
    r = pocv_here(capsys, group)
    assert r.returncode == 2 and "usage:" in r.stderr


# -- light imports --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["keygen", "-o", "{tmp}/k.json"], ["verify", "--help"],
                                  ["market", "--help"], ["artifact", "--help"],
                                  ["artifact", "list", "--artifacts", "{tmp}/store"]])
def test_light_commands_import_nothing_heavy(tmp_path, argv) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    code = ("import sys\nfrom pocv.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'numba', 'solders', 'solana'}))\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# -- records in the wrong place ------------------------------------------------------------------


def test_a_record_given_as_the_response_is_refused_and_nothing_signed(flow, tmp_path, capsys) -> None:
    out = tmp_path / "verdict.json"
    for record, kind in ((flow["challenge"], "challenge"), (flow["commitment"], "commitment"),
                         (flow["job"], "job spec")):
        r = pocv_here(capsys, "verify", flow["commitment"], flow["challenge"], record, "-k", flow["vkey"], "-o", out)
        assert r.returncode == 3, r.stderr
        assert f"is a {kind}, expected a response bundle" in r.stderr
        assert r.stdout == "" and not out.exists()


def test_records_swapped_between_arguments(flow, capsys) -> None:
    r = pocv_here(capsys, "verify", flow["challenge"], flow["commitment"], flow["response"], "-k", flow["vkey"])
    assert r.returncode == 3 and "is a challenge, expected a commitment" in r.stderr
    r = pocv_here(capsys, "run", flow["commitment"], "--trace", flow["dir"] / "t2", "-k", flow["wkey"])
    assert r.returncode == 3 and "is a commitment, expected a job spec" in r.stderr


# -- Solana conventions ---------------------------------------------------------------------------


def test_beacon_in_base58(flow, capsys) -> None:
    import base58

    b58 = base58.b58encode(bytes.fromhex(BEACON)).decode()
    r1 = pocv_here(capsys, *_challenge_args(flow))
    args = _challenge_args(flow)
    args[args.index(BEACON)] = b58
    r2 = pocv_here(capsys, *args)
    assert r2.returncode == 0
    assert json.loads(r1.stdout)["indices"] == json.loads(r2.stdout)["indices"]


def test_url_monikers() -> None:
    from pocv.cli import build_parser
    from pocv.cli._common import resolve_url
    from pocv.errors import InputError

    assert resolve_url("l") == resolve_url("localhost") == "http://127.0.0.1:8899"
    assert resolve_url("d") == resolve_url("devnet") == "https://api.devnet.solana.com"
    assert resolve_url("t") == "https://api.testnet.solana.com"
    assert resolve_url("m") == resolve_url("mainnet-beta") == "https://api.mainnet-beta.solana.com"
    assert resolve_url("http://x:1") == "http://x:1"
    with pytest.raises(InputError):
        resolve_url("nowhere")
    for flag, moniker in (("-ul", "l"), ("-ud", "d"), ("-um", "m"), ("-ut", "t")):
        assert build_parser().parse_args(["market", "history", flag]).url == moniker


def test_solana_config_parser() -> None:
    from pocv.cli._common import parse_solana_config

    text = ("---\njson_rpc_url: \"https://api.devnet.solana.com\"\nwebsocket_url: ''\n"
            "keypair_path: /home/me/.config/solana/id.json  # mine\naddress_labels:\n"
            "  \"11111111111111111111111111111111\": System Program\ncommitment: confirmed\n")
    cfg = parse_solana_config(text)
    assert cfg["json_rpc_url"] == "https://api.devnet.solana.com"
    assert cfg["keypair_path"] == "/home/me/.config/solana/id.json"
    assert cfg["websocket_url"] == "" and cfg["commitment"] == "confirmed"
    assert "11111111111111111111111111111111" not in cfg  # nested lines are not top-level keys


def test_default_keypair_follows_the_solana_config(flow, tmp_path, capsys, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    args = _challenge_args(flow)
    args = args[: args.index("-k")]
    r = pocv_here(capsys, *args)
    assert r.returncode == 3 and "no verifier key" in r.stderr and "id.json" in r.stderr
    (home / ".config" / "solana").mkdir(parents=True)
    (home / ".config" / "solana" / "id.json").write_bytes(flow["wkey"].read_bytes())
    r = pocv_here(capsys, *args)
    assert r.returncode == 0 and json.loads(r.stdout)["verifier"] == json.loads(flow["commitment"].read_text())["worker"]
    (home / ".config" / "solana" / "cli").mkdir()
    (home / ".config" / "solana" / "cli" / "config.yml").write_text(f"keypair_path: {flow['vkey']}\n")
    r = pocv_here(capsys, *args)
    v = pocv_here(capsys, *_challenge_args(flow))
    assert r.returncode == 0 and json.loads(r.stdout)["verifier"] == json.loads(v.stdout)["verifier"]


def test_calibrate_cli(capsys, tmp_path) -> None:
    r = pocv_here(capsys, "calibrate", "gemm-int8", "--trials", "2", "--param", "n=16", "--output", "json",
                  "-o", tmp_path / "cal.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "cal.json").read_text())["kernel"] == "gemm-int8@1" and r.stdout == ""
    assert pocv_here(capsys, "calibrate", "gemm-int8", "--trials", "0").returncode == 2
    r = pocv_here(capsys, "calibrate", "nope", "--trials", "1")
    assert r.returncode == 3 and "unknown kernel" in r.stderr


def test_verify_judges_only_the_challenge_issued_last(flow, tmp_path) -> None:
    # issue 15 class 5: re-issuing a challenge for a commitment retires the earlier one
    book = tmp_path / "book"
    args = ("-k", flow["vkey"], "--book", book, "-n", "3")
    r1 = pocv("challenge", flow["commitment"], "--beacon", "01" * 32, *args, "-o", tmp_path / "c1.json")
    r2 = pocv("challenge", flow["commitment"], "--beacon", "02" * 32, *args, "-o", tmp_path / "c2.json")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    for name in ("c1", "c2"):
        r = pocv("respond", flow["trace"], tmp_path / f"{name}.json", "-k", flow["wkey"], "-o", tmp_path / f"{name}.pocv")
        assert r.returncode == 0, r.stderr
    old = pocv("verify", flow["commitment"], tmp_path / "c1.json", tmp_path / "c1.pocv", "-k", flow["vkey"],
               "--book", book)
    assert old.returncode == 3 and "retired" in old.stderr and old.stdout == ""  # nothing signed
    new = pocv("verify", flow["commitment"], tmp_path / "c2.json", tmp_path / "c2.pocv", "-k", flow["vkey"],
               "--book", book)
    assert new.returncode == 0, new.stderr


def test_messages_are_one_bounded_line(flow, tmp_path, capsys) -> None:
    # issue 15 class 10: a hostile 60 KB value never becomes a 60 KB error line
    spec = json.loads(flow["job"].read_text())
    spec["kernel"] = "x" * 60_000  # the library's message quotes what came; the CLI cuts the line
    (tmp_path / "big.json").write_text(json.dumps(spec))
    r = pocv_here(capsys, "run", tmp_path / "big.json", "--trace", tmp_path / "t", "-k", flow["wkey"])
    assert r.returncode == 3
    assert r.stderr.count("\n") == 1 and len(r.stderr) < 700, len(r.stderr)


def test_a_fail_says_why_on_stderr_in_one_line(flow, tmp_path) -> None:
    from pocv.bundle import Response
    from pocv.store import load_keypair

    resp = Response.from_bytes(flow["response"].read_bytes())
    states = dict(resp.states)
    leaf = max(states)
    states[leaf] = states[leaf][:-1] + bytes([states[leaf][-1] ^ 1])  # the worker's own cheat, signed
    bad = Response(job_id=resp.job_id, root=resp.root, tree_size=resp.tree_size, indices=resp.indices,
                   states=states, proof=resp.proof).signed(load_keypair(flow["wkey"]))
    (tmp_path / "bad.pocv").write_bytes(bad.to_bytes())
    r = pocv("verify", flow["commitment"], flow["challenge"], tmp_path / "bad.pocv", "-k", flow["vkey"])
    assert r.returncode == 1
    assert json.loads(r.stdout)["result"] == "FAIL"  # the verdict on stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pocv verify: FAIL")]
    assert len(lines) == 1 and "BAD_PROOF" in lines[0], r.stderr
    assert "Warning" not in r.stderr


# -- issue 11: artifacts, typed parameters, job specs, calibration records --------------------------


def test_the_artifact_store_variable_is_the_library_s() -> None:
    from pocv.artifacts import ENV_VAR, default_root
    from pocv.cli import build_parser
    from pocv.cli._common import ARTIFACTS_DEFAULT, ARTIFACTS_ENV

    assert ARTIFACTS_ENV == ENV_VAR
    assert str(default_root()).endswith("pocv/artifacts") and "pocv/artifacts" in ARTIFACTS_DEFAULT
    # --artifacts wherever a job's artifacts are resolved, its help naming the variable
    want = {("run",), ("challenge",), ("respond",), ("verify",), ("calibrate",), ("job",), ("dispute", "open"),
            ("dispute", "answer"), ("dispute", "submit"), ("dispute", "run"), ("artifact", "add"),
            ("artifact", "list"), ("artifact", "verify"), ("serve",)}
    have = {path: p for path, p in _leaves(build_parser())}
    for path in want:
        action = next((a for a in have[path]._actions if "--artifacts" in a.option_strings), None)
        assert action is not None, path
        assert f"${ENV_VAR}" in action.help and "~/.cache/pocv/artifacts" in action.help, path


def test_artifact_add_hash_list_verify(tmp_path, capsys, monkeypatch) -> None:
    from blake3 import blake3

    store = tmp_path / "store"
    monkeypatch.setenv("POCV_ARTIFACTS", str(tmp_path / "env-store"))
    (tmp_path / "w.bin").write_bytes(b"weights" * 1000)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "d" / "sub" / "b.txt").write_text("b")
    r = pocv_here(capsys, "artifact", "add", tmp_path / "w.bin", "--artifacts", store)
    ref = "blake3:" + blake3(b"weights" * 1000).hexdigest()  # a file's reference is b3sum's hash
    assert r.returncode == 0 and r.stdout == ref + "\n", r.stderr
    r = pocv_here(capsys, "artifact", "add", tmp_path / "d", "--artifacts", store, "--output", "json")
    doc = json.loads(r.stdout)
    assert doc["kind"] == "directory" and doc["bytes"] == 2
    assert pocv_here(capsys, "artifact", "hash", tmp_path / "d").stdout.strip() == doc["ref"]
    r = pocv_here(capsys, "artifact", "list", "--artifacts", store)
    assert r.returncode == 0 and sorted(ln.split()[0] for ln in r.stdout.splitlines()) == sorted([ref, doc["ref"]])
    assert pocv_here(capsys, "artifact", "verify", "--artifacts", store).stdout.split() == \
        ["ok", min(ref, doc["ref"]), "ok", max(ref, doc["ref"])]
    # the environment variable names the store when --artifacts does not
    assert pocv_here(capsys, "artifact", "add", tmp_path / "w.bin").returncode == 0
    assert (tmp_path / "env-store" / "blake3" / ref.removeprefix("blake3:")).is_file()
    # altered, missing, malformed, no such path: exit 3, one line, the hash named
    stored = store / "blake3" / ref.removeprefix("blake3:")
    stored.chmod(0o644)
    stored.write_bytes(b"other weights")
    r = pocv_here(capsys, "artifact", "verify", ref, "--artifacts", store)
    assert r.returncode == 3 and r.stdout.split() == ["altered", ref] and ref in r.stderr
    assert r.stderr.count("\n") == 1 and "altered" in r.stderr
    missing = "blake3:" + "0" * 64
    r = pocv_here(capsys, "artifact", "verify", missing, "--artifacts", store)
    assert r.returncode == 3 and missing in r.stderr and "not in the artifact store" in r.stderr
    r = pocv_here(capsys, "artifact", "verify", "sha256:00", "--artifacts", store)
    assert r.returncode == 3 and "blake3:<64 hex digits>" in r.stderr
    r = pocv_here(capsys, "artifact", "add", tmp_path / "nope", "--artifacts", store)
    assert r.returncode == 3 and "no such file or directory" in r.stderr
    r = pocv_here(capsys, "artifact", "list", "--artifacts", tmp_path / "w.bin")
    assert r.returncode == 3 and "not a directory" in r.stderr
    assert pocv_here(capsys, "artifact").returncode == 2


def test_job_writes_a_resolved_spec_with_typed_params(tmp_path, capsys) -> None:
    from pocv.jobs import JobSpec

    r = pocv_here(capsys, "job", "gemm-int8", "--steps", "40", "--seed", "11", "--param", "n=32",
                  "-o", tmp_path / "job.json")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    spec = JobSpec.from_json((tmp_path / "job.json").read_text())
    assert spec == SMALL and spec.job_id == SMALL.job_id  # the same job as the spec written by hand
    r = pocv_here(capsys, "job", "gemm-int8", "--steps", "40", "--seed", "11", "--param", "n=32", "--output", "text")
    assert r.stdout.startswith(f"job {SMALL.job_id.hex()} (gemm-int8@1, 40 steps, seed 11)")
    for argv, text in ((["--param", "n=abc"], "'n' must be an integer in"), (["--param", "n"], "NAME=VALUE"),
                       (["--param", "n=32", "--param", "n=64"], "given twice"),
                       (["--param", "m=1"], "has no parameter 'm'"), (["--steps", "0"], "at least 1")):
        args = ["job", "gemm-int8", *argv] if argv[0] == "--steps" else ["job", "gemm-int8", "--steps", "4", *argv]
        r = pocv_here(capsys, *args)
        assert r.returncode == 2 and text in r.stderr and r.stdout == "", (argv, r.stderr)
    r = pocv_here(capsys, "job", "nope", "--steps", "4")
    assert r.returncode == 3 and "unknown kernel" in r.stderr


def test_calibrate_record_options_need_a_record_calibrated_kernel(tmp_path, capsys) -> None:
    r = pocv_here(capsys, "calibrate", "gemm-int8", "--trials", "1", "--param", "n=16", "--add",
                  "--artifacts", tmp_path / "store")
    assert r.returncode == 3 and "takes no calibration record" in r.stderr and r.stdout == ""
    assert not (tmp_path / "store").exists()
    r = pocv_here(capsys, "calibrate", "gemm-int8", "--trials", "1", "--param", "n=x")
    assert r.returncode == 2 and "'n' must be an integer in 16..4096, got 'x'" in r.stderr


def test_checkpoint_policy_and_respond_workers(flow, tmp_path, capsys) -> None:
    r = pocv_here(capsys, "run", flow["job"], "--trace", tmp_path / "t", "-k", flow["wkey"], "--checkpoint",
                  "every:4", "-q", "-o", tmp_path / "c.json")
    assert r.returncode == 0, r.stderr
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["environment"]["checkpoint_every"] == 4 and c["root"] == json.loads(flow["commitment"].read_text())["root"]
    r = pocv_here(capsys, "respond", tmp_path / "t", flow["challenge"], "-k", flow["wkey"], "--workers", "2", "-q",
                  "-o", tmp_path / "r.pocv")
    assert r.returncode == 0, r.stderr
    assert Response.from_bytes((tmp_path / "r.pocv").read_bytes()).states == \
        Response.from_bytes(flow["response"].read_bytes()).states
    for argv, text in ((["--checkpoint", "evry:4"], "checkpoint policy must be"),
                       (["--checkpoint", "all", "--checkpoint-every", "4"], "not allowed with"),
                       (["--checkpoint", "budget:lots"], "expected a size")):
        r = pocv_here(capsys, "run", flow["job"], "--trace", tmp_path / "t2", "-k", flow["wkey"], *argv)
        assert r.returncode == 2 and text in r.stderr and not (tmp_path / "t2").exists(), (argv, r.stderr)
    r = pocv_here(capsys, "respond", tmp_path / "t", flow["challenge"], "-k", flow["wkey"], "--workers", "0",
                  "-o", tmp_path / "r2.pocv")
    assert r.returncode == 2 and "at least 1" in r.stderr
