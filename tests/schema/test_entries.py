"""List entries: where each is configured, and whether their outputs clash."""

from __future__ import annotations

from agent.schema.entries import clash, labelled


def test_each_entry_is_named_by_its_place() -> None:
    assert labelled("files", "ab") == [("files[0]", "a"), ("files[1]", "b")]


def test_one_path_twice_clashes_unless_both_are_conditional() -> None:
    assert clash([("files[0]", "/a", False), ("files[1]", "/a", True)]) == (
        "files[1] and files[0] both write '/a'")
    assert clash([("files[0]", "/a", True), ("files[1]", "/a", True)]) == ""


def test_a_file_where_a_directory_is_clashes_when_nested_counts() -> None:
    outputs = [("files[0]", "/a", False), ("files[1]", "/a/b", False)]
    assert clash(outputs) == "'/a/b' and '/a' collide (file vs directory)"
    assert clash(outputs, nested=False) == ""
    assert clash([("files[0]", "x a credential", False), ("files[1]", "x a credential", False)],
                 given=True) == "files[1] and files[0] both give x a credential"
