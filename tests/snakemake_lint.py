"""`snakemake --lint`, minus the one lint this project answers differently.

Snakemake asks every rule for a conda environment or container. transferscope's software is the
project itself, installed with pinned torch/torchvision into `.venv` (`make setup`); every rule
calls its `transferscope` CLI, so a per-rule conda file would only restate pyproject.toml. Every
other lint fails the check. Usage: python tests/snakemake_lint.py [CONFIGFILE]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCEPTED = ("Specify a conda environment or container for each rule.",)


def lint_problems(configfile: str = "config/smoke.yaml") -> list[str]:
    """The lints `snakemake --lint` reports for ``configfile``, as 'rule: title' lines, without
    the accepted ones; a workflow that does not even parse is one problem with its output."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--configfile", configfile],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    text = result.stdout + result.stderr
    problems, rule = [], "workflow"
    for line in text.splitlines():
        header = re.match(r"Lints for (.+?) \(line", line)
        if header:
            rule = header.group(1)
        item = re.match(r"\s+\* (.+?):?$", line)
        if item and item.group(1).rstrip(":") not in ACCEPTED:
            problems.append(f"{rule}: {item.group(1)}")
    if result.returncode != 0 and not problems and "Lints for" not in text:
        problems.append(f"snakemake --lint failed (exit {result.returncode}):\n{text[-3000:]}")
    return problems


if __name__ == "__main__":
    found = lint_problems(*sys.argv[1:2])
    print(
        "\n".join(found) or "snakemake --lint: clean (conda/container lint accepted: see docstring)"
    )
    sys.exit(1 if found else 0)
