"""The repository stands alone: no tracked file names a path outside it.

Every tracked text file under optima/, tests/, workflow/, scripts/, config/, docs/ and README.md is
scanned line by line (binary files and results/published/ are skipped, and so is this file, which
builds the patterns from parts). Two kinds of line fail, each with file and line named:

- paths outside the repository: the shared folder beside the checkout, its fixtures folder, and the
  development machine's work folder (test data lives in tests/data/, read relative to the test file);
- citations of documents that are not in the repository: `PAPER.md`, `DESIGN.md` or `runs.md` not
  written as `docs/...` (the repository's own paper summary is docs/paper.md, its runs docs/runs.md).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("optima", "tests", "workflow", "scripts", "config", "docs", "README.md")
SKIPPED = ("results/published/",)
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()

SEP, SHARED, WORK = "/", "shared", "work"
RULES = {
    # the parts joined here, so that this file does not itself name the paths it forbids
    "outside_paths": re.compile("|".join((re.escape(".." + SEP + SHARED), re.escape(SHARED + SEP + "fixtures"),
                                          re.escape(SEP + WORK + SEP)))),
    # a document name not preceded by "docs/" (any case: paper.md, PAPER.md, Design.md, runs.md)
    "outside_documents": re.compile(r"(?<!docs/)\b(?:paper|design|runs)\.md\b", re.IGNORECASE),
}


def _tracked_text_files() -> list[tuple[str, str]]:
    """(path relative to the repository, text) of every tracked text file in SCANNED."""
    listing = subprocess.run(["git", "ls-files", "-z", "--", *SCANNED], cwd=REPO, capture_output=True, check=True)
    files = []
    for name in sorted({n.decode() for n in listing.stdout.split(b"\0") if n}):
        path = REPO / name
        if name == THIS or name.startswith(SKIPPED) or not path.is_file():  # deleted in the work tree: nothing to scan
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return files


@pytest.fixture(scope="module")
def tracked_text_files() -> list[tuple[str, str]]:
    files = _tracked_text_files()
    assert any(name.startswith("tests/") for name, _ in files), "git ls-files found no tracked test file"
    return files


@pytest.mark.parametrize("rule", list(RULES))
def test_no_tracked_file_names_a_path_outside_the_repository(tracked_text_files, rule):
    pattern = RULES[rule]
    offences = []
    for name, text in tracked_text_files:
        for number, line in enumerate(text.splitlines(), start=1):
            found = pattern.findall(line)
            if found:
                offences.append(f"{name}:{number}: {', '.join(dict.fromkeys(found))}: {line.strip()[:160]}")
    if offences:  # the message alone (the scanned files would swamp a traceback)
        pytest.fail(f"{len(offences)} line(s) name something outside the repository ({rule}):\n" + "\n".join(offences),
                    pytrace=False)


@pytest.mark.parametrize("line, bad", [
    ("FIXTURES = REPO.parent / 'shared' / 'fixtures'", []),     # the join is not spelled as a path
    (f"see ..{SEP}{SHARED}{SEP}fixtures/vqa", ["outside_paths"]),
    (f'Path("{SEP}{WORK}{SEP}{SHARED}{SEP}fixtures/vqa")', ["outside_paths"]),
    ("as in PAPER.md §3.2", ["outside_documents"]),
    ("(DESIGN.md, decision 4)", ["outside_documents"]),
    ("listed in runs.md", ["outside_documents"]),
    ("see docs/paper.md §3.2 and docs/runs.md", []),
    ("docs/DESIGN.md", []),
    ("the rules in ../PAPER.md", ["outside_documents"]),
    ("reruns.md_file and paper.mdx", []),
])
def test_rules_on_examples(line, bad):
    assert [rule for rule, pattern in RULES.items() if pattern.search(line)] == bad
