"""The verifier's side of the network: a client of a worker's service, and remote verification
(docs/network.md).

:class:`RemoteWorker` talks to one worker (:mod:`pocv.serve`): every request is signed with
the verifier's key for that worker, every answer must be signed by the worker and bound to
the request. Transport errors (refused or reset connections, timeouts, 502/503/504, an answer
whose signature does not match its body) are retried with exponential backoff and jitter
(tenacity), and nothing else is: a refusal (4xx) is the worker's answer and is final.

:func:`averify_remote` (and :func:`verify_remote`, its blocking form) fetches the commitment,
issues the challenge, streams the bundle into a temporary file of bounded size (never more
than the largest honest answer to that challenge, plus one byte) and passes the open file to
:meth:`pocv.check.Verifier.check`, which reads it streamed. A worker that does not deliver its
answer within the challenge deadline, or refuses the challenge, gets a FAIL verdict with the
reason REFUSED for every challenged step (``Verifier.check(commitment, challenge, None)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Final, TypeVar, cast

import aiohttp
from blake3 import blake3
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity import wait_exponential_jitter as backoff
from tenacity.stop import stop_base

from pocv import _http as H
from pocv.bundle import Expected, Response
from pocv.check import Verifier
from pocv.encoding import encoded_size
from pocv.errors import InputError, MalformedError, SignatureError, TransientError
from pocv.kernels import kernel_for
from pocv.keys import PublicKey, Signer, b58encode
from pocv.limits import DEFAULT_CHEAT_FRACTION, DEFAULT_CONFIDENCE, MAX_RECORD_BYTES
from pocv.records import Challenge, Commitment, Verdict

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long a worker has to deliver its whole answer to a challenge, retries included
DEFAULT_DEADLINE_S: Final = 600.0
#: bytes buffered per connection before reading pauses (aiohttp's default is 64 KiB: a 20 MB
#: bundle would cross the event loop in 300+ small pieces)
READ_BUFFER_BYTES: Final = 1 << 20
_RETRY_STATUS: Final = frozenset({502, 503, 504})


@dataclass(frozen=True, kw_only=True)
class ClientLimits:
    """The named limits of one client (docs/network.md §5)."""

    #: to open a TCP connection
    connect_timeout_s: float = 10.0
    #: longest silence while reading an answer (between two reads)
    read_timeout_s: float = 120.0
    #: one JSON answer (info, job list, commitment, opening)
    max_json_bytes: int = MAX_RECORD_BYTES
    #: attempts per request, the first included (transport errors only are retried)
    attempts: int = 5
    #: exponential backoff with jitter between attempts
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    #: connections to one worker at once
    max_connections: int = 16


class RemoteUnavailable(TransientError):
    """The worker could not be reached, or answered 502/503/504, on every attempt."""


class RemoteRefused(InputError):
    """The worker answered with a refusal (4xx): final, not retried."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"worker refused ({status} {code}): {message}")
        self.status = status
        self.code = code


class _Transport(Exception):
    """A failure worth another attempt (internal: becomes RemoteUnavailable when they run out)."""


class _TooLarge(Exception):
    pass


class RemoteWorker:
    """A client of one worker's service at ``url`` (``http://host:port``).

    ``worker`` pins the worker's public key; without it the key is learnt from ``GET /v1/info``
    and every commitment fetched must be signed by it. ``ssl_context`` says which certificates
    an ``https://`` worker may present (default: the system's CAs). Use as an async context
    manager, or call :meth:`close`.
    """

    def __init__(self, url: str, *, key: Signer, worker: bytes | PublicKey | str | None = None,
                 limits: ClientLimits | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"a worker URL starts with http:// or https://, got {url[:80]!r}")
        self.url = url.rstrip("/")
        self.key = key
        self.limits = limits or ClientLimits()
        if isinstance(worker, str):
            worker = PublicKey.from_string(worker)
        self.worker: bytes | None = None if worker is None else bytes(worker)
        self.ssl_context = ssl_context  # for https://: None trusts the system's CAs (and SSL_CERT_FILE)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RemoteWorker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, connect=self.limits.connect_timeout_s,
                                            sock_read=self.limits.read_timeout_s)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=self.limits.max_connections,
                                                                ssl=self.ssl_context or True),
                auto_decompress=False, read_bufsize=READ_BUFFER_BYTES)
        return self._session

    # -- one signed exchange -----------------------------------------------------------------

    async def _exchange(self, method: str, path: str, body: bytes, audience: bytes, sink: IO[bytes] | None,
                        max_bytes: int) -> tuple[int, bytes]:
        """One attempt: (status, JSON body) or, with ``sink``, (status, b"") and the body in sink.
        Raises _Transport for what a retry may fix, _TooLarge past ``max_bytes``."""
        signed = H.sign_request(self.key, method, path, H.body_hash(body), audience)
        headers = signed.headers()
        if body:
            headers["Content-Type"] = "application/json"
        try:
            async with self._client().request(method, self.url + path, data=body or None, headers=headers,
                                              allow_redirects=False) as resp:
                status = resp.status
                if status in _RETRY_STATUS:
                    raise _Transport(f"worker answered {status}")
                streaming = sink is not None and status == 200
                if not streaming and resp.content_length is not None and resp.content_length > max_bytes:
                    raise _TooLarge(f"answer of {resp.content_length:,} bytes, at most {max_bytes:,}")
                hasher, total, chunks = blake3(), 0, []
                if streaming:
                    assert sink is not None
                    sink.seek(0)
                    sink.truncate()
                async for chunk in resp.content.iter_any():  # what has arrived, up to READ_BUFFER_BYTES
                    total += len(chunk)
                    if total > max_bytes:
                        if streaming:
                            assert sink is not None
                            sink.write(chunk[: len(chunk) - (total - max_bytes - 1)])
                        raise _TooLarge(f"answer over {max_bytes:,} bytes")
                    hasher.update(chunk)
                    if streaming:
                        assert sink is not None
                        sink.write(chunk)
                    else:
                        chunks.append(chunk)
                try:
                    answer = H.Signed.from_headers(resp.headers, "response")
                    expected = self.worker if self.worker is not None else answer.key
                    H.check_fresh(answer, "response")
                    H.verify_response(answer, expected, status, signed.signature, bytes(hasher.digest()))
                except (MalformedError, SignatureError) as e:
                    # an answer not signed by the worker over these bytes: a relay or the
                    # network changed it, or someone else answered. Not the worker's word.
                    raise _Transport(f"answer not authenticated: {e}") from e
                if self.worker is None:
                    self.worker = answer.key
                return status, b"".join(chunks)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
            raise _Transport(f"{type(e).__name__}: {e}") from e

    async def _call(self, method: str, path: str, body: bytes = b"", *, sink: IO[bytes] | None = None,
                    max_bytes: int | None = None, deadline_s: float | None = None,
                    audience: bytes | None = None) -> tuple[int, bytes]:
        """A signed exchange with retries of transport errors only; 4xx -> RemoteRefused."""
        if audience is None:
            if self.worker is None:
                await self.info()
            assert self.worker is not None
            audience = self.worker
        stop: stop_base = stop_after_attempt(self.limits.attempts)
        if deadline_s is not None:
            stop = stop | stop_after_delay(deadline_s)
        limit = self.limits.max_json_bytes if max_bytes is None else max_bytes
        try:
            async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(_Transport), stop=stop, reraise=True,
                    wait=backoff(multiplier=self.limits.backoff_initial_s, max=self.limits.backoff_max_s,
                                 jitter=self.limits.backoff_initial_s),
                    before_sleep=lambda s: log.info("remote %s %s: attempt %d failed (%s); retrying", method, path,
                                                    s.attempt_number, s.outcome.exception() if s.outcome else "")):
                with attempt:
                    status, data = await self._exchange(method, path, body, audience, sink, limit)
        except _Transport as e:
            raise RemoteUnavailable(f"{method} {self.url}{path}: {e} (after retries)") from e
        if status != 200:
            try:
                err = json.loads(data)
                code, message = str(err.get("error", "?")), str(err.get("message", ""))
            except (ValueError, AttributeError):
                code, message = "?", data[:200].decode("utf-8", "replace")
            raise RemoteRefused(status, code, message)
        return status, data

    # -- endpoints ---------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        _, data = await self._call("GET", "/v1/info", audience=self.worker or H.ANY_AUDIENCE)
        info: dict[str, Any] = json.loads(data)
        return info

    async def jobs(self) -> list[dict[str, Any]]:
        _, data = await self._call("GET", "/v1/jobs")
        jobs: list[dict[str, Any]] = json.loads(data)["jobs"]
        return jobs

    async def commitment(self, job_id: bytes) -> Commitment:
        """The worker's signed commitment to ``job_id``; it must be signed by the worker's key."""
        _, data = await self._call("GET", f"/v1/jobs/{job_id.hex()}/commitment")
        c = Commitment.from_json(data)
        if c.job_id != job_id:
            raise MalformedError(f"asked for job {job_id.hex()}, the worker sent job {c.job_id.hex()}")
        if c.worker != self.worker:
            raise SignatureError(f"commitment is signed by {b58encode(c.worker)}, not by the worker that serves "
                                 f"it ({b58encode(self.worker or bytes(32))})")
        return c

    async def respond(self, challenge: Challenge, sink: IO[bytes], *, max_bytes: int,
                      deadline_s: float | None = None) -> int:
        """Send ``challenge``; stream the bundle into ``sink`` (rewound on every attempt).
        Returns its size; ``max_bytes + 1`` means it was longer and was cut there."""
        try:
            await self._call("POST", f"/v1/jobs/{challenge.job_id.hex()}/respond", challenge.to_json().encode(),
                             sink=sink, max_bytes=max_bytes, deadline_s=deadline_s)
        except _TooLarge as e:
            log.warning("remote respond: %s; judged as sent so far", e)
        size = sink.tell()
        sink.seek(0)
        return size

    async def answer(self, query: Any) -> Any:
        """A dispute query's answer: an Opening, or a Response for a step query."""
        from pocv.dispute import Opening  # the dispute records load only for a dispute

        sink = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - closed below
        with sink:
            await self._call("POST", f"/v1/jobs/{query.job_id.hex()}/answer", query.to_json().encode(), sink=sink,
                             max_bytes=self.limits.max_json_bytes if query.kind != "step" else 1 << 36)
            sink.seek(0)
            head = sink.read(1)
            sink.seek(0)
            if head == b"{":
                return Opening.from_json(sink.read(self.limits.max_json_bytes + 1))
            return Response.read_from(sink)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RemoteVerdict:
    """A remote verification: the signed verdict and what it judged."""

    verdict: Verdict
    commitment: Commitment
    challenge: Challenge
    #: why no answer was judged (deadline passed, the worker refused), or None
    refused: str | None
    bundle_bytes: int
    fetch_s: float
    check_s: float


def bundle_limit(commitment: Commitment, challenge: Challenge) -> int:
    """The size of the largest honest answer to ``challenge`` (what the client downloads at most)."""
    spec = commitment.spec
    expect = Expected(job_id=commitment.job_id, root=commitment.root, tree_size=commitment.tree_size,
                      state_bytes=encoded_size(kernel_for(spec).schema(spec)), indices=challenge.indices)
    return expect.max_bundle_bytes()


async def averify_remote(
    verifier: Verifier,
    worker: RemoteWorker,
    job_id: bytes,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    beacon: bytes | None = None,
    beacon_source: str | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    cheat_fraction: float = DEFAULT_CHEAT_FRACTION,
    k: int | None = None,
    spool_dir: str | None = None,
    spool: BinaryIO | None = None,
    challenge_hook: Callable[[Commitment, Challenge], None] | None = None,
) -> RemoteVerdict:
    """Verify ``job_id`` at ``worker``: fetch and check the commitment, issue a challenge (beacon:
    a fresh verifier nonce unless given), stream the answer into a bounded temporary file and
    judge it. A worker that does not answer within ``deadline_s`` (retries included) or that
    refuses the challenge gets a FAIL with reason REFUSED. Raises RemoteUnavailable when the
    commitment cannot be fetched or every attempt failed before the deadline.

    The answer is spooled to a temporary file in ``spool_dir``, or to ``spool`` (a binary file
    open for writing and reading, left open: the caller keeps the bundle that was judged)."""
    t0 = time.perf_counter()
    commitment = await worker.commitment(job_id)
    challenge = verifier.challenge(commitment, beacon=secrets.token_bytes(32) if beacon is None else beacon,
                                   beacon_source=beacon_source, confidence=confidence,
                                   cheat_fraction=cheat_fraction, k=k)
    if challenge_hook is not None:
        challenge_hook(commitment, challenge)
    limit = bundle_limit(commitment, challenge)
    refused: str | None = None
    size = 0
    with contextlib.ExitStack() as stack:
        if spool is None:
            spool = cast(BinaryIO, stack.enter_context(tempfile.TemporaryFile(dir=spool_dir)))
        start = time.monotonic()
        try:
            async with asyncio.timeout(deadline_s):
                size = await worker.respond(challenge, spool, max_bytes=limit, deadline_s=deadline_s)
        except TimeoutError:
            refused = f"no answer within the challenge deadline ({deadline_s:g} s)"
        except RemoteRefused as e:
            refused = str(e)
        except RemoteUnavailable as e:
            if time.monotonic() - start < deadline_s:
                raise
            refused = f"no answer within the challenge deadline ({deadline_s:g} s): {e}"
        fetched = time.perf_counter()
        if refused is not None:
            log.warning("remote verify %s at %s: REFUSED: %s", job_id.hex()[:16], worker.url, refused)
            verdict = await asyncio.to_thread(verifier.check, commitment, challenge, None)
        else:
            verdict = await asyncio.to_thread(verifier.check, commitment, challenge, spool)
    done = time.perf_counter()
    return RemoteVerdict(verdict=verdict, commitment=commitment, challenge=challenge, refused=refused,
                         bundle_bytes=size, fetch_s=fetched - t0, check_s=done - fetched)


def verify_remote(verifier: Verifier, url: str, job_id: bytes, *, worker: bytes | PublicKey | str | None = None,
                  limits: ClientLimits | None = None, **kw: Any) -> RemoteVerdict:
    """The blocking form of :func:`averify_remote` (one event loop for the call)."""

    async def run() -> RemoteVerdict:
        async with RemoteWorker(url, key=verifier.key, worker=worker, limits=limits) as remote:
            return await averify_remote(verifier, remote, job_id, **kw)

    return asyncio.run(run())


def parse_job_id(text: str) -> bytes:
    """A job id given by a person: 64 hex digits."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InputError(f"a job id is 64 hex digits, got {text[:80]!r}")
    return raw


__all__ = [
    "DEFAULT_DEADLINE_S",
    "ClientLimits",
    "RemoteRefused",
    "RemoteUnavailable",
    "RemoteVerdict",
    "RemoteWorker",
    "averify_remote",
    "bundle_limit",
    "parse_job_id",
    "verify_remote",
]
