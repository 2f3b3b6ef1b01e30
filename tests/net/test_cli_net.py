"""The two-host flow through the command line, on loopback: ``pocv serve`` in its own process,
``pocv verify --remote`` against it (docs/network.md §8).

An honest worker: PASS (exit 0). A lying worker: FAIL (exit 1). A worker that takes the
challenge and never answers: FAIL with reason REFUSED (exit 1). A verifier the worker does not
accept: refused in one line (exit 3). ``pocv serve``'s own errors are one line with exit 3;
SIGTERM stops it with exit 0, SIGINT with 130.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pocv.check import NOT_JUDGED
from pocv.records import Verdict
from pocv.serve import ServerLimits, WorkerService
from pocv.store import save_keypair
from pocv.testing import LazyProver
from tests.net.conftest import SPECS, STRANGER, VERIFIER, WORKER, Served


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def here(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    """``pocv ARGS`` in this process (the verifier's side: fast, no interpreter start)."""
    from pocv.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return Result(code, out.out, out.err)


class Server:
    """``pocv serve ARGS`` in its own process; ``url`` once it listens."""

    def __init__(self, *args: str | Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pocv", "serve", "--port", "0", "--output", "json",
                                      *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"pocv serve did not start: {self.proc.wait(30)} {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.ready = json.loads(line)
        self.url: str = self.ready["url"]

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=30)
        finally:
            self.proc.kill()
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    for name, key in (("worker", WORKER), ("verifier", VERIFIER), ("stranger", STRANGER)):
        save_keypair(key, d / f"{name}.json")
    (d / "accept.txt").write_text(f"# the verifiers this worker answers\n{VERIFIER.pubkey()}  # ours\n\n")
    return d


def test_honest_worker_passes_and_serve_stops_on_sigterm(traces: tuple[Path, list[bytes]], keys: Path,
                                                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    s = Server(traces[0], "-k", keys / "worker.json", "--accept", keys / "accept.txt")
    try:
        assert s.ready["worker"] == str(WORKER.pubkey()) and s.ready["jobs"] == 3 and s.ready["accepted"] == 1
        job = traces[1][1]
        r = here(capsys, "verify", "--remote", s.url, "--job-id", job.hex(), "-n", "4", "-k", keys / "verifier.json",
                 "--worker", str(WORKER.pubkey()), "--keep", tmp_path / "kept", "-o", tmp_path / "verdict.json")
        assert r.returncode == 0 and r.stdout == "", r.stderr  # the record went to -o
        verdict = Verdict.from_json((tmp_path / "verdict.json").read_text())
        assert verdict.passed and verdict.job_id == job and len(verdict.outcomes) == 4 and verdict.bundle_signed
        # the evidence behind the verdict: the records and the bundle that was judged, checkable offline
        kept = tmp_path / "kept"
        again = here(capsys, "verify", kept / "commitment.json", kept / "challenge.json", kept / "response.pocv",
                     "-k", keys / "verifier.json")
        assert again.returncode == 0, again.stderr
        # --job names the job by its spec; text output for people
        (tmp_path / "job.json").write_text(SPECS[2].to_json())
        r = here(capsys, "verify", "--remote", s.url, "--job", tmp_path / "job.json", "-n", "2",
                 "-k", keys / "verifier.json", "--output", "text", "-q")
        assert r.returncode == 0 and r.stdout.startswith(f"PASS job {traces[1][2].hex()[:16]}"), r
    finally:
        code, err = s.stop(signal.SIGTERM)
    assert code == 0 and "stopped" in err and "Traceback" not in err, err


def test_lying_worker_fails_and_serve_exits_130_on_sigint(tmp_path: Path, keys: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    liar = LazyProver(skip_fraction=0.5, seed=1, trace_dir=tmp_path / "lazy", key=WORKER, checkpoint_every=1)
    commitment = liar.run(SPECS[0])
    assert liar.skipped > 0
    s = Server(tmp_path / "lazy", "-k", keys / "worker.json", "--accept", str(VERIFIER.pubkey()))
    try:
        r = here(capsys, "verify", "--remote", s.url, "-n", str(SPECS[0].steps), "-k", keys / "verifier.json", "-q")
        assert r.returncode == 1, r.stderr
        verdict = Verdict.from_json(r.stdout)
        assert not verdict.passed and verdict.job_id == commitment.job_id and verdict.is_evidence
        # every step challenged: one run from step 1, judged up to the first skipped step (a
        # MISMATCH); the rest of the run is not judged (MISSING, docs/protocol.md §9 (8))
        assert verdict.failures[0].reason.name == "MISMATCH"
        assert all(o.reason.name == "MISSING" and o.detail.startswith(NOT_JUDGED) for o in verdict.failures[1:])
        assert r.stderr.startswith("pocv verify: FAIL: ") and len(r.stderr.strip().splitlines()) == 2  # and --job
    finally:
        code, err = s.stop(signal.SIGINT)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err


class Silent(WorkerService):
    """A worker that takes every challenge and never answers it."""

    async def _answer(self, work: Any, request: Any, request_sig: bytes) -> Any:
        await asyncio.sleep(3600)


def test_worker_that_never_answers_gets_fail_refused(traces: tuple[Path, list[bytes]], keys: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    served = Served(Silent(traces=traces[0], key=WORKER, accept=[bytes(VERIFIER.pubkey())],
                           limits=ServerLimits(request_timeout_s=60)))
    try:
        r = here(capsys, "verify", "--remote", served.url, "--job-id", traces[1][0].hex(), "-n", "3",
                 "--deadline", "1", "-k", keys / "verifier.json")
    finally:
        served.close()
    assert r.returncode == 1, r.stderr
    verdict = Verdict.from_json(r.stdout)  # signed, and recorded as a refusal: evidence against the worker
    assert not verdict.passed and verdict.is_evidence and len(verdict.outcomes) == 3
    assert {o.reason.name for o in verdict.outcomes} == {"REFUSED"}
    assert "REFUSED" in r.stderr and "deadline (1 s)" in r.stderr


def test_verifier_not_accepted_is_refused_in_one_line(traces: tuple[Path, list[bytes]], keys: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    served = Served(WorkerService(traces=traces[0], key=WORKER, accept=[bytes(VERIFIER.pubkey())]))
    try:
        r = here(capsys, "verify", "--remote", served.url, "--job-id", traces[1][0].hex(),
                 "-k", keys / "stranger.json")
        assert r.returncode == 3 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and "403 not-accepted" in r.stderr, r.stderr
        assert str(STRANGER.pubkey()) in r.stderr
    finally:
        served.close()


def test_the_only_job_is_found_without_job_id(traces: tuple[Path, list[bytes]], keys: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    served = Served(WorkerService(traces=traces[0] / "job1", key=WORKER, accept=[bytes(VERIFIER.pubkey())]))
    try:
        r = here(capsys, "verify", "--remote", served.url, "-n", "2", "-k", keys / "verifier.json", "-q")
        assert r.returncode == 0 and Verdict.from_json(r.stdout).job_id == traces[1][1], r.stderr
    finally:
        served.close()
    many = Served(WorkerService(traces=traces[0], key=WORKER, accept=[bytes(VERIFIER.pubkey())]))
    try:
        r = here(capsys, "verify", "--remote", many.url, "-k", keys / "verifier.json")
        assert r.returncode == 3 and "serves 3 jobs" in r.stderr and "--job-id" in r.stderr
    finally:
        many.close()


def test_verify_remote_usage_errors(keys: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = here(capsys, "verify", "--remote", "ftp://x", "-k", keys / "verifier.json")
    assert r.returncode == 3 and "http:// or https://" in r.stderr
    r = here(capsys, "verify", "--remote", "http://127.0.0.1:1", "--job-id", "zz", "-k", keys / "verifier.json")
    assert r.returncode == 3 and "64 hex digits" in r.stderr
    r = here(capsys, "verify", "--remote", "http://127.0.0.1:1", "--deadline", "0", "-k", keys / "verifier.json")
    assert r.returncode == 2 and "positive number of seconds" in r.stderr
    r = here(capsys, "verify", "a.json", "--remote", "http://127.0.0.1:1", "-k", keys / "verifier.json")
    assert r.returncode == 3 and "do not also give COMMITMENT" in r.stderr


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_serve_errors_are_one_line(traces: tuple[Path, list[bytes]], keys: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = ["serve", traces[0], "-k", keys / "worker.json"]
    busy = _busy_port()
    try:
        cases = [
            ([*base, "--accept", str(VERIFIER.pubkey()), "--port", str(busy.getsockname()[1])], 3, "cannot listen"),
            ([*base, "--accept", str(VERIFIER.pubkey()), "--port", "70000"], 2, "0..65535"),
            ([*base, "--accept", "notakey"], 3, "neither a file nor a base58 public key"),
            ([*base, "--accept", tmp_path / "empty.txt"], 3, "no verifier key to accept"),
            ([*base], 2, "--accept"),
            (["serve", tmp_path / "nowhere", "-k", keys / "worker.json", "--accept", str(VERIFIER.pubkey())], 3,
             "is not a directory"),
            (["serve", traces[0], "-k", tmp_path / "nokey.json", "--accept", str(VERIFIER.pubkey())], 3,
             "does not exist"),
            ([*base, "--accept", str(VERIFIER.pubkey()), "--tls-cert", tmp_path / "c.pem"], 3, "go together"),
            ([*base, "--accept", str(VERIFIER.pubkey()), "--tls-cert", tmp_path / "c.pem", "--tls-key",
              tmp_path / "k.pem"], 3, "cannot load --tls-cert"),
        ]
        (tmp_path / "empty.txt").write_text("# nobody yet\n")
        for argv, code, text in cases:
            r = here(capsys, *argv)
            assert r.returncode == code and text in r.stderr, (argv, r)
            assert "Traceback" not in r.stderr
            if code == 3:  # one line; a usage error (2) is argparse's usage and its one line
                assert r.stderr.count("\n") == 1, r.stderr
    finally:
        busy.close()


def test_serve_help_says_how_to_run_behind_tls(capsys: pytest.CaptureFixture[str]) -> None:
    r = here(capsys, "serve", "--help")
    assert r.returncode == 0
    assert "TLS" in r.stdout and "reverse-proxy" in r.stdout and "proxy_pass" in r.stdout and "--tls-cert" in r.stdout


def test_cli_defaults_match_the_library() -> None:
    from pocv.cli import build_parser
    from pocv.cli._net import DEFAULT_DEADLINE_S
    from pocv.client import DEFAULT_DEADLINE_S as LIBRARY_DEADLINE

    assert DEFAULT_DEADLINE_S == LIBRARY_DEADLINE
    limits = ServerLimits()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    serve = sub.choices["serve"]  # type: ignore[attr-defined]
    helps = {a.dest: a.help for a in serve._actions}
    for dest, value in (("max_concurrent_answers", limits.max_concurrent_answers),
                        ("max_queued_answers", limits.max_queued_answers),
                        ("request_timeout", limits.request_timeout_s), ("header_timeout", limits.header_timeout_s),
                        ("max_connections", limits.max_connections),
                        ("max_connections_per_peer", limits.max_connections_per_peer)):
        assert f"default {value:g}" in helps[dest], (dest, helps[dest])


def _self_signed(d: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (the verifier trusts it with --cacert)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pocv test worker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


def test_serve_speaks_tls_itself(traces: tuple[Path, list[bytes]], keys: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = _self_signed(tmp_path)
    s = Server(traces[0] / "job0", "-k", keys / "worker.json", "--accept", keys / "verifier.json",
               "--tls-cert", cert, "--tls-key", key)
    try:
        assert s.url.startswith("https://127.0.0.1:")
        r = here(capsys, "verify", "--remote", s.url, "-n", "2", "--cacert", cert, "-k", keys / "verifier.json",
                 "-q")
        assert r.returncode == 0 and Verdict.from_json(r.stdout).passed, r.stderr
        # without the CA the certificate is not trusted: a transport error, retried, then exit 4
        r = here(capsys, "verify", "--remote", s.url, "-n", "2", "--attempts", "1", "-k", keys / "verifier.json")
        assert r.returncode == 4 and "certificate" in r.stderr.lower(), r.stderr
    finally:
        s.stop()
