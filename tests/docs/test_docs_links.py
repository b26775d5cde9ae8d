"""The contract lives in the repository: every reference to a document in the code, the tests,
the plugins and the docs names a file that exists here, and every ``#anchor`` a heading in it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("billing_gql", "plugins", "tests", "examples", "docs", "README.md")
SKIP_PARTS = {".venv", "node_modules", "__pycache__", ".git", "build", "dist"}
# The first contract's files lived outside the repository; nothing may point at them any more.
GONE = re.compile(r"\b(?:API|DESIGN|PROVIDERS)" + r"\.md\b")
# A reference written in code or prose: docs/<name>.md, optionally with #anchor.
DOC_REF = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)(#[A-Za-z0-9_-]+)?")
# A relative Markdown link: [text](target) where target is not a URL.
MD_LINK = re.compile(r"\]\((?!https?://|mailto:)([^)\s]+)\)")


def _files() -> list[Path]:
    found: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        found += [
            p
            for p in candidates
            if p.is_file()
            and p.suffix in {".py", ".md", ".toml"}
            and not SKIP_PARTS & set(p.relative_to(ROOT).parts)
        ]
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (outside code fences; repeats get -1, -2)."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6} (.+)", line)
        if match is None:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_the_slugs_follow_githubs_rules() -> None:
    assert _slug("Data flow: a checkout") == "data-flow-a-checkout"
    assert _slug("`register_providers`") == "register_providers"
    assert _slug("1. The shape of a plugin") == "1-the-shape-of-a-plugin"


def test_nothing_points_at_the_first_contracts_files() -> None:
    stale = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if GONE.search(line)
    ]
    assert not stale, stale


def test_every_docs_reference_names_a_file_and_a_heading_that_exist() -> None:
    broken: list[str] = []
    checked = 0
    for path in _files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in DOC_REF.finditer(line):
                checked += 1
                target = ROOT / "docs" / match.group(1)
                anchor = match.group(2)
                where = f"{path.relative_to(ROOT)}:{number}: {match.group(0)}"
                if not target.is_file():
                    broken.append(f"{where} (no such file)")
                elif anchor and anchor[1:] not in anchors(target):
                    broken.append(f"{where} (no such heading)")
    assert checked > 20, "the scan found almost no references: is it still looking?"
    assert not broken, broken


def test_relative_links_in_the_docs_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted(ROOT.glob("plugins/*/README.md")) + sorted(ROOT.glob("examples/*/README.md"))
    broken: list[str] = []
    for page in pages:
        for target in MD_LINK.findall(page.read_text(encoding="utf-8")):
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken
