"""The worker's HTTP service: its trace directories, served to the verifiers it accepts
(docs/network.md).

Endpoints (every request and response signed, :mod:`pocv._http`)::

    GET  /v1/info                      the worker's key, the protocol version, the limits
    GET  /v1/jobs                      the committed traces: job id, root, steps, kernel
    GET  /v1/jobs/{job_id}/commitment  the signed commitment (JSON)
    POST /v1/jobs/{job_id}/respond     body: a signed challenge (JSON); answer: the response
                                       bundle (application/octet-stream), streamed
    POST /v1/jobs/{job_id}/answer      body: a dispute query (JSON); answer: an opening (JSON)
                                       or a response bundle

The server is aiohttp's low-level ``web.Server`` with the routing here (five fixed routes),
so every byte of a request passes the limits of :class:`ServerLimits` before a handler sees
it: a request line and headers within ``header_timeout_s`` of connecting (aiohttp closes a
connection that has not sent a whole request by then), a body of at most
``max_request_bytes`` read within ``body_timeout_s``, the whole exchange within
``request_timeout_s``, at most ``max_connections`` connections and ``max_connections_per_peer``
from one address, and at most ``max_concurrent_answers`` recomputations at once with a bounded
queue behind them (503 with Retry-After beyond). One slow or hostile client therefore holds
at most its own connections, each for a bounded time, and never a recomputation slot while it
trickles bytes: a challenge is read whole before it waits for a slot.

Status codes: 400 malformed request, 401 unsigned / bad signature / stale timestamp, 403 key
not accepted, 404 unknown job or path, 405 wrong method, 408 body not received in time, 409
replayed nonce, 413 body too large, 422 a well-formed challenge or query this worker refuses
(another commitment, more steps than it answers), 500 the trace is broken, 503 busy (queue
full or nonce cache full; Retry-After says when to try again), 504 the answer took longer
than ``request_timeout_s``.

Off loopback, serve HTTPS (``start(ssl_context=...)``, ``pocv serve --tls-cert``) or run it
behind a TLS-terminating proxy (``pocv serve --help``). The signatures authenticate both
parties and bind every response to its request, but do not hide the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from blake3 import blake3

from pocv import _http as H
from pocv.bundle import Response
from pocv.errors import (
    EvidenceError,
    InputError,
    MalformedError,
    SignatureError,
    StorageError,
)
from pocv.kernels.params import ArtifactSource
from pocv.keys import Signer, b58encode
from pocv.limits import DEFAULT_MAX_ANSWER, MAX_RECORD_BYTES
from pocv.prover import Prover
from pocv.records import Challenge, Commitment

log = logging.getLogger(__name__)

PROTOCOL: Final = "pocv-http/1"
#: bytes of a streamed answer written per chunk
CHUNK_BYTES: Final = 1 << 20
#: pieces of an answer smaller than this are joined before they are written
SMALL_PIECE_BYTES: Final = 64 << 10
_JOB_ID = re.compile(r"^/v1/jobs/([0-9a-f]{64})/(commitment|respond|answer)$")


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """The named limits of one worker service (docs/network.md §4)."""

    #: a request body: a challenge or a dispute query, JSON records of at most MAX_RECORD_BYTES
    max_request_bytes: int = MAX_RECORD_BYTES
    #: from connecting to a complete request line and headers (and idle time between requests)
    header_timeout_s: float = 15.0
    #: to receive a request body once the headers are in
    body_timeout_s: float = 15.0
    #: one whole exchange, body read to last byte of the answer written
    request_timeout_s: float = 600.0
    #: recomputations (respond, answer) running at once: CPU or GPU work
    max_concurrent_answers: int = 2
    #: requests waiting for a recomputation slot; beyond, 503 at once
    max_queued_answers: int = 32
    #: longest wait for a recomputation slot before 503
    queue_wait_s: float = 60.0
    #: open connections in all, and from one peer address
    max_connections: int = 1024
    max_connections_per_peer: int = 64
    #: answers streamed from memory (the recomputed bundle, no copy) at most this many bytes in
    #: all; an answer beyond goes to a temporary file first
    max_answer_memory_bytes: int = 512 << 20

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InputError(f"server limit {name} must be a positive number, got {value!r}")


class HttpError(Exception):
    """A refusal with its status (internal to the service; answered as a JSON error body)."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class _CappedServer(web.Server):
    """aiohttp's low-level server with a cap on connections, in all and per peer address."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], *,
                 limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.peers: dict[RequestHandler, str] = {}
        self.per_peer: dict[str, int] = {}
        self.refused_connections = 0

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if len(self.peers) >= self.limits.max_connections or (
                self.per_peer.get(host, 0) >= self.limits.max_connections_per_peer):
            self.refused_connections += 1
            log.warning("serve: refused a connection from %s (connection limit)", host)
            transport.abort()
            return
        self.peers[handler] = host
        self.per_peer[host] = self.per_peer.get(host, 0) + 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        host = self.peers.pop(handler, None)
        if host is not None:
            left = self.per_peer[host] - 1
            if left:
                self.per_peer[host] = left
            else:
                del self.per_peer[host]
        super().connection_lost(handler, exc)


class _Answer:
    """An answer's bytes as written by the bundle (references to its pieces, no copy), hashed as
    they come; :meth:`spool` moves them to a temporary file."""

    def __init__(self, kind: str, *, spool_at: int | None = None) -> None:
        self.kind = kind
        self.pieces: list[bytes | memoryview] = []
        self.size = 0
        self.file: IO[bytes] | None = None
        self._hasher = blake3()
        self._spool_at = spool_at  # past this many bytes the answer goes on in a temporary file

    def write(self, data: bytes | memoryview) -> int:
        n = len(data) if isinstance(data, bytes) else data.nbytes
        self._hasher.update(data)
        if self.file is None and self._spool_at is not None and self.size + n > self._spool_at:
            self.spool()
        if self.file is not None:
            self.file.write(data)
        else:
            self.pieces.append(data)
        self.size += n
        return n

    @property
    def digest(self) -> bytes:
        return bytes(self._hasher.digest())

    def spool(self) -> None:
        if self.file is not None:
            return
        f = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        for piece in self.pieces:
            f.write(piece)
        self.file, self.pieces = f, []

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The answer in pieces of at most CHUNK_BYTES (small pieces coalesced)."""
        if self.file is not None:
            self.file.seek(0)
            while chunk := self.file.read(CHUNK_BYTES):
                yield chunk
            return
        yield from self._memory_chunks()

    def _memory_chunks(self) -> Iterator[bytes | memoryview]:
        small: list[bytes] = []
        small_size = 0
        for piece in self.pieces:
            size = len(piece) if isinstance(piece, bytes) else piece.nbytes
            if size < SMALL_PIECE_BYTES:
                small.append(bytes(piece))
                small_size += size
                if small_size >= SMALL_PIECE_BYTES:
                    yield b"".join(small)
                    small, small_size = [], 0
                continue
            if small:
                yield b"".join(small)
                small, small_size = [], 0
            view = memoryview(piece)
            for i in range(0, len(view), CHUNK_BYTES):
                yield view[i:i + CHUNK_BYTES]
        if small:
            yield b"".join(small)

    def close(self) -> None:
        self.pieces = []
        if self.file is not None:
            self.file.close()


@dataclass(frozen=True)
class _Trace:
    path: Path
    commitment: Commitment


class WorkerService:
    """Serves the traces under ``traces`` to the verifiers whose keys are in ``accept``.

    ``traces`` is one trace directory, or a directory whose subdirectories are trace
    directories (one per job), or a list of either. Only committed traces signed by ``key``
    are served. ``max_answer`` is the most challenged steps answered (the prover's).
    """

    def __init__(self, *, traces: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], key: Signer,
                 accept: Iterable[bytes], limits: ServerLimits | None = None,
                 max_answer: int = DEFAULT_MAX_ANSWER, device: str | None = None,
                 artifacts: ArtifactSource | None = None) -> None:
        self.key = key
        self.artifacts = artifacts  # the worker's store for the jobs' artifacts (None: the default one)
        self.public_key = bytes(key.pubkey())
        self.accept = frozenset(bytes(k) for k in accept)
        if not self.accept:
            raise InputError("a worker service needs at least one accepted verifier key (--accept)")
        self.limits = limits or ServerLimits()
        self.max_answer = max_answer
        self.device = device
        roots = [traces] if isinstance(traces, str | os.PathLike) else list(traces)
        self.roots = [Path(r) for r in roots]
        self.nonces = H.NonceCache()
        self._traces: dict[bytes, _Trace] = {}
        self._slots = asyncio.Semaphore(self.limits.max_concurrent_answers)
        self._queued = 0
        self._held = 0  # bytes of answers streamed from memory now
        self._runner: web.ServerRunner | None = None
        self._server: _CappedServer | None = None
        self.address: tuple[str, int] | None = None
        self.rescan()

    # -- traces ----------------------------------------------------------------------------

    def rescan(self) -> None:
        """Index the committed traces by job id (a job committed twice is served once, with a
        warning: two roots for one job by one key is equivocation, docs/protocol.md §11.6)."""
        found: dict[bytes, _Trace] = {}
        for root in self.roots:
            dirs = [root] if (root / "trace.json").exists() else sorted(
                p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            for d in dirs:
                path = d / "commitment.json"
                try:
                    c = Commitment.from_json(path.read_bytes())
                except FileNotFoundError:
                    continue  # not complete yet
                except (OSError, EvidenceError) as e:
                    log.warning("serve: skipping trace %s: %s", d, e)
                    continue
                if c.worker != self.public_key:
                    log.warning("serve: skipping trace %s: committed by %s, not this worker", d, b58encode(c.worker))
                    continue
                if c.job_id in found and found[c.job_id].commitment.root != c.root:
                    log.warning("serve: job %s has two roots (%s, %s): serving the first", c.job_id.hex()[:16],
                                found[c.job_id].path, d)
                    continue
                found.setdefault(c.job_id, _Trace(d, c))
        self._traces = found

    def _trace(self, job_id: bytes) -> _Trace:
        t = self._traces.get(job_id)
        if t is None:
            self.rescan()  # a run that completed since the last scan
            t = self._traces.get(job_id)
        if t is None:
            raise HttpError(404, "unknown-job", f"this worker has no committed trace of job {job_id.hex()}")
        return t

    def _prover(self, t: _Trace) -> Prover:
        return Prover(trace_dir=t.path, key=self.key, max_answer=self.max_answer, artifacts=self.artifacts)

    # -- the request path ------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request_sig = bytes(64)
        with contextlib.suppress(MalformedError):  # every answer, a refusal too, names the request it answers
            request_sig = H.Signed.from_headers(request.headers, "request").signature
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                try:
                    body = await self._read_body(request)
                    self._authenticate(request, body)
                    return await self._route(request, body, request_sig)
                except HttpError:
                    raise
                except (MalformedError, json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise HttpError(400, "malformed", str(e)) from e
        except HttpError as e:
            return self._error(e, request_sig)
        except TimeoutError:
            return self._error(HttpError(504, "timeout", f"the answer took longer than "
                                         f"{self.limits.request_timeout_s:.0f} s (request_timeout_s)"), request_sig)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.limits.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise HttpError(413, "too-large", f"request body of {request.content_length:,} bytes; at most "
                            f"{limit:,} (max_request_bytes)")
        chunks, total = [], 0
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                async for chunk in request.content.iter_any():
                    total += len(chunk)
                    if total > limit:
                        raise HttpError(413, "too-large", f"request body over {limit:,} bytes (max_request_bytes)")
                    chunks.append(chunk)
        except TimeoutError:
            raise HttpError(408, "body-timeout", f"request body not received within "
                            f"{self.limits.body_timeout_s:.0f} s (body_timeout_s)") from None
        return b"".join(chunks)

    def _authenticate(self, request: web.BaseRequest, body: bytes) -> H.Signed:
        try:
            signed = H.Signed.from_headers(request.headers, "request")
        except MalformedError as e:
            raise HttpError(401, "unsigned", str(e)) from e
        try:
            H.check_fresh(signed, "request")
            digest = H.body_hash(body)
            try:
                H.verify_request(signed, request.method, request.raw_path, digest, self.public_key)
            except SignatureError:
                if request.path != "/v1/info":
                    raise
                # /v1/info may be asked of any worker (audience zero): a client learns the key there
                H.verify_request(signed, request.method, request.raw_path, digest, H.ANY_AUDIENCE)
        except (SignatureError, MalformedError) as e:
            raise HttpError(401, "bad-signature", str(e)) from e
        if signed.key not in self.accept:
            raise HttpError(403, "not-accepted", f"key {b58encode(signed.key)} is not a verifier this worker accepts")
        if self.nonces.full():
            raise HttpError(503, "busy", "too many signed requests in the replay window", retry_after=5)
        try:
            self.nonces.add(signed)
        except H.ReplayError as e:
            raise HttpError(409, "replayed", str(e)) from e
        return signed

    async def _route(self, request: web.BaseRequest, body: bytes, request_sig: bytes) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/v1/info":
            self._method(method, "GET")
            info = {"protocol": PROTOCOL, "worker": b58encode(self.public_key), "max_answer": self.max_answer,
                    "limits": asdict(self.limits)}
            return self._json(200, info, request_sig)
        if path == "/v1/jobs":
            self._method(method, "GET")
            self.rescan()
            jobs = [{"job_id": t.commitment.job_id.hex(), "root": t.commitment.root.hex(),
                     "steps": t.commitment.steps, "kernel": t.commitment.spec.kernel_ref}
                    for t in self._traces.values()]
            return self._json(200, {"jobs": jobs}, request_sig)
        m = _JOB_ID.match(path)
        if m is None:
            raise HttpError(404, "no-such-path", f"no endpoint {path[:200]!r}")
        job_id, what = bytes.fromhex(m.group(1)), m.group(2)
        if what == "commitment":
            self._method(method, "GET")
            return self._bytes(200, self._trace(job_id).commitment.to_json().encode(), "application/json",
                               request_sig)
        self._method(method, "POST")
        trace = self._trace(job_id)
        if what == "respond":
            challenge = Challenge.from_json(body)  # verifies the verifier's signature
            if challenge.verifier not in self.accept:
                raise HttpError(403, "not-accepted", f"challenge signed by {b58encode(challenge.verifier)}, "
                                "not a verifier this worker accepts")
            if challenge.job_id != job_id:
                raise HttpError(422, "refused", "challenge is for another job than the path names")
            # the bundle is written as its states are read or recomputed (a few at a time)
            return await self._answer(lambda out: self._prover(trace).respond_to(challenge, out, device=self.device),
                                      request, request_sig, kind="application/octet-stream")
        from pocv.dispute import Query  # the dispute records load only when a dispute is served

        query = Query.from_json(body)
        if query.job_id != job_id:
            raise HttpError(422, "refused", "query is for another job than the path names")
        def answer(out: _Answer) -> None:
            got = self._prover(trace).answer(query, device=self.device)
            if isinstance(got, Response):  # a step query: three states at most
                got.write_to(out)
            else:  # a bisect query's opening
                out.kind = "application/json"
                out.write(got.to_json().encode())

        return await self._answer(answer, request, request_sig, kind="application/octet-stream")

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(405, "method", f"{method} is not allowed here; use {allowed}")

    async def _answer(self, work: Callable[[_Answer], Any], request: web.BaseRequest,
                      request_sig: bytes, *, kind: str) -> web.StreamResponse:
        """Run a recomputation in a slot (bounded, queued), then stream its answer."""
        if self._queued >= self.limits.max_queued_answers:
            raise HttpError(503, "busy", f"{self._queued} answers are queued (max_queued_answers)", retry_after=5)
        self._queued += 1
        try:
            try:
                async with asyncio.timeout(self.limits.queue_wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise HttpError(503, "busy", f"no recomputation slot free within {self.limits.queue_wait_s:.0f} s",
                                retry_after=10) from None
        finally:
            self._queued -= 1
        try:
            # written to memory while the answers held there stay within max_answer_memory_bytes
            answer = _Answer(kind, spool_at=max(0, self.limits.max_answer_memory_bytes - self._held))
            await asyncio.to_thread(self._compute, work, answer)
        finally:
            self._slots.release()
        # the answer is streamed from the recomputed bundle in memory (no copy) while the answers
        # held that way stay within max_answer_memory_bytes; beyond, it goes to a file first
        if self._held + answer.size > self.limits.max_answer_memory_bytes:
            await asyncio.to_thread(answer.spool)
        held = 0 if answer.file is not None else answer.size
        self._held += held
        try:
            return await self._stream(answer, request, request_sig)
        finally:
            self._held -= held
            answer.close()

    @staticmethod
    def _compute(work: Callable[[_Answer], Any], out: _Answer) -> None:
        try:
            work(out)
        except StorageError as e:
            out.close()
            raise HttpError(500, "trace-broken", str(e)) from e
        except EvidenceError as e:  # another commitment, over max_answer: refused
            out.close()
            raise HttpError(422, "refused", str(e)) from e
        except InputError as e:
            out.close()
            raise HttpError(422, "refused", str(e)) from e
        except BaseException:
            out.close()
            raise

    async def _stream(self, answer: _Answer, request: web.BaseRequest, request_sig: bytes) -> web.StreamResponse:
        signed = H.sign_response(self.key, 200, request_sig, answer.digest)
        resp = web.StreamResponse(status=200, headers={**signed.headers(), "Content-Type": answer.kind})
        resp.content_length = answer.size
        await resp.prepare(request)
        for chunk in answer.chunks():
            await resp.write(chunk)  # waits while the client does not read: bounded by request_timeout_s
        await resp.write_eof()
        return resp

    def _json(self, status: int, value: Any, request_sig: bytes) -> web.Response:
        return self._bytes(status, json.dumps(value, sort_keys=True).encode(), "application/json", request_sig)

    def _bytes(self, status: int, body: bytes, kind: str, request_sig: bytes) -> web.Response:
        signed = H.sign_response(self.key, status, request_sig, H.body_hash(body))
        return web.Response(status=status, body=body, headers={**signed.headers(), "Content-Type": kind})

    def _error(self, e: HttpError, request_sig: bytes) -> web.Response:
        if e.status >= 500:
            log.warning("serve: %d %s: %s", e.status, e.code, e)
        else:
            log.info("serve: refused %d %s: %s", e.status, e.code, e)
        resp = self._json(e.status, {"error": e.code, "message": str(e)}, request_sig)
        if e.retry_after is not None:
            resp.headers["Retry-After"] = str(e.retry_after)
        if e.status in (408, 413):
            resp.force_close()  # the rest of the body is not read
        return resp

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None,
                    ssl_context: ssl.SSLContext | None = None) -> tuple[str, int]:
        """Start serving (HTTPS with ``ssl_context``); returns the bound (host, port)."""
        self._server = _CappedServer(self._handle, limits=self.limits, handler_cancellation=True,
                                     keepalive_timeout=self.limits.header_timeout_s)
        self._runner = web.ServerRunner(self._server, handle_signals=False)
        await self._runner.setup()
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
        site = web.SockSite(self._runner, sock, backlog=1024, ssl_context=ssl_context)
        await site.start()
        bound = sock.getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        log.info("serve: worker %s on http://%s:%d, %d job(s), %d accepted verifier key(s)",
                 b58encode(self.public_key), *self.address, len(self._traces), len(self.accept))
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def refused_connections(self) -> int:
        return 0 if self._server is None else self._server.refused_connections


def run(service: WorkerService, host: str = "127.0.0.1", port: int = 8470,
        ready: Callable[[tuple[str, int]], None] | None = None, *, ssl_context: ssl.SSLContext | None = None
        ) -> int | None:
    """Serve until SIGINT or SIGTERM (the blocking form, for ``pocv serve``); returns the signal
    that stopped it (None where signals cannot be caught: not the main thread, or Windows)."""
    got: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on(sig: int) -> None:
            got.append(sig)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on, sig)
        try:
            address = await service.start(host, port, ssl_context=ssl_context)
            if ready is not None:
                ready(address)
            await stop.wait()
        finally:
            await service.stop()

    asyncio.run(main())
    return got[0] if got else None


__all__ = ["PROTOCOL", "HttpError", "ServerLimits", "WorkerService", "run"]
