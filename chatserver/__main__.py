"""``python -m chatserver``."""

from __future__ import annotations

import sys

from chatserver.cli import main

__all__: list[str] = []

sys.exit(main())
