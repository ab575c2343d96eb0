"""Issue 5 acceptance in headless Chromium: people typing and clicking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from chatserver.moderation.engine import RuleSet
from tests.conftest import Running, require, start_server
from tests.e2e.conftest import AXE, HAVE_AXE, shot

pytestmark = pytest.mark.e2e


class Watch:
    """Records every request a page makes and any dialog (a script that ran)."""

    def __init__(self, page: Page, base: str) -> None:
        self.foreign: list[str] = []
        self.dialogs: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(base) or
                r.url.startswith("data:") else self.foreign.append(r.url))
        page.on("dialog", lambda d: self.dialogs.append(d.message))


async def young_person(ctx: BrowserContext, site: Running, name: str) -> tuple[Page, Watch]:
    page = await ctx.new_page()
    watch = Watch(page, site.http)
    await page.goto(site.http + "/")
    await page.get_by_label("Display name").fill(name)
    await page.get_by_label("Age group").select_option("16-17")
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#room-title")).to_have_text("Lounge")
    return page, watch


async def staff(ctx: BrowserContext, site: Running, username: str) -> tuple[Page, Watch]:
    page = await ctx.new_page()
    watch = Watch(page, site.http)
    await page.goto(site.http + "/staff")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_contain_text(username)
    return page, watch


async def send(page: Page, text: str) -> None:
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_role("button", name="Send").click()


async def open_room(page: Page) -> None:
    await page.get_by_role("button", name="Lounge").click()
    await expect(page.locator("#room-heading")).to_have_text("Lounge")


async def axe(page: Page) -> list[Any]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => (await axe.run(document)).violations")
    return [v for v in result if v["impact"] in ("serious", "critical")]


async def test_two_young_people_chat_and_a_facilitator_mutes_and_approves(
        browser: Browser, site: Running) -> None:
    ctx = await browser.new_context()
    ana, ana_watch = await young_person(ctx, site, "Ana")
    ben, ben_watch = await young_person(await browser.new_context(), site, "Ben")
    fac, _ = await staff(await browser.new_context(), site, "facilitator")
    await open_room(fac)

    await send(ana, "hi everyone, first time here")
    await expect(ben.locator(".msg .text", has_text="first time here")).to_be_visible()
    await send(ben, "welcome Ana!")
    await expect(ana.locator(".msg .text", has_text="welcome Ana!")).to_be_visible()

    # The facilitator mutes Ben: his page shows it and he cannot send.
    await fac.get_by_role("button", name="Mute").first.wait_for()
    row = fac.locator("#members li", has_text="Ben")
    await row.get_by_role("button", name="Mute").click()
    await expect(ben.locator("#banner")).to_contain_text("muted")
    await expect(ben.get_by_role("button", name="Send")).to_be_disabled()

    # A held message shows nowhere until the facilitator approves it, then on both pages.
    await send(ana, "how old are you?")
    await expect(ana.locator(".msg.held")).to_contain_text("Waiting for a facilitator")
    held = fac.locator("#held li", has_text="Ana")
    await held.locator("summary").click()  # content warning: click to reveal
    await expect(held.locator(".held-text")).to_have_text("how old are you?")
    await held.get_by_role("button", name="Approve").click()
    await expect(ben.locator(".msg .text", has_text="how old are you?")).to_be_visible()
    await expect(ana.locator(".msg:not(.held) .text", has_text="how old are you?")).to_be_visible()
    await shot(ana, "room")
    await shot(fac, "facilitator")
    assert ana_watch.foreign == [] and ben_watch.foreign == []


async def test_risk_message_shows_help_and_alerts_the_facilitator(
        browser: Browser, site: Running) -> None:
    fac, _ = await staff(await browser.new_context(), site, "facilitator")
    await open_room(fac)
    ana, _ = await young_person(await browser.new_context(), site, "Ana")
    await send(ana, "i want to end it all")
    await expect(ana.locator("#help")).to_be_visible()
    await expect(ana.locator("#resources")).to_contain_text("Childline")
    await expect(ana.locator("#resources")).to_contain_text("0800 1111")
    await expect(ana.locator(".msg.held")).to_contain_text("Waiting for a facilitator")
    await expect(fac.locator("#alerts .alert-risk")).to_be_visible()
    await expect(fac.locator("#held li", has_text="Ana")).to_be_visible()
    await shot(ana, "help")


async def test_page_reconnects_after_a_restart_and_shows_missed_messages_once(
        browser: Browser, tmp_path: Path, rules: RuleSet) -> None:
    site = await start_server(tmp_path, rules)
    port = site.port
    try:
        ana, _ = await young_person(await browser.new_context(), site, "Ana")
        await send(ana, "before the restart")
        await expect(ana.locator(".msg:not(.pending) .text", has_text="before")).to_be_visible()
        await site.stop()
        site = await start_server(tmp_path, rules, port=port)
        other = await site.client(await site.join("Ben"))
        await other.say("sent while you were away", "w1")
        await expect(ana.locator("#status")).to_contain_text("Reconnected", timeout=20_000)
        await expect(ana.locator(".msg .text", has_text="sent while you were away")
                     ).to_have_count(1)
        await expect(ana.locator(".msg .text", has_text="before the restart")).to_have_count(1)
    finally:
        await site.stop()


async def test_counsellor_claims_a_case_and_chats_one_to_one(
        browser: Browser, site: Running) -> None:
    fac, _ = await staff(await browser.new_context(), site, "facilitator")
    await open_room(fac)
    ana, _ = await young_person(await browser.new_context(), site, "Ana")
    cou, _ = await staff(await browser.new_context(), site, "counsellor")
    row = fac.locator("#members li", has_text="Ana")
    await row.get_by_label("Urgency for Ana").select_option("urgent")
    await row.get_by_label("Note for the counsellor about Ana").fill("asked to talk")
    await row.get_by_role("button", name="Escalate").click()
    case = cou.locator("#cases li", has_text="urgent")
    await case.get_by_role("button", name="Claim").click()
    await expect(ana.get_by_role("tab", name="Counsellor (private)")).to_have_attribute(
        "aria-selected", "true")
    await send(ana, "thank you for talking with me")
    await expect(cou.locator("#private .text", has_text="thank you")).to_be_visible()
    await cou.get_by_label("Message to the young person").fill("i'm here, take your time")
    await cou.locator("#private-compose").get_by_role("button", name="Send").click()
    await expect(ana.locator(".msg .text", has_text="take your time")).to_be_visible()
    await expect(fac.locator("#transcript .text", has_text="take your time")).to_have_count(0)
    await shot(cou, "counsellor")


async def test_xss_is_literal_text_and_no_script_runs(browser: Browser, site: Running) -> None:
    ana, ana_watch = await young_person(await browser.new_context(), site, "Ana")
    ben, ben_watch = await young_person(await browser.new_context(), site, "Ben")
    fac, fac_watch = await staff(await browser.new_context(), site, "facilitator")
    await open_room(fac)
    payload = "<img src=x onerror=alert(1)>"
    await send(ana, payload)
    for page in (ana, ben, fac):
        await expect(page.locator(".msg .text", has_text=payload)).to_be_visible()
        assert await page.locator(".msg img").count() == 0
    for watch in (ana_watch, ben_watch, fac_watch):
        assert watch.dialogs == [] and watch.foreign == []


@pytest.mark.parametrize("path", ["/", "/staff"])
async def test_pages_have_no_serious_accessibility_violations(
        browser: Browser, site: Running, path: str) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    # bypass_csp only so the test can inject axe-core; the pages themselves forbid it.
    page = await (await browser.new_context(viewport={"width": 360, "height": 740},
                                            bypass_csp=True)).new_page()
    await page.goto(site.http + path)
    await page.wait_for_load_state("networkidle")
    assert await axe(page) == []
    if path == "/":
        await shot(page, "join")


async def test_logged_in_pages_pass_axe(browser: Browser, site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    ana, _ = await young_person(await browser.new_context(bypass_csp=True), site, "Ana")
    await send(ana, "hello")
    await expect(ana.locator(".msg:not(.pending)")).to_have_count(1)
    assert await axe(ana) == []
    for who in ("facilitator", "counsellor", "ops"):
        page, _ = await staff(await browser.new_context(bypass_csp=True), site, who)
        if who == "facilitator":
            await open_room(page)
        assert await axe(page) == [], who
        if who == "ops":
            await shot(page, "ops")
