"""The fast paths' hand parser: what it takes, and everything it hands to argparse."""

from __future__ import annotations

import pytest

from agent.cli.quickargs import quick_args

FLAGS = {"--json", "-q"}
OPTIONS = {"--state-dir", "--timeout"}


@pytest.mark.parametrize(("argv", "found"), [
    ([], {}),
    (["--json"], {"--json": ""}),
    (["--state-dir", "/run/x"], {"--state-dir": "/run/x"}),
    (["--state-dir=/run/x", "-q"], {"--state-dir": "/run/x", "-q": ""}),
    (["--timeout=", "--json"], {"--timeout": "", "--json": ""}),  # argparse would say the same
    (["--timeout", "5", "--timeout", "7"], {"--timeout": "7"}),  # the last one counts
])
def test_what_the_hand_parser_takes(argv: list[str], found: dict[str, str]) -> None:
    assert quick_args(argv, FLAGS, OPTIONS) == found


@pytest.mark.parametrize("argv", [
    ["--help"], ["-h"], ["--unknown"], ["positional"],
    ["--json=yes"],  # a flag given a value
    ["--state-dir"],  # an option without its value
    ["--state-dir", "--json"],  # an option whose value looks like an option
    ["--state-dir", "-"],
    ["--js"],  # argparse's abbreviations are argparse's
])
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    assert quick_args(argv, FLAGS, OPTIONS) is None
