"""The instance boot agent: metadata, secrets, tuning and lifecycle at every boot."""

from __future__ import annotations

__version__ = "0.1.0"
