"""The loopback JSON-RPC server checked with an independent client: @solana/web3.js (npm, under
node), which validates every answer against its own schemas. Each method the RPC backend calls is
exercised with a validator's semantics: skipPreflight returns the signature, preflight refuses a
failing transaction with its logs, a failed transaction lands with its error, blockhashes expire by
block height, v0 transactions are read back."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from solders.signature import Signature

from pocv.market import jobprogram as J
from pocv.market.backend import LiteSVMBackend
from pocv.market.rpc import RpcBackend
from pocv.testing.rpc import LoopbackServer
from tests.market.conftest import make_world
from tests.npm_cache import npm_modules

WEB3_DIR = Path(__file__).resolve().parent / "web3"


def _web3_modules() -> Path:
    """node_modules with @solana/web3.js, installed (once) into a cache outside the checkout."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the @solana/web3.js check (CI installs them)")
    return npm_modules(WEB3_DIR, "web3", "@solana/web3.js")


def test_loopback_server_answers_web3js_like_a_validator() -> None:
    modules = _web3_modules()
    with LoopbackServer(LiteSVMBackend()) as url:
        w = make_world(backend=RpcBackend(url, poll_s=0.001))  # with the worker's offer
        be, program = w.backend, w.program
        t = w.terms()
        post = w.escrow.post(t, w.consumer, version="v0")
        assert post.ok
        job = {"address": str(program.addresses(t).job), "program": str(program.program_id),
               "signature": str(post.signature)}
        r = subprocess.run(["node", str(WEB3_DIR / "check.js")], input=json.dumps({"url": url, "job": job}),
                           capture_output=True, text=True, timeout=300, env={**os.environ, "NODE_PATH": str(modules)})
        be.close()
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["blockHeight"] == out["slot"] and out["rent165"] == 2_039_280
    assert out["airdrop"] is None and out["balance"] == 2 * 10**9
    assert out["payerAccount"] == {"owner": "11111111111111111111111111111111", "lamports": 2 * 10**9,
                                   "dataLength": 0, "executable": False}
    assert out["missing"] is None
    # skipPreflight: the signature the node answers is the transaction's own
    assert Signature.from_string(out["legacySignature"]) == Signature.from_bytes(
        base64.b64decode(out["legacyLocalSignature"]))
    assert out["legacyStatus"] is None and out["legacyTx"]["fee"] == 5_000 and out["legacyTx"]["err"] is None
    assert out["legacyTx"]["version"] == "legacy"
    assert out["legacyTx"]["pre"][0] - out["legacyTx"]["post"][0] == 10_000_000 + 5_000
    assert out["v0Status"] is None and out["v0Tx"] == {"version": 0, "fee": 5_000, "err": None}
    assert out["toBalance"] == 15_000_000
    # preflight refuses a failing transaction with the simulation's logs; skipPreflight lands it (two signatures)
    assert out["preflight"]["name"] == "SendTransactionError" and out["preflight"]["logs"]
    assert out["failedStatus"] == {"InstructionError": [0, {"Custom": 1}]}
    assert out["failedTx"] == {"fee": 10_000, "err": {"InstructionError": [0, {"Custom": 1}]}}
    # an expired blockhash: a signature, then no status while the block height passes the limit
    assert out["expired"] == "expired" and out["expiredTx"] is None
    listed = {s["signature"]: s["err"] for s in out["signatures"]}
    s1, s2, s3, s4 = out["sent"]
    assert listed[s1] is None and listed[s2] is None and listed[s3] is not None and s4 not in listed
    # the job program's account and a v0 POST sent by pocv, read by web3.js
    assert out["job"] == {"owner": str(program.program_id), "dataLength": J.JOB_SIZE, "kind": J.KIND_JOB,
                          "state": int(J.JobState.POSTED)}
    assert out["post"]["version"] == 0 and out["post"]["err"] is None and out["post"]["units"] > 0
    assert "Program log: pocv: POSTED" in out["post"]["logs"] or any("pocv" in x for x in out["post"]["logs"])
    assert out["post"]["postToken"] >= 2
