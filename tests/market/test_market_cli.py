"""``pocv market`` end to end on a ledger directory: every command, a fresh process state each time
(the embedded chain is reloaded from the ledger for every command, as separate invocations would)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair

from pocv.cli import main
from pocv.store import load_keypair
from pocv.testing.market import stand_in_verdict


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    ledger = tmp_path / "ledger"
    keys = {}
    for name in ("consumer", "worker", "cheat", "verifier"):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(list(bytes(Keypair()))))
        keys[name] = str(p)
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"kernel": "gemm-int8", "steps": 16, "seed": 3, "params": {"n": 64}}))

    def run(*argv: str, expect: int = 0) -> dict[str, Any]:
        code = main(["market", *argv, "--ledger", str(ledger), "--output", "json"])
        out, err = capsys.readouterr()
        assert code == expect, err
        if code != 0 and not out:
            assert err.count("\n") == 1 and "Traceback" not in err  # one line, never a traceback
            return {"error": err}
        return json.loads(out)

    run.keys = keys  # type: ignore[attr-defined]
    run.spec = str(spec)  # type: ignore[attr-defined]
    run.tmp = tmp_path  # type: ignore[attr-defined]
    return run


def _verdict(tmp: Path, job: str, root: str, beacon: str, key: str, ok: bool) -> str:
    v = stand_in_verdict(job_id=bytes.fromhex(job), root=bytes.fromhex(root), beacon=bytes.fromhex(beacon),
                         kernel="gemm-int8@1", key=load_keypair(key), ok=ok)
    p = tmp / f"verdict-{job[:8]}.json"
    p.write_text(v.to_json())
    return str(p)


def _pk(path: str) -> str:
    return str(load_keypair(path).pubkey())


def test_market_round_through_the_cli(cli: Any) -> None:
    k = cli.keys
    vpk = _pk(k["verifier"])
    cli("offer", "--price", "1000", "--min-bond", "400", "--max-bond", "800", "--verifiers", vpk,
        "--kernels", "gemm-int8", "-k", k["worker"])
    cli("offer", "--price", "1500", "--min-bond", "400", "--verifiers", vpk, "--kernels", "gemm-int8",
        "-k", k["cheat"])
    m = cli("match", "--kernel", "gemm-int8", "--max-price", "2000", "--verifier", vpk)
    assert m["match"]["worker"] == _pk(k["worker"]) and m["qualified"] == 2 and m["bond"] == 400
    # a verifier the workers do not accept: no match
    cli("match", "--kernel", "gemm-int8", "--max-price", "2000", "--verifier", _pk(k["consumer"]), expect=3)
    post = cli("post", cli.spec, "--verifier", vpk, "--max-price", "2000", "-k", k["consumer"])
    job = post["job_id"]
    assert post["worker"] == m["match"]["worker"] and post["transaction"]["fee"] == 5000
    assert post["verdict_deadline"] > post["commit_deadline"] > post["transaction"]["slot"]
    root = os.urandom(32).hex()
    # the wrong key cannot commit for the worker
    cli("commit", job, "--root", root, "-k", k["cheat"], expect=3)
    com = cli("commit", job, "--root", root, "-k", k["worker"])
    assert com["beacon"]["slot"] > com["beacon"]["commit_slot"]
    st = cli("status", job)
    assert st["status"] == "COMMITTED" and st["root"] == root and st["beacon"] == com["beacon"] and st["open"]
    verdict = _verdict(cli.tmp, job, root, com["beacon"]["beacon"], k["verifier"], ok=True)
    cli("settle", job, "--verdict", verdict, "-k", k["consumer"], expect=3)  # not the named verifier
    cli("claim", job, "-k", k["worker"], expect=3)  # before the verdict deadline
    # pre-signed against the verifier's durable nonce for this job, submitted later by the worker
    presigned = str(cli.tmp / "presigned.json")
    cli("settle", job, "--verdict", verdict, "-k", k["verifier"], "--out", presigned)
    cli("offer", "--price", "1600", "--min-bond", "400", "--verifiers", vpk, "--kernels", "gemm-int8",
        "-k", k["cheat"])  # blockhashes pass meanwhile
    done = cli("settle", job, "--submit", presigned, "-k", k["worker"])
    assert done["result"] == "PASSED" and done["transaction"]["ok"]
    again = cli("settle", job, "--submit", presigned, "-k", k["worker"], expect=4)  # the nonce advanced
    assert "failed" in again["error"]
    hist = cli("history")
    assert [j["status"] for j in hist["jobs"]] == ["PASSED"]
    rep = {r["worker"]: r for r in hist["reputation"]}[_pk(k["worker"])]
    assert rep["passes"] == 1 and rep["distinct_consumers"] == 1 and rep["trust"] > 0.5
    assert cli("status", job)["open"] is False


def test_fail_and_claim_exit_codes(cli: Any) -> None:
    k = cli.keys
    vpk, wpk = _pk(k["verifier"]), _pk(k["worker"])
    cli("offer", "--price", "500", "--min-bond", "0", "--max-bond", "1000", "--verifiers", vpk,
        "--kernels", "gemm-int8", "-k", k["worker"])
    post = cli("post", cli.spec, "--verifier", vpk, "--worker", wpk, "--price", "900", "--bond", "300",
               "-k", k["consumer"])
    job = post["job_id"]
    root = os.urandom(32).hex()
    com = cli("commit", job, "--root", root, "-k", k["worker"])
    verdict = _verdict(cli.tmp, job, root, com["beacon"]["beacon"], k["verifier"], ok=False)
    out = cli("settle", job, "--verdict", verdict, "-k", k["verifier"], expect=1)
    assert out["result"] == "FAIL"
    assert cli("status", job, expect=1)["status"] == "FAILED"
    # no commit: after the commit deadline anyone's CLAIM refunds the consumer
    spec2 = cli.tmp / "job2.json"
    spec2.write_text(json.dumps({"kernel": "gemm-int8", "steps": 16, "seed": 4, "params": {"n": 64}}))
    job2 = cli("post", str(spec2), "--verifier", vpk, "--worker", wpk, "--price", "900", "--bond", "300",
               "--commit-window", "1", "--verdict-window", "2", "-k", k["consumer"])["job_id"]
    cli("claim", job2, "-k", k["worker"], expect=3)  # the deadline is this slot: too early
    cli("offer", "--price", "500", "--min-bond", "0", "--max-bond", "1000", "--verifiers", vpk,
        "--kernels", "gemm-int8", "-k", k["worker"])  # a slot passes
    out = cli("claim", job2, "-k", k["cheat"])
    assert out["result"] == "REFUNDED"
    assert cli("status", job2)["status"] == "REFUNDED"


def test_bad_inputs_are_one_line_errors(cli: Any) -> None:
    k = cli.keys
    assert "64 hex digits" in cli("status", "nothex", expect=3)["error"]
    cli("status", "00" * 31, expect=3)
    cli("status", "ab" * 32, expect=3)  # not posted
    cli("offer", "--price", "1", "--min-bond", "1", "--verifiers", _pk(k["verifier"]), "--kernels", "gemm-int8",
        "-k", "/nonexistent.json", expect=3)
    cli("post", cli.spec, "--verifier", "notakey", "--max-price", "5", "-k", k["consumer"], expect=3)
    cli("match", "--kernel", "gemm-int8", "--max-price", "5", expect=3)  # no offers
    assert "give -u URL" in cli("deploy", "-k", k["consumer"], expect=3)["error"]  # the ledger has its program
    # terms outside the worker's offer (it has none): refused before a fee is spent
    cli("post", cli.spec, "--verifier", _pk(k["verifier"]), "--worker", _pk(k["worker"]), "--price", "5",
        "--bond", "1", "-k", k["consumer"], expect=3)
    code = main(["market", "status", "ab" * 32, "--url", "http://127.0.0.1:9", "--mint",
                 str(Keypair().pubkey()), "--program", str(Keypair().pubkey()), "--index", str(cli.tmp / "i.sqlite")])
    assert code == 4  # nothing listens there: a chain error


def test_cli_help_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("offer", "post", "match", "commit", "settle", "claim", "status", "history", "deploy"):
        assert main(["market", sub, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--output" in out and "-u URL_OR_MONIKER, --url URL_OR_MONIKER" in out


def test_cli_over_rpc_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same commands with --url against the loopback JSON-RPC server: the program deployed with
    pocv market deploy -u (through the upgradeable loader), mint and funds set up first."""
    from pocv.market.backend import LiteSVMBackend
    from pocv.market.rpc import RpcBackend
    from pocv.market.tokens import create_mint, fund
    from pocv.testing.rpc import LoopbackServer

    with LoopbackServer(LiteSVMBackend()) as url:
        be = RpcBackend(url, poll_s=0.001)
        auth = Keypair()
        be.airdrop(auth.pubkey(), 10**12)
        mint = create_mint(be, auth)
        files = {}
        for name in ("consumer", "worker", "verifier", "deployer"):
            k = Keypair()
            fund(be, mint=mint, mint_authority=auth, owner=k.pubkey(), tokens=10**9, lamports=10**10)
            files[name] = tmp_path / f"{name}.json"
            files[name].write_text(json.dumps(list(bytes(k))))
        be.close()
        spec = tmp_path / "job.json"
        spec.write_text(json.dumps({"kernel": "gemm-int8", "steps": 8, "seed": 1, "params": {"n": 16}}))

        def run(*argv: str, expect: int = 0, extra: tuple[str, ...] = ()) -> dict[str, Any]:
            code = main(["market", *argv, "--url", url, "--output", "json", *extra])
            out, err = capsys.readouterr()
            assert code == expect, err
            return json.loads(out) if out else {}

        dep = run("deploy", "-k", str(files["deployer"]))
        assert dep["transactions"] > 3 and dep["fees"] >= 5_000 * dep["transactions"]
        common = ("--mint", str(mint), "--program", dep["program"], "--index", str(tmp_path / "index.sqlite"),
                  "--capabilities", str(tmp_path / "caps.json"))
        vpk = _pk(str(files["verifier"]))
        run("offer", "--price", "700", "--min-bond", "100", "--verifiers", vpk, "--kernels", "gemm-int8",
            "-k", str(files["worker"]), extra=common)
        job = run("post", str(spec), "--verifier", vpk, "--max-price", "1000", "-k", str(files["consumer"]),
                  extra=common)["job_id"]
        root = os.urandom(32).hex()
        com = run("commit", job, "--root", root, "-k", str(files["worker"]), extra=common)
        verdict = _verdict(tmp_path, job, root, com["beacon"]["beacon"], str(files["verifier"]), ok=True)
        run("settle", job, "--verdict", verdict, "-k", str(files["verifier"]), extra=common)
        hist = run("history", extra=common)
        assert [j["status"] for j in hist["jobs"]] == ["PASSED"] and hist["jobs"][0]["paid"] == "worker"
