"""Real-time, moderated group chat for facilitated young people's peer support."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
