"""The repository is self-contained: no tracked file cites a path outside it or an issue number.

References live in docs/references.md and are cited by section (``docs/references.md §N``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Character classes keep these patterns from matching their own source line.
OUTSIDE = re.compile(r"/wor[k]/|shared/REFERENCE[S]|\bREFERENCE[S](\.md|\s*§)")
ISSUE = re.compile(r"\bissue[s]?\s*#\s*\d+|\(issue[s]?\s+#?\d+|\bissue[s]? \d+\b", re.IGNORECASE)
# snakemake --report inlines third-party JavaScript whose comments cite that project's issues
VENDORED = {"results/report.html"}


def tracked_text_files() -> list[Path]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in listing.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and not path.is_symlink():
            files.append(path)
    return files


def offending_lines(path: Path, patterns: list[re.Pattern]) -> list[str]:
    data = path.read_bytes()
    if b"\0" in data[:8192]:  # binary (parquet, png, safetensors): no prose to cite from
        return []
    text = data.decode("utf-8", errors="replace")
    return [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}"
        for number, line in enumerate(text.splitlines(), 1)
        if any(p.search(line) for p in patterns)
    ]


def test_patterns_catch_what_they_should():
    for bad in (
        "see /" + "work/shared/" + "REFERENCES" + ".md §1",
        "REFERENCES" + " §3",
        "section 3 of REFERENCES" + ".md",
    ):
        assert OUTSIDE.search(bad), bad
    for bad in ("(issue" + " #7)", "(issue" + " 8)", "issues" + " #8 and #9", "Issue" + " 12"):
        assert ISSUE.search(bad), bad
    for fine in ("docs/references.md §1", "an issue with batch norm", "the references"):
        assert not OUTSIDE.search(fine) and not ISSUE.search(fine), fine


def test_no_tracked_file_cites_outside_the_repository_or_an_issue_number():
    found = []
    for path in tracked_text_files():
        name = path.relative_to(ROOT).as_posix()
        found += offending_lines(path, [OUTSIDE] if name in VENDORED else [OUTSIDE, ISSUE])
    assert not found, (
        "cite docs/references.md §N instead of a file outside the repository or an issue "
        "number:\n" + "\n".join(found)
    )


def test_references_has_the_cited_sections():
    text = (ROOT / "docs" / "references.md").read_text()
    sections = {int(n) for n in re.findall(r"(?m)^## (\d+)\. ", text)}
    cited = set()
    for path in tracked_text_files():
        if path.suffix in {".py", ".md", ".yaml", ".smk", ".toml"}:
            cited |= {int(n) for n in re.findall(r"references\.md §(\d+)", path.read_text())}
    assert cited and cited <= sections, f"cited sections {sorted(cited - sections)} do not exist"
