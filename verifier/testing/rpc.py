"""A small Solana JSON-RPC server over the embedded LiteSVM chain, for loopback tests and benches.

No Solana validator can be installed here, so the RPC backend is tested end to end against this:
solana-py's ``AsyncClient`` talks HTTP to it exactly as to a cluster, and a test checks every
answer with ``@solana/web3.js`` as an independent client (tests/market/web3). It answers the
methods the market uses -- getLatestBlockhash, getBlockHeight, sendTransaction,
getSignatureStatuses, getTransaction, getAccountInfo, getBalance, requestAirdrop,
getMinimumBalanceForRentExemption, getSignaturesForAddress, getSlot, getVersion, getHealth -- in
the shapes a validator gives, with a validator's semantics where the market depends on them:

* ``sendTransaction`` with ``skipPreflight`` returns the signature whatever then happens to the
  transaction; one that cannot be executed (an expired blockhash, a fee payer without funds) is
  dropped without a status, as a leader drops it. Without ``skipPreflight`` the transaction is
  simulated first and a failing one is refused with the simulation's error and logs (-32002).
* Blockhashes expire by block height: ``getLatestBlockhash`` gives the ``lastValidBlockHeight``
  past which the blockhash is refused. LiteSVM accepts only its latest blockhash, so that height
  is the current one; a dropped transaction lets one empty block pass, so a client polling
  ``getBlockHeight`` sees its blockhash expire (a cluster makes blocks without transactions).
* A transaction that executes and fails lands, pays its fee, and has its error in
  ``getSignatureStatuses`` and ``getTransaction`` (``meta.err``), as ``{"InstructionError":
  [index, {"Custom": code}]}``.
* Legacy and v0 transactions are accepted and read back (``"version": "legacy"`` or ``0``).

It binds to 127.0.0.1 only. Not a validator: one block per landed transaction, no forks, no auth.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from pocv.market.backend import LiteSVMBackend, TokenBalance, TxRecord
from pocv.market.programs import TOKEN_PROGRAM_ID

MAX_REQUEST_BYTES: Final = 1 << 20  # a transaction is at most 1,232 bytes; batches stay small
SIGNATURES_LIMIT: Final = 1_000
JSONRPC_INVALID_PARAMS: Final = -32602
JSONRPC_METHOD_NOT_FOUND: Final = -32601
JSONRPC_PARSE_ERROR: Final = -32700
JSONRPC_SEND_FAILED: Final = -32002
JSONRPC_UNSUPPORTED_VERSION: Final = -32015


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def _get(obj: Any, name: str) -> Any:
    """solders error fields are properties on some classes and methods on others."""
    v = getattr(obj, name)
    return v() if callable(v) else v


def _name(enum_value: Any) -> str:
    return str(enum_value).rsplit(".", 1)[-1]


def _err_json(error: Any) -> Any:
    """A solders TransactionError as the JSON a validator writes (``{"InstructionError": [0,
    {"Custom": 1}]}``, ``"BlockhashNotFound"``, ...); solders' own ``to_json`` is another shape."""
    kind = type(error).__name__
    if kind == "TransactionErrorInstructionError":
        inner = _get(error, "err")
        ik = type(inner).__name__
        if ik == "InstructionErrorCustom":
            detail: Any = {"Custom": _get(inner, "code")}
        elif ik == "InstructionErrorBorshIO":
            detail = {"BorshIoError": _get(inner, "value")}
        else:
            detail = _name(inner)
        return {"InstructionError": [_get(error, "index"), detail]}
    if kind in ("TransactionErrorInsufficientFundsForRent", "TransactionErrorProgramExecutionTemporarilyRestricted"):
        return {kind.removeprefix("TransactionError"): {"account_index": _get(error, "account_index")}}
    if kind == "TransactionErrorDuplicateInstruction":
        return {"DuplicateInstruction": _get(error, "index")}
    return _name(error)


class LoopbackRpc:
    """JSON-RPC dispatch over a :class:`LiteSVMBackend` (thread-safe: one lock)."""

    def __init__(self, backend: LiteSVMBackend) -> None:
        self.backend = backend
        self.lock = threading.Lock()
        self._statuses: dict[str, tuple[int, Any]] = {}  # signature -> (slot, err json)

    def _ctx(self, value: Any) -> dict[str, Any]:
        return {"context": {"slot": self.backend.slot(), "apiVersion": "2.2.0"}, "value": value}

    def handle(self, method: str, params: list[Any]) -> Any:
        be = self.backend
        if method == "getHealth":
            return "ok"
        if method == "getVersion":
            return {"solana-core": "2.2.0", "feature-set": 0}
        if method == "getSlot":
            return be.slot()
        if method == "getBlockHeight":
            return be.slot()  # one block per slot: no skipped slots here
        if method == "getLatestBlockhash":
            # LiteSVM accepts only the latest blockhash: valid while the block height is the current one
            return self._ctx({"blockhash": str(be.latest_blockhash()), "lastValidBlockHeight": be.slot()})
        if method == "getMinimumBalanceForRentExemption":
            return be.rent_exempt(int(params[0]))
        if method == "getBalance":
            return self._ctx(be.balance(Pubkey.from_string(params[0])))
        if method == "getAccountInfo":
            acct = be.get_account(Pubkey.from_string(params[0]))
            if acct is None:
                return self._ctx(None)
            return self._ctx({"lamports": acct.lamports, "owner": str(acct.owner), "executable": acct.executable,
                              "rentEpoch": 18446744073709551615, "space": len(acct.data),
                              "data": [base64.b64encode(acct.data).decode(), "base64"]})
        if method == "requestAirdrop":
            pk, lamports = Pubkey.from_string(params[0]), int(params[1])
            r = be.svm.airdrop(pk, lamports)
            if isinstance(r, FailedTransactionMetadata):
                raise RpcError(JSONRPC_SEND_FAILED, f"airdrop failed: {r.err()}")
            sig = str(r.signature())
            self._statuses[sig] = (be.slot(), None)
            return sig
        if method == "sendTransaction":
            opts = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
            raw = params[0]
            data = base64.b64decode(raw) if opts.get("encoding", "base58") == "base64" else _b58decode(raw)
            tx = VersionedTransaction.from_bytes(data)  # legacy and v0 wire formats alike
            sig = str(tx.signatures[0])
            if not opts.get("skipPreflight", False):
                sim = be.svm.simulate_transaction(tx)
                if isinstance(sim, FailedTransactionMetadata):
                    meta = sim.meta()
                    raise RpcError(JSONRPC_SEND_FAILED, f"Transaction simulation failed: {sim.err()}", data={
                        "err": _err_json(sim.err()), "logs": list(meta.logs()), "accounts": None,
                        "unitsConsumed": meta.compute_units_consumed(), "returnData": None,
                        "innerInstructions": None})
            out = be.send(tx)
            if not out.landed:  # dropped before execution: no status; a block passes without it
                be.advance_slot()
                return sig
            raw_err = be.raw_error(out.signature)
            self._statuses[str(out.signature)] = (out.slot, None if raw_err is None else _err_json(raw_err))
            return str(out.signature)
        if method == "getSignatureStatuses":
            vals: list[dict[str, Any] | None] = []
            for s in params[0]:
                st = self._statuses.get(s)
                if st is None:
                    vals.append(None)
                    continue
                slot, err = st
                vals.append({"slot": slot, "confirmations": None, "err": err,
                             "status": {"Ok": None} if err is None else {"Err": err},
                             "confirmationStatus": "finalized"})
            return self._ctx(vals)
        if method == "getSignaturesForAddress":
            opts = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
            limit = min(int(opts.get("limit") or SIGNATURES_LIMIT), SIGNATURES_LIMIT)
            sigs = [str(s) for s in be.signatures_for_address(Pubkey.from_string(params[0]))][::-1]
            before = opts.get("before")
            if before is not None:
                sigs = sigs[sigs.index(before) + 1:] if before in sigs else []
            found: list[dict[str, Any]] = []
            for s in sigs[:limit]:
                rec = be.get_transaction(Signature.from_string(s))
                if rec is None:
                    continue
                err = self._statuses.get(s, (0, None))[1]
                found.append({"signature": s, "slot": rec.slot, "err": err, "memo": None, "blockTime": None,
                              "confirmationStatus": "finalized"})
            return found
        if method == "getTransaction":
            opts = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
            rec = be.get_transaction(Signature.from_string(params[0]))
            if rec is None:
                return None
            encoding = opts.get("encoding", "json")
            if encoding not in ("json", "base64"):
                raise RpcError(JSONRPC_INVALID_PARAMS, f"Invalid params: encoding {encoding!r} is not served here")
            signed = be.signed_transaction(rec.signature)
            if signed is not None and not _is_legacy_tx(signed) and opts.get("maxSupportedTransactionVersion") is None:
                raise RpcError(JSONRPC_UNSUPPORTED_VERSION, "Transaction version (0) is not supported by the "
                               "requesting client. Please try the request again with the following configuration "
                               "parameter: \"maxSupportedTransactionVersion\": 0")
            return self._transaction_json(rec, encoding)
        raise RpcError(JSONRPC_METHOD_NOT_FOUND, f"Method not found: {method}")

    def _transaction_json(self, rec: TxRecord, encoding: str = "base64") -> dict[str, Any]:
        keys = list(rec.account_keys)
        index = {k: i for i, k in enumerate(keys)}

        def tb(items: tuple[TokenBalance, ...]) -> list[dict[str, Any]]:
            return [{"accountIndex": index[b.account], "mint": str(b.mint), "owner": str(b.owner),
                     "programId": str(TOKEN_PROGRAM_ID),
                     "uiTokenAmount": {"amount": str(b.amount), "decimals": 0, "uiAmount": float(b.amount),
                                       "uiAmountString": str(b.amount)}} for b in items]

        err = self._statuses.get(str(rec.signature), (0, None))[1]
        tx = self.backend.signed_transaction(rec.signature)
        if tx is None:
            raise RpcError(JSONRPC_INVALID_PARAMS, f"transaction {rec.signature} is not stored")
        return {
            "slot": rec.slot, "blockTime": None,
            "version": "legacy" if _is_legacy_tx(tx) else 0,
            "transaction": [base64.b64encode(bytes(tx)).decode(), "base64"] if encoding == "base64" else _tx_json(tx),
            "meta": {"err": err, "status": {"Ok": None} if err is None else {"Err": err}, "fee": rec.fee,
                     "preBalances": list(rec.pre_lamports), "postBalances": list(rec.post_lamports),
                     "innerInstructions": [], "logMessages": list(rec.logs), "preTokenBalances": tb(rec.pre_token),
                     "postTokenBalances": tb(rec.post_token), "rewards": [],
                     "loadedAddresses": {"writable": [str(k) for k in rec.loaded_writable],
                                         "readonly": [str(k) for k in rec.loaded_readonly]},
                     "computeUnitsConsumed": rec.compute_units},
        }


def _is_legacy_tx(tx: Any) -> bool:
    return type(tx.message).__name__ == "Message"


def _tx_json(tx: Any) -> dict[str, Any]:
    """A transaction in getTransaction's ``"encoding": "json"`` shape."""
    msg = tx.message
    h = msg.header
    out: dict[str, Any] = {
        "accountKeys": [str(k) for k in msg.account_keys],
        "header": {"numRequiredSignatures": h.num_required_signatures,
                   "numReadonlySignedAccounts": h.num_readonly_signed_accounts,
                   "numReadonlyUnsignedAccounts": h.num_readonly_unsigned_accounts},
        "recentBlockhash": str(msg.recent_blockhash),
        "instructions": [{"programIdIndex": ix.program_id_index, "accounts": list(bytes(ix.accounts)),
                          "data": _b58encode(bytes(ix.data)), "stackHeight": None} for ix in msg.instructions],
    }
    if not _is_legacy_tx(tx):
        out["addressTableLookups"] = [{"accountKey": str(lk.account_key), "writableIndexes": list(lk.writable_indexes),
                                       "readonlyIndexes": list(lk.readonly_indexes)}
                                      for lk in msg.address_table_lookups]
    return {"signatures": [str(sg) for sg in tx.signatures], "message": out}


_B58: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + out


def _b58decode(text: str) -> bytes:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n = 0
    for ch in text:
        n = n * 58 + alphabet.index(ch)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body


def _make_handler(rpc: LoopbackRpc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def setup(self) -> None:
            super().setup()
            # small request/response pairs on a kept-alive connection: without this, Nagle's
            # algorithm and delayed ACKs add ~40 ms to every call
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                self.send_error(413)
                return
            body = self.rfile.read(length)
            try:
                req = json.loads(body)
            except ValueError:
                self._reply({"jsonrpc": "2.0", "id": None,
                             "error": {"code": JSONRPC_PARSE_ERROR, "message": "Parse error"}})
                return
            if isinstance(req, list):
                self._reply([self._one(r) for r in req])
            else:
                self._reply(self._one(req))

        def _one(self, req: Any) -> dict[str, Any]:
            rid = req.get("id") if isinstance(req, dict) else None
            try:
                if not isinstance(req, dict) or not isinstance(req.get("method"), str):
                    raise RpcError(JSONRPC_INVALID_PARAMS, "Invalid request")
                params = req.get("params") or []
                with rpc.lock:
                    result = rpc.handle(req["method"], list(params))
                return {"jsonrpc": "2.0", "id": rid, "result": result}
            except RpcError as e:
                err: dict[str, Any] = {"code": e.code, "message": str(e)}
                if e.data is not None:
                    err["data"] = e.data
                return {"jsonrpc": "2.0", "id": rid, "error": err}
            except (ValueError, KeyError, IndexError, TypeError) as e:
                return {"jsonrpc": "2.0", "id": rid,
                        "error": {"code": JSONRPC_INVALID_PARAMS, "message": f"Invalid params: {e}"}}

        def _reply(self, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class LoopbackServer:
    """``with LoopbackServer(backend) as url: ...`` serves JSON-RPC on 127.0.0.1 in a thread."""

    def __init__(self, backend: LiteSVMBackend | None = None, port: int = 0) -> None:
        self.backend = backend or LiteSVMBackend()
        self.rpc = LoopbackRpc(self.backend)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self.rpc))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="pocv-loopback-rpc", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
