"""The core is pure: importing it reads no file and no environment, so it must not
import ``chatserver.config`` (which does); it takes a ``chatserver.settings.Config``."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_the_core_does_not_import_the_config_reader() -> None:
    # A fresh interpreter: this test process has long imported everything.
    probe = ("import sys, chatserver.core.node; "
             "print(sorted(m for m in sys.modules if m in "
             "('chatserver.config', 'chatserver.transport', 'aiohttp')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
