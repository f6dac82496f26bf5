"""README.md: every relative link and image points at a file git tracks, and every in-page anchor at a heading.

A figure or report that exists only on the machine that produced it is a broken link for everyone who clones the
repository; `git ls-files` is the list of what a clone gets.
"""

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


def broken_links(markdown: str, tracked: set[str]) -> list[str]:
    """Relative targets that are neither a tracked file nor a folder holding one; anchors that name no heading."""
    folders = {str(parent) for path in tracked for parent in Path(path).parents}
    anchors = heading_anchors(markdown)
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
        normalized = str(Path(path.lstrip("/")))  # GitHub resolves "/x" from the repository root
        if normalized not in tracked and normalized.rstrip("/") not in folders:
            problems.append(f"line {number}: {target} is not tracked by git")
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


def test_readme_links_point_at_tracked_files():
    """Every relative link and image in README.md resolves to a file in `git ls-files` (or a heading)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tracked = {name for name in listing.decode().split("\0") if name}
    assert "README.md" in tracked
    assert broken_links((ROOT / "README.md").read_text(), tracked) == []
