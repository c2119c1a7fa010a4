"""--web.config.file: exporter-toolkit's format, real TLS, basic auth with bcrypt hashes."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.config import ConfigError
from exporter.server import ConnectionLimiter, ExporterServer
from exporter.snapshot import SnapshotStore
from exporter.webconfig import (
    BasicAuth,
    WebConfigFile,
    load_web_config,
    web_config_from_mapping,
)
from tests.processes import ENV, fake_api, require_tool, run_cli, spawn, write_config
from tests.tls_helpers import Pki, make_pki

PASSWORD = "correct horse battery staple"
# Cost 4 keeps the tests fast; users pick 10 or more, and the cache makes the cost one-off.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def open_connections(limiter: ConnectionLimiter) -> int:
    """Connections the limiter holds and has not shut down (its table, read under its lock)."""
    with limiter._cond:
        return sum(1 for conn in limiter._open.values() if not conn.evicted)


def write_web_config(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --- the file ------------------------------------------------------------------------------


def test_a_go_exporters_web_config_loads_unchanged(pki: Pki, tmp_path: Path) -> None:
    # The shape of exporter-toolkit's docs/web-config.yml, relative paths included.
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(pki.ca.parent / name, tmp_path / name)
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        "  cert_file: server.crt\n"
        "  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.crt\n"
        "  client_allowed_sans: [prometheus.test]\n"
        "  min_version: TLS12\n"
        "  max_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: true\n"
        "http_server_config:\n"
        "  http2: true\n"
        "  headers:\n"
        "    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n"
        "basic_auth_users:\n"
        f"  prometheus: {HASH}\n"
    )
    web = load_web_config(str(path))
    assert web.tls is not None
    assert web.tls.cert_file == str(tmp_path / "server.crt")
    assert web.tls.client_auth == ssl.CERT_REQUIRED
    assert web.tls.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert set(web.users) == {"prometheus"}
    assert ("X-Frame-Options", "deny") in web.headers


def test_every_problem_is_named_by_its_key_at_once(pki: Pki, tmp_path: Path) -> None:
    plain_password = "hunter2-not-a-hash"
    with pytest.raises(ConfigError) as caught:
        web_config_from_mapping(
            {
                "tls_server_config": {
                    "cert_file": str(pki.server_cert),
                    "key_file": "missing.key",
                    "client_auth_type": "RequireAnyClientCert",
                    "min_version": "TLS14",
                    "cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"],
                    "curve_preferences": ["X25519"],
                },
                "http_server_config": {"headers": {"X-Frame-Options": "allow", "Server": "x"}},
                "basic_auth_users": {"prometheus": plain_password},
                "basic_auth": {},
            },
            str(tmp_path),
        )
    text = str(caught.value)
    for key in (
        "tls_server_config.key_file",
        "tls_server_config.client_auth_type",
        "tls_server_config.min_version",
        "tls_server_config.cipher_suites",
        "tls_server_config.curve_preferences",
        "http_server_config.headers.X-Frame-Options",
        "http_server_config.headers.Server",
        "basic_auth_users.prometheus",
        "basic_auth: unknown key",
    ):
        assert key in text, key
    assert plain_password not in text  # a password pasted instead of a hash is never echoed


def test_a_certificate_that_does_not_match_its_key_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="cannot use the certificate"):
        web_config_from_mapping(
            {
                "tls_server_config": {
                    "cert_file": str(pki.server_cert),
                    "key_file": str(pki.client_key),
                }
            },
            "/",
        )


TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.sampled_from(["TLS12", "NoClientCert", HASH, "deny", "cert_file"]),
    lambda c: st.lists(c, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["tls_server_config", "basic_auth_users", "http_server_config", "cert_file",
             "key_file", "headers", "min_version", "client_auth_type", "X-Frame-Options", "u"]
        ) | st.text(max_size=5),
        c,
        max_size=4,
    ),
    max_leaves=15,
)  # fmt: skip


@given(TREES)
@settings(max_examples=150, deadline=None)
def test_any_web_config_gives_settings_or_a_config_error(data: object) -> None:
    try:
        web = web_config_from_mapping(data, "/nonexistent")
    except ConfigError as error:
        assert error.problems and all(": " in p for p in error.problems)
    else:
        assert isinstance(web, WebConfigFile)


@pytest.mark.e2e
def test_the_cli_exits_2_on_a_bad_web_config_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", "http://127.0.0.1:1", tmp_path / "s.db")
    web = write_web_config(tmp_path / "web.yml", {"basic_auth_users": {"me": "plain"}})
    result = run_cli("--config.file", str(config), "--web.config.file", str(web), env=ENV)
    assert result.returncode == 2
    assert "basic_auth_users.me" in result.stderr
    assert "Traceback" not in result.stderr


# --- basic auth ----------------------------------------------------------------------------


def test_basic_auth_accepts_only_the_right_password_and_remembers_it() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert auth.check(header("prometheus", PASSWORD))
    assert auth.check(header("prometheus", PASSWORD))  # from the cache
    assert not auth.check(header("prometheus", PASSWORD + "x"))
    assert not auth.check(header("nobody", PASSWORD))
    assert not auth.check(header("prometheus", "x" * 100))  # over bcrypt's 72 bytes
    assert not auth.check(None)
    assert not auth.check("Bearer abc")
    assert not auth.check("Basic !!!not-base64")
    assert not auth.check("Basic " + base64.b64encode(b"no-colon").decode())


# --- a server with TLS --------------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[ExporterServer] = []

    def start(web: WebConfigFile) -> str:
        server = ExporterServer(
            ("127.0.0.1", 0), CollectorRegistry(), SnapshotStore(("acme",), 60.0), web=web
        )
        server.serve_in_thread()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("served", [True, False], ids=["after_requests", "idle"])
def test_shutdown_ends_the_accept_loop_at_once_whatever_its_poll_interval(served: bool) -> None:
    """The stdlib loop would only notice the shutdown at its next poll, an hour away here."""
    server = ExporterServer(("127.0.0.1", 0), CollectorRegistry(), SnapshotStore(("acme",), 60.0))
    thread = threading.Thread(target=server.serve_forever, args=(3600.0,), daemon=True)
    thread.start()
    try:
        if served:
            assert requests.get(f"{server.url}/-/healthy", timeout=10).status_code == 200
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(10)
        thread.join(10)
        assert not stopper.is_alive() and not thread.is_alive()
    finally:
        server.server_close()


def test_client_certificates_are_verified_and_their_sans_checked(pki: Pki, serve: object) -> None:
    web = web_config_from_mapping(
        {
            "tls_server_config": {
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": str(pki.ca),
                "client_allowed_sans": ["prometheus.test"],
            }
        },
        "/",
    )
    url = serve(web)  # type: ignore[operator]
    assert url.startswith("https://")
    good = requests.get(
        f"{url}/-/healthy",
        verify=str(pki.ca),
        cert=(str(pki.client_cert), str(pki.client_key)),
        timeout=5,
    )
    assert good.status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/-/healthy", verify=str(pki.ca), timeout=5)  # no client cert
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(
            f"{url}/-/healthy",
            verify=str(pki.ca),
            cert=(str(pki.other_client_cert), str(pki.other_client_key)),  # SAN not allowed
            timeout=5,
        )


def test_a_renewed_certificate_is_served_without_a_restart(
    pki: Pki, serve: object, tmp_path: Path
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    web = web_config_from_mapping(
        {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}}, "/"
    )
    url = serve(web)  # type: ignore[operator]
    assert requests.get(f"{url}/-/healthy", verify=str(pki.ca), timeout=5).status_code == 200
    renewed = make_pki(tmp_path)  # a new CA and server certificate, written in place
    shutil.copy(renewed.server_cert, cert)
    shutil.copy(renewed.server_key, key)
    later = time.time() + 5
    os.utime(cert, (later, later))
    os.utime(key, (later, later))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/-/healthy", verify=str(pki.ca), timeout=5)
    assert requests.get(f"{url}/-/healthy", verify=str(renewed.ca), timeout=5).status_code == 200


# --- the real process -------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_exporter_serves_metrics_over_tls_with_basic_auth(pki: Pki, tmp_path: Path) -> None:
    web = write_web_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
            },
            "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            "basic_auth_users": {"prometheus": HASH},
        },
    )
    with fake_api("--seed", "2", "--streams", "50") as (_, fake_url):
        config = write_config(tmp_path / "config.yaml", fake_url, tmp_path / "state.db")
        proc = spawn(
            [
                "-m", "exporter", "--web.listen-address", "127.0.0.1:0",
                "--config.file", str(config), "--web.config.file", str(web),
            ],
            env=ENV,
        )  # fmt: skip
        try:
            url = proc.wait_for_line(r"listening on (https://127\.0\.0\.1:\d+)").group(1)
            ok = requests.get(
                f"{url}/metrics", auth=("prometheus", PASSWORD), verify=str(pki.ca), timeout=10
            )
            assert ok.status_code == 200
            assert "neo_up" in ok.text
            assert ok.headers["X-Content-Type-Options"] == "nosniff"
            for auth in (None, ("prometheus", "wrong"), ("admin", PASSWORD)):
                denied = requests.get(f"{url}/metrics", auth=auth, verify=str(pki.ca), timeout=10)
                assert denied.status_code == 401
                assert "neo_" not in denied.text
                assert denied.headers["WWW-Authenticate"].startswith("Basic")
            landing = requests.get(f"{url}/", verify=str(pki.ca), timeout=10)
            assert landing.status_code == 401  # every path, as with exporter-toolkit
            # Plain HTTP to the TLS port gets no metrics.
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.get(url.replace("https", "http") + "/metrics", timeout=5)
            # An untrusted client refuses the self-signed certificate.
            with pytest.raises(requests.exceptions.SSLError):
                requests.get(f"{url}/metrics", timeout=5)
        finally:
            assert proc.stop() == 0
    assert PASSWORD not in proc.output
    assert "Traceback" not in proc.output


@pytest.mark.e2e
def test_openssl_completes_a_verified_handshake_and_is_refused_below_min_version(
    pki: Pki,
) -> None:
    """openssl s_client, as an independent TLS implementation, completes the handshake."""
    openssl = require_tool("openssl")
    web = web_config_from_mapping(
        {"tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                               "min_version": "TLS13"}},
        "/",
    )  # fmt: skip
    server = ExporterServer(
        ("127.0.0.1", 0), CollectorRegistry(), SnapshotStore(("acme",), 60.0), web=web
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca),
             "-verify_return_error", "-brief"],
            input="GET /-/healthy HTTP/1.0\r\n\r\n",
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert re.search(r"Protocol version: TLSv1\.3", output), output
        assert "Verification: OK" in output, output
        old = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-brief"],
            input="", capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert old.returncode != 0  # below min_version
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_that_never_finishes_the_tls_handshake_is_closed_at_the_header_timeout(
    pki: Pki,
) -> None:
    import socket

    web = web_config_from_mapping(
        {"tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}},
        "/",
    )
    server = ExporterServer(
        ("127.0.0.1", 0),
        CollectorRegistry(),
        SnapshotStore(("acme",), 60.0),
        web=web,
        read_header_timeout=1.0,
        max_connections=4,
    )
    server.serve_in_thread()
    try:
        port = server.server_address[1]
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        for sock in silent[:2]:
            sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and no more
        # Eight silent clients against four slots: a verified scrape still gets through.
        response = requests.get(
            f"https://127.0.0.1:{port}/-/healthy", verify=str(pki.ca), timeout=10
        )
        assert response.status_code == 200
        started = time.monotonic()
        for sock in silent:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
            sock.close()
        assert time.monotonic() - started < 2.5  # the timeout plus a check of the deadlines
        deadline = time.monotonic() + 2.5  # the scrape's own connection: closed or reaped
        while open_connections(server.connections) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_connections(server.connections) == 0
    finally:
        server.shutdown()
        server.server_close()
