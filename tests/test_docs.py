"""The documentation: the README's length and Quick start (CI runs its test line), every relative link in
README.md, docs/ and the published runs' READMEs, and every docs/ page the code cites.

Fast and light: the standard library only, plus `git ls-files` for the tracked files."""

from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 250
TEST_LINE = "bash scripts/setup.sh && bash scripts/test.sh"

# [text](target) or [text](target "title"); images too. Not reference-style links.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
DOCS_CITED = re.compile(r"docs/([A-Za-z0-9_.-]+?\.md)\b")
# files whose docs/ names are examples for a pattern, not citations
NOT_CITING = {"tests/test_self_contained.py", "tests/test_docs.py"}


def markdown_files() -> list[Path]:
    files = [README, *sorted((REPO / "docs").glob("*.md"))]
    files += sorted((REPO / "results" / "published").rglob("README.md"))
    return files


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link outside code blocks and code spans."""
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            found.append((number, match.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than hyphens and spaces
    dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return frozenset(out)


def test_slug_follows_github():
    assert slug("Where the paper is silent") == "where-the-paper-is-silent"
    assert slug("Does the reward rank the modules as the single-module analysis does?") == (
        "does-the-reward-rank-the-modules-as-the-single-module-analysis-does")
    assert slug("\"A real other machine\", corrected") == "a-real-other-machine-corrected"
    assert slug("Performance: where a distillation step's time goes") == (
        "performance-where-a-distillation-steps-time-goes")
    assert slug("`summary.json`") == "summaryjson"
    assert slug("Teachers: how this design was reached") == "teachers-how-this-design-was-reached"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move detail to docs/"


def test_quick_start_test_line_is_what_ci_runs():
    """.ci/run executes the second line of the first ```bash block under '## Quick start'."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Quick start")
    fence = next(i for i in range(start, len(lines)) if lines[i].startswith("```bash"))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
    block = lines[fence + 1:end]
    assert len(block) == 2, block
    assert block[0] == "bash scripts/setup.sh && source .venv/bin/activate && snakemake --cores all"
    assert block[1] == TEST_LINE


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    broken = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = path if not file_part else (path.parent / file_part).resolve()
        where = f"{path.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
            continue
        try:
            resolved.relative_to(REPO)
        except ValueError:
            broken.append(f"{where} (outside the repository)")
            continue
        if anchor and resolved.is_file() and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where} (no heading with anchor #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _tracked(*roots: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", *roots], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_docs_cited_by_the_code_exist():
    try:
        tracked = _tracked("optima", "workflow", "scripts", "config", "tests")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    missing = []
    for name in tracked:
        path = REPO / name
        if name in NOT_CITING or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for match in DOCS_CITED.finditer(text):
            if not (REPO / "docs" / match.group(1)).is_file():
                missing.append(f"{name}: docs/{match.group(1)}")
    assert not missing, "cited but missing:\n" + "\n".join(sorted(set(missing)))
