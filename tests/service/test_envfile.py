"""Environment files: what we write, systemd's parser reads back exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.service import envfile

# What systemd accepts in a value: valid UTF-8 with no control character but newline and tab.
values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=[
        chr(c) for c in [*range(0, 9), *range(11, 32), 127]]),
    max_size=60,
)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


@given(st.dictionaries(names, values, max_size=8))
def test_render_then_parse_is_identity(pairs: dict[str, str]) -> None:
    assert envfile.parse(envfile.render(pairs)) == pairs


@pytest.mark.parametrize(
    "value",
    ['plain', 'with space', 'quote " inside', "single ' quote", "back\\slash", "dollar $HOME",
     "`backtick`", "line1\nline2", "tab\there", "trailing space ", " leading", "", "#hash",
     "a\\nb", "ünïcødé ✓", "\\", '\\"'],
)
def test_tricky_values_round_trip(value: str) -> None:
    assert envfile.parse(envfile.render({"V": value})) == {"V": value}


def test_render_quotes_shell_specials() -> None:
    assert envfile.render({"A": 'x"$`\\'}) == 'A="x\\"\\$\\`\\\\"\n'


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "É"])
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(envfile.EnvFileError, match="not a valid environment variable name"):
        envfile.render({name: "x"})


@pytest.mark.parametrize("value", ["nul\0byte", "bell\x07", "cr\rhere", "esc\x1b[0m"])
def test_control_characters_refused_without_echoing_the_value(value: str) -> None:
    with pytest.raises(envfile.EnvFileError) as info:
        envfile.render({"SECRET": value})
    assert "SECRET" in str(info.value)
    assert value not in str(info.value)


def test_parse_follows_systemd_rules() -> None:
    text = (
        "# comment\n"
        "; also a comment\n"
        "A=unquoted value   \n"
        "B='single $kept \\n'\n"
        'C="double \\$x \\q"\n'
        "D=cont\\\ninued\n"
        "  E = spaced\n"
        "NOEQUALS\n"
        'F="multi\nline"\n'
    )
    assert envfile.parse(text) == {
        "A": "unquoted value",
        "B": "single $kept \\n",
        "C": "double $x \\q",
        "D": "continued",
        "E": "spaced",
        "F": "multi\nline",
    }
