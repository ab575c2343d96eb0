"""The browser fixture of tests/e2e (real headless Chromium), for the proxy tests."""

from __future__ import annotations

from tests.e2e.conftest import browser

__all__ = ["browser"]
