"""Issue 14 § Faults and bad input, over real sockets: deep JSON, non-ASCII digits,
error pages, methods and generated room ids."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from aiohttp import ClientSession

from tests.conftest import Running

DEEP = '{"a":' * 1000 + "1" + "}" * 1000
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
                    "X-Frame-Options", "Cache-Control")


async def _raw_post(running: Running, path: str, data: str, token: str | None = None
                    ) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with ClientSession() as s, s.post(running.http + path, data=data,
                                            headers=headers) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("path", ["/api/join", "/api/login", "/api/rooms"])
async def test_http_json_nested_1000_deep_is_400_not_500(running: Running, path: str) -> None:
    token = await running.login("facilitator") if path == "/api/rooms" else None
    status, body = await _raw_post(running, path, DEEP, token)
    assert status == 400, body
    assert body["error"]["code"] == "bad_request"  # type: ignore[index]


async def test_http_json_at_the_depth_limit_is_parsed_one_deeper_is_400(
        running: Running) -> None:
    def body(levels: int) -> str:  # the outer object is level 1
        inner = '{"x":' * (levels - 1) + "1" + "}" * (levels - 1)
        return '{"room":"lounge","name":"Deep","age_band":"16-17","extra":' + inner + "}"

    status, answer = await _raw_post(running, "/api/join", body(33))
    assert status == 400, answer
    status, answer = await _raw_post(running, "/api/join", body(32))
    assert status == 200, answer


async def test_ws_hello_nested_1000_deep_closes_4001(running: Running) -> None:
    token = await running.join("Ana")
    async with websockets.connect(running.ws_url) as ws:
        await ws.send('{"type":"hello","token":"' + token + '","extra":' + DEEP + "}")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_ws_frame_nested_1000_deep_is_bad_request_and_the_socket_lives(
        running: Running) -> None:
    client = await running.client(await running.join("Ana"))
    await client.raw('{"type":"send","room":"lounge","id":"d1","text":' + DEEP + "}")
    error = await client.expect("error")
    assert error["code"] == "bad_request" and error.get("ref") is None
    assert (await client.say("still here", "s1"))["status"] == "sent"


@pytest.mark.parametrize("query", [
    "limit=²", "since=①", "limit=٣", "since=-1", "limit=+5", "limit= 5", "limit=1_0",
    "since=１２", "limit=5.0", "limit=1001", "since=99999999999999999999",
])
async def test_audit_query_integers_are_ascii_digits_or_400(running: Running,
                                                              query: str) -> None:
    token = await running.login("ops")
    status, body = await running.get(f"/api/audit?{query}", token)
    assert status == 400, body
    assert body["error"]["code"] == "bad_request"
    assert "digits 0-9" in body["error"]["message"]


async def test_audit_query_plain_digits_still_work(running: Running) -> None:
    token = await running.login("ops")
    status, body = await running.get("/api/audit?since=0&limit=5", token)
    assert status == 200 and len(body["entries"]) <= 5


@pytest.mark.parametrize("path", ["/nope", "/static/missing.js", "/api/nope", "/"])
async def test_every_page_carries_the_security_headers_and_no_versions(
        running: Running, path: str) -> None:
    async with ClientSession() as s, s.get(running.http + path) as r:
        await r.read()
        for header in SECURITY_HEADERS:
            assert header in r.headers, (path, r.status, header)
        assert r.headers["Server"] == "chatserver"


async def test_the_websocket_handshake_shows_no_versions(running: Running) -> None:
    async with ClientSession() as s, s.get(running.http + "/ws",
                                           headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 403
        assert r.headers["Server"] == "chatserver"
        assert "Content-Security-Policy" in r.headers


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/api/login", "POST"), ("PUT", "/api/rooms", "GET"), ("DELETE", "/healthz", "GET"),
])
async def test_a_wrong_method_is_405_with_allow(running: Running, method: str, path: str,
                                                allow: str) -> None:
    async with ClientSession() as s, s.request(method, running.http + path) as r:
        await r.read()
        assert r.status == 405
        assert allow in r.headers["Allow"]
        for header in SECURITY_HEADERS:
            assert header in r.headers


async def test_create_room_without_an_id_generates_a_valid_one(running: Running) -> None:
    token = await running.login("facilitator")
    status, body = await running.post("/api/rooms", {"title": "Evening",
                                                     "age_bands": ["16-17"]}, token)
    assert status == 201, body
    status, again = await running.post("/api/rooms", {"title": "Evening",
                                                      "age_bands": ["16-17"]}, token)
    assert status == 201 and again["id"] != body["id"]
    status, rooms = await running.get("/api/rooms", token)
    assert body["id"] in {r["id"] for r in rooms["rooms"]}
    # The generated id is a working room: a young person can join it.
    await running.join("Ana", room=body["id"])
