"""Solana's standard programs as the market uses them beside the job program: ids, instruction
encoders, account decoders.

System, SPL Token (classic, ``Tokenkeg...``) and Associated Token Account: minting and funding
parties, reading token accounts, durable nonces, the SlotHashes sysvar. The SPL Token
instructions are encoded here by hand (solana-py 0.41 dropped its token client); each encoder
names the instruction tag of ``spl_token::instruction::TokenInstruction``.

Account layouts decoded here (``spl_token::state``):

* ``Mint`` (82 bytes): mint authority COption<Pubkey>, supply u64, decimals u8, initialized u8,
  freeze authority COption<Pubkey>.
* ``Account`` (165 bytes): mint, owner, amount u64, delegate COption<Pubkey>, state u8,
  is_native COption<u64>, delegated amount u64, close authority COption<Pubkey>.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from pocv.errors import MalformedError

SYSTEM_PROGRAM_ID: Final = Pubkey.from_string("11111111111111111111111111111111")
TOKEN_PROGRAM_ID: Final = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID: Final = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ATA_PROGRAM_ID: Final = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SLOT_HASHES_SYSVAR: Final = Pubkey.from_string("SysvarS1otHashes111111111111111111111111111")

MINT_SIZE: Final = 82
ACCOUNT_SIZE: Final = 165
NONCE_ACCOUNT_SIZE: Final = 80

# TokenInstruction tags
_IX_TRANSFER: Final = 3
_IX_SET_AUTHORITY: Final = 6
_IX_MINT_TO: Final = 7
_IX_CLOSE_ACCOUNT: Final = 9
_IX_TRANSFER_CHECKED: Final = 12
_IX_INITIALIZE_ACCOUNT3: Final = 18
_IX_INITIALIZE_MINT2: Final = 20

#: spl_token::instruction::AuthorityType
AUTHORITY_MINT_TOKENS: Final = 0
AUTHORITY_FREEZE_ACCOUNT: Final = 1
AUTHORITY_ACCOUNT_OWNER: Final = 2
AUTHORITY_CLOSE_ACCOUNT: Final = 3

ACCOUNT_STATE_INITIALIZED: Final = 1


def _coption_key(key: Pubkey | None) -> bytes:
    """COption<Pubkey> as the token program's *instruction* encoding writes it (1-byte tag)."""
    return b"\x00" if key is None else b"\x01" + bytes(key)


def _authority_metas(authority: Pubkey, signers: tuple[Pubkey, ...]) -> list[AccountMeta]:
    if not signers:
        return [AccountMeta(authority, is_signer=True, is_writable=False)]
    return [AccountMeta(authority, is_signer=False, is_writable=False)] + [
        AccountMeta(s, is_signer=True, is_writable=False) for s in signers
    ]


def initialize_mint2(mint: Pubkey, decimals: int, authority: Pubkey, freeze: Pubkey | None = None) -> Instruction:
    data = struct.pack("<BB", _IX_INITIALIZE_MINT2, decimals) + bytes(authority) + _coption_key(freeze)
    return Instruction(TOKEN_PROGRAM_ID, data, [AccountMeta(mint, is_signer=False, is_writable=True)])


def initialize_account3(account: Pubkey, mint: Pubkey, owner: Pubkey) -> Instruction:
    data = bytes([_IX_INITIALIZE_ACCOUNT3]) + bytes(owner)
    return Instruction(TOKEN_PROGRAM_ID, data, [
        AccountMeta(account, is_signer=False, is_writable=True),
        AccountMeta(mint, is_signer=False, is_writable=False),
    ])


def transfer_checked(source: Pubkey, mint: Pubkey, dest: Pubkey, authority: Pubkey, amount: int,
                     decimals: int, signers: tuple[Pubkey, ...] = ()) -> Instruction:
    data = struct.pack("<BQB", _IX_TRANSFER_CHECKED, amount, decimals)
    return Instruction(TOKEN_PROGRAM_ID, data, [
        AccountMeta(source, is_signer=False, is_writable=True),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(dest, is_signer=False, is_writable=True),
        *_authority_metas(authority, signers),
    ])


def transfer(source: Pubkey, dest: Pubkey, authority: Pubkey, amount: int,
             signers: tuple[Pubkey, ...] = ()) -> Instruction:
    """Plain (unchecked) Transfer: used only by attack tests (the escrow uses TransferChecked)."""
    return Instruction(TOKEN_PROGRAM_ID, struct.pack("<BQ", _IX_TRANSFER, amount), [
        AccountMeta(source, is_signer=False, is_writable=True),
        AccountMeta(dest, is_signer=False, is_writable=True),
        *_authority_metas(authority, signers),
    ])


def close_account(account: Pubkey, dest: Pubkey, authority: Pubkey,
                  signers: tuple[Pubkey, ...] = ()) -> Instruction:
    return Instruction(TOKEN_PROGRAM_ID, bytes([_IX_CLOSE_ACCOUNT]), [
        AccountMeta(account, is_signer=False, is_writable=True),
        AccountMeta(dest, is_signer=False, is_writable=True),
        *_authority_metas(authority, signers),
    ])


def set_authority(account: Pubkey, authority: Pubkey, kind: int, new: Pubkey | None,
                  signers: tuple[Pubkey, ...] = ()) -> Instruction:
    data = bytes([_IX_SET_AUTHORITY, kind]) + _coption_key(new)
    return Instruction(TOKEN_PROGRAM_ID, data, [
        AccountMeta(account, is_signer=False, is_writable=True),
        *_authority_metas(authority, signers),
    ])


def mint_to(mint: Pubkey, dest: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    return Instruction(TOKEN_PROGRAM_ID, struct.pack("<BQ", _IX_MINT_TO, amount), [
        AccountMeta(mint, is_signer=False, is_writable=True),
        AccountMeta(dest, is_signer=False, is_writable=True),
        AccountMeta(authority, is_signer=True, is_writable=False),
    ])


def associated_token_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    addr, _ = Pubkey.find_program_address([bytes(owner), bytes(TOKEN_PROGRAM_ID), bytes(mint)], ATA_PROGRAM_ID)
    return addr


def create_associated_token_account_idempotent(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    return Instruction(ATA_PROGRAM_ID, b"\x01", [
        AccountMeta(payer, is_signer=True, is_writable=True),
        AccountMeta(associated_token_address(owner, mint), is_signer=False, is_writable=True),
        AccountMeta(owner, is_signer=False, is_writable=False),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
        AccountMeta(TOKEN_PROGRAM_ID, is_signer=False, is_writable=False),
    ])


# -- account decoders -------------------------------------------------------------------------


def _coption_key_at(data: bytes, off: int) -> Pubkey | None:
    (tag,) = struct.unpack_from("<I", data, off)
    if tag == 0:
        return None
    if tag != 1:
        raise MalformedError(f"COption tag at offset {off} is {tag}, expected 0 or 1")
    return Pubkey.from_bytes(data[off + 4: off + 36])


@dataclass(frozen=True, kw_only=True)
class MintState:
    mint_authority: Pubkey | None
    supply: int
    decimals: int
    initialized: bool
    freeze_authority: Pubkey | None

    @classmethod
    def decode(cls, data: bytes) -> MintState:
        if len(data) != MINT_SIZE:
            raise MalformedError(f"a mint account is {MINT_SIZE} bytes, got {len(data)}")
        supply, decimals, init = struct.unpack_from("<QBB", data, 36)
        return cls(mint_authority=_coption_key_at(data, 0), supply=supply, decimals=decimals,
                   initialized=init == 1, freeze_authority=_coption_key_at(data, 46))


@dataclass(frozen=True, kw_only=True)
class TokenAccountState:
    mint: Pubkey
    owner: Pubkey
    amount: int
    delegate: Pubkey | None
    state: int
    is_native: bool
    delegated_amount: int
    close_authority: Pubkey | None

    @classmethod
    def decode(cls, data: bytes) -> TokenAccountState:
        if len(data) != ACCOUNT_SIZE:
            raise MalformedError(f"a token account is {ACCOUNT_SIZE} bytes, got {len(data)}")
        (amount,) = struct.unpack_from("<Q", data, 64)
        (native_tag,) = struct.unpack_from("<I", data, 109)
        (delegated,) = struct.unpack_from("<Q", data, 121)
        return cls(mint=Pubkey.from_bytes(data[0:32]), owner=Pubkey.from_bytes(data[32:64]), amount=amount,
                   delegate=_coption_key_at(data, 72), state=data[108], is_native=native_tag != 0,
                   delegated_amount=delegated, close_authority=_coption_key_at(data, 129))


def nonce_value(data: bytes) -> Hash:
    """The durable nonce (a blockhash) stored in an initialized nonce account."""
    if len(data) != NONCE_ACCOUNT_SIZE:
        raise MalformedError(f"a nonce account is {NONCE_ACCOUNT_SIZE} bytes, got {len(data)}")
    version, state = struct.unpack_from("<II", data, 0)
    if state != 1:
        raise MalformedError(f"nonce account is not initialized (state {state}, version {version})")
    return Hash.from_bytes(data[40:72])


def nonce_authority(data: bytes) -> Pubkey:
    nonce_value(data)
    return Pubkey.from_bytes(data[8:40])


def iter_slot_hashes(data: bytes) -> Iterator[tuple[int, Hash]]:
    """The SlotHashes sysvar: u64 count, then (u64 slot, 32-byte hash), newest first."""
    if len(data) < 8:
        raise MalformedError(f"SlotHashes sysvar is too short ({len(data)} bytes)")
    (count,) = struct.unpack_from("<Q", data, 0)
    if 8 + count * 40 > len(data):
        raise MalformedError(f"SlotHashes claims {count} entries in {len(data)} bytes")
    for i in range(count):
        (slot,) = struct.unpack_from("<Q", data, 8 + 40 * i)
        yield slot, Hash.from_bytes(data[16 + 40 * i: 48 + 40 * i])


def decode_slot_hashes(data: bytes) -> list[tuple[int, Hash]]:
    return list(iter_slot_hashes(data))


# -- the classic SPL Token build inside solders -------------------------------------------------

_ELF_MAGIC: Final = b"\x7fELF\x02\x01\x01"
_EM_BPF: Final = (247, 263)  # EM_BPF, EM_SBPF
_CLASSIC_TOKEN_MARK: Final = b"token/program/src/processor.rs"
_PTOKEN_MARK: Final = b"pinocchio"


@cache
def classic_token_elf() -> bytes:
    """The classic SPL Token program (the build at ``Tokenkeg...`` on mainnet until p-token,
    SIMD-0266, replaced it at epoch 971, May 2026; solana-bankrun 0.4 still runs it).

    LiteSVM (solders 0.29) loads p-token, the rewrite, at the Token program id by default;
    the classic build ships inside solders' native library too (LiteSVM's ``with_spl_programs``
    set) but is not exposed to Python. This finds it: the one embedded SBF ELF whose strings
    name ``token/program/src/processor.rs`` and not pinocchio.
    """
    import solders.solders as native  # only to locate solders' bundled program binaries

    data = Path(native.__file__).read_bytes()
    found = []
    for m in re.finditer(re.escape(_ELF_MAGIC), data):
        off = m.start()
        (machine,) = struct.unpack_from("<H", data, off + 18)
        if machine not in _EM_BPF:
            continue
        (shoff,) = struct.unpack_from("<Q", data, off + 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, off + 0x3A)
        elf = data[off: off + shoff + shentsize * shnum]
        if _CLASSIC_TOKEN_MARK in elf and _PTOKEN_MARK not in elf:
            found.append(elf)
    if len(found) != 1:
        raise MalformedError(f"expected one classic SPL Token build inside solders, found {len(found)}")
    return found[0]
