"""The package build's one step beyond pyproject.toml: the pruned service models.

The wheel carries botocore's models of the operations the agent calls, pruned from the
botocore of the build (``agent/cloud/service_models.py``); an editable install goes without
them (and
loads botocore's own).
"""

from __future__ import annotations

import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithModels(build_py):
    """``build_py``, then ``python -m agent.cloud.service_models BUILD_LIB/agent/data/models``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = os.path.join(self.build_lib, "agent", "data", "models")
        subprocess.run([sys.executable, "-m", "agent.cloud.service_models", dest], check=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))


setup(cmdclass={"build_py": BuildWithModels})
