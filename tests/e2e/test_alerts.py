"""Issue 16 § 1 and § 3 in headless Chromium: an alert raised while no facilitator is
signed in waits in the staff console's backlog; acknowledging it (from the keyboard)
shows every facilitator who has it; resolving it takes it away for everyone."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from chatserver.ports import UserRow
from chatserver.transport.auth import Passwords
from tests.conftest import Running
from tests.e2e.test_room import DESKTOP, PHONE, clean, context, join, tab_to

pytestmark = pytest.mark.e2e

RISK = "i want to kill myself"


async def sign_in(ctx: BrowserContext, site: Running, username: str) -> Page:
    page = await ctx.new_page()
    await page.goto(site.http + "/staff")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_contain_text(username)
    return page


async def test_backlog_acknowledge_and_resolve_seen_by_every_facilitator(
        browser: Browser, site: Running) -> None:
    await site.server.store.add_user(UserRow("u_fac2", "nadia", "facilitator",
                                             Passwords.hash("correct horse battery"), False))
    ana = await join(await context(browser, PHONE), site, "Ana")
    await ana.get_by_label("Message", exact=True).fill(RISK)
    await ana.keyboard.press("Enter")
    await expect(ana.locator("#help")).to_be_visible()  # supported at once, alone

    # The first facilitator signs in afterwards: the alert is waiting, with who, where
    # and when, and its text behind the content warning.
    sam = await sign_in(await context(browser, DESKTOP), site, "facilitator")
    alert = sam.locator("#alerts .alert-risk")
    await expect(alert).to_have_count(1)
    await expect(alert).to_contain_text("Ana in Lounge at")
    await expect(alert.locator(".held-text")).to_be_hidden()
    await expect(alert.get_by_text("Content warning: show message")).to_be_visible()
    await clean(sam, "alerts backlog")
    nadia = await sign_in(await context(browser, DESKTOP), site, "nadia")
    await expect(nadia.locator("#alerts .alert-risk")).to_contain_text("Ana in Lounge")

    # Acknowledge from the keyboard: Tab to the button, Enter.
    ack = alert.get_by_role("button", name="Acknowledge risk alert about Ana")
    await tab_to(sam, ack, limit=80)
    await sam.keyboard.press("Enter")
    for page in (sam, nadia):
        await expect(page.locator("#alerts .alert-risk .acked")).to_contain_text(
            "Acknowledged by Facilitator")
    await expect(sam.locator("#room-heading")).to_have_text("Lounge")  # it opened the room
    await expect(nadia.get_by_role("button", name="Acknowledge risk alert about Ana")) \
        .to_have_count(0)
    await clean(nadia, "alert acknowledged by someone else")

    # Someone signing in now sees who has it; then Nadia resolves it with the keyboard.
    late = await sign_in(await context(browser, DESKTOP), site, "facilitator")
    await expect(late.locator("#alerts .alert-risk .acked")).to_contain_text(
        "Acknowledged by Facilitator")
    resolve = nadia.get_by_role("button", name="Resolve risk alert about Ana")
    await resolve.focus()
    await nadia.keyboard.press("Enter")
    for page in (sam, nadia, late):
        await expect(page.locator("#alerts .alert-risk")).to_have_count(0)
    entries = await site.server.store.audit("lounge", 0, 1000)
    actions = [(e.actor, e.action) for e in entries]
    assert ("u_facilitator", "alert_ack") in actions
    assert ("u_fac2", "alert_resolve") in actions
