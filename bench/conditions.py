"""The conditions a benchmark figure is measured under, printed with every result.

Figures on a shared or loaded machine differ several-fold from an idle one: each bench
prints the machine (CPUs, memory, kernel, Python) and the load average before and after.
"""

from __future__ import annotations

import os
import sys


def machine() -> str:
    """CPUs, memory, kernel, Python, and the load average now."""
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    one, five, fifteen = os.getloadavg()
    return (f"{os.cpu_count()} CPUs, {total_kib / 2**20:.0f} GiB, Linux {os.uname().release}, "
            f"Python {sys.version.split()[0]}; load average {one:.2f} {five:.2f} {fifteen:.2f} "
            "(1, 5, 15 min)")
