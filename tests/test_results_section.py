"""The numbers of docs/results.md are the committed reports' (docs/results/), regenerated, never typed by hand."""

import re
import subprocess
import sys
from pathlib import Path

from open_r1_egsw.experiments import results_section

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / results_section.PAGE
INTERVAL = re.compile(r"(\*\*)?([+-]?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\](\*\*)?")


def readme_block() -> str:
    readme = PAGE.read_text()
    return results_section.BEGIN + readme.split(results_section.BEGIN)[1].split(results_section.END)[0]


def test_readme_results_are_the_committed_reports():
    """The block between the markers is exactly what the generator writes from docs/results/ today."""
    readme = PAGE.read_text()
    assert results_section.splice(readme, results_section.render()) == readme


def test_bold_means_the_paired_interval_excludes_zero():
    """In the contrast tables, a bold interval lies on one side of 0 and a plain one straddles it (as printed:
    a bound that rounds to 0.000 counts as touching 0 on the side the unrounded one is on)."""
    contrast_rows = [line for line in readme_block().splitlines() if re.match(r"\| \w+ - \w+ \(\d+\) \|", line)]
    assert len(contrast_rows) >= 10
    checked = 0
    for row in contrast_rows:
        for bold, _, low, high, _ in INTERVAL.findall(row):
            low_f, high_f = float(low), float(high)
            if bold:
                assert (low_f >= 0 and not low.startswith("-") and high_f > 0) or (high_f <= 0 and low_f < 0), row
            else:
                assert low_f <= 0 <= high_f, row
            checked += 1
    assert checked >= 40


def test_check_flags_a_stale_readme_and_a_missing_marker(tmp_path):
    """--check: 0 on the committed page, 1 on one whose block was edited by hand, 2 (one line) without markers."""

    def check(readme: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "open_r1_egsw.experiments.results_section", "--check", "--readme",
                               str(readme)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip

    assert check(PAGE).returncode == 0
    stale = tmp_path / "results.md"
    text = PAGE.read_text()
    block = readme_block()
    stale.write_text(text.replace(block, block.replace("| grpo |", "| grpo (edited) |", 1)))
    proc = check(stale)
    assert proc.returncode == 1 and "differs from docs/results/" in proc.stderr
    assert stale.read_text() != text  # --check writes nothing
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n")
    proc = check(bare)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "results marker" in proc.stderr
    assert bare.read_text() == "# no markers\n"
