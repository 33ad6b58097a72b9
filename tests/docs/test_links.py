"""The README and the pages under docs/: every relative link resolves, and the README stays short.

A link is ``[text](target)`` outside code (fenced blocks and inline code spans are skipped). A target
with a scheme (``https:``, ``mailto:``) is not checked. A relative path must name an existing file or
folder; a ``#anchor`` (in the page itself, or ``page.md#anchor``) must be the slug of one of the target's
headings, by GitHub's rules: lower case, markup and punctuation dropped except ``-`` and ``_``, each space
a ``-``, and ``-1``, ``-2`` ... for repeated headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^()\s>]+)>?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        found += [(number, target) for target in LINK.findall(line)]
        found += [(number, target) for target in IMAGE.findall(line)]
    return found


def broken_links(path: Path) -> list[str]:
    """One line per link of ``path`` that does not resolve."""
    problems: list[str] = []
    for number, target in links(path):
        if SCHEME.match(target):
            continue
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{number}"
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: {target}: no such file {file_part}")
            continue
        if anchor:
            if resolved.is_dir() or resolved.suffix != ".md":
                problems.append(f"{where}: {target}: an anchor into something that is not a Markdown page")
            elif anchor not in anchors(resolved):
                problems.append(f"{where}: {target}: no heading '#{anchor}' in {resolved.name}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_docs_folder_has_the_reference_pages():
    names = {p.name for p in (REPO / "docs").glob("*.md")}
    expected = {"config.md", "how-it-works.md", "restore.md", "operators.md", "emulator.md"}
    assert expected | {"benchmarks.md", "fault-matrix.md", "architecture.md"} <= names


def test_the_docs_name_no_issue_of_this_project():
    """The docs describe the product as it is: no "issue 13", no "#13" of this project (an upstream
    reference such as ``apache/airflow#71172`` names its repository)."""
    found = [
        f"{page.relative_to(REPO)}:{number}: {line.strip()}"
        for page in pages()
        for number, line in prose_lines(page.read_text(encoding="utf-8"))
        if re.search(r"\bissues? #?\d+|(?<![\w/.-])#\d+\b", INLINE_CODE.sub("", line), re.IGNORECASE)
    ]
    assert found == []


# ---- the checker itself, on planted pages ------------------------------------------------------------------


def plant(tmp_path: Path, text: str) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "other.md").write_text(
        "# Other page\n\n## A `code` heading: with (punctuation)!\n\n## Twice\n\n## Twice\n"
    )
    page = docs / "page.md"
    page.write_text(text)
    return page


def test_the_checker_accepts_good_links(tmp_path):
    page = plant(
        tmp_path,
        "# Page\n\n## Local heading\n\n"
        "[a](other.md) [b](other.md#a-code-heading-with-punctuation) [c](#local-heading)\n"
        "[d](other.md#twice-1) [e](https://example.com/x#y) [f](../docs/)\n"
        "`[not a link](nowhere.md)`\n\n```md\n[also not](nowhere.md)\n# not a heading\n```\n",
    )
    assert broken_links(page) == []


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        ("[x](missing.md)", "no such file missing.md"),
        ("[x](other.md#no-such-heading)", "no heading '#no-such-heading' in other.md"),
        ("[x](#nowhere)", "no heading '#nowhere' in page.md"),
        ("[x](other.md#twice-2)", "no heading '#twice-2' in other.md"),
        ("[x](#not-a-heading)", "no heading '#not-a-heading' in page.md"),
    ],
)
def test_the_checker_reports_a_broken_link(tmp_path, link, problem):
    page = plant(tmp_path, f"# Page\n\nSee {link}.\n\n```sh\n# not a heading\n```\n")
    problems = broken_links(page)
    assert len(problems) == 1, problems
    assert problems[0].endswith(problem), problems
