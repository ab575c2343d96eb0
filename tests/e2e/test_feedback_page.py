"""Issue 15 § 4 in headless Chromium: the "Tell us" page a notice promises, reached from
"Get help now", submits and thanks the young person kindly; ops then read it."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.conftest import Running, require
from tests.e2e.conftest import HAVE_AXE
from tests.e2e.test_pages import axe, send, young_person

pytestmark = pytest.mark.e2e


async def test_tell_us_from_the_help_panel_submits_and_thanks(browser: Browser,
                                                             site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    # bypass_csp only so the test can inject axe-core; the pages themselves forbid it.
    ctx = await browser.new_context(viewport={"width": 360, "height": 740}, bypass_csp=True)
    page, watch = await young_person(ctx, site, "Ana")
    await send(page, "hi everyone")
    await expect(page.locator(".msg.mine .meta", has_text="Sent")).to_be_visible()

    await page.get_by_role("button", name="Get help now").click()
    await expect(page.locator("#complaints")).to_contain_text("'Tell us' page")
    await page.get_by_role("link", name="Tell us").click()
    await expect(page.get_by_role("heading", name="Tell us")).to_be_visible()
    await page.wait_for_load_state("networkidle")
    await expect(page.locator("#resources li")).not_to_have_count(0)
    assert await axe(page) == []

    # Keyboard only: the label names the box, Enter on the button sends.
    await page.get_by_label("What would you like to tell us?").fill(
        "My message about my number 07700 900 123 was blocked and that felt unfair")
    await page.get_by_role("button", name="Send to the team").focus()
    await page.keyboard.press("Enter")
    thanks = page.locator("#feedback-thanks")
    await expect(thanks).to_be_focused()
    await expect(page.get_by_role("status")).to_contain_text("Thank you for telling us")
    await expect(page.locator("#feedback-kept")).to_contain_text("we hid some details")
    assert "07700" not in await page.locator("#feedback-kept").inner_text()
    await expect(page.get_by_label("What would you like to tell us?")).to_be_hidden()
    assert await axe(page) == []

    ops = await site.login("ops")
    _, listed = await site.get("/api/feedback", ops)
    assert [f["text"].startswith("My message about my number *") for f in listed["feedback"]
            ] == [True]

    # Back to the chat: the conversation is still there (this tab's sessionStorage).
    await page.get_by_role("link", name="Back to the chat").click()
    await expect(page.locator("#room-title")).to_have_text("Lounge")
    await expect(page.locator(".msg.mine .text", has_text="hi everyone")).to_be_visible()
    assert watch.dialogs == [] and watch.foreign == []


async def test_tell_us_refuses_kindly_and_keeps_the_text(browser: Browser,
                                                         site: Running) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(site.http + "/feedback")
    box = page.get_by_label("What would you like to tell us?")
    await page.get_by_role("button", name="Send to the team").click()
    await expect(page.get_by_role("alert")).to_have_text("Please write something first.")
    await box.fill("kys")
    await page.get_by_role("button", name="Send to the team").click()
    await expect(page.get_by_role("alert")).to_contain_text("try saying it another way")
    await expect(box).to_have_value("kys")  # nothing lost: they can change it and resend
