"""The job program on a recording chain: deployed through the upgradeable loader in LiteSVM,
every transaction recorded so that the same transactions can be replayed in solana-bankrun."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import solders.system_program as sp
from solders.account import Account
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction
from spl.token import instructions as spl
from spl.token import models
from spl.token.constants import ACCOUNT_LEN, MINT_LEN

from pocv.market import jobprogram as J
from pocv.market.backend import LiteSVMBackend, TxOutcome
from tests.npm_cache import npm_modules

REPO = Path(__file__).resolve().parents[2]
PROGRAM_SO = REPO / "verifier" / "market" / "pocv_job.so"
BANKRUN_DIR = Path(__file__).resolve().parent / "bankrun"
TOKENS = 10**12
LAMPORTS = 10**11
DECIMALS = 6
# accounts whose state the two runtimes keep differently (builtins, sysvars): not compared
NOT_COMPARED = frozenset({J.SYSTEM_PROGRAM_ID, J.TOKEN_PROGRAM_ID, J.LOADER_UPGRADEABLE_ID, J.RENT_SYSVAR,
                          J.CLOCK_SYSVAR, J.SLOT_HASHES_SYSVAR})


@dataclass
class Recorded:
    """One transaction as LiteSVM ran it, with what bankrun needs to run it again."""

    tx: bytes
    signers: list[bytes]
    slot: int
    slot_hashes: bytes
    outcome: TxOutcome
    keys: list[Pubkey]
    post: dict[str, dict[str, Any] | None]


class Chain(LiteSVMBackend):
    """LiteSVM with the job program's needs: the Clock sysvar brought up to date before every
    transaction (the program reads it through a syscall, not as an account), and a record of
    everything sent, for the bankrun replay."""

    def __init__(self) -> None:
        super().__init__(token_program="classic")
        self.keys: dict[Pubkey, Keypair] = {}
        self.events: list[dict[str, Any] | Recorded] = []
        self.recording = True
        self.program_id: Pubkey | None = None  # deployed through the loader here, loaded at genesis in bankrun
        # bankrun's genesis holds the wrapped-SOL mint (as clusters do); LiteSVM's does not: the same here
        native = bytes(36) + bytes(8) + bytes([9, 1]) + bytes(36)
        self.svm.set_account(J.NATIVE_MINT, Account(1_000_000_000, native, J.TOKEN_PROGRAM_ID, False, 0))

    def register(self, *kps: Keypair) -> None:
        for kp in kps:
            self.keys[kp.pubkey()] = kp

    def airdrop(self, address: Pubkey, lamports: int) -> None:
        # the replay puts airdropped accounts in bankrun's genesis: only fresh keys can be airdropped
        assert self.get_account(address) is None, f"{address} exists: airdrop only to fresh keys"
        super().airdrop(address, lamports)
        if self.recording:
            acct = self.get_account(address)
            assert acct is not None
            self.events.append({"kind": "account", "key": str(address), "lamports": str(acct.lamports),
                                "owner": str(acct.owner), "data": base64.b64encode(acct.data).decode()})

    def put_account(self, address: Pubkey, *, lamports: int, owner: Pubkey, data: bytes) -> None:
        """A fresh account written directly (a spoof owned by another program): recorded for the
        replay like an airdrop."""
        assert self.get_account(address) is None, f"{address} exists"
        self.svm.set_account(address, Account(lamports, data, owner, False, 0))
        if self.recording:
            self.events.append({"kind": "account", "key": str(address), "lamports": str(lamports),
                                "owner": str(owner), "data": base64.b64encode(data).decode()})

    def send(self, tx: Transaction | VersionedTransaction) -> TxOutcome:  # type: ignore[override]
        self._flush()
        slot = self.slot()
        sh = self.get_account(J.SLOT_HASHES_SYSVAR)
        out = super().send(tx)  # type: ignore[arg-type]
        if self.recording:
            keys = list(tx.message.account_keys)
            signers = [bytes(self.keys[k]) for k in keys[: tx.message.header.num_required_signatures]]
            self.events.append(Recorded(tx=bytes(tx), signers=signers, slot=slot,
                                        slot_hashes=sh.data if sh is not None else b"", outcome=out, keys=keys,
                                        post=self.snapshot(keys)))
        return out

    def snapshot(self, keys: Sequence[Pubkey]) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for k in keys:
            if k in NOT_COMPARED or k == self.program_id:
                continue
            a = self.get_account(k)
            out[str(k)] = None if a is None or a.lamports == 0 else {
                "lamports": str(a.lamports), "owner": str(a.owner), "data": base64.b64encode(a.data).decode(),
                "executable": a.executable}
        return out

    def warp(self, slot: int) -> None:
        """Advance to ``slot`` (a new slot hash for each slot passed, as a cluster would)."""
        assert slot >= self.slot(), (slot, self.slot())
        while self.slot() < slot:
            self.advance_slot()


# -- bankrun -----------------------------------------------------------------------------------


def _bankrun_modules() -> Path | None:
    """node_modules with solana-bankrun@0.4.0, installed (once) into a cache outside the checkout."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    return npm_modules(BANKRUN_DIR, "bankrun", "solana-bankrun")


def replay_in_bankrun(events: Sequence[dict[str, Any] | Recorded], programs: dict[str, Pubkey]) -> list[dict[str, Any]]:
    modules = _bankrun_modules()
    if modules is None:
        pytest.skip("node and npm are needed for the solana-bankrun replay (CI installs them)")
    payload = []
    for ev in events:
        if isinstance(ev, Recorded):
            payload.append({"kind": "tx", "tx": base64.b64encode(ev.tx).decode(), "slot": ev.slot,
                            "signers": [base64.b64encode(s).decode() for s in ev.signers],
                            "slot_hashes": base64.b64encode(ev.slot_hashes).decode() if ev.slot_hashes else None})
        else:
            payload.append(ev)
    r = subprocess.run(["node", str(BANKRUN_DIR / "replay.js")],
                       input=json.dumps({"events": payload, "programs": [[n, str(k)] for n, k in programs.items()]}),
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "NODE_PATH": str(modules), "SBF_OUT_DIR": str(PROGRAM_SO.parent),
                            "RUST_LOG": "error"})
    assert r.returncode == 0, r.stderr[-3000:]
    return list(json.loads(r.stdout))


def _custom_code(err: str | None) -> int | None:
    if err is None:
        return None
    if "custom program error: 0x" in err:
        return int(err.split("custom program error: 0x")[1].split()[0].rstrip(")\"'"), 16)
    code = J.program_error(err)
    return int(code) if code is not None else None


_BUDGET = re.compile(r" of \d+ compute units$")
_CONSUMED = re.compile(r" consumed \d+$")
# Agave 1.18 (bankrun 0.4) charges 1,000 units for a cross-program invocation, Agave 4 (LiteSVM)
# 946 plus a few units per account meta and info: the caller's units differ by at most this per CPI
CPI_BASE_DIFFERENCE = 54


def _logs(lines: Sequence[str], program: Pubkey) -> list[str]:
    """Log lines as compared: the "of N compute units" budget cut off (Agave 1.18 grants 200,000
    units to every instruction, Agave 4 only 3,000 to a builtin), and, in a transaction with
    CPIs, the units the job program consumed (the CPIs' base cost differs, CPI_BASE_DIFFERENCE;
    the totals are compared apart). What every other program consumed is compared exactly."""
    out = [_BUDGET.sub("", line) for line in lines]
    if any(line.endswith(" invoke [2]") for line in lines):
        mine = f"Program {program} consumed"
        out = [_CONSUMED.sub(" consumed (compared apart)", line) if line.startswith(mine) else line
               for line in out]
    return out


@dataclass
class Comparison:
    transactions: int = 0
    compute_units: list[tuple[str, int, int]] = field(default_factory=list)  # (first log line, litesvm, bankrun)


def assert_same_in_bankrun(events: Sequence[dict[str, Any] | Recorded], program: Pubkey, *,
                           compare_cu: bool = True) -> Comparison:
    """Replay ``events`` in bankrun; every transaction must end the same way (success, or the
    same custom error), log the same lines, use the same compute units and leave the same
    account states."""
    results = replay_in_bankrun(events, {PROGRAM_SO.stem: program})
    recorded = [e for e in events if isinstance(e, Recorded)]
    assert len(results) == len(recorded)
    cmp = Comparison()
    for i, (rec, res) in enumerate(zip(recorded, results)):
        where = f"transaction {i} (slot {rec.slot}, LiteSVM error {rec.outcome.error})"
        assert (res["err"] is None) == rec.outcome.ok, f"{where}: bankrun says {res['err']}"
        assert _custom_code(res["err"]) == _custom_code(rec.outcome.error), f"{where}: bankrun says {res['err']}"
        if not rec.outcome.landed:
            continue
        cmp.transactions += 1
        assert _logs(res["logs"], program) == _logs(rec.outcome.logs, program), f"{where}: logs differ"
        cpis = sum(1 for line in rec.outcome.logs if line.endswith(" invoke [2]"))
        extra = int(res["cu"]) - rec.outcome.compute_units
        assert 0 <= extra <= CPI_BASE_DIFFERENCE * cpis, f"{where}: compute units {rec.outcome.compute_units} " \
            f"(LiteSVM) and {res['cu']} (bankrun) differ by more than the {cpis} CPIs' base cost explains"
        cmp.compute_units.append((rec.outcome.logs[0] if rec.outcome.logs else "", rec.outcome.compute_units,
                                  int(res["cu"])))
        theirs = {k: v for k, v in res["accounts"].items()
                  if Pubkey.from_string(k) not in NOT_COMPARED and k != str(program)}
        assert theirs == rec.post, f"{where}: account states differ"
    return cmp


# -- a funded world with the program deployed ----------------------------------------------------


@dataclass
class Party:
    key: Keypair
    token: Pubkey  # its token account of the world's mint

    @property
    def pubkey(self) -> Pubkey:
        return self.key.pubkey()


@dataclass
class World:
    chain: Chain
    program: J.JobProgram
    payer: Keypair
    mint: Pubkey
    mint_authority: Keypair
    consumer: Party
    worker: Party
    verifier: Party
    outsider: Party

    def party(self) -> Party:
        """A new funded party with a token account of the world's mint."""
        kp = Keypair()
        self.chain.register(kp)
        self.chain.airdrop(kp.pubkey(), LAMPORTS)
        return Party(kp, self.token_account(kp.pubkey(), TOKENS))

    def token_account(self, owner: Pubkey, amount: int, mint: Pubkey | None = None,
                      authority: Keypair | None = None) -> Pubkey:
        acct = Keypair()
        self.chain.register(acct)
        mint = mint or self.mint
        authority = authority or self.mint_authority
        ixs = [sp.create_account(sp.CreateAccountParams(
                   from_pubkey=self.payer.pubkey(), to_pubkey=acct.pubkey(),
                   lamports=self.chain.rent_exempt(ACCOUNT_LEN), space=ACCOUNT_LEN, owner=J.TOKEN_PROGRAM_ID)),
               spl.initialize_account3(models.InitializeAccount3Params(
                   program_id=J.TOKEN_PROGRAM_ID, account=acct.pubkey(), mint=mint, owner=owner))]
        if amount:
            ixs.append(spl.mint_to(models.MintToParams(program_id=J.TOKEN_PROGRAM_ID, mint=mint, dest=acct.pubkey(),
                                                    mint_authority=authority.pubkey(), amount=amount)))
        self.ok(ixs, [self.payer, acct, authority] if amount else [self.payer, acct])
        return acct.pubkey()

    def new_mint(self, *, freeze: Pubkey | None = None) -> tuple[Pubkey, Keypair]:
        mint, authority = Keypair(), Keypair()
        self.chain.register(mint, authority)
        self.ok([sp.create_account(sp.CreateAccountParams(
                    from_pubkey=self.payer.pubkey(), to_pubkey=mint.pubkey(), lamports=self.chain.rent_exempt(MINT_LEN),
                    space=MINT_LEN, owner=J.TOKEN_PROGRAM_ID)),
                 spl.initialize_mint2(models.InitializeMint2Params(
                     program_id=J.TOKEN_PROGRAM_ID, mint=mint.pubkey(), decimals=DECIMALS,
                     mint_authority=authority.pubkey(), freeze_authority=freeze))],
                [self.payer, mint])
        return mint.pubkey(), authority

    def send(self, ixs: Sequence[Instruction], signers: Sequence[Keypair], *,
             version: J.MessageVersion = "legacy") -> TxOutcome:
        return J.send(self.chain, ixs, signers, version=version)

    def ok(self, ixs: Sequence[Instruction], signers: Sequence[Keypair], *,
           version: J.MessageVersion = "legacy") -> TxOutcome:
        out = self.send(ixs, signers, version=version)
        assert out.ok, (out.error, out.logs)
        return out

    def fails(self, ixs: Sequence[Instruction], signers: Sequence[Keypair], code: J.ProgramError | None, *,
              version: J.MessageVersion = "legacy") -> TxOutcome:
        """The transaction lands and fails, with the job program's ``code`` (None: any error)."""
        out = self.send(ixs, signers, version=version)
        assert not out.ok, f"expected {code!r}, the transaction succeeded"
        if code is not None:
            assert J.program_error(out.error) == code, (out.error, out.logs[-3:])
        return out

    def tokens(self, account: Pubkey) -> int | None:
        a = self.chain.get_account(account)
        if a is None:
            return None
        return int.from_bytes(a.data[64:72], "little")

    def lamports(self, address: Pubkey) -> int:
        return self.chain.balance(address)

    def offer(self, worker: Party, *, verifiers: Sequence[Pubkey] | None = None, price: int = 1,
              min_bond: int = 0, max_bond: int = J.U64_MAX, mint: Pubkey | None = None) -> J.Offer:
        offer = J.Offer(mint=mint or self.mint, price=price, min_bond=min_bond, max_bond=max_bond,
                        verifiers=tuple(verifiers or (self.verifier.pubkey,)), fingerprint=os.urandom(32))
        self.ok([self.program.offer(worker.pubkey, offer)], [worker.key])
        return offer

    def terms(self, *, price: int = 1_000, bond: int = 500, commit_in: int = 10, verdict_in: int = 20,
              consumer: Party | None = None, worker: Party | None = None, verifier: Party | None = None,
              mint: Pubkey | None = None) -> J.JobTerms:
        now = self.chain.slot()
        return J.JobTerms(job_id=os.urandom(32), spec_hash=os.urandom(32),
                          consumer=(consumer or self.consumer).pubkey, worker=(worker or self.worker).pubkey,
                          verifier=(verifier or self.verifier).pubkey, mint=mint or self.mint, price=price, bond=bond,
                          commit_deadline=now + commit_in, verdict_deadline=now + verdict_in)

    def post(self, terms: J.JobTerms, consumer: Party | None = None) -> TxOutcome:
        c = consumer or self.consumer
        return self.ok([self.program.post(terms, source=c.token)], [c.key])

    def commit(self, terms: J.JobTerms, worker: Party | None = None, root: bytes | None = None) -> TxOutcome:
        w = worker or self.worker
        return self.ok([self.program.commit(terms, root or os.urandom(32), source=w.token)], [w.key])

    def job(self, terms: J.JobTerms) -> J.JobAccount:
        job = self.program.read_job(self.chain, terms)
        assert job is not None
        return job

    def verdict_ix(self, terms: J.JobTerms, *, passed: bool, beacon_slot: int | None = None,
                   dest: Pubkey | None = None) -> Instruction:
        if beacon_slot is None:
            beacon_slot = self.job(terms).commit_slot + 1
        paid = self.worker if passed else self.consumer
        return self.program.verdict(terms, passed=passed, beacon_slot=beacon_slot, digest=os.urandom(32),
                                    dest=dest or paid.token)


def make_world() -> World:
    chain = Chain()
    # deployed here through the upgradeable loader (which runs the ELF checks and the verifier),
    # by a deployer used for nothing else: bankrun loads the same bytes at genesis instead
    deployer, program = Keypair(), Keypair()
    chain.recording = False
    chain.airdrop(deployer.pubkey(), 100 * LAMPORTS)
    J.deploy(chain, deployer, program, PROGRAM_SO.read_bytes())
    chain.recording = True
    chain.program_id = program.pubkey()
    payer = Keypair()
    chain.register(payer, program)
    chain.airdrop(payer.pubkey(), 100 * LAMPORTS)
    mint, authority = Keypair(), Keypair()
    chain.register(mint, authority)
    w = World(chain=chain, program=J.JobProgram(program.pubkey()), payer=payer, mint=mint.pubkey(),
              mint_authority=authority, consumer=None, worker=None, verifier=None, outsider=None)  # type: ignore[arg-type]
    w.ok([sp.create_account(sp.CreateAccountParams(
             from_pubkey=payer.pubkey(), to_pubkey=mint.pubkey(), lamports=chain.rent_exempt(MINT_LEN), space=MINT_LEN,
             owner=J.TOKEN_PROGRAM_ID)),
          spl.initialize_mint2(models.InitializeMint2Params(program_id=J.TOKEN_PROGRAM_ID, mint=mint.pubkey(),
                                                         decimals=DECIMALS, mint_authority=authority.pubkey()))],
         [payer, mint])
    w.consumer, w.worker, w.verifier, w.outsider = w.party(), w.party(), w.party(), w.party()
    w.offer(w.worker)
    return w


@pytest.fixture
def world() -> Iterator[World]:
    """A deployed program and four funded parties; after the test, every transaction it sent
    is replayed in solana-bankrun and must end the same way there."""
    w = make_world()
    yield w
    assert_same_in_bankrun(w.chain.events, w.program.program_id)
