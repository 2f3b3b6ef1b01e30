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


def test_market_round_through_the_cli(cli: Any) -> None:
    k = cli.keys
    vpk = str(load_keypair(k["verifier"]).pubkey())
    cli("offer", "--price", "1000", "--bond", "400", "--kernels", "gemm-int8", "-k", k["worker"])
    cli("offer", "--price", "1500", "--bond", "400", "--kernels", "gemm-int8", "-k", k["cheat"])
    m = cli("match", "--kernel", "gemm-int8", "--max-price", "2000")
    assert m["match"]["worker"] == str(load_keypair(k["worker"]).pubkey()) and m["qualified"] == 2
    post = cli("post", cli.spec, "--verifier", vpk, "--max-price", "2000", "-k", k["consumer"])
    job = post["job_id"]
    assert post["worker"] == m["match"]["worker"] and post["transaction"]["fee"] == 5000
    root = os.urandom(32).hex()
    # the wrong key cannot commit for the worker
    cli("commit", job, "--root", root, "-k", k["cheat"], expect=3)
    com = cli("commit", job, "--root", root, "-k", k["worker"])
    assert com["beacon"]["slot"] > com["beacon"]["commit_slot"]
    st = cli("status", job)
    assert st["status"] == "committed" and st["root"] == root and st["beacon"] == com["beacon"]
    verdict = _verdict(cli.tmp, job, root, com["beacon"]["beacon"], k["verifier"], ok=True)
    partial = str(cli.tmp / "partial.json")
    cli("settle", job, "--verdict", verdict, "-k", k["verifier"], "--out", partial)
    cli("settle", job, "--verdict", verdict, "--cosign", partial, "-k", k["consumer"], expect=3)  # not its turn
    done = cli("settle", job, "--verdict", verdict, "--cosign", partial, "-k", k["worker"])
    assert done["result"] == "PASS" and done["transaction"]["ok"]
    again = cli("settle", job, "--verdict", verdict, "--cosign", partial, "-k", k["worker"], expect=3)
    assert "already settled" in again["error"]
    hist = cli("history")
    assert [j["status"] for j in hist["jobs"]] == ["PASS"]
    assert hist["reputation"][0]["passes"] == 1


def test_fail_and_timeout_exit_codes(cli: Any) -> None:
    k = cli.keys
    vpk = str(load_keypair(k["verifier"]).pubkey())
    wpk = str(load_keypair(k["worker"]).pubkey())
    post = cli("post", cli.spec, "--verifier", vpk, "--worker", wpk, "--price", "900", "--bond", "300",
               "-k", k["consumer"])
    job = post["job_id"]
    root = os.urandom(32).hex()
    com = cli("commit", job, "--root", root, "-k", k["worker"])
    verdict = _verdict(cli.tmp, job, root, com["beacon"]["beacon"], k["verifier"], ok=False)
    out = cli("settle", job, "--verdict", verdict, "-k", k["verifier"], "--cosigner", k["consumer"], expect=1)
    assert out["result"] == "FAIL"
    assert cli("status", job, expect=1)["status"] == "FAIL"
    spec2 = cli.tmp / "job2.json"
    spec2.write_text(json.dumps({"kernel": "gemm-int8", "steps": 16, "seed": 4, "params": {"n": 64}}))
    job2 = cli("post", str(spec2), "--verifier", vpk, "--worker", wpk, "--price", "900", "--bond", "300",
               "-k", k["consumer"])["job_id"]
    out = cli("settle", job2, "--timeout", "-k", k["consumer"], "--cosigner", k["worker"])
    assert out["result"] == "TIMEOUT"


def test_bad_inputs_are_one_line_errors(cli: Any) -> None:
    k = cli.keys
    assert "64 hex digits" in cli("status", "nothex", expect=3)["error"]
    cli("status", "00" * 31, expect=3)
    cli("status", "ab" * 32, expect=3)  # not posted
    cli("offer", "--price", "1", "--bond", "1", "--kernels", "gemm-int8", "-k", "/nonexistent.json", expect=3)
    cli("post", cli.spec, "--verifier", "notakey", "--max-price", "5", "-k", k["consumer"], expect=3)
    cli("match", "--kernel", "gemm-int8", "--max-price", "5", expect=3)  # no offers
    code = main(["market", "status", "ab" * 32, "--url", "http://127.0.0.1:9", "--mint",
                 str(Keypair().pubkey()), "--index", str(cli.tmp / "i.sqlite")])
    assert code == 4  # nothing listens there: a chain error


def test_cli_help_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for sub in ("offer", "post", "match", "commit", "settle", "status", "history"):
        assert main(["market", sub, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--output" in out and "-u URL_OR_MONIKER, --url URL_OR_MONIKER" in out


def test_cli_over_rpc_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same commands with --url against the loopback JSON-RPC server (mint and funds set up first)."""
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
        for name in ("consumer", "worker", "verifier"):
            k = Keypair()
            fund(be, mint=mint, mint_authority=auth, owner=k.pubkey(), tokens=10**9, lamports=10**10)
            files[name] = tmp_path / f"{name}.json"
            files[name].write_text(json.dumps(list(bytes(k))))
        be.close()
        spec = tmp_path / "job.json"
        spec.write_text(json.dumps({"kernel": "gemm-int8", "steps": 8, "seed": 1, "params": {"n": 16}}))
        common = ["--url", url, "--mint", str(mint), "--index", str(tmp_path / "index.sqlite"), "--output", "json"]

        def run(*argv: str, expect: int = 0) -> dict[str, Any]:
            code = main(["market", *argv, *common])
            out, err = capsys.readouterr()
            assert code == expect, err
            return json.loads(out) if out else {}

        vpk = str(load_keypair(files["verifier"]).pubkey())
        run("offer", "--price", "700", "--bond", "100", "--kernels", "gemm-int8", "-k", str(files["worker"]))
        job = run("post", str(spec), "--verifier", vpk, "--max-price", "1000", "-k", str(files["consumer"]))["job_id"]
        root = os.urandom(32).hex()
        com = run("commit", job, "--root", root, "-k", str(files["worker"]))
        verdict = _verdict(tmp_path, job, root, com["beacon"]["beacon"], str(files["verifier"]), ok=True)
        run("settle", job, "--verdict", verdict, "-k", str(files["verifier"]), "--cosigner", str(files["worker"]))
        hist = run("history")
        assert [j["status"] for j in hist["jobs"]] == ["PASS"] and hist["jobs"][0]["paid"] == {"worker": 800}
