"""``python -m agent``."""

from __future__ import annotations

from agent.cli.commands import program

program()
