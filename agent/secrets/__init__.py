"""Secrets: the ``[secrets]`` section, fetching, rendering, all-or-none publishing, and the
handoff to services."""
