"""The embedded chain's ledger directory, so the CLI's LiteSVM chain outlives one invocation.

An in-process LiteSVM is gone when the process exits. ``pocv market`` therefore keeps the
embedded chain in a directory (``--ledger``, default ``./.pocv-ledger``):

* ``state.json`` -- every account any transaction or airdrop touched (programs and sysvars come
  from LiteSVM itself), the slot and slot hashes, and every landed transaction with its balances
  (the address index ``getSignaturesForAddress`` needs). Written atomically after each command.
* ``sandbox.json`` -- the sandbox market's mint and its mint authority ("faucet"), and the job
  program's address. The faucet funds any key the embedded chain has not seen (SOL and tokens),
  as ``solana airdrop`` does on a test validator. It exists only here: on a real cluster the mint
  is ``--mint`` and the program ``--program``. The program is deployed through the upgradeable
  loader when the ledger is created, and loaded again from the same ELF when it is reopened.
* ``capabilities.json`` -- the capabilities documents offered here (hash -> document), which
  the matcher needs to read offers (on chain: only their hashes).
* ``index.sqlite`` -- the indexer's cache (rebuildable from ``state.json``).
* ``lock`` -- an exclusive lock held for the whole command (two commands at once would fork).

Limits, stated: LiteSVM's transaction-signature history restarts with each process; the ledger's
own index refuses a replayed signature, and the blockhash chain is walked past every hash already
used, so old transactions cannot land again. Compute budgets, clock and rent are LiteSVM's.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Final

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from pocv.errors import PocvError, StorageError
from pocv.market.backend import LiteSVMBackend, TokenBuild
from pocv.market.escrow import install_program
from pocv.market.jobprogram import JobProgram, program_elf
from pocv.market.market import Capabilities
from pocv.market.tokens import create_mint, fund

DEFAULT_LEDGER: Final = ".pocv-ledger"
MAX_STATE_BYTES: Final = 512 * 1024 * 1024
SANDBOX_LAMPORTS: Final = 10 * 10**9  # what the faucet gives a new key: 10 SOL
SANDBOX_TOKENS: Final = 1_000 * 10**6  # and 1,000 tokens (6 decimals)
FAUCET_LAMPORTS: Final = 10**14  # of the 10**15 in LiteSVM's airdrop pool


class EmbeddedLedger:
    """Open with ``with EmbeddedLedger(path) as ledger: be = ledger.backend ...``; saved on success."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_LEDGER, *,
                 token_program: TokenBuild = "p-token") -> None:  # noqa: S107
        self.path = Path(path)
        self.token_program: TokenBuild = token_program
        self._lock: IO[bytes] | None = None
        self.backend: LiteSVMBackend
        self.mint: Pubkey
        self.faucet: Keypair
        self.program: JobProgram
        self.created = False

    def __enter__(self) -> EmbeddedLedger:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / "lock", "wb")  # held until __exit__
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        except OSError as e:
            raise StorageError(f"cannot open ledger directory {str(self.path)!r}: {e.strerror}") from e
        state_file, sandbox_file = self.path / "state.json", self.path / "sandbox.json"
        if state_file.exists() and sandbox_file.exists():
            try:
                if state_file.stat().st_size > MAX_STATE_BYTES:
                    raise StorageError(f"{state_file} is over {MAX_STATE_BYTES} bytes")
                state = json.loads(state_file.read_text())
                sandbox = json.loads(sandbox_file.read_text())
                self.program = JobProgram(Pubkey.from_string(sandbox["program"]))
                self.backend = LiteSVMBackend.from_state(state, [(self.program.program_id, program_elf())])
                self.mint = Pubkey.from_string(sandbox["mint"])
                self.faucet = Keypair.from_bytes(bytes(sandbox["faucet"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise StorageError(f"ledger {str(self.path)!r} is unreadable ({e}); delete it to start over") from e
        else:
            self.backend = LiteSVMBackend(token_program=self.token_program)
            self.faucet = Keypair()
            self.backend.airdrop(self.faucet.pubkey(), FAUCET_LAMPORTS)
            self.mint = create_mint(self.backend, self.faucet)
            self.program = install_program(self.backend, self.faucet)
            self._write(sandbox_file, json.dumps({"mint": str(self.mint), "faucet": list(bytes(self.faucet)),
                                                  "program": str(self.program.program_id)}))
            self.created = True
        return self

    def capabilities(self) -> dict[bytes, Capabilities]:
        """The capabilities documents offered on this ledger, by hash."""
        path = self.path / "capabilities.json"
        if not path.exists():
            return {}
        try:
            docs = json.loads(path.read_text())
            book = {bytes.fromhex(h): Capabilities.from_dict(d) for h, d in docs.items()}
        except (OSError, ValueError, AttributeError, PocvError) as e:
            raise StorageError(f"{path} is unreadable ({e}); delete it and offer again") from e
        return {h: c for h, c in book.items() if c.digest() == h}

    def remember(self, caps: Capabilities) -> None:
        book = self.capabilities()
        book[caps.digest()] = caps
        self._write(self.path / "capabilities.json",
                    json.dumps({h.hex(): c.to_dict() for h, c in sorted(book.items())}, indent=1))

    def ensure_funded(self, owner: Pubkey) -> bool:
        """Give a key the embedded chain has never seen SOL and tokens. True if it did."""
        if self.backend.balance(owner) > 0:
            return False
        fund(self.backend, mint=self.mint, mint_authority=self.faucet, owner=owner, tokens=SANDBOX_TOKENS,
             lamports=SANDBOX_LAMPORTS)
        return True

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except OSError as e:
            raise StorageError(f"cannot write {str(path)!r}: {e.strerror}") from e

    def save(self) -> None:
        self._write(self.path / "state.json", json.dumps(self.backend.to_state()))

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.save()  # whatever failed, every transaction that landed did happen: keep them
        finally:
            if self._lock is not None:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()

    @property
    def index_path(self) -> Path:
        return self.path / "index.sqlite"
