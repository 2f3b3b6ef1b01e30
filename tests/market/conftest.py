"""A funded world on the embedded chain with the job program deployed: mint, consumer, worker,
verifier, outsider, and the worker's offer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.market import jobprogram as J
from pocv.market.backend import LiteSVMBackend
from pocv.market.escrow import Escrow, install_program
from pocv.market.market import Capabilities, publish_offer
from pocv.market.tokens import create_mint, fund, token_balance
from pocv.records import Verdict
from pocv.testing.market import stand_in_verdict

TOKENS = 1_000_000_000
LAMPORTS = 10_000_000_000
CAPS = Capabilities(device_class="cpu", kernels=("gemm-int8",))


@dataclass
class World:
    backend: Any  # LiteSVMBackend, or an RpcBackend on the loopback server
    program: J.JobProgram
    mint: Pubkey
    authority: Keypair
    consumer: Keypair
    worker: Keypair
    verifier: Keypair
    outsider: Keypair
    escrow: Escrow

    def terms(self, *, price: int = 1_000, bond: int = 500, worker: Keypair | None = None,
              job_id: bytes | None = None, commit_window: int = 10, verdict_window: int = 10) -> J.JobTerms:
        return self.escrow.terms(job_id=job_id or os.urandom(32), spec_hash=os.urandom(32),
                                 consumer=self.consumer.pubkey(), worker=(worker or self.worker).pubkey(),
                                 verifier=self.verifier.pubkey(), mint=self.mint, price=price, bond=bond,
                                 commit_window=commit_window, verdict_window=verdict_window)

    def offer(self, worker: Keypair, *, price: int = 1, min_bond: int = 0, max_bond: int = 10**12) -> None:
        _, out = publish_offer(self.backend, self.program, worker, mint=self.mint, price=price, min_bond=min_bond,
                               max_bond=max_bond, verifiers=(self.verifier.pubkey(),), fingerprint=os.urandom(32),
                               capabilities=CAPS)
        assert out.ok, out.error

    def verdict(self, terms: J.JobTerms, root: bytes, *, ok: bool = True, key: Keypair | None = None,
                beacon: bytes | None = None) -> Verdict:
        if beacon is None:
            beacon = self.escrow.beacon(terms).value
        return stand_in_verdict(job_id=terms.job_id, root=root, beacon=beacon, kernel="gemm-int8@1",
                                key=key or self.verifier, ok=ok)

    def tokens(self, who: Keypair | Pubkey) -> int:
        pk = who if isinstance(who, Pubkey) else who.pubkey()
        return token_balance(self.backend, pk, self.mint)

    def vault_tokens(self, terms: J.JobTerms) -> int | None:
        acct = self.backend.get_account(self.program.addresses(terms).vault)
        return None if acct is None else int.from_bytes(acct.data[64:72], "little")

    def post_and_commit(self, terms: J.JobTerms, worker: Keypair | None = None) -> bytes:
        out = self.escrow.post(terms, self.consumer)
        assert out.ok, out.error
        root = os.urandom(32)
        out = self.escrow.commit(terms, root, worker or self.worker)
        assert out.ok, out.error
        return root


def make_world(token_program: str = "p-token", *, index: bool = True, backend: Any = None) -> World:
    """Four funded parties, a mint and the job program on ``backend`` (default: a new LiteSVM)."""
    be = backend if backend is not None else LiteSVMBackend(token_program=token_program, index=index)  # type: ignore[arg-type]
    auth = Keypair()
    be.airdrop(auth.pubkey(), 100 * LAMPORTS)
    mint = create_mint(be, auth)
    program = install_program(be, auth)
    keys = [Keypair() for _ in range(4)]
    for k in keys:
        fund(be, mint=mint, mint_authority=auth, owner=k.pubkey(), tokens=TOKENS, lamports=LAMPORTS)
    consumer, worker, verifier, outsider = keys
    w = World(be, program, mint, auth, consumer, worker, verifier, outsider, Escrow(be, program))
    w.offer(w.worker)
    return w


@pytest.fixture(params=["p-token", "classic"])
def world(request: pytest.FixtureRequest) -> World:
    return make_world(request.param)


@pytest.fixture
def fast_world() -> World:
    return make_world("p-token")
