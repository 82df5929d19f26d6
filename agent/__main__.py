"""``python -m agent``."""

from __future__ import annotations

from agent.cli import program

program()
