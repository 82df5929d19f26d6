"""The README and docs/: every link resolves inside the repository, none leaves it, and the
front door stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")),
         *sorted((REPO / "bench" / "results").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def links(page: Path) -> list[str]:
    """The Markdown link targets of a page, outside code blocks."""
    return LINK.findall(FENCE.sub("", page.read_text()))


def anchors(page: Path) -> set[str]:
    """The anchors its headings make (GitHub's rule: lower case, punctuation dropped)."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_stays_in_the_repository_and_resolves(page: Path) -> None:
    for target in links(page):
        assert not re.match(r"[a-z]+:", target), f"{target}: a link leaving the repository"
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{target}: no such file"
        assert REPO in resolved.parents or resolved == REPO, f"{target}: outside the repository"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{target}: no such heading"


def test_every_page_is_reachable_from_the_index() -> None:
    index = REPO / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in links(index)}
    pages = set((REPO / "docs").rglob("*.md")) - {index}
    assert sorted(str(p.relative_to(REPO)) for p in pages - linked) == []


def test_the_readme_is_a_front_door() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_docs_speak_of_the_product(page: Path) -> None:
    text = page.read_text()
    for said in (r"\bissue \d+", r"\bthis stop\b", r"\bthe seed's\b", r"DESIGN\.md"):
        assert not re.search(said, text, re.IGNORECASE), f"{page.name}: {said}"


@pytest.mark.integration
def test_the_readmes_minimal_configuration_plans(tmp_path: Path) -> None:
    """The README's production configuration is valid and plans offline (its owner, a user
    of the image, replaced by one this machine has)."""
    import subprocess
    import sys

    section = (REPO / "README.md").read_text().split("## A minimal production configuration")[1]
    toml = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert toml is not None
    config = tmp_path / "agent.toml"
    config.write_text(toml.group(1).replace('owner = "orders"', 'owner = "root"'))
    proc = subprocess.run([sys.executable, "-m", "agent", "plan", "--config", str(config),
                           "--instance-type", "m5.large", "--tag", "Environment=prod"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "prod/orders/db" in proc.stdout and "JAVA_TOOL_OPTIONS" in proc.stdout
    assert "http://127.0.0.1:8080/healthz" in proc.stdout  # what the gate waits for
