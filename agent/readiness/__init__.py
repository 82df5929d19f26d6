"""The readiness gate: the ``[readiness]`` section, its checks, and the wait until the
applications serve."""
