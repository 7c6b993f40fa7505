"""TLS and basic auth on the listener: real certificates (openssl), real sockets, real TLS."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import need
from tests.faultserver import free_port
from watchdog.config.load import load_config
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.store import Store
from watchdog.web import listener as web
from watchdog.web.auth import BasicAuth, parse_basic
from watchdog.web.settings import WebConfig, load_web_config

PASSWORD = "scrape-s3cret"
# Cost 4, bcrypt's least: the tests check behaviour, not bcrypt's slowness.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
NOW = datetime(2026, 11, 23, 13, tzinfo=UTC)


@dataclass(frozen=True)
class Pki:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it;
    and a client certificate that signs itself."""

    dir: Path

    def __truediv__(self, name: str) -> Path:
        return self.dir / name


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_leaf(cwd: Path, name: str, cn: str, ext: str, ca: str = "ca") -> None:
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n{ext}\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        cwd,
        "req",
        "-new",
        *ec,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={cn}",
    )
    serial = str(time.time_ns())
    sign = ("-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-set_serial", serial, "-days", "2")
    openssl(
        cwd,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        *sign,
        "-out",
        f"{name}.crt",
        "-extfile",
        f"{name}.ext",
    )
    (cwd / f"{name}.key").chmod(0o600)


def make_ca(cwd: Path, name: str) -> None:
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ext = (
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    )
    subj = f"/CN=mlops-watchdog test {name}"
    openssl(
        cwd,
        "req",
        "-x509",
        *ec,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-subj",
        subj,
        "-days",
        "2",
        *ext,
    )
    (cwd / f"{name}.key").chmod(0o600)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        need("the openssl command is not installed (apt-get install -y openssl)")
    cwd = tmp_path_factory.mktemp("pki")
    make_ca(cwd, "ca")
    make_leaf(
        cwd,
        "server",
        "localhost",
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
    )
    make_leaf(cwd, "client", "prometheus", "extendedKeyUsage=clientAuth")
    make_ca(cwd, "rogue")  # signs itself: no client certificate of ours
    make_leaf(cwd, "rogue-client", "prometheus", "extendedKeyUsage=clientAuth", ca="rogue")
    return Pki(cwd)


def web_config(tmp_path: Path, pki: Pki, text: str) -> WebConfig:
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(pki / name, tmp_path / name)
    path = tmp_path / "web.yml"
    path.write_text(text)
    return load_web_config(path)


def client_context(pki: Pki, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    return context


@asynccontextmanager
async def serving(tmp_path: Path, config: WebConfig | None) -> AsyncIterator[str]:
    """The real app on a free loopback port; yields its base URL."""
    store = Store.open(tmp_path / "w.db")
    listen = f"127.0.0.1:{free_port()}"
    app = web.app(
        CollectorRegistry(), store, {"e": "http://e:1"}, lambda: {"config": True}, lambda: NOW
    )
    runner = await web.serve(app, listen, config)
    try:
        yield f"{'https' if config and config.tls else 'http'}://{listen}"
    finally:
        await runner.cleanup()
        store.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


async def test_metrics_over_tls_verified_against_the_ca(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, pki, TLS)
    assert config.tls and config.tls.cert_file == tmp_path / "server.crt"  # relative to web.yml
    async with serving(tmp_path, config) as url:
        async with httpx.AsyncClient(verify=client_context(pki)) as client:
            metrics = await client.get(f"{url}/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert (await client.get(f"{url}/healthz")).text == "ok\n"
        async with httpx.AsyncClient(verify=ssl.create_default_context()) as stranger:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await stranger.get(f"{url}/metrics")  # our CA is not a public one
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(url.replace("https:", "http:") + "/metrics")


async def test_basic_auth_guards_every_path(tmp_path: Path, pki: Pki) -> None:
    headers = (
        "http_server_config:\n  headers: {X-Content-Type-Options: nosniff, X-Frame-Options: deny}\n"
    )
    config = web_config(tmp_path, pki, f"{TLS}{headers}basic_auth_users:\n  prometheus: {HASH}\n")
    async with (
        serving(tmp_path, config) as url,
        httpx.AsyncClient(base_url=url, verify=client_context(pki)) as client,
    ):
        ok = await client.get("/metrics", headers=basic("prometheus", PASSWORD))
        assert ok.status_code == 200 and ok.headers["X-Frame-Options"] == "deny"
        assert (await client.get("/healthz", headers=basic("prometheus", PASSWORD))).text == "ok\n"
        target = await client.get("/targets/e/ready", headers=basic("prometheus", PASSWORD))
        assert target.status_code == 200 and target.json()["state"] == "unknown"  # over TLS
        refused = [
            await client.get("/metrics"),
            await client.get("/metrics", headers=basic("prometheus", "wrong")),
            await client.get("/metrics", headers=basic("nobody", PASSWORD)),
            await client.get("/metrics", headers={"Authorization": f"Bearer {PASSWORD}"}),
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.get("/targets/e/ready"),
            await client.get("/"),
            await client.get("/no-such-page"),
        ]
        for response in refused:
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == 'Basic realm="mlops-watchdog"'
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert HASH not in response.text and PASSWORD not in response.text


async def test_basic_auth_without_tls_keeps_plain_http(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, pki, f"basic_auth_users:\n  prometheus: {HASH}\n")
    assert config.tls is None
    async with serving(tmp_path, config) as url:
        assert url.startswith("http://")
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/metrics")).status_code == 401
            assert (
                await client.get("/metrics", headers=basic("prometheus", PASSWORD))
            ).status_code == 200


async def test_without_a_web_config_nothing_changes(tmp_path: Path) -> None:
    async with serving(tmp_path, None) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_a_successful_check_is_cached() -> None:
    # Cost 12 takes a visible fraction of a second; a cached pair takes microseconds.
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(12)).decode()
    auth = BasicAuth({"prometheus": slow})
    header = basic("prometheus", "pw")["Authorization"]
    started = time.perf_counter()
    assert await auth.allows(header)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(50):
        assert await auth.allows(header)
    assert time.perf_counter() - started < first / 10
    assert not await auth.allows(basic("prometheus", "pw2")["Authorization"])


async def test_the_cache_is_bounded() -> None:
    users = {f"u{i}": bcrypt.hashpw(f"p{i}".encode(), bcrypt.gensalt(4)).decode() for i in range(5)}
    auth = BasicAuth(users, cache_size=2)
    for i in range(5):
        assert await auth.allows(basic(f"u{i}", f"p{i}")["Authorization"])
    assert len(auth._passed) == 2


async def test_bcrypt_runs_off_the_event_loop() -> None:
    slow = bcrypt.hashpw(b"pw", bcrypt.gensalt(12)).decode()
    auth = BasicAuth({"prometheus": slow})
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        assert not await auth.allows(basic("prometheus", "wrong")["Authorization"])
    finally:
        ticker.cancel()
    assert ticks > 3  # the loop kept running while bcrypt worked


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x"],
)
def test_malformed_authorization_is_no_credentials(header: str | None) -> None:
    assert parse_basic(header) is None


def test_basic_credentials_split_at_the_first_colon() -> None:
    assert parse_basic(basic("u", "p:a:ss")["Authorization"]) == ("u", b"p:a:ss")
    assert parse_basic("basic " + base64.b64encode(b"u:").decode()) == ("u", b"")


MTLS = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"


async def test_a_client_certificate_is_required(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, pki, MTLS)
    async with serving(tmp_path, config) as url:
        async with httpx.AsyncClient(verify=client_context(pki, "client")) as client:
            assert (await client.get(f"{url}/metrics")).status_code == 200
        for refused in (client_context(pki), client_context(pki, "rogue-client")):
            async with httpx.AsyncClient(verify=refused) as client:
                with pytest.raises(httpx.TransportError):
                    await client.get(f"{url}/metrics")


async def test_an_optional_client_certificate_is_verified_when_given(
    tmp_path: Path, pki: Pki
) -> None:
    text = MTLS.replace("RequireAndVerifyClientCert", "VerifyClientCertIfGiven")
    async with serving(tmp_path, web_config(tmp_path, pki, text)) as url:
        for good in (client_context(pki), client_context(pki, "client")):
            async with httpx.AsyncClient(verify=good) as client:
                assert (await client.get(f"{url}/metrics")).status_code == 200
        async with httpx.AsyncClient(verify=client_context(pki, "rogue-client")) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(f"{url}/metrics")


async def test_min_version_tls13_refuses_a_tls12_client(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, pki, TLS + "  min_version: TLS13\n")
    old = client_context(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(tmp_path, config) as url:
        async with httpx.AsyncClient(verify=old) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/metrics")
        async with httpx.AsyncClient(verify=client_context(pki)) as client:
            assert (await client.get(f"{url}/metrics")).status_code == 200


async def peer_serial(url: str, pki: Pki) -> int:
    host, port = url.removeprefix("https://").split(":")
    _, writer = await asyncio.open_connection(host, int(port), ssl=client_context(pki))
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-serial"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().split("=")[1], 16)


def serial_of(path: Path) -> int:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-serial", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().split("=")[1], 16)


async def test_a_renewed_certificate_is_used_without_a_restart(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, pki, TLS)
    async with serving(tmp_path, config) as url:
        assert await peer_serial(url, pki) == serial_of(tmp_path / "server.crt")
        # certbot's way: a new pair, then both files replaced.
        renew = tmp_path / "renew"
        renew.mkdir()
        for name in ("ca.crt", "ca.key"):
            shutil.copy(pki / name, renew / name)
        make_leaf(
            renew, "server", "localhost", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1"
        )
        (renew / "server.crt").replace(tmp_path / "server.crt")
        (renew / "server.key").replace(tmp_path / "server.key")
        assert await peer_serial(url, pki) == serial_of(tmp_path / "server.crt")
        renewed = serial_of(tmp_path / "server.crt")
        # A broken renewal keeps the pair that works.
        (tmp_path / "server.crt").write_text("not a certificate\n")
        assert await peer_serial(url, pki) == renewed


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InvalidFile) as caught:
        load_web_config(path)
    return [str(p).replace(f"{path.parent}/", "") for p in caught.value.problems]


BAD = f"""\
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAnyClientCert
  min_version: TLS10
  cipher_suites: [TLS_AES_128_GCM_SHA256]
  ocsp: true
http_server_config:
  headers:
    X-Frame-Options: allow
    Server: mlops-watchdog
basic_auth_users:
  prometheus: hunter2
  "a:b": {HASH}
rate_limit: {{interval: 1s, burst: 20}}
"""


def test_every_problem_in_a_web_config_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "web.yml").write_text(BAD)
    assert problems_of(tmp_path / "web.yml") == [
        "web.yml:4: tls_server_config.client_auth_type: RequireAnyClientCert is not supported: "
        "it accepts certificates nobody verified; use RequireAndVerifyClientCert with client_ca_file",
        "web.yml:5: tls_server_config.min_version: TLS10 is obsolete and not supported; "
        "use TLS12 or TLS13",
        "web.yml:6: tls_server_config.cipher_suites: is not supported (Go names its suites, "
        "OpenSSL does not); OpenSSL's defaults apply, and min_version: TLS13 allows only strong suites",
        "web.yml:7: tls_server_config.ocsp: unknown key (allowed here: cert_file, key_file, "
        "client_auth_type, client_ca_file, min_version, max_version, prefer_server_cipher_suites)",
        "web.yml:10: http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin",
        "web.yml:11: http_server_config.headers.Server: this header cannot be set; allowed: "
        "Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, "
        "Content-Security-Policy",
        "web.yml:13: basic_auth_users.prometheus: not a bcrypt hash; make one with: "
        "htpasswd -nBC 10 \"\" | tr -d ':\\n'",
        "web.yml:14: basic_auth_users.a:b: a user name cannot contain ':' (basic auth splits at "
        "the first one)",
        "web.yml:15: rate_limit: is not supported; put a reverse proxy in front of the listener for that",
    ]


def test_cross_field_rules(tmp_path: Path, pki: Pki) -> None:
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(pki / name, tmp_path / name)
    path = tmp_path / "web.yml"
    path.write_text(TLS + "  client_ca_file: ca.crt\n")
    assert problems_of(path) == [
        "web.yml:1: tls_server_config: client_ca_file is given but client_auth_type is "
        "NoClientCert; set client_auth_type: RequireAndVerifyClientCert"
    ]
    path.write_text(TLS + "  client_auth_type: RequireAndVerifyClientCert\n")
    assert problems_of(path) == [
        "web.yml:1: tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file"
    ]
    path.write_text(TLS + "  min_version: TLS13\n  max_version: TLS12\n")
    assert problems_of(path) == [
        "web.yml:1: tls_server_config: min_version TLS13 is above max_version"
    ]
    path.write_text("tls_server_config: {key_file: server.key}\n")
    assert problems_of(path) == ["web.yml:1: tls_server_config.cert_file: required key is missing"]


def test_certificate_and_key_files_are_checked(tmp_path: Path, pki: Pki) -> None:
    shutil.copy(pki / "server.crt", tmp_path / "server.crt")
    shutil.copy(pki / "client.key", tmp_path / "other.key")  # private, but not server.crt's
    shutil.copy(pki / "server.key", tmp_path / "open.key")
    (tmp_path / "open.key").chmod(0o644)
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: other.key\n"
    )
    mismatch, no_ca = problems_of(path)
    assert mismatch.startswith(
        "web.yml:2: tls_server_config.cert_file: cannot use it with key_file: "
    )
    assert "KEY_VALUES_MISMATCH" in mismatch
    assert no_ca.startswith(
        "web.yml:5: tls_server_config.client_ca_file: no CA certificate in it: "
    )
    path.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: open.key\n")
    assert problems_of(path) == [
        "web.yml:2: tls_server_config.cert_file: no such file: missing.crt",
        "web.yml:3: tls_server_config.key_file: the private key is readable by every user on this "
        "host (mode 0644); chmod 600 open.key (or 640 with a group the service is in)",
    ]


def test_an_encrypted_key_is_an_error_not_a_prompt(tmp_path: Path, pki: Pki) -> None:
    shutil.copy(pki / "server.crt", tmp_path / "server.crt")
    openssl(
        tmp_path,
        "ec",
        "-in",
        str(pki / "server.key"),
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        "enc.key",
    )
    (tmp_path / "enc.key").chmod(0o600)
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: enc.key\n")
    assert problems_of(path) == [
        "web.yml:2: tls_server_config.cert_file: cannot use it with key_file: key_file is "
        "encrypted; give an unencrypted key (as Prometheus needs too)"
    ]


def test_invalid_yaml_and_non_mappings(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: [\n")
    assert problems_of(path)[0].startswith("web.yml:2: invalid YAML:")
    path.write_text("- just a list\n")
    assert problems_of(path) == ["web.yml:1: a web config must be a mapping of keys"]


def test_empty_sections_mean_nothing_configured(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\nbasic_auth_users:\nhttp_server_config: {http2: false}\n")
    assert load_web_config(path) == WebConfig(path)


ENDPOINTS = "endpoints: [{name: e, api: openai-chat, base_url: 'http://h:1'}]\n"


def test_the_config_loads_its_web_config(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "etc").mkdir()
    web_config(tmp_path / "etc", pki, MTLS + f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    (tmp_path / "config.yaml").write_text(f"web_config_file: etc/web.yml\n{ENDPOINTS}")
    config = load_config(tmp_path / "config.yaml", env={})
    assert config.web_config is not None and config.web_config.tls is not None
    assert config.web_config.tls.client_ca_file == tmp_path / "etc" / "ca.crt"
    assert config.web_config.tls.client_auth == ssl.CERT_REQUIRED
    assert HASH not in repr(config.web_config)


def test_the_config_reports_its_web_config_problems(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(f"web_config_file: nowhere.yml\n{ENDPOINTS}")
    with pytest.raises(InvalidFile) as caught:
        load_config(tmp_path / "config.yaml", env={})
    assert (
        str(caught.value) == f"{tmp_path}/config.yaml:1: web_config_file: no such file: nowhere.yml"
    )
    (tmp_path / "web.yml").write_text("basic_auth_users: {prometheus: plain}\n")
    (tmp_path / "config.yaml").write_text(f"web_config_file: web.yml\n{ENDPOINTS}")
    with pytest.raises(InvalidFile) as caught:
        load_config(tmp_path / "config.yaml", env={})
    assert str(caught.value).startswith(
        f"{tmp_path}/web.yml:1: basic_auth_users.prometheus: not a bcrypt hash"
    )


async def test_tls_files_gone_at_start_is_a_listen_error(tmp_path: Path, pki: Pki) -> None:
    config = web_config(tmp_path, pki, TLS)
    (tmp_path / "server.key").unlink()
    with pytest.raises(web.ListenError, match=r"^listen 127\.0\.0\.1:\d+: TLS: "):
        async with serving(tmp_path, config):
            pass


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        need("promtool is not installed (apt-get install -y prometheus)")
    assert found is not None
    return found


def test_promtool_accepts_our_web_config(tmp_path: Path, pki: Pki) -> None:
    headers = (
        "http_server_config:\n  headers: {X-Frame-Options: deny, X-Content-Type-Options: nosniff}\n"
    )
    text = MTLS + "  min_version: TLS13\n" + headers + f"basic_auth_users:\n  prometheus: {HASH}\n"
    web_config(tmp_path, pki, text)  # ours accepts it
    done = subprocess.run(
        [promtool(), "check", "web-config", str(tmp_path / "web.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "text",
    [
        TLS + "  client_ca_file: ca.crt\n",
        TLS + "  client_auth_type: Sometimes\n",
        TLS + "  min_version: TLS14\n",
        TLS + "  ocsp: true\n",
        "http_server_config:\n  headers: {X-Frame-Options: allow}\n",
        "basic_auth_users: {prometheus: plain}\n",
    ],
)
def test_promtool_refuses_what_we_refuse(tmp_path: Path, pki: Pki, text: str) -> None:
    with pytest.raises(InvalidFile):
        web_config(tmp_path, pki, text)
    done = subprocess.run(
        [promtool(), "check", "web-config", str(tmp_path / "web.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0, done.stdout + done.stderr
