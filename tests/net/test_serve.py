"""The worker service and the client over real HTTP on loopback (docs/network.md).

Every hostile request is refused with its documented status, and the service keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pocv import _http as H
from pocv.check import Verifier
from pocv.client import ClientLimits, RemoteRefused, RemoteUnavailable, RemoteWorker, averify_remote, verify_remote
from pocv.errors import Reason
from pocv.serve import ServerLimits, WorkerService
from tests.net.conftest import STRANGER, VERIFIER, WORKER, Served, serve

FAST = ClientLimits(attempts=3, backoff_initial_s=0.05, backoff_max_s=0.2, connect_timeout_s=2, read_timeout_s=10)


async def _raw(url: str, method: str, path: str, body: bytes = b"", *, key: Any = VERIFIER,
               audience: bytes = bytes(WORKER.pubkey()), headers: dict[str, str] | None = None,
               signed: H.Signed | None = None) -> tuple[int, dict[str, Any], H.Signed]:
    if signed is None:
        signed = H.sign_request(key, method, path, H.body_hash(body), audience)
    hdrs = {**signed.headers(), **(headers or {})}
    async with aiohttp.ClientSession() as s, s.request(method, url + path, data=body or None, headers=hdrs) as r:
        data = await r.read()
        try:
            value = json.loads(data)
        except ValueError:
            value = {"raw": len(data)}
        return r.status, value, signed


def raw(url: str, method: str, path: str, body: bytes = b"", **kw: Any) -> tuple[int, dict[str, Any], H.Signed]:
    return asyncio.run(_raw(url, method, path, body, **kw))


def still_serving(url: str) -> None:
    status, info, _ = raw(url, "GET", "/v1/info")
    assert status == 200 and info["worker"] == str(WORKER.pubkey())


def test_remote_verification_passes_and_lists_jobs(served: Served, traces: tuple[Path, list[bytes]]) -> None:
    verifier = Verifier(key=VERIFIER)
    result = verify_remote(verifier, served.url, traces[1][0], limits=FAST)
    assert result.verdict.passed and result.refused is None and result.verdict.bundle_signed
    assert result.bundle_bytes > 0

    async def listing() -> list[dict[str, Any]]:
        async with RemoteWorker(served.url, key=VERIFIER, limits=FAST) as w:
            return await w.jobs()

    assert sorted(j["job_id"] for j in asyncio.run(listing())) == sorted(i.hex() for i in traces[1])


def _challenge_body(traces: tuple[Path, list[bytes]], key: Any = VERIFIER) -> tuple[str, bytes]:
    from pocv.store import load_commitment

    c = load_commitment(traces[0] / "job0" / "commitment.json")
    ch = Verifier(key=key).challenge(c, beacon=bytes(32), k=2)
    return f"/v1/jobs/{c.job_id.hex()}/respond", ch.to_json().encode()


def test_hostile_requests_get_their_documented_status(served: Served, traces: tuple[Path, list[bytes]]) -> None:
    url, job = served.url, traces[1][0].hex()
    path, challenge = _challenge_body(traces)
    cases: list[tuple[str, int, dict[str, Any]]] = []

    def case(name: str, status: int, got: tuple[int, dict[str, Any], H.Signed]) -> None:
        cases.append((name, status, got[1]))
        assert got[0] == status, f"{name}: expected {status}, got {got[0]} {got[1]}"

    # unsigned: no auth headers at all
    async def unsigned() -> tuple[int, dict[str, Any], H.Signed]:
        async with aiohttp.ClientSession() as s, s.get(url + "/v1/jobs") as r:
            return r.status, await r.json(), H.Signed(b"", 0, b"", b"")

    case("unsigned", 401, asyncio.run(unsigned()))
    # a signature over another path (tampered request)
    other = H.sign_request(VERIFIER, "GET", "/v1/info", H.EMPTY_HASH, bytes(WORKER.pubkey()))
    case("bad signature", 401, raw(url, "GET", "/v1/jobs", signed=other))
    # signed for another worker (audience)
    case("other audience", 401, raw(url, "GET", "/v1/jobs", audience=bytes(STRANGER.pubkey())))
    # a stale timestamp: signed 10 minutes ago
    t = H.now_ms() - 600_000
    nonce = os.urandom(16)
    sig = VERIFIER.sign_message(H.request_bytes("GET", "/v1/jobs", H.EMPTY_HASH, t, nonce, bytes(WORKER.pubkey())))
    case("stale", 401, raw(url, "GET", "/v1/jobs", signed=H.Signed(bytes(VERIFIER.pubkey()), t, nonce, sig)))
    # a replay: the same signed request twice
    first = raw(url, "GET", "/v1/jobs")
    assert first[0] == 200
    case("replayed", 409, raw(url, "GET", "/v1/jobs", signed=first[2]))
    # a key this worker does not accept, and a challenge signed by one
    case("stranger", 403, raw(url, "GET", "/v1/jobs", key=STRANGER))
    spath, foreign = _challenge_body(traces, key=STRANGER)
    case("foreign challenge", 403, raw(url, "POST", spath, foreign))
    # garbage body, oversized body (declared and chunked), wrong method, unknown job and path
    case("garbage", 400, raw(url, "POST", path, b"\x00\xffnot json" * 10))
    big = b"{" + b" " * (served.service.limits.max_request_bytes + 10)
    case("oversized", 413, raw(url, "POST", path, big))

    async def chunked() -> tuple[int, dict[str, Any], H.Signed]:
        async def gen() -> Any:
            for _ in range(80):
                yield b" " * 65536
        s = H.sign_request(VERIFIER, "POST", path, H.EMPTY_HASH, bytes(WORKER.pubkey()))
        async with aiohttp.ClientSession() as cs, cs.post(url + path, data=gen(), headers=s.headers()) as r:
            return r.status, await r.json(), s

    case("oversized chunked", 413, asyncio.run(chunked()))
    case("wrong method", 405, raw(url, "GET", path))
    case("unknown job", 404, raw(url, "GET", f"/v1/jobs/{'ab' * 32}/commitment"))
    case("unknown path", 404, raw(url, "GET", "/v1/secrets"))
    # a challenge for another job than the path names
    case("path mismatch", 422, raw(url, "POST", f"/v1/jobs/{traces[1][1].hex()}/respond", challenge))
    assert all(v.get("error") for _, _, v in cases)
    still_serving(url)
    assert job


def test_worker_refuses_more_steps_than_it_answers(traces: tuple[Path, list[bytes]]) -> None:
    s = serve(traces[0], max_answer=1)
    try:
        result = verify_remote(Verifier(key=VERIFIER), s.url, traces[1][0], limits=FAST, k=3)
        assert not result.verdict.passed and result.refused and "422" in result.refused
        assert {o.reason for o in result.verdict.outcomes} == {Reason.REFUSED}
    finally:
        s.close()


class _SlowWorker(WorkerService):
    """A worker that takes ``delay`` seconds before answering (a real one under load)."""

    delay = 3.0

    def _prover(self, t: Any) -> Any:
        prover = super()._prover(t)
        real = prover.respond_to

        def respond_to(*a: Any, **kw: Any) -> Any:
            time.sleep(self.delay)
            return real(*a, **kw)

        prover.respond_to = respond_to  # type: ignore[method-assign]
        return prover


def test_a_worker_that_misses_the_deadline_gets_fail_refused(traces: tuple[Path, list[bytes]]) -> None:
    s = Served(_SlowWorker(traces=traces[0], key=WORKER, accept=[bytes(VERIFIER.pubkey())]))
    try:
        t0 = time.monotonic()
        result = verify_remote(Verifier(key=VERIFIER), s.url, traces[1][0], limits=FAST, deadline_s=1.0)
        assert time.monotonic() - t0 < 2.5
        assert result.refused and "deadline" in result.refused
        v = result.verdict
        assert not v.passed and {o.reason for o in v.outcomes} == {Reason.REFUSED}
        v.verify_signature(expected_verifier=bytes(VERIFIER.pubkey()))  # recorded: a signed verdict
    finally:
        s.close()


def test_transport_errors_are_retried_refusals_are_not(traces: tuple[Path, list[bytes]]) -> None:
    # a port nobody listens on: every attempt fails to connect, then RemoteUnavailable
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    t0 = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="after retries"):
        verify_remote(Verifier(key=VERIFIER), f"http://127.0.0.1:{port}", traces[1][0], limits=FAST,
                      worker=bytes(WORKER.pubkey()))
    assert time.monotonic() - t0 < 5
    # the worker comes up on that port after the first attempts fail: the retries get through
    service = WorkerService(traces=traces[0], key=WORKER, accept=[bytes(VERIFIER.pubkey())])
    holder: dict[str, Served] = {}

    async def late() -> Any:
        await asyncio.sleep(0.3)
        loop_sock = socket.socket()
        loop_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        loop_sock.bind(("127.0.0.1", port))
        holder["s"] = Served.__new__(Served)
        return loop_sock

    async def run() -> Any:
        sock2 = await late()
        await service.start(sock=sock2)
        try:
            async with RemoteWorker(f"http://127.0.0.1:{port}", key=VERIFIER, limits=ClientLimits(
                    attempts=6, backoff_initial_s=0.1, backoff_max_s=0.3)) as w:
                return await averify_remote(Verifier(key=VERIFIER), w, traces[1][0])
        finally:
            await service.stop()

    assert asyncio.run(run()).verdict.passed
    # a refusal (404) is final: one request, no retry
    s = serve(traces[0])
    try:
        async def unknown() -> None:
            async with RemoteWorker(s.url, key=VERIFIER, limits=FAST) as w:
                await w.commitment(bytes(32))

        t0 = time.monotonic()
        with pytest.raises(RemoteRefused, match="404"):
            asyncio.run(unknown())
        assert s.service._server is not None and s.service._server.requests_count == 2  # info + one try
    finally:
        s.close()


def test_slowloris_does_not_starve_an_honest_client(traces: tuple[Path, list[bytes]]) -> None:
    """A hostile host (127.0.0.2) opens many connections and trickles bytes: header trickles are
    cut after header_timeout_s, body trickles after body_timeout_s (408), connections beyond its
    per-peer cap are refused; an honest client (127.0.0.1) is answered all the while."""
    limits = ServerLimits(header_timeout_s=2, body_timeout_s=2, max_connections_per_peer=8)
    s = Served(WorkerService(traces=traces[0], key=WORKER, accept=[bytes(VERIFIER.pubkey())], limits=limits),
               host="127.0.0.1")
    host, port = s.service.address or ("", 0)
    hostile: list[socket.socket] = []
    try:
        for i in range(20):  # 8 get a slot, the rest are refused at once
            c = socket.create_connection((host, port), source_address=("127.0.0.2", 0), timeout=5)
            c.sendall(b"POST /v1/info HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                      b"POST /v1/jobs/" + b"a" * 64 + b"/respond HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            hostile.append(c)
        t0 = time.monotonic()
        latencies = []
        while time.monotonic() - t0 < 3.5:  # honest verifications while the hostile host trickles
            for c in hostile:
                try:
                    c.send(b"X")
                except OSError:
                    pass
            t1 = time.monotonic()
            r = verify_remote(Verifier(key=VERIFIER), s.url, traces[1][0], limits=FAST)
            latencies.append(time.monotonic() - t1)
            assert r.verdict.passed
        assert max(latencies) < 2.0, latencies
        assert s.service.refused_connections >= 12
        # every hostile connection is closed by now (header or body timeout, or refused)
        closed = 0
        for c in hostile:
            c.settimeout(2)
            try:
                data = c.recv(65536)
                while data and b"408" not in data:
                    data = c.recv(65536)
                closed += 1
            except OSError:
                closed += 1
        assert closed == len(hostile)
        still_serving(s.url)
    finally:
        for c in hostile:
            c.close()
        s.close()


@pytest.mark.parametrize(("jobs", "concurrency"), [(24, 8), pytest.param(300, 32, marks=pytest.mark.slow)])
def test_load_many_concurrent_verifications(traces: tuple[Path, list[bytes]], jobs: int, concurrency: int,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    s = serve(traces[0], ServerLimits(max_concurrent_answers=2))
    try:
        async def run() -> list[float]:
            sem = asyncio.Semaphore(concurrency)
            async with RemoteWorker(s.url, key=VERIFIER, limits=FAST) as w:
                async def one(i: int) -> float:
                    async with sem:  # one verifier (and challenge book) per verification
                        t0 = time.perf_counter()
                        r = await averify_remote(Verifier(key=VERIFIER), w, traces[1][i % len(traces[1])])
                        assert r.verdict.passed
                        return time.perf_counter() - t0
                return list(await asyncio.gather(*(one(i) for i in range(jobs))))

        t0 = time.perf_counter()
        lat = sorted(asyncio.run(run()))
        wall = time.perf_counter() - t0
        p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        with capsys.disabled():
            print(f"\nload: {jobs} verifications, {concurrency} concurrent: {jobs / wall:.1f}/s, "
                  f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        assert len(lat) == jobs
    finally:
        s.close()
