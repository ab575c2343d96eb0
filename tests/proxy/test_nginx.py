"""Issue 15 acceptance 1: the README's nginx config (docs/ops/nginx.conf, the very file)
in front of a real server, real Chromium chatting over https and wss through it.

nginx is Debian's package, run by the test as a foreground process with its own prefix,
pid file, temp paths and error log in the test's directory (never the system's), in
front of a server that trusts 127.0.0.1 as its proxy. The browser reaches nginx over
IPv6 loopback (``::1``) while nginx reaches the server over 127.0.0.1, so the browser's
address and the proxy's differ, and the test can tell which one the server counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import ClientSession
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import Browser, WebSocket, expect

from chatserver.moderation.engine import RuleSet
from tests import logscan
from tests.conftest import ROOT, require, start_server
from tests.e2e.test_room import mine, type_and_send
from tests.faults.test_restart import free_port

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAVE_NGINX = Path(NGINX).exists()
SITE_CONF = ROOT / "docs" / "ops" / "nginx.conf"
README = ROOT / "README.md"


def _ipv6_loopback() -> bool:
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            return False
    return True


def _certificate(where: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the test's own nginx (the browser is told to accept
    it, and only it, with ``ignore_https_errors`` on its own context)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("chat.example.org"),
                x509.IPAddress(ipaddress.ip_address("::1")),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = where / "fullchain.pem", where / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass(frozen=True, slots=True)
class Proxy:
    https: int
    http: int
    error_log: Path

    @property
    def url(self) -> str:
        return f"https://[::1]:{self.https}"


HEADER_DEADLINE_S = 1
"""The config's ``client_header_timeout`` (10 s), shortened so the slowloris check waits
one second, not ten. Nothing else in the file is changed but addresses, ports and paths."""


def site_config(text: str, proxy: Proxy, upstream: int, cert: Path, key: Path) -> str:
    """docs/ops/nginx.conf with the test's ports, certificate and server. Every change is
    an exact replacement that must find its target, so an edit to the file that the test
    would silently stop covering fails here instead."""
    changes = [
        ("listen 443 ssl;", f"listen 127.0.0.1:{proxy.https} ssl;"),
        ("listen [::]:443 ssl;", f"listen [::1]:{proxy.https} ssl;"),
        ("listen 80;", f"listen 127.0.0.1:{proxy.http};"),
        ("listen [::]:80;", f"listen [::1]:{proxy.http};"),
        ("server 127.0.0.1:8080 ", f"server 127.0.0.1:{upstream} "),
        ("/etc/letsencrypt/live/chat.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/chat.example.org/privkey.pem", str(key)),
        ("client_header_timeout 10s;", f"client_header_timeout {HEADER_DEADLINE_S}s;"),
    ]
    for old, new in changes:
        assert text.count(old) == 1, f"{SITE_CONF.name} no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def main_config(prefix: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf would be, all in the test's directory. One process
    (``master_process off``) running as the test's user: no worker user that would need
    the right to read the test's private temp directory."""
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.txt"} warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
{temp}
    include {site};
}}
"""


def _prepare(prefix: Path, upstream: int) -> tuple[Proxy, Path]:
    """nginx's directory: certificate, the templated site file, the main config."""
    prefix.mkdir()
    # The proxy's error log would name client addresses: it is nginx's, under
    # retention.ip_log_days, and named .txt so that the scan of our servers' logs
    # (tests/logscan.py) does not read it.
    proxy = Proxy(free_port(), free_port(), prefix / "error.txt")
    cert, key = _certificate(prefix)
    site = prefix / "chat.conf"
    site.write_text(site_config(SITE_CONF.read_text(), proxy, upstream, cert, key))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    return proxy, conf


@contextlib.asynccontextmanager
async def nginx(prefix: Path, upstream: int) -> AsyncIterator[Proxy]:
    proxy, conf = _prepare(prefix, upstream)
    proc = await asyncio.create_subprocess_exec(
        NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(proxy.error_log),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await _listening(proc, proxy)
        yield proxy
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)


async def _listening(proc: asyncio.subprocess.Process, proxy: Proxy) -> None:
    """Readiness: nginx accepts on its https port (bounded retries; between tries the
    test waits on nginx exiting, so a config nginx refuses fails at once, with its log)."""
    async with asyncio.timeout(15):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("::1", proxy.https)
                writer.close()
                await writer.wait_closed()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
            if proc.returncode is not None:
                pytest.fail(f"nginx exited {proc.returncode}:\n"
                            + proxy.error_log.read_text(errors="replace"))


def test_the_readme_shows_the_config_the_test_runs() -> None:
    """README § Deployment notes shows docs/ops/nginx.conf verbatim."""
    blocks = re.findall(r"```nginx\n(.*?)```", README.read_text(), flags=re.S)
    assert SITE_CONF.read_text() in blocks


async def test_chromium_chats_over_https_and_wss_through_the_readmes_nginx(
        tmp_path: Path, rules: RuleSet, browser: Browser) -> None:
    require(HAVE_NGINX, "nginx is not installed (apt-get install nginx)")
    require(_ipv6_loopback(), "no IPv6 loopback (::1): the browser's address must differ "
                              "from nginx's for the test to tell them apart")
    logscan.use_session_log()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    site = await start_server(server_dir, rules, trusted_proxies=("127.0.0.1",),
                              joins_per_address=1)
    try:
        async with nginx(tmp_path / "nginx", site.port) as proxy:
            # Someone at nginx's own address joins first (directly, no forwarded header):
            # 127.0.0.1's one join is spent. Were the browser counted as nginx, its join
            # below would be refused.
            kim = await site.client(await site.join("kim"))
            await kim.send(type="join", room="lounge")
            await kim.expect("room", lambda e: e["room"] == "lounge")

            ctx = await browser.new_context(ignore_https_errors=True)
            page = await ctx.new_page()
            sockets: list[WebSocket] = []
            page.on("websocket", lambda ws: sockets.append(ws))
            await page.goto(proxy.url + "/")
            await page.get_by_label("Room", exact=True).select_option(label="Lounge")
            await page.get_by_label("Display name").fill("sam")
            await page.get_by_label("Age group").select_option("16-17")
            await page.get_by_role("button", name="Join").click()
            # Joined and welcomed over wss: the Origin check passed (https://[::1]:port
            # is the server's own origin once nginx says the scheme was https).
            await expect(page.locator("#welcome-heading")).to_contain_text("sam")
            assert [s.url for s in sockets] == [f"wss://[::1]:{proxy.https}/ws"]

            text = "hello from behind the proxy"
            logscan.remember(text)
            await type_and_send(page, text)
            await expect(mine(page, text).locator(".meta")).to_contain_text("Sent")
            seen = await kim.expect("message", lambda e: e["text"] == text)
            assert seen["from"]["name"] == "sam"
            await ctx.close()

            async with ClientSession() as http:
                # The browser's join was counted to its own address (::1): spent now.
                async with http.post(proxy.url + "/api/join", ssl=False, json={
                        "room": "lounge", "name": "alex", "age_band": "16-17"}) as r:
                    assert r.status == 429, await r.text()
                async with http.get(proxy.url + "/metrics", ssl=False) as r:
                    assert r.status == 404
                async with http.get(f"http://[::1]:{proxy.http}/staff",
                                    allow_redirects=False) as r:
                    assert r.status == 301
                    assert r.headers["Location"].startswith("https://[::1]")
            await _slowloris_is_cut(proxy)
    finally:
        await site.stop()


async def _slowloris_is_cut(proxy: Proxy) -> None:
    """Headers that never finish: nginx drops the connection at its header deadline,
    and the request never reaches the server (no response from it)."""
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("::1", proxy.https, ssl=tls)
    writer.write(b"GET /api/resources HTTP/1.1\r\nHost: chat.example.org\r\nX-a: ")
    await writer.drain()
    # A generous ceiling over the one-second deadline, not the thing awaited.
    with contextlib.suppress(OSError):  # a reset or a TLS close without close_notify
        answer = await asyncio.wait_for(reader.read(), HEADER_DEADLINE_S + 10)
        assert b"chatserver" not in answer  # the server's Server header: it never answered
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
