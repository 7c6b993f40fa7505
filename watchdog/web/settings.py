"""The listener's TLS and basic auth, read from a Prometheus exporter web-config file.

The format is exporter-toolkit's (`--web.config.file`), so `promtool check web-config` accepts
our files and one file can serve an exporter and the watchdog. What differs:

- Supported: `tls_server_config` (`cert_file`, `key_file`, `client_ca_file`,
  `client_auth_type` NoClientCert | VerifyClientCertIfGiven | RequireAndVerifyClientCert,
  `min_version` and `max_version` TLS12 | TLS13, `prefer_server_cipher_suites`),
  `basic_auth_users` (bcrypt hashes) and `http_server_config.headers`.
- Accepted and ignored, being harmless: `http_server_config.http2` (this listener speaks
  HTTP/1.1, which Prometheus scrapes as well).
- Refused with the reason (see UNSUPPORTED): keys that would make the listener less strict than
  the file asks (`cipher_suites`, `curve_preferences`, `client_allowed_sans`, `rate_limit`),
  inline PEM (`cert`, `key`, `client_ca`), RequestClientCert and RequireAnyClientCert (Python's
  ssl cannot ask for a certificate without verifying it), and TLS10 and TLS11.
- Stricter: a `key_file` that every user on the host can read is an error, as a secret in the
  config is (watchdog/parsing/permissions.py); so is `tls_server_config: {}`, where Go falls back to
  plain HTTP without a word (`tls_server_config:` with nothing, or no key, means no TLS).

Paths are relative to the web-config file. `${VAR}` is not read here, as in Prometheus. The
file is read at start (and by `check`); the certificate and key files are read again whenever
they change, so a renewal needs no restart.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, model_validator

from watchdog.parsing.permissions import file_mode, readable_by_others
from watchdog.parsing.validate import Strict, parse
from watchdog.parsing.yamlfile import Document, InvalidFile, load

log = logging.getLogger("mlops_watchdog.web")

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# The response headers exporter-toolkit lets a file set, with their allowed values (any if empty).
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
_INLINE = "inline PEM is not supported here; write it to a file and give {0}"
UNSUPPORTED: dict[tuple[str, ...], str] = {
    ("tls_server_config", "cert"): _INLINE.format("cert_file"),
    ("tls_server_config", "key"): _INLINE.format("key_file"),
    ("tls_server_config", "client_ca"): _INLINE.format("client_ca_file"),
    ("tls_server_config", "client_allowed_sans"): (
        "is not supported; give a client_ca_file whose CA signs only the scrapers' certificates"
    ),
    ("tls_server_config", "cipher_suites"): (
        "is not supported (Go names its suites, OpenSSL does not); OpenSSL's defaults apply, "
        "and min_version: TLS13 allows only strong suites"
    ),
    ("tls_server_config", "curve_preferences"): "is not supported; OpenSSL's defaults apply",
    ("rate_limit",): "is not supported; put a reverse proxy in front of the listener for that",
}
_BCRYPT = re.compile(r"^\$2[abxy]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


def _version(value: str) -> str:
    if value in ("TLS10", "TLS11"):
        raise ValueError(f"{value} is obsolete and not supported; use TLS12 or TLS13")
    if value not in TLS_VERSIONS:
        raise ValueError(f"unknown TLS version {value!r}; use TLS12 or TLS13")
    return value


def _client_auth(value: str) -> str:
    if value in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
        raise ValueError(
            f"{value} is not supported: it accepts certificates nobody verified; "
            "use RequireAndVerifyClientCert with client_ca_file"
        )
    if value not in CLIENT_AUTH:
        raise ValueError(f"unknown client_auth_type {value!r}; use {', '.join(CLIENT_AUTH)}")
    return value


def _user(value: str) -> str:
    if ":" in value:
        raise ValueError("a user name cannot contain ':' (basic auth splits at the first one)")
    return value


def _bcrypt_hash(value: str) -> str:
    # The value is never echoed: a hash is offline-crackable.
    if not _BCRYPT.match(value):
        raise ValueError("not a bcrypt hash; make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'")
    return value


Version = Annotated[str, AfterValidator(_version)]


class TlsServerConfig(Strict):
    cert_file: str
    key_file: str
    client_auth_type: Annotated[str, AfterValidator(_client_auth)] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Version = "TLS12"
    max_version: Version = "TLS13"
    prefer_server_cipher_suites: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> TlsServerConfig:
        if self.client_ca_file and self.client_auth_type == "NoClientCert":
            raise ValueError(
                "client_ca_file is given but client_auth_type is NoClientCert; "
                "set client_auth_type: RequireAndVerifyClientCert"
            )
        if self.client_auth_type != "NoClientCert" and not self.client_ca_file:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version")
        return self


class HttpServerConfig(Strict):
    http2: bool = True  # accepted for compatibility; this listener speaks HTTP/1.1
    headers: dict[str, str] | None = None


class WebConfigFile(Strict):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig | None = None
    basic_auth_users: (
        dict[Annotated[str, AfterValidator(_user)], Annotated[str, AfterValidator(_bcrypt_hash)]]
        | None
    ) = None


@dataclass(frozen=True)
class Tls:
    """TLS on the listener; paths are absolute."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    prefer_server_ciphers: bool = True


@dataclass(frozen=True)
class WebConfig:
    """What the listener needs: TLS or not, the users of basic auth (none: no auth), headers."""

    path: Path
    tls: Tls | None = None
    users: dict[str, str] = field(default_factory=dict, repr=False)
    headers: dict[str, str] = field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web-config file, its certificates and key; raises InvalidFile."""
    doc = load(path, env={}, interpolate=False)
    data = doc.data if isinstance(doc.data, dict) else {}
    if not isinstance(doc.data, dict):
        doc.problems.append(doc.problem((), "a web config must be a mapping of keys"))
    data = _without_unsupported(doc, data)
    parsed = parse(doc, WebConfigFile, data)
    tls = None
    if parsed and parsed.tls_server_config:
        tls = _tls(doc, parsed.tls_server_config, path.parent)
    # Checked in the raw data, so that a wrong header shows with the file's other problems.
    http = data.get("http_server_config")
    raw_headers = http.get("headers") if isinstance(http, dict) else None
    raw_headers = raw_headers if isinstance(raw_headers, dict) else {}
    for name, value in raw_headers.items():
        problem = header_problem(name, value) if isinstance(value, str) else None
        if problem:
            doc.problems.append(doc.problem(("http_server_config", "headers", name), problem))
    if doc.problems:
        raise InvalidFile(doc.problems)
    assert parsed is not None
    headers = parsed.http_server_config.headers if parsed.http_server_config else None
    return WebConfig(path, tls, dict(parsed.basic_auth_users or {}), dict(headers or {}))


def header_problem(name: str, value: str) -> str | None:
    if name not in HEADERS:
        return f"this header cannot be set; allowed: {', '.join(HEADERS)}"
    allowed = HEADERS[name]
    if allowed and value not in allowed:
        return f"must be one of {', '.join(allowed)}"
    return None


def ssl_context(tls: Tls) -> ssl.SSLContext:
    """The listener's TLS context. At each handshake the certificate and key files are checked
    for a change (a stat each), and new ones are used from then on, as exporter-toolkit does:
    certbot or cert-manager renewals need no restart. A new pair that does not load is logged
    and the old one kept. Raises ssl.SSLError, OSError or ValueError when the files do not load.
    """
    first = _context(tls)
    current = _Current(first, _stamp(tls))

    def on_hello(conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        stamp = _stamp(tls)
        if stamp != current.stamp:
            current.stamp = stamp
            try:
                current.context = _context(tls)
                log.info("TLS: loaded the new certificate %s", tls.cert_file)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.warning("TLS: keeping the old certificate; the new one: %s", _reason(exc))
        if current.context is not first:
            conn.context = current.context

    first.sni_callback = on_hello
    return first


@dataclass
class _Current:
    context: ssl.SSLContext
    stamp: tuple[Any, ...]


def _context(tls: Tls) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    if tls.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
    if tls.client_ca_file:
        context.load_verify_locations(cafile=tls.client_ca_file)
    context.verify_mode = tls.client_auth
    return context


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and a service has none.
    raise ValueError("key_file is encrypted; give an unencrypted key (as Prometheus needs too)")


def _stamp(tls: Tls) -> tuple[Any, ...]:
    out: list[Any] = []
    for path in (tls.cert_file, tls.key_file):
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _reason(exc: BaseException) -> str:
    text = str(exc.strerror) if isinstance(exc, OSError) and exc.strerror else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


def _without_unsupported(doc: Document, data: dict[str, Any]) -> dict[str, Any]:
    """`data` less the exporter-toolkit keys this listener refuses; each one is a problem."""
    out = dict(data)
    for at, why in UNSUPPORTED.items():
        section = out if len(at) == 1 else out.get(at[0])
        if isinstance(section, dict) and at[-1] in section:
            doc.problems.append(doc.problem(at, why))
            if len(at) == 1:
                del out[at[0]]
            else:
                out[at[0]] = {k: v for k, v in section.items() if k != at[-1]}
    return out


def _tls(doc: Document, given: TlsServerConfig, base: Path) -> Tls | None:
    at = ("tls_server_config",)
    files = {"cert_file": given.cert_file, "key_file": given.key_file}
    if given.client_ca_file:
        files["client_ca_file"] = given.client_ca_file
    paths = {key: (base / os.path.expanduser(value)).resolve() for key, value in files.items()}
    found = True
    for key, value in files.items():
        if not paths[key].is_file():
            doc.problems.append(doc.problem((*at, key), f"no such file: {value}"))
            found = False
    mode = file_mode(paths["key_file"])
    if mode is not None and readable_by_others(mode):
        doc.problems.append(
            doc.problem(
                (*at, "key_file"),
                f"the private key is readable by every user on this host (mode {mode:04o}); "
                f"chmod 600 {paths['key_file']} (or 640 with a group the service is in)",
            )
        )
    if not found:
        return None
    tls = Tls(
        paths["cert_file"],
        paths["key_file"],
        paths.get("client_ca_file"),
        CLIENT_AUTH[given.client_auth_type],
        TLS_VERSIONS[given.min_version],
        TLS_VERSIONS[given.max_version],
        given.prefer_server_cipher_suites,
    )
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        scratch.load_cert_chain(tls.cert_file, tls.key_file, password=_no_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        message = f"cannot use it with key_file: {_reason(exc)}"
        doc.problems.append(doc.problem((*at, "cert_file"), message))
    if tls.client_ca_file:
        try:
            scratch.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            message = f"no CA certificate in it: {_reason(exc)}"
            doc.problems.append(doc.problem((*at, "client_ca_file"), message))
    return tls
