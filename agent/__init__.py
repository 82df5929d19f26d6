"""The instance boot agent: metadata, secrets, tuning and lifecycle at every boot."""

from __future__ import annotations

import os

__version__ = "0.1.0"
DATA = os.path.join(os.path.dirname(__file__), "data")
"""The package's data files (installed as files: no package of ours is zipped, and
``importlib.resources`` alone would load zipfile, tempfile and shutil for them)."""
