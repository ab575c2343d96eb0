"""Issue 16 § 2 in headless Chromium: the young person's page, on a phone and a desktop,
driven from the keyboard where the item is an action, checked with axe-core in every
state it reaches."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    FloatRect,
    Locator,
    Page,
    ViewportSize,
    WebSocket,
    WebSocketRoute,
    expect,
)

from chatserver.core.effects import RoomRecord
from chatserver.core.ids import RoomId
from chatserver.core.vocabulary import RoomKind
from tests.conftest import Client, Running, require
from tests.e2e.conftest import HAVE_AXE, shot
from tests.e2e.test_pages import axe

pytestmark = pytest.mark.e2e

PHONE: ViewportSize = {"width": 360, "height": 740}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
SIZES = [pytest.param(PHONE, id="phone"), pytest.param(DESKTOP, id="desktop")]
EXIT = "https://www.bbc.co.uk/weather"


async def context(browser: Browser, viewport: ViewportSize = PHONE,
                  **options: Any) -> BrowserContext:
    # bypass_csp only so the test can inject axe-core; the page itself forbids it.
    return await browser.new_context(viewport=viewport, bypass_csp=True, **options)


async def join(ctx: BrowserContext, site: Running, name: str, room: str = "Lounge",
               page: Page | None = None) -> Page:
    page = page or await ctx.new_page()
    await page.goto(site.http + "/")
    await expect(page.locator("#room option", has_text=room)).to_have_count(1)
    await page.get_by_label("Room", exact=True).select_option(label=room)
    await page.get_by_label("Display name").fill(name)
    await page.get_by_label("Age group").select_option("16-17")
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#room-title")).to_have_text(room)
    await expect(page.locator("#welcome-heading")).to_contain_text(name)
    return page


async def type_and_send(page: Page, text: str) -> None:
    """From the keyboard: the message box has focus after joining, Enter sends."""
    box = page.get_by_label("Message", exact=True)
    await expect(box).to_be_focused()
    await page.keyboard.type(text)
    await page.keyboard.press("Enter")


async def tab_to(page: Page, target: Locator, limit: int = 40) -> None:
    """Press Tab until the target has focus: it is reachable from the keyboard."""
    for _ in range(limit):
        if await target.evaluate("e => e === document.activeElement"):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"never reached {target} with Tab")


async def clean(page: Page, state: str) -> None:
    if HAVE_AXE:
        assert await axe(page) == [], state


async def facilitator(site: Running, room: str = "lounge") -> Client:
    fac = await site.client(await site.login("facilitator"))
    await fac.send(type="join", room=room)
    await fac.expect("room", lambda e: e["room"] == room)
    return fac


async def member_id(client: Client, name: str, room: str = "lounge") -> str:
    state = await client.expect("room", lambda e: e["room"] == room and any(
        m["name"] == name for m in e["members"]))
    return str(next(m["id"] for m in state["members"] if m["name"] == name))


def mine(page: Page, text: str) -> Locator:
    return page.locator(".msg.mine", has=page.locator(".text", has_text=text))


async def test_a_message_typed_while_the_connection_opens_is_sent_once_it_is_up(
        browser: Browser, site: Running) -> None:
    """Someone who types before the welcome arrives (a slow phone network, a busy
    server) is not told they are offline: the message waits and goes once it is up."""
    ctx = await context(browser)
    page = await ctx.new_page()
    held: list[str | bytes] = []
    routes: list[WebSocketRoute] = []

    def hold_the_server(ws: WebSocketRoute) -> None:
        routes.append(ws)

        def from_server(message: str | bytes) -> None:
            if len(routes) > 1:  # released: pass everything on as it comes
                ws.send(message)
            else:  # the page hears nothing yet
                held.append(message)
        ws.connect_to_server().on_message(from_server)

    await page.route_web_socket("**/ws", hold_the_server)
    await page.goto(site.http + "/")
    await page.get_by_label("Room", exact=True).select_option(label="Lounge")
    await page.get_by_label("Display name").fill("Early")
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#room-title")).to_have_text("Lounge")
    await type_and_send(page, "typed before the welcome")
    await expect(mine(page, "typed before the welcome")).to_have_count(1)
    await expect(page.get_by_text("offline")).to_have_count(0)
    # Nothing from the server has reached the page: the message waits, shown as sending.
    await expect(mine(page, "typed before the welcome").locator(".meta")).to_contain_text(
        "Sending")
    assert len(routes) == 1
    routes.append(routes[0])  # released from now on
    for message in held:
        routes[0].send(message)
    await expect(mine(page, "typed before the welcome").locator(".meta")).to_contain_text("Sent")
    await expect(page.get_by_text("offline")).to_have_count(0)
    await ctx.close()


@pytest.mark.parametrize("viewport", SIZES)
async def test_each_of_my_messages_is_one_bubble_with_one_status(
        browser: Browser, site: Running, viewport: ViewportSize) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    fac = await facilitator(site)
    ana = await join(await context(browser, viewport), site, "Ana")

    # Delivered: sending, then sent, in one bubble.
    await type_and_send(ana, "hello everyone")
    sent = mine(ana, "hello everyone")
    await expect(sent.locator(".meta")).to_contain_text("Sent")
    await expect(sent).to_have_count(1)
    seq = int(await sent.get_attribute("data-seq") or 0)

    # Held, then approved: the waiting bubble becomes the delivered one.
    await type_and_send(ana, "how old are you?")
    bubble = mine(ana, "how old are you?")
    await expect(bubble.locator(".meta")).to_have_text("Waiting for a facilitator")
    await clean(ana, "held")
    held = await fac.expect("held")
    await fac.send(type="approve", room="lounge", held=held["held"]["id"])
    await expect(bubble.locator(".meta")).to_contain_text("Shared by a facilitator")
    await expect(bubble).to_have_count(1)
    await expect(ana.get_by_text("Waiting for a facilitator")).to_have_count(0)
    await clean(ana, "approved")

    # Held, then rejected: it says so once and stops waiting.
    await type_and_send(ana, "how old are you actually")
    rejected = mine(ana, "how old are you actually")
    await expect(rejected.locator(".meta")).to_have_text("Waiting for a facilitator")
    held = await fac.expect("held")
    await fac.send(type="reject", room="lounge", held=held["held"]["id"])
    await expect(rejected.locator(".meta")).to_have_text("Not shared")
    await expect(rejected.locator(".notice-inline")).to_contain_text("not in trouble")
    await expect(rejected).to_have_count(1)
    await expect(ana.get_by_text("Waiting for a facilitator")).to_have_count(0)
    await clean(ana, "rejected")

    # Blocked: one bubble, not sent, with the kind words.
    await type_and_send(ana, "text me on 07700 900123")
    blocked = mine(ana, "07700 900123")
    await expect(blocked.locator(".meta")).to_have_text("Not sent")
    await expect(blocked).to_have_count(1)
    await clean(ana, "blocked")

    # The delivered one removed by a facilitator: the bubble stays, its text goes.
    await fac.send(type="redact", room="lounge", seq=seq)
    gone = ana.locator(f'.msg.mine[data-seq="{seq}"]')
    await expect(gone.locator(".meta")).to_have_text("Removed by a facilitator")
    await expect(ana.get_by_text("hello everyone")).to_have_count(0)
    await clean(ana, "removed message")

    # The young person removed from the room: one clear ending, no message box.
    await fac.send(type="remove", room="lounge", participant=await member_id(fac, "Ana"))
    await expect(ana.locator("#ended")).to_contain_text("You were removed from this room")
    await expect(ana.get_by_label("Message", exact=True)).to_be_hidden()
    await clean(ana, "removed from the room")
    await shot(ana, f"room-states-{'phone' if viewport is PHONE else 'desktop'}")


async def neutral_site(page: Page) -> None:
    """The quick exit's destination, answered here: the tests reach no other host."""
    await page.route(EXIT + "**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<title>Weather</title><h1>Weather</h1>"))


@pytest.mark.parametrize("how", ["button", "escape-twice"])
async def test_quick_exit_leaves_for_a_neutral_site_and_back_does_not_return(
        browser: Browser, site: Running, how: str) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    ctx = await context(browser)
    page = await ctx.new_page()
    await neutral_site(page)
    await page.goto(site.http + "/healthz")  # where this tab was before the chat
    await page.goto(site.http + "/")
    await expect(page.get_by_text("Esc pressed twice")).to_be_visible()  # documented
    await page.get_by_label("Room", exact=True).select_option(label="Lounge")
    await page.get_by_label("Display name").fill("Ana")
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#welcome")).to_contain_text("Quick exit")
    await type_and_send(page, "hello everyone")
    await expect(mine(page, "hello everyone").locator(".meta")).to_contain_text("Sent")
    button = page.get_by_role("button", name="Quick exit")
    await expect(button).to_be_in_viewport()
    await clean(page, "before the quick exit")
    if how == "button":
        await tab_to(page, button)
        await page.keyboard.press("Enter")
    else:
        await page.keyboard.press("Escape")
        await page.keyboard.press("Escape")
    await expect(page).to_have_url(EXIT)
    await expect(page.locator("h1")).to_have_text("Weather")
    await page.go_back()
    await expect(page).to_have_url(site.http + "/healthz")
    # The tab keeps nothing of the chat: opening the page again starts afresh.
    assert await page.evaluate("() => sessionStorage.length") == 0
    await page.goto(site.http + "/")
    await expect(page.get_by_role("heading", name="Join a room")).to_be_visible()
    await expect(page.get_by_text("hello everyone")).to_have_count(0)


async def test_one_escape_does_not_leave(browser: Browser, site: Running) -> None:
    page = await join(await context(browser), site, "Ana")
    await neutral_site(page)
    await page.keyboard.press("Escape")
    await type_and_send(page, "still here")
    await expect(mine(page, "still here").locator(".meta")).to_contain_text("Sent")
    assert page.url == site.http + "/"


def overlaps(a: FloatRect, b: FloatRect) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or
                a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


@pytest.mark.parametrize("viewport", SIZES)
async def test_crisis_sheet_never_hides_the_message_box(
        browser: Browser, site: Running, viewport: ViewportSize) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    ana = await join(await context(browser, viewport), site, "Ana")
    await type_and_send(ana, "i want to end it all")
    sheet = ana.locator("#help")
    await expect(sheet).to_be_visible()
    resources = ana.locator("#resources")
    await expect(resources.get_by_role("link", name="Call 0800 1111")).to_have_attribute(
        "href", "tel:08001111")
    await expect(resources.get_by_role("link", name="childline.org.uk")).to_have_attribute(
        "href", "https://www.childline.org.uk")
    await expect(resources.get_by_role("link", name="samaritans.org")).to_be_visible()
    await expect(resources.get_by_role("link", name="Text SHOUT to 85258")).to_have_attribute(
        "href", "sms:85258")
    # The sheet slides in (0.2 s): measured where it comes to rest, not mid-slide.
    await sheet.evaluate("el => Promise.all(el.getAnimations().map(a => a.finished))")
    box = ana.get_by_label("Message", exact=True)
    send_button = ana.get_by_role("button", name="Send")
    for target in (box, send_button, ana.get_by_role("heading", name="Get help now")):
        await expect(target).to_be_in_viewport(ratio=1)
    sheet_box, message_box = await sheet.bounding_box(), await box.bounding_box()
    assert sheet_box and message_box and not overlaps(sheet_box, message_box)
    assert sheet_box["height"] <= viewport["height"] * 0.5
    await expect(ana.locator(".note.crisis")).to_be_visible()
    await clean(ana, "crisis sheet open")
    await shot(ana, f"help-{'phone' if viewport is PHONE else 'desktop'}")

    # From the keyboard: close it, open it again (focus moves into it), and still type.
    await tab_to(ana, ana.get_by_role("button", name="Close help"))
    await ana.keyboard.press("Enter")
    await expect(sheet).to_be_hidden()
    toggle = ana.locator("#help-toggle")
    await expect(toggle).to_be_focused()
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await ana.keyboard.press("Enter")
    await expect(sheet).to_be_visible()
    await expect(ana.get_by_role("heading", name="Get help now")).to_be_focused()
    await expect(box).to_be_in_viewport(ratio=1)
    await box.focus()
    await type_and_send(ana, "thank you")
    await expect(mine(ana, "thank you").locator(".meta")).to_contain_text("Sent")


async def test_the_conversation_survives_a_reload(browser: Browser, site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    ctx = await context(browser)
    ben = await site.client(await site.join("Ben"))
    ana = await join(ctx, site, "Ana")
    await ben.say("hi ana, welcome", "b1")
    await expect(ana.locator(".msg.theirs .text", has_text="hi ana, welcome")).to_be_visible()
    await type_and_send(ana, "thanks ben")
    await expect(mine(ana, "thanks ben").locator(".meta")).to_contain_text("Sent")
    await type_and_send(ana, "i want to end it all")
    await expect(ana.locator("#help")).to_be_visible()
    await expect(ana.locator(".note.crisis")).to_be_visible()
    await expect(mine(ana, "end it all").locator(".meta")).to_have_text(
        "Waiting for a facilitator")

    hellos: list[str] = []
    ana.on("websocket", lambda ws: ws.on("framesent", lambda f: hellos.append(str(f))
                                          if '"hello"' in str(f) else None))
    await ana.reload()
    await expect(ana.locator("#status")).to_contain_text("Welcome back")
    await expect(ana.locator(".msg.theirs .text", has_text="hi ana, welcome")).to_have_count(1)
    await expect(mine(ana, "thanks ben")).to_have_count(1)
    await expect(mine(ana, "end it all").locator(".meta")).to_have_text(
        "Waiting for a facilitator")
    await expect(ana.locator(".note.crisis")).to_have_count(1)
    await expect(ana.locator("#help")).to_be_visible()
    assert len(hellos) == 1 and '"resume"' in hellos[0] and '"lounge"' in hellos[0], hellos
    await ben.say("after your reload", "b2")
    await expect(ana.locator(".msg .text", has_text="after your reload")).to_have_count(1)
    await clean(ana, "after a reload")

    # The token is this tab's alone: another tab starts at the join form.
    other = await ctx.new_page()
    await other.goto(site.http + "/")
    await expect(other.get_by_role("heading", name="Join a room")).to_be_visible()
    await other.close()

    # Removed, then reloaded: told so, and no message box to type in.
    fac = await facilitator(site)
    await fac.send(type="remove", room="lounge", participant=await member_id(fac, "Ana"))
    await expect(ana.locator("#ended")).to_contain_text("You were removed")
    await ana.reload()
    await expect(ana.locator("#ended")).to_contain_text("You were removed")
    await expect(ana.locator(".msg .text", has_text="after your reload")).to_have_count(1)
    await expect(ana.get_by_label("Message", exact=True)).to_be_hidden()
    await expect(ana.get_by_text("offline")).to_have_count(0)
    await clean(ana, "removed, after a reload")


async def quiet_room(site: Running) -> None:
    """A room that, like every real one, is closed to young people without a facilitator."""
    await site.server.ensure_room(RoomRecord(RoomId("quiet"), "Quiet room", ("16-17",),
                                             "default", RoomKind.GROUP, False, 0, {}, (), True,
                                             False))


@pytest.mark.parametrize("viewport", SIZES)
async def test_welcome_shows_guidelines_who_is_here_and_a_kind_unstaffed_answer(
        browser: Browser, site: Running, viewport: ViewportSize) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    await quiet_room(site)
    ben = await site.client(await site.join("Ben", room="quiet"))
    ana = await join(await context(browser, viewport), site, "Ana", room="Quiet room")
    welcome = ana.locator("#welcome")
    await expect(welcome.get_by_role("heading")).to_have_text("Welcome to Quiet room, Ana")
    await expect(welcome).to_contain_text("no real names, phone numbers")
    await expect(ana.locator("#presence")).to_have_text("No facilitator is here right now.")
    await expect(welcome).to_contain_text("No facilitator is in the room right now")
    await expect(ana.locator("#people-count")).to_have_text("2")
    await clean(ana, "welcome, unstaffed")

    await type_and_send(ana, "i really need to talk")
    bubble = mine(ana, "i really need to talk")
    await expect(bubble.locator(".meta")).to_have_text("Not sent")
    await expect(bubble).to_contain_text("There isn't a facilitator in the room right now")
    await expect(bubble).not_to_contain_text("back soon")
    await tab_to(ana, bubble.get_by_role("button", name="See who can help now"))
    await ana.keyboard.press("Enter")
    await expect(ana.locator("#help")).to_be_visible()
    await expect(ana.get_by_role("heading", name="Get help now")).to_be_focused()
    await expect(ana.get_by_label("Message", exact=True)).to_be_in_viewport(ratio=1)
    await clean(ana, "unstaffed answer with help open")

    # Who is here, from the keyboard; a facilitator arriving is shown at once.
    await tab_to(ana, ana.locator("#people summary"))
    await ana.keyboard.press("Enter")
    members = ana.locator("#members")
    await expect(members).to_contain_text("Ana (you)")
    await expect(members).to_contain_text("Ben")
    fac = await facilitator(site, "quiet")
    await expect(ana.locator("#presence")).to_have_text("A facilitator is here: Facilitator.")
    await expect(members.locator("li", has_text="facilitator")).to_contain_text("Facilitator")
    await expect(ana.locator("#banner")).to_be_hidden()
    await clean(ana, "welcome, staffed")
    await ana.get_by_label("Message", exact=True).focus()
    await type_and_send(ana, "hello, glad you're here")
    await expect(mine(ana, "hello, glad you're here").locator(".meta")).to_contain_text("Sent")
    await ben.expect("message", lambda e: e["text"] == "hello, glad you're here")
    await fac.close()


async def test_dark_mode_and_reduced_motion(browser: Browser, site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    dark = await join(await context(browser, color_scheme="dark", reduced_motion="reduce"),
                      site, "Ana")
    await type_and_send(dark, "hello in the dark")
    bubble = mine(dark, "hello in the dark")
    await expect(bubble.locator(".meta")).to_contain_text("Sent")
    background = await dark.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 19, 22)", background
    assert await bubble.evaluate("e => getComputedStyle(e).animationName") == "none"
    await clean(dark, "dark mode")
    await type_and_send(dark, "i want to end it all")
    await expect(dark.locator("#help")).to_be_visible()
    assert await dark.locator("#help").evaluate("e => getComputedStyle(e).animationName") == "none"
    await clean(dark, "dark mode, crisis sheet open")
    await shot(dark, "room-dark-phone")

    light = await join(await context(browser, color_scheme="light"), site, "Ben")
    await type_and_send(light, "hello in the light")
    lit = mine(light, "hello in the light")
    await expect(lit.locator(".meta")).to_contain_text("Sent")
    assert await lit.evaluate("e => getComputedStyle(e).animationName") == "bubble-in"
    background = await light.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(251, 250, 247)", background


def room_frame(payload: str | bytes) -> bool:
    return '"type":"room"' in str(payload)


async def test_ignore_and_unignore_someone_from_the_keyboard(
        browser: Browser, site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    ben = await site.client(await site.join("Ben"))
    ctx = await context(browser)
    page = await ctx.new_page()
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    ana = await join(ctx, site, "Ana", page=page)
    await ben.say("first from ben", "b1")
    first = ana.locator(".msg.theirs", has_text="first from ben")
    await expect(first).to_be_visible()

    await tab_to(ana, ana.locator("#people summary"))
    await ana.keyboard.press("Enter")
    await tab_to(ana, ana.get_by_role("button", name="Ignore Ben"))
    # The server answers an ignore with the room state: from then on Ben's lines stop.
    async with sockets[-1].expect_event("framereceived", room_frame):
        await ana.keyboard.press("Enter")
    await expect(first).to_be_hidden()
    await expect(ana.get_by_text("You're ignoring Ben")).to_be_visible()
    await expect(ana.get_by_role("button", name="Stop ignoring Ben")).to_be_focused()
    await clean(ana, "ignoring someone")
    await ben.say("second from ben", "b2")

    async with sockets[-1].expect_event("framereceived", room_frame):
        await ana.keyboard.press("Enter")
    await expect(ana.get_by_text("You're no longer ignoring Ben")).to_be_visible()
    await expect(ana.get_by_role("button", name="Ignore Ben")).to_be_focused()
    await expect(first).to_be_visible()
    await ben.say("third from ben", "b3")
    await expect(ana.locator(".msg .text", has_text="third from ben")).to_be_visible()
    await expect(ana.locator(".msg .text", has_text="second from ben")).to_have_count(0)
