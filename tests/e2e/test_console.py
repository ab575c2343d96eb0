"""Issue 16 § 3 in headless Chromium: the staff console's review-queue shortcuts, Remove
that asks first, sign-out that ends the session on the server, the opt-in alert sound
and notification, person cards and the counsellor's hand-over. Keyboard only where the
item is an action; axe-core in each state reached."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.conftest import Running, require
from tests.e2e.conftest import HAVE_AXE
from tests.e2e.test_alerts import sign_in
from tests.e2e.test_room import DESKTOP, PHONE, clean, context, member_id, tab_to

pytestmark = pytest.mark.e2e

RISK = "i want to kill myself"
# Counts what the page asks of the browser (it still answers as it would).
SPY = """
window.__asked = 0; window.__shown = [];
const ask = Notification.requestPermission.bind(Notification);
Notification.requestPermission = () => { window.__asked += 1; return ask(); };
const Real = Notification;
window.Notification = class extends Real {
  constructor(title, options) { super(title, options); window.__shown.push(title); }
};
window.Notification.requestPermission = Notification.requestPermission;
Object.defineProperty(window.Notification, "permission", { get: () => Real.permission });
"""


async def test_review_queue_from_the_keyboard(browser: Browser, site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    page = await sign_in(await context(browser, DESKTOP), site, "facilitator")
    await page.get_by_role("button", name="Lounge").click()
    await expect(page.locator("#room-heading")).to_have_text("Lounge")
    ana = await site.client(await site.join("Ana"))
    first = (await ana.say("how old are you?", "a1"))["held"]
    second = (await ana.say("how old are you really", "a2"))["held"]
    await expect(page.locator("#held li")).to_have_count(2)

    # "?" lists the keys; Esc closes the list.
    await page.locator("body").focus()
    await page.keyboard.press("?")
    keys = page.get_by_role("dialog", name="Keyboard shortcuts")
    await expect(keys).to_be_visible()
    await expect(keys).to_contain_text("approve it")
    await clean(page, "keyboard shortcuts")
    await page.keyboard.press("Escape")
    await expect(keys).to_be_hidden()

    # J picks the oldest; A will not share what has not been shown; V shows it.
    await page.keyboard.press("j")
    oldest = page.locator(f'#held li[data-held="{first}"]')
    await expect(oldest).to_be_focused()
    await page.keyboard.press("a")
    await expect(page.locator("#status")).to_contain_text("Read it first")
    await expect(oldest).to_have_count(1)
    await page.keyboard.press("v")
    await expect(oldest.locator(".held-text")).to_have_text("how old are you?")
    await clean(page, "held message selected and shown")
    await page.keyboard.press("a")
    delivered = await ana.expect("message", lambda e: e["text"] == "how old are you?")
    assert delivered["id"] == "a1"
    # The next one is selected at once; R rejects it and the young person is told which.
    await expect(page.locator(f'#held li[data-held="{second}"]')).to_be_focused()
    await page.keyboard.press("r")
    notice = await ana.expect("notice", lambda e: e["kind"] == "held_rejected")
    assert notice["held"] == second
    await expect(page.locator("#held li")).to_have_count(0)
    # Typing in a box is never a shortcut.
    await page.get_by_label("Message to the room").focus()
    await page.keyboard.type("ja")
    await expect(page.get_by_label("Message to the room")).to_have_value("ja")


async def test_remove_asks_first_and_sign_out_ends_the_session(
        browser: Browser, site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    page = await sign_in(await context(browser, DESKTOP), site, "facilitator")
    await page.get_by_role("button", name="Lounge").click()
    ben = await site.client(await site.join("Ben"))
    row = page.locator("#members li", has_text="Ben")
    remove = row.get_by_role("button", name="Remove")
    await expect(remove).to_be_visible()

    await tab_to(page, remove, limit=80)
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Remove from the room?")
    await expect(dialog).to_contain_text("Remove Ben from Lounge?")
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await clean(page, "remove confirmation")
    await page.keyboard.press("Enter")  # Enter by habit: Cancel, nobody removed
    await expect(dialog).to_be_hidden()
    await expect(remove).to_be_focused()
    await expect(row).to_have_count(1)

    await page.keyboard.press("Enter")
    await page.keyboard.press("Shift+Tab")  # from Cancel back to the reason
    await expect(dialog.get_by_label("Reason (for the audit log)")).to_be_focused()
    await page.keyboard.type("abusive to others")
    await tab_to(page, dialog.get_by_role("button", name="Remove"))
    await page.keyboard.press("Enter")
    await ben.expect("notice", lambda e: e["kind"] == "removed")
    await expect(row).to_have_count(0)
    entries = await site.server.store.audit("lounge", 0, 1000)
    assert any(e.action == "remove" and e.detail.get("reason") == "abusive to others"
               for e in entries)

    # Sign out: the sign-in form again, the old token refused by the server.
    token = await page.evaluate("() => sessionStorage.getItem('staffToken')")
    await tab_to(page, page.get_by_role("button", name="Sign out"), limit=120)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    status, _ = await site.get("/api/rooms", token=token)
    assert status == 401
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#facilitator")).to_be_hidden()
    await clean(page, "signed out")


async def test_alert_sound_and_notification_are_opt_in_and_kept(
        browser: Browser, site: Running) -> None:
    ctx = await context(browser, PHONE)
    await ctx.grant_permissions(["notifications"], origin=site.http)
    await ctx.add_init_script(SPY)
    page = await sign_in(ctx, site, "facilitator")
    sound, notify = page.get_by_label("Sound for urgent alerts"), page.get_by_label(
        "Browser notification")
    await expect(sound).not_to_be_checked()  # off by default
    await expect(notify).not_to_be_checked()
    await tab_to(page, notify, limit=20)
    await page.keyboard.press("Space")
    await expect(page.locator("#pref-result")).to_have_text("Browser notifications on.")
    assert await page.evaluate("() => window.__asked") == 1
    await tab_to(page, sound, limit=20)
    await page.keyboard.press("Space")
    await expect(sound).to_be_checked()
    await page.reload()
    await expect(notify).to_be_checked()
    await expect(sound).to_be_checked()

    ana = await site.client(await site.join("Ana"))
    await ana.say(RISK, "a1")
    await expect(page.locator("#alerts .alert-risk")).to_have_count(1)
    shown = await page.evaluate("() => window.__shown")
    # The notification says what and where, never the words or the name.
    assert shown == ["Urgent risk alert in Lounge"], shown

    # A browser that does not allow notifications: the toggle stays off and says why.
    other = await context(browser, PHONE)
    await other.add_init_script(SPY)
    page2 = await sign_in(other, site, "facilitator")
    await page2.get_by_label("Browser notification").check(force=True)
    await expect(page2.locator("#pref-result")).to_contain_text("did not allow")
    await expect(page2.get_by_label("Browser notification")).not_to_be_checked()
    assert await page2.evaluate("() => window.__asked") == 1


async def test_person_card_and_the_counsellors_hand_over(browser: Browser, site: Running) -> None:
    require(HAVE_AXE, "axe-core is not installed (npm install)")
    page = await sign_in(await context(browser, DESKTOP), site, "facilitator")
    await page.get_by_role("button", name="Lounge").click()
    ana = await site.client(await site.join("Ana"))
    await ana.say("hi everyone", "a1")
    await ana.say(RISK, "a2")
    await expect(page.locator("#held li")).to_have_count(1)

    about = page.get_by_role("button", name="About Ana", exact=True)
    await tab_to(page, about, limit=80)
    await page.keyboard.press("Enter")
    card = page.locator("#card")
    await expect(page.get_by_role("heading", name="About Ana")).to_be_focused()
    await expect(card).to_contain_text("hi everyone")
    await expect(card).to_contain_text("risk alert at")
    await expect(card.locator(".held-text").first).to_be_hidden()  # behind the warning
    await expect(card.locator("dt", has_text="Messages held or not sent")
                 .locator("+ dd")).to_have_text("1")
    await clean(page, "person card")

    fac = await site.client(await site.login("facilitator"))
    await fac.send(type="join", room="lounge")
    await fac.send(type="mute", room="lounge", participant=await member_id(fac, "Ana"),
                   minutes=5)
    await expect(card).to_contain_text("Muted now")

    # Ana asks for a counsellor; the hand-over names her and holds her held disclosure.
    cou = await sign_in(await context(browser, DESKTOP), site, "counsellor")
    await ana.send(type="request_support", room="lounge")
    claim = cou.get_by_role("button", name="Claim urgent case: Ana")
    await tab_to(cou, claim, limit=60)
    await cou.keyboard.press("Enter")
    await expect(cou.locator("#case-heading")).to_have_text("Case: Ana (urgent)")
    held = cou.locator("#handover-held li")
    await expect(held).to_contain_text("Ana")
    await expect(held.locator(".held-text")).to_be_hidden()
    await expect(cou.locator("#context")).to_contain_text("hi everyone")
    await clean(cou, "case hand-over")
    await held.locator("summary").focus()
    await cou.keyboard.press("Enter")
    await expect(held.locator(".held-text")).to_have_text(RISK)
    await clean(cou, "case hand-over, held message shown")
