"""Setting parties up with a mint, token accounts, lamports and tokens (demo, tests, devnet)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import solders.system_program as sp
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.errors import ChainError
from pocv.market import programs as P
from pocv.market.backend import Backend
from pocv.market.escrow import sign_and_send

DEFAULT_DECIMALS: Final = 6


def create_mint(backend: Backend, authority: Keypair, *, decimals: int = DEFAULT_DECIMALS,
                freeze: Pubkey | None = None, mint: Keypair | None = None) -> Pubkey:
    """A new classic SPL Token mint whose mint authority is ``authority`` (it also pays)."""
    mint = mint or Keypair()
    ixs = [
        sp.create_account(sp.CreateAccountParams(
            from_pubkey=authority.pubkey(), to_pubkey=mint.pubkey(), lamports=backend.rent_exempt(P.MINT_SIZE),
            space=P.MINT_SIZE, owner=P.TOKEN_PROGRAM_ID)),
        P.initialize_mint2(mint.pubkey(), decimals, authority.pubkey(), freeze),
    ]
    out = sign_and_send(backend, ixs, [authority, mint])
    if not out.ok:
        raise ChainError(f"creating mint {mint.pubkey()} failed: {out.error}")
    return mint.pubkey()


@dataclass(frozen=True, kw_only=True)
class Funding:
    owner: Pubkey
    token_account: Pubkey
    tokens: int
    lamports: int


def fund(backend: Backend, *, mint: Pubkey, mint_authority: Keypair, owner: Pubkey, tokens: int,
         lamports: int = 0) -> Funding:
    """Airdrop ``lamports`` (where the backend can), create the owner's associated token account
    if needed and mint ``tokens`` into it."""
    if lamports:
        backend.airdrop(owner, lamports)
    ata = P.associated_token_address(owner, mint)
    ixs = [P.create_associated_token_account_idempotent(mint_authority.pubkey(), owner, mint)]
    if tokens:
        ixs.append(P.mint_to(mint, ata, mint_authority.pubkey(), tokens))
    out = sign_and_send(backend, ixs, [mint_authority])
    if not out.ok:
        raise ChainError(f"funding {owner} with {tokens} tokens failed: {out.error}")
    return Funding(owner=owner, token_account=ata, tokens=tokens, lamports=lamports)


def token_balance(backend: Backend, owner: Pubkey, mint: Pubkey) -> int:
    acct = backend.get_account(P.associated_token_address(owner, mint))
    if acct is None:
        return 0
    return P.TokenAccountState.decode(acct.data).amount
