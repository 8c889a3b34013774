"""The README and docs/ link to each other by file and heading: every such link lands somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "sandbox" / "README.md", *(ROOT / "docs").glob("*.md")])
FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def prose(path: Path) -> str:
    """The page without its code, where a bracket is never a link."""
    return CODE.sub("", FENCED.sub("", path.read_text(encoding="utf-8")))


def anchors(path: Path) -> set[str]:
    """The fragment GitHub gives each heading: lower case, punctuation dropped, spaces to -."""
    return {
        re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        for heading in HEADING.findall(prose(path))
    }


def local_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:...
    ]


def test_the_pages_are_found_and_link_to_one_another() -> None:
    assert ROOT / "docs" / "tools.md" in PAGES
    readme_links = set(local_links(ROOT / "README.md"))
    for page in ("tools", "clients", "sandbox", "architecture", "benchmarks"):
        assert f"docs/{page}.md" in readme_links, page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_names_a_file_and_heading_that_exist(page: Path) -> None:
    for target in local_links(page):
        file, _, fragment = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page.name}: {target} names no file"
        if fragment:
            assert fragment in anchors(linked), f"{page.name}: {target} names no heading"
