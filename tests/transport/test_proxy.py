"""Issue 15 item 1: the client behind a reverse proxy, believed only from a trusted one.

A real server on a loopback port; the test's own HTTP and WebSocket clients play either a
direct client forging ``X-Forwarded-*`` or the proxy itself (the test connects from
127.0.0.1, so trusting 127.0.0.1 makes the test the proxy). tests/proxy runs real nginx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from aiohttp import ClientSession

from chatserver.config import ConfigError, load_config
from chatserver.moderation.engine import RuleSet
from tests import logscan
from tests.conftest import Running, start_server

SOMEONE, SOMEONE_ELSE = "203.0.113.7", "203.0.113.8"
"""Client addresses a proxy could name (TEST-NET-3, RFC 5737)."""
BROWSER_TLS = {"Origin": "https://chat.example.org", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "chat.example.org"}
"""What nginx adds for a browser at https://chat.example.org (docs/ops/nginx.conf)."""


async def _join(site: Running, headers: dict[str, str], name: str = "sam") -> tuple[int, Any]:
    async with ClientSession() as s, s.post(
            site.http + "/api/join", headers=headers,
            json={"room": "lounge", "name": name, "age_band": "16-17"}) as r:
        body = await r.json()
        if r.status == 200:
            logscan.remember(body["token"])
        return r.status, body


async def _welcomed(site: Running, headers: dict[str, str], joined_from: str) -> str:
    """A WebSocket with these handshake headers, and hello with a token fresh from
    ``joined_from`` (the join budget is one per address): the first frame's type
    (``welcome``, or ``error`` when the hello budget is spent)."""
    status, body = await _join(site, {"X-Forwarded-For": joined_from})
    assert status == 200, body
    async with websockets.connect(site.ws_url, additional_headers=headers) as ws:
        await ws.send(orjson.dumps({"type": "hello", "token": body["token"]}).decode())
        kind: str = orjson.loads(await ws.recv())["type"]
        return kind


async def _refused(site: Running, headers: dict[str, str]) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(site.ws_url, additional_headers=headers):
            pass
    return refused.value.response.status_code


@pytest.fixture
async def direct(tmp_path: Path, rules: RuleSet, request: pytest.FixtureRequest
                 ) -> AsyncIterator[Running]:
    """A server whose trusted proxies (the parameter) do not include the test client."""
    logscan.use_session_log()
    site = await start_server(tmp_path, rules, trusted_proxies=request.param,
                              joins_per_address=1)
    yield site
    await site.stop()


@pytest.fixture
async def proxied(tmp_path: Path, rules: RuleSet, request: pytest.FixtureRequest
                  ) -> AsyncIterator[Running]:
    """A server that trusts the test client as its proxy (the parameter lists it)."""
    logscan.use_session_log()
    site = await start_server(tmp_path, rules, trusted_proxies=request.param,
                              joins_per_address=1, hellos_per_address=1)
    yield site
    await site.stop()


NOT_US = [pytest.param((), id="trust-nobody"),
          pytest.param(("192.0.2.1", "10.0.0.0/8"), id="trust-another-proxy")]
US = [pytest.param(("127.0.0.1",), id="address"),
      pytest.param(("::1", "127.0.0.0/8"), id="network")]


@pytest.mark.parametrize("direct", NOT_US, indirect=True)
async def test_a_direct_clients_forged_forwarded_for_keeps_its_own_budget(
        direct: Running) -> None:
    """Issue 15: a client that is not a trusted proxy cannot buy a fresh per-address
    budget by writing another X-Forwarded-For on each request."""
    assert (await _join(direct, {"X-Forwarded-For": SOMEONE}))[0] == 200
    status, body = await _join(direct, {"X-Forwarded-For": SOMEONE_ELSE}, "alex")
    assert status == 429 and body["error"]["code"] == "rate_limited"


@pytest.mark.parametrize("direct", NOT_US, indirect=True)
async def test_a_direct_client_cannot_claim_to_be_behind_tls(direct: Running) -> None:
    """Forged X-Forwarded-Proto/Host from a direct client do not make a foreign https
    origin look like ours: the WebSocket is refused (SEC-01)."""
    assert await _refused(direct, {**BROWSER_TLS, "X-Forwarded-For": SOMEONE}) == 403


@pytest.mark.parametrize("proxied", US, indirect=True)
async def test_behind_a_trusted_proxy_each_client_has_its_own_budget(
        proxied: Running) -> None:
    """Behind the proxy, the budget is the client's, not the proxy's: one young person's
    spent budget does not lock out everyone else coming through the same proxy."""
    assert (await _join(proxied, {"X-Forwarded-For": SOMEONE}))[0] == 200
    assert (await _join(proxied, {"X-Forwarded-For": SOMEONE_ELSE}, "alex"))[0] == 200
    # The proxy's own address (no header) has a budget of its own, still unspent.
    assert (await _join(proxied, {}, "kim"))[0] == 200
    # A prefix the client wrote itself, which a proxy that appends passes on, is never
    # taken for the client: the right-most untrusted hop is.
    status, _ = await _join(proxied, {"X-Forwarded-For": f"198.51.100.1, {SOMEONE}"}, "jo")
    assert status == 429


@pytest.mark.parametrize("proxied", US, indirect=True)
async def test_behind_a_trusted_tls_proxy_the_browsers_origin_is_ours(
        proxied: Running) -> None:
    """The issue's 403: behind TLS the browser's Origin is https://host. It is our own
    origin once the trusted proxy says the scheme was https; a foreign one still is not.
    The hello budget is the forwarded client's too."""
    tls = {**BROWSER_TLS, "X-Forwarded-For": SOMEONE}
    assert await _welcomed(proxied, tls, "198.51.100.1") == "welcome"
    tls_else = {**BROWSER_TLS, "X-Forwarded-For": SOMEONE_ELSE}
    assert await _welcomed(proxied, tls_else, "198.51.100.2") == "welcome"
    assert await _welcomed(proxied, tls, "198.51.100.3") == "error"  # SOMEONE's hello spent
    foreign = {**BROWSER_TLS, "Origin": "https://evil.example", "X-Forwarded-For": SOMEONE}
    assert await _refused(proxied, foreign) == 403
    # Plain http through the proxy: an https Origin is not ours.
    plain = {**BROWSER_TLS, "X-Forwarded-Proto": "http", "X-Forwarded-For": SOMEONE}
    assert await _refused(proxied, plain) == 403


@pytest.mark.parametrize("proxied", US[:1], indirect=True)
async def test_a_malformed_forwarded_for_from_the_proxy_is_a_bad_request(
        proxied: Running) -> None:
    status, body = await _join(proxied, {"X-Forwarded-For": "not-an-address"})
    assert status == 400 and body["error"]["code"] == "bad_request"


@pytest.mark.parametrize("value", ["nginx", "10.0.0.1/8", "127.0.0.1:8080"])
def test_a_trusted_proxy_that_is_not_an_address_stops_start_up(tmp_path: Path,
                                                               value: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\ntrusted_proxies = ["{value}"]\n')
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies: .*not an IP address"):
        load_config(config, env={})
    assert load_config(None, env={}).server.trusted_proxies == ()
    env = {"CHATSERVER_SERVER_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}
    assert load_config(None, env=env).server.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
