"""Issue 16 § 2 in headless Chromium: "Talk to someone privately" (``request_support``
with a note) and its kind confirmations, the one-to-one in a tab of its own, and a
rejection that names which held message it was. Keyboard only; axe-core in each state."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, ViewportSize, expect

from tests.conftest import Running, require
from tests.e2e.conftest import HAVE_AXE
from tests.e2e.test_room import (
    PHONE,
    SIZES,
    clean,
    context,
    facilitator,
    join,
    mine,
    tab_to,
    type_and_send,
)

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("viewport", SIZES)
async def test_asking_for_a_counsellor_and_the_one_to_one_in_its_own_tab(
        browser: Browser, site: Running, viewport: ViewportSize) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    cou = await site.client(await site.login("counsellor"))
    ben = await site.client(await site.join("Ben"))
    ana = await join(await context(browser, viewport, reduced_motion="reduce"), site, "Ana")

    # Ask, from the keyboard, with a short note: the server's kind words confirm it.
    ask = ana.get_by_role("button", name="Talk to someone privately")
    await expect(ask).to_be_in_viewport()
    await tab_to(ana, ask)
    await ana.keyboard.press("Enter")
    await expect(ana.get_by_label("Anything you'd like them to know first?")).to_be_focused()
    await clean(ana, "asking for a counsellor")
    await ana.keyboard.type("school has been really hard")
    await tab_to(ana, ana.get_by_role("button", name="Ask for a counsellor"))
    await ana.keyboard.press("Enter")
    await expect(ana.locator("#support-result")).to_contain_text("Thank you for asking")
    case = (await cou.expect("case"))["case"]
    assert (case["name"], case["note"], case["urgency"]) == \
        ("Ana", "school has been really hard", "routine")
    await clean(ana, "support requested")

    # Asking again is answered kindly, and opens nothing new.
    await tab_to(ana, ask)
    await ana.keyboard.press("Enter")
    await tab_to(ana, ana.get_by_role("button", name="Ask for a counsellor"))
    await ana.keyboard.press("Enter")
    await expect(ana.locator("#support-result")).to_contain_text("You've already asked")

    # A counsellor claims it: a tab of its own opens, and the private words stay in it.
    await cou.send(type="claim", case=case["id"])
    claimed = await cou.expect("case", lambda e: e["case"]["status"] == "claimed")
    private = claimed["case"]["private_room"]
    await cou.expect("room", lambda e: e["room"] == private)
    tab = ana.get_by_role("tab", name="Counsellor (private)")
    await expect(tab).to_have_attribute("aria-selected", "true")
    await cou.send(type="send", room=private, id="c1", text="hi Ana, i'm here for you")
    pane = ana.locator("#private-messages")
    await expect(pane.locator(".msg", has_text="i'm here for you")).to_contain_text("Counsellor")
    await expect(ana.locator("#messages")).not_to_contain_text("i'm here for you")
    await clean(ana, "one-to-one tab")
    await ana.get_by_label("Message", exact=True).focus()
    await type_and_send(ana, "thank you so much")
    await cou.expect("message", lambda e: e["room"] == private and e["text"] == "thank you so much")
    await expect(mine(ana, "thank you so much").locator(".meta")).to_contain_text("Sent")
    await expect(ana.locator("#messages")).not_to_contain_text("thank you so much")

    # Arrow keys move to the group tab; the group's lines are there, not in the private one,
    # and a private line arriving meanwhile is counted on its tab.
    await tab.focus()
    await ana.keyboard.press("ArrowLeft")
    group = ana.get_by_role("tab", name="Group")
    await expect(group).to_be_focused()
    await expect(ana.locator("#log")).to_be_visible()
    await expect(ana.locator("#private-log")).to_be_hidden()
    await ben.say("anyone around?", "b1")
    await expect(ana.locator("#messages .msg", has_text="anyone around?")).to_be_visible()
    await expect(pane).not_to_contain_text("anyone around?")
    await cou.send(type="send", room=private, id="c2", text="take your time")
    await expect(ana.locator("#private-unread")).to_have_text("1")
    await clean(ana, "group tab with the one-to-one waiting")
    await ana.keyboard.press("ArrowRight")
    await expect(ana.locator("#private-unread")).to_have_text("")
    await expect(pane.get_by_text("take your time")).to_be_visible()
    # Reduced motion: nothing on the page animates.
    assert await ana.evaluate(
        "() => [...document.querySelectorAll('*')].every("
        "e => getComputedStyle(e).animationName === 'none')")


async def test_a_rejection_notice_lands_on_the_message_it_names(
        browser: Browser, site: Running) -> None:
    fac = await facilitator(site)
    ana = await join(await context(browser, PHONE), site, "Ana")
    await type_and_send(ana, "how old are you?")
    first = await fac.expect("held")
    await type_and_send(ana, "how old are you really")
    second = await fac.expect("held")
    # The later one is rejected first: the older bubble keeps waiting.
    await fac.send(type="reject", room="lounge", held=second["held"]["id"])
    await expect(mine(ana, "how old are you really").locator(".meta")).to_have_text("Not shared")
    await expect(mine(ana, "how old are you?").locator(".meta")).to_have_text(
        "Waiting for a facilitator")
    await fac.send(type="approve", room="lounge", held=first["held"]["id"])
    await expect(mine(ana, "how old are you?").locator(".meta")).to_contain_text(
        "Shared by a facilitator")
    await clean(ana, "rejected out of order")
