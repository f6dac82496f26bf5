"""README.md and every page under docs/: each relative link and image points at a file git tracks, and each anchor at
a heading of the page it names.

A figure or report that exists only on the machine that produced it is a broken link for everyone who clones the
repository; `git ls-files` is the list of what a clone gets. Links resolve from the page's own folder, as on GitHub.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target "title") and ![alt](target); the text may hold one level of brackets (an image inside a link)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ATTR = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def links(markdown: str) -> list[tuple[int, str]]:
    """(line number, target) of every link, image, reference definition and HTML src/href outside code."""
    found, in_fence = [], False
    for number, line in enumerate(markdown.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        text = INLINE_CODE.sub("", line)
        targets = INLINE_LINK.findall(text) + HTML_ATTR.findall(text)
        definition = REFERENCE_DEF.match(text)
        if definition:
            targets.append(definition.group(1))
        found += [(number, target) for target in targets]
    return found


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    anchors, in_fence = set(), False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def broken_links(markdown: str, tracked: set[str], page: str = "README.md", read=None) -> list[str]:
    """Relative targets of `page` that are neither a tracked file nor a folder holding one; anchors that name no
    heading of this page, or, when `read` (path -> text) is given, of the markdown file the link names."""
    folders = {str(parent) for path in tracked for parent in Path(path).parents}
    anchors = heading_anchors(markdown)
    base = os.path.dirname(page)
    problems = []
    for number, target in links(markdown):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # http(s), mailto: not the repository's files
        path, _, anchor = target.partition("#")
        path = unquote(path.split("?")[0])
        if not path:
            if anchor and anchor not in anchors:
                problems.append(f"line {number}: #{anchor} names no heading")
            continue
        # GitHub resolves "/x" from the repository root, anything else from the page's folder
        normalized = os.path.normpath(path.lstrip("/") if path.startswith("/") else os.path.join(base, path))
        if normalized not in tracked and normalized.rstrip("/") not in folders:
            problems.append(f"line {number}: {target} is not tracked by git")
        elif anchor and read and normalized.endswith(".md") and normalized in tracked:
            if anchor not in heading_anchors(read(normalized)):
                problems.append(f"line {number}: {target}: #{anchor} names no heading of {normalized}")
    return problems


def test_checker_finds_untracked_files_and_dead_anchors():
    """The checker itself: each kind of link that must fail does, the ones that must pass do."""
    markdown = "\n".join([
        "# Top",
        "## Results (GRPO vs EGSW)",
        "[ok](docs/a.md) ![ok](docs/fig.png) [folder](docs/) [web](https://example.com/x.png) [anchor](#top)",
        "[ok anchor](#results-grpo-vs-egsw) [file and anchor](docs/a.md#part) <img src=\"docs/fig.png\">",
        "[gone](docs/missing.md) ![gone](docs/missing.png) [dead](#nowhere) [root](/docs/b.md)",
        "`[in code](docs/code.md)` is code, not a link",
        "```",
        "[in a fence](docs/fence.md)",
        "```",
        '[ref]: docs/ref.md "title"',
        '<a href="docs/html.md">x</a>',
    ])  # fmt: skip
    problems = broken_links(markdown, tracked={"docs/a.md", "docs/fig.png"})
    assert problems == [
        "line 5: docs/missing.md is not tracked by git",
        "line 5: docs/missing.png is not tracked by git",
        "line 5: #nowhere names no heading",
        "line 5: /docs/b.md is not tracked by git",
        "line 10: docs/ref.md is not tracked by git",
        "line 11: docs/html.md is not tracked by git",
    ]


def test_checker_resolves_from_the_page_folder_and_checks_other_pages_anchors():
    """A page under docs/ links relative to docs/; an anchor into another page must name one of its headings."""
    pages = {"docs/a.md": "# A\n## Part one\n", "docs/fig.png": "", "README.md": "# Top\n"}
    markdown = "\n".join(
        [
            "[sibling](a.md) ![figure](fig.png) [up](../README.md#top) [root](/docs/a.md#part-one)",
            "[from the root](docs/a.md) [no part](a.md#part-two) [outside](../../x.md) [up](../README.md#nowhere)",
        ]
    )
    problems = broken_links(markdown, tracked=set(pages), page="docs/b.md", read=pages.get)
    assert problems == [
        "line 2: docs/a.md is not tracked by git",
        "line 2: a.md#part-two: #part-two names no heading of docs/a.md",
        "line 2: ../../x.md is not tracked by git",
        "line 2: ../README.md#nowhere: #nowhere names no heading of README.md",
    ]


def tracked_files() -> set[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return {name for name in listing.decode().split("\0") if name}


def read(path: str) -> str:
    return (ROOT / path).read_text()


def test_readme_links_point_at_tracked_files():
    """Every relative link and image in README.md resolves to a file in `git ls-files` (or a heading)."""
    tracked = tracked_files()
    assert "README.md" in tracked
    assert broken_links((ROOT / "README.md").read_text(), tracked) == []
    assert broken_links((ROOT / "README.md").read_text(), tracked, read=read) == []  # and anchors into other pages


def test_docs_pages_links_point_at_tracked_files():
    """Every markdown page git tracks under docs/ (the README's pages and the committed reports) links only to tracked
    files and to headings that exist, resolved from its own folder."""
    tracked = tracked_files()
    pages = sorted(name for name in tracked if name.startswith("docs/") and name.endswith(".md"))
    assert len(pages) >= 10
    problems = {page: broken_links(read(page), tracked, page=page, read=read) for page in pages}
    assert {page: found for page, found in problems.items() if found} == {}


def test_readme_links_every_docs_page():
    """Each page directly under docs/ is linked from README.md, so that none is reachable only by browsing."""
    tracked = tracked_files()
    linked = {os.path.normpath(target.partition("#")[0]) for _, target in links(read("README.md"))}
    pages = {name for name in tracked if name.startswith("docs/") and name.count("/") == 1 and name.endswith(".md")}
    assert pages - linked == set()
