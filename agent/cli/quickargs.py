"""The few options of the command line's fast paths (``run``, ``status``, ``wait``), parsed
by hand: argparse is imported only when the arguments need it (help, a usage error)."""

from __future__ import annotations


def quick_args(argv: list[str], flags: set[str], options: set[str]) -> dict[str, str] | None:
    """The few options of a fast path, parsed by hand: ``flags`` take no value, ``options``
    one; None sends the arguments to argparse (help, errors, anything unknown)."""
    found: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in flags and not eq:
            found[name] = ""
        elif name in options:
            if not eq:
                value = next(it, "")
                if not value or value.startswith("-"):
                    return None
            found[name] = value
        else:
            return None
    return found
