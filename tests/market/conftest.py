"""A funded world on the embedded chain: mint, consumer, worker, verifier, outsider."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.market import programs as P
from pocv.market.backend import LiteSVMBackend
from pocv.market.escrow import Escrow, EscrowAddresses, JobTerms
from pocv.market.tokens import create_mint, fund, token_balance
from pocv.records import Verdict
from pocv.testing.market import stand_in_verdict

TOKENS = 1_000_000_000
LAMPORTS = 10_000_000_000


@dataclass
class World:
    backend: LiteSVMBackend
    mint: Pubkey
    authority: Keypair
    consumer: Keypair
    worker: Keypair
    verifier: Keypair
    outsider: Keypair
    escrow: Escrow

    def terms(self, *, price: int = 1_000, bond: int = 500, worker: Keypair | None = None,
              job_id: bytes | None = None) -> JobTerms:
        return JobTerms(job_id=job_id or os.urandom(32), spec_hash=os.urandom(32), kernel="gemm-int8@1",
                        mint=self.mint, consumer=self.consumer.pubkey(), worker=(worker or self.worker).pubkey(),
                        verifier=self.verifier.pubkey(), price=price, bond=bond, deadline=1_900_000_000)

    def verdict(self, terms: JobTerms, root: bytes, *, ok: bool = True, key: Keypair | None = None,
                beacon: bytes | None = None) -> Verdict:
        return stand_in_verdict(job_id=terms.job_id, root=root, beacon=beacon or os.urandom(32), kernel=terms.kernel,
                                key=key or self.verifier, ok=ok)

    def tokens(self, who: Keypair | Pubkey) -> int:
        pk = who if isinstance(who, Pubkey) else who.pubkey()
        return token_balance(self.backend, pk, self.mint)

    def vault_tokens(self, terms: JobTerms) -> int | None:
        acct = self.backend.get_account(EscrowAddresses.derive(terms).vault)
        return None if acct is None else P.TokenAccountState.decode(acct.data).amount

    def post_and_commit(self, terms: JobTerms, worker: Keypair | None = None) -> bytes:
        out = self.escrow.post(terms, self.consumer)
        assert out.ok, out.error
        root = os.urandom(32)
        out = self.escrow.commit(terms, root, worker or self.worker)
        assert out.ok, out.error
        return root


def make_world(token_program: str = "p-token") -> World:
    be = LiteSVMBackend(token_program=token_program)  # type: ignore[arg-type]
    auth = Keypair()
    be.airdrop(auth.pubkey(), LAMPORTS)
    mint = create_mint(be, auth)
    keys = [Keypair() for _ in range(4)]
    for k in keys:
        fund(be, mint=mint, mint_authority=auth, owner=k.pubkey(), tokens=TOKENS, lamports=LAMPORTS)
    return World(be, mint, auth, *keys, Escrow(be))


@pytest.fixture(params=["p-token", "classic"])
def world(request: pytest.FixtureRequest) -> World:
    return make_world(request.param)


@pytest.fixture
def fast_world() -> World:
    return make_world("p-token")
