"""`--web.config.file`: TLS and basic auth for the HTTP endpoints, in exporter-toolkit's format.

The file format is the one Prometheus' Go exporters read (github.com/prometheus/exporter-toolkit,
docs/web-configuration.md), so one file serves both:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: ca.crt                         # or client_ca: <PEM text>
      client_allowed_sans: [prometheus.example.com]  # optional
      min_version: TLS12
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2y$10$...                         # bcrypt hash

Relative paths are relative to the file's directory. The file is read once at start-up; the
certificate and key are read again when their files change, so a renewed certificate is
picked up without a restart. A few options Python's `ssl` module cannot honour
(`RequestClientCert`, `RequireAnyClientCert`, `curve_preferences`, inline `cert`/`key`,
`rate_limit`) are refused with a clear error rather than silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import bcrypt

from exporter.config import ConfigError, read_yaml_file

log = logging.getLogger(__name__)

_ProblemFn = Callable[[str, str], None]  # (key path, message)

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's names (crypto/tls CipherSuites()) -> OpenSSL's, for TLS 1.2 and below. Go ignores
# TLS 1.3 suites in this list, and so does this exporter.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Accepted by Go, but they take a client certificate without verifying it, which Python's
# ssl module cannot do; better refused than silently made stricter or looser.
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# exporter-toolkit allows exactly these headers, with these checks.
HEADERS = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_ca",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
)
UNSUPPORTED_KEYS = {
    "cert": "use cert_file",
    "key": "use key_file",
    "curve_preferences": "Python's ssl module cannot set a curve list; remove it to use "
    "OpenSSL's defaults",
    "rate_limit": "not supported by neo-exporter",
}
HTTP_KEYS = ("http2", "headers")
BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake
AUTH_CACHE_SIZE = 256  # successful (user, password) pairs remembered, as keyed digests


@dataclass(frozen=True)
class TLSSettings:
    cert_file: str
    key_file: str
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: str | None = None
    prefer_server_ciphers: bool = True


@dataclass(frozen=True)
class WebConfigFile:
    """What `--web.config.file` asks for; an empty file means plain HTTP, no auth."""

    tls: TLSSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: tuple[tuple[str, str], ...] = ()


# --- loading -------------------------------------------------------------------------------


def load_web_config(path: str) -> WebConfigFile:
    """Read and check the file; ConfigError lists every problem, each naming its key."""
    data = read_yaml_file(path, "--web.config.file")
    return web_config_from_mapping(data, os.path.dirname(os.path.abspath(path)), path)


def web_config_from_mapping(data: object, base_dir: str, name: str = "web config") -> WebConfigFile:
    problems: list[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"{name}: {key}: {message}")

    top = _section(data, "", TOP_KEYS, problem)
    tls = _tls(top.get("tls_server_config"), base_dir, problem)
    headers = _http(top.get("http_server_config"), problem)
    users = _users(top.get("basic_auth_users"), problem)
    if problems:
        raise ConfigError(problems)
    config = WebConfigFile(tls, users, headers)
    if tls is not None:
        # Load once now, so that a bad certificate or key stops the start with a clear error.
        try:
            build_ssl_context(tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{name}: tls_server_config: cannot use the certificate, key or CA: {exc}"
            ) from None
    return config


def _section(
    value: object, path: str, known: tuple[str, ...], problem: _ProblemFn
) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problem(path or "(top)", f"expected a mapping of {', '.join(known)}")
        return {}
    result: dict[str, object] = {}
    for key, item in value.items():
        full = f"{path}.{key}" if path else str(key)
        if key in UNSUPPORTED_KEYS:
            problem(full, f"not supported ({UNSUPPORTED_KEYS[str(key)]})")
        elif isinstance(key, str) and key in known:
            result[key] = item
        else:
            problem(full, f"unknown key (known: {', '.join(known)})")
    return result


def _string(value: object, key: str, problem: _ProblemFn) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    problem(key, "expected a non-empty string")
    return None


def _file(value: object, base_dir: str, key: str, problem: _ProblemFn) -> str | None:
    text = _string(value, key, problem)
    if text is None:
        return None
    full = os.path.join(base_dir, os.path.expanduser(text))
    if not os.path.isfile(full):
        problem(key, f"{full} is not a readable file")
        return None
    return full


def _tls(value: object, base_dir: str, problem: _ProblemFn) -> TLSSettings | None:
    if value is None:
        return None
    path = "tls_server_config"
    section = _section(value, path, TLS_KEYS, problem)
    for name in ("cert_file", "key_file"):
        if name not in section:
            problem(f"{path}.{name}", "missing (TLS needs both cert_file and key_file)")
    cert = _file(section.get("cert_file"), base_dir, f"{path}.cert_file", problem)
    key = _file(section.get("key_file"), base_dir, f"{path}.key_file", problem)
    if key is not None and os.stat(key).st_mode & 0o044:
        log.warning(
            "%s.key_file: %s is readable by group or others (expected chmod 600)", path, key
        )
    client_auth, ca_file, ca_text, sans = _client_auth(section, base_dir, path, problem)
    low, high, ciphers, prefer = _protocol(section, path, problem)
    if cert is None or key is None:
        return None
    return TLSSettings(cert, key, client_auth, ca_file, ca_text, sans, low, high, ciphers, prefer)


def _client_auth(
    section: Mapping[str, object], base_dir: str, path: str, problem: _ProblemFn
) -> tuple[ssl.VerifyMode, str | None, str | None, tuple[str, ...]]:
    ca_file = None
    if "client_ca_file" in section:
        ca_file = _file(section["client_ca_file"], base_dir, f"{path}.client_ca_file", problem)
    ca_text = None
    if "client_ca" in section:
        ca_text = _string(section["client_ca"], f"{path}.client_ca", problem)
        if ca_file is not None:
            problem(f"{path}.client_ca", "both client_ca and client_ca_file are set")
    has_ca = "client_ca_file" in section or "client_ca" in section
    auth_name = section.get("client_auth_type")
    if auth_name is None:
        # As exporter-toolkit: a client CA alone means every client must present a cert.
        client_auth = ssl.CERT_REQUIRED if has_ca else ssl.CERT_NONE
    elif isinstance(auth_name, str) and auth_name in CLIENT_AUTH:
        client_auth = CLIENT_AUTH[auth_name]
    else:
        why = (
            "Python's ssl module cannot accept a client certificate without verifying it; use "
            "RequireAndVerifyClientCert or VerifyClientCertIfGiven with a client CA"
            if auth_name in UNSUPPORTED_CLIENT_AUTH
            else f"expected one of {', '.join(CLIENT_AUTH)}"
        )
        problem(f"{path}.client_auth_type", f"{auth_name!r:.60} is not supported ({why})")
        client_auth = ssl.CERT_REQUIRED
    if client_auth != ssl.CERT_NONE and not has_ca:
        problem(
            f"{path}.client_auth_type",
            "verifying client certificates needs client_ca_file or client_ca",
        )
    sans: tuple[str, ...] = ()
    if "client_allowed_sans" in section:
        raw = section["client_allowed_sans"]
        if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
            problem(f"{path}.client_allowed_sans", "expected a list of strings")
        else:
            sans = tuple(raw)
            if client_auth != ssl.CERT_REQUIRED:
                problem(
                    f"{path}.client_allowed_sans",
                    "needs client_auth_type RequireAndVerifyClientCert (else a client may "
                    "send no certificate, leaving no SAN to check)",
                )
    return client_auth, ca_file, ca_text, sans


def _protocol(
    section: Mapping[str, object], path: str, problem: _ProblemFn
) -> tuple[ssl.TLSVersion, ssl.TLSVersion, str | None, bool]:
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        wanted = section.get(name, default)
        if not isinstance(wanted, str) or wanted not in TLS_VERSIONS:
            problem(f"{path}.{name}", f"{wanted!r:.40} (expected one of {', '.join(TLS_VERSIONS)})")
            wanted = default
        versions[name] = TLS_VERSIONS[wanted]
    if versions["min_version"] > versions["max_version"]:
        problem(f"{path}.min_version", "is above max_version")
    ciphers = None
    if "cipher_suites" in section:
        raw = section["cipher_suites"]
        if not isinstance(raw, list) or not raw:
            problem(f"{path}.cipher_suites", "expected a non-empty list of Go cipher suite names")
        else:
            names = []
            for suite in raw:
                if isinstance(suite, str) and suite in CIPHER_SUITES:
                    names.append(CIPHER_SUITES[suite])
                elif suite not in TLS13_SUITES:
                    problem(
                        f"{path}.cipher_suites",
                        f"{suite!r:.60} is not a supported suite "
                        "(expected Go names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                    )
            ciphers = ":".join(dict.fromkeys(names)) or None
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        problem(f"{path}.prefer_server_cipher_suites", "expected true or false")
        prefer = True
    return versions["min_version"], versions["max_version"], ciphers, prefer


def _http(value: object, problem: _ProblemFn) -> tuple[tuple[str, str], ...]:
    path = "http_server_config"
    section = _section(value, path, HTTP_KEYS, problem)
    if "http2" in section and not isinstance(section["http2"], bool):
        # Accepted for compatibility; this server speaks HTTP/1.1 only.
        problem(f"{path}.http2", "expected true or false")
    raw = section.get("headers")
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problem(f"{path}.headers", f"expected a mapping of some of {', '.join(HEADERS)}")
        return ()
    headers = []
    for name, header_value in raw.items():
        key = f"{path}.headers.{name}"
        if name not in HEADERS:
            problem(key, f"not an allowed header (allowed: {', '.join(HEADERS)})")
            continue
        if not isinstance(header_value, str) or any(c in header_value for c in "\r\n"):
            problem(key, "expected a single-line string")
            continue
        allowed = HEADERS[str(name)]
        if allowed is not None and header_value.lower() not in allowed:
            problem(key, f"{header_value!r:.60} (expected one of {', '.join(allowed)})")
            continue
        if header_value:  # blank means unset, as in exporter-toolkit
            headers.append((str(name), header_value))
    return tuple(headers)


def _users(value: object, problem: _ProblemFn) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problem("basic_auth_users", "expected a mapping of user names to bcrypt hashes")
        return {}
    users = {}
    for user, hashed in value.items():
        key = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            problem(key, "a user name must be a non-empty string without ':'")
        elif not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            # The value is never echoed: a plain password pasted here must not reach a log.
            problem(key, "expected a bcrypt hash ($2y$10$... from `htpasswd -nBC 10 ''`)")
        else:
            users[user] = hashed.encode()
    return users


# --- serving -------------------------------------------------------------------------------


def build_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    if tls.ciphers is not None:
        context.set_ciphers(tls.ciphers)
    if tls.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.verify_mode = tls.client_auth
    if tls.client_ca_file is not None or tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca_file, cadata=tls.client_ca)
    return context


class TLSWrapper:
    """Wraps accepted sockets; reloads the certificate and key when their files change."""

    def __init__(self, tls: TLSSettings) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._context = build_ssl_context(tls)

    def _files_stamp(self) -> tuple[float, ...]:
        try:
            return tuple(os.stat(p).st_mtime for p in (self._tls.cert_file, self._tls.key_file))
        except OSError:
            return ()

    def context(self) -> ssl.SSLContext:
        stamp = self._files_stamp()
        with self._lock:
            if stamp and stamp != self._stamp:
                try:
                    self._context = build_ssl_context(self._tls)
                    log.info("TLS certificate reloaded from %s", self._tls.cert_file)
                except (OSError, ssl.SSLError) as exc:
                    # Keep serving with the old one; a half-written renewal is retried later.
                    log.error("TLS certificate reload failed, keeping the old one: %s", exc)
                self._stamp = stamp
            return self._context

    def allowed(self, peer: ssl.SSLSocket) -> bool:
        """False if client_allowed_sans is set and the client certificate matches none."""
        if not self._tls.client_allowed_sans:
            return True
        cert = peer.getpeercert() or {}
        entries = cert.get("subjectAltName", ())
        sans = {str(entry[1]) for entry in entries if isinstance(entry, tuple) and len(entry) == 2}
        return bool(sans & set(self._tls.client_allowed_sans))


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes, remembering recent successes.

    bcrypt is slow on purpose (tens of ms): without the cache every scrape would pay it. The
    cache holds keyed digests, never passwords. Unknown users cost a bcrypt check too, so
    the time taken does not tell which user names exist.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._key = os.urandom(32)
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()
        cost = min((int(h[4:6]) for h in self._users.values()), default=10)
        self._decoy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))

    def check(self, header: str | None) -> bool:
        credentials = _basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.new(self._key, user + b"\0" + password, hashlib.sha256).digest()
        with self._lock:
            if digest in self._ok:
                return True
        hashed = self._users.get(user.decode("utf-8", "replace"))
        try:
            ok = bcrypt.checkpw(password, hashed or self._decoy) and hashed is not None
        except ValueError:  # bcrypt refuses passwords over 72 bytes
            ok = False
        if ok:
            with self._lock:
                if len(self._ok) >= AUTH_CACHE_SIZE:
                    self._ok.clear()
                self._ok.add(digest)
        return ok


def _basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None
