"""Real headless Chromium (Debian's) driven by Playwright against a real server."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatserver.moderation.engine import RuleSet
from tests.conftest import ROOT, Running, require, start_server
from tests.logscan import use_session_log

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "docs" / "screenshots"
# README screenshots are written only when asked for (`make screenshots`), never by an
# ordinary test run (issue 16 item 4).
TAKE_SHOTS = os.environ.get("SCREENSHOTS") == "1"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
HAVE_AXE = AXE.exists()
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


async def shot(page: Any, name: str) -> None:
    """Save docs/screenshots/NAME.png for the README, with SCREENSHOTS=1 only."""
    if TAKE_SHOTS:
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    require(HAVE_CHROMIUM, "Chromium is not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        await b.close()


@pytest.fixture
async def site(tmp_path: Path, rules: RuleSet) -> AsyncIterator[Running]:
    use_session_log()
    running = await start_server(tmp_path, rules)
    yield running
    await running.stop()


__all__ = ["AXE", "HAVE_AXE", "SHOTS", "TAKE_SHOTS", "shot"]
