"""Inline moderation: pure code, no I/O (rule files are read by the caller)."""

from __future__ import annotations

__all__: list[str] = []
