"""The server speaks HTTPS (``workstation server --certfile/--keyfile``), the
workstation's client trusts a private CA's certificate (``cafile``), and the
interactive API pages are off unless asked for."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.app import create_app
from sync.client import Offline, SyncClient
from workstation.cli import main, plain_http_warning


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "central (test)")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "central.pem", directory / "central.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_the_server_answers_over_https_with_its_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "central.db"
    main(["admin", "--db", f"sqlite:///{db}", "migrate"])
    server = subprocess.Popen(
        [sys.executable, "-m", "workstation.cli", "server", "--db", f"sqlite:///{db}"]
        + ["--host", "127.0.0.1", "--port", str(port)]
        + ["--certfile", str(cert), "--keyfile", str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, verify=trusting, timeout=5) as http:
            while True:
                try:
                    health = http.get("/health")
                    break
                except httpx.ConnectError:
                    assert server.poll() is None, "the server did not start"
                    assert time.monotonic() < deadline, "the server did not answer"
                    time.sleep(0.2)
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert http.get("/docs").status_code == 404
            assert http.get("/redoc").status_code == 404
            assert http.get("/openapi.json").status_code == 200
        # a client that does not trust the certificate is refused, not served
        with (
            httpx.Client(base_url=url, timeout=5) as untrusting,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            untrusting.get("/health")

        # the workstation's own client, given the CA's certificate
        async def workstation_health() -> None:
            client = SyncClient(url, cafile=str(cert))
            try:
                assert (await client.health())["status"] == "ok"
            finally:
                await client.aclose()
            plain = SyncClient(url)
            try:
                with pytest.raises(Offline):
                    await plain.health()
            finally:
                await plain.aclose()

        asyncio.run(workstation_health())
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def test_the_api_pages_are_served_only_when_asked_for(sqlite_url: str) -> None:
    for docs, status in ((False, 404), (True, 200)):
        app = create_app(sqlite_url, migrate=True, docs=docs)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            assert (await http.get("/docs")).status_code == status
            assert (await http.get("/redoc")).status_code == status
            assert (await http.get("/openapi.json")).status_code == 200
        app.state.engine.dispose()


def test_enrolling_with_a_plain_http_server_elsewhere_warns() -> None:
    assert plain_http_warning("https://central:8700") is None
    assert plain_http_warning("http://127.0.0.1:8700") is None
    warning = plain_http_warning("http://central:8700")
    assert warning is not None and "https://" in warning and "未加密" in warning
