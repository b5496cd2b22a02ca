"""README.md is generated from nbs/index.ipynb (`cxrlab readme`); .ci/run runs the README's test command."""
from pathlib import Path

from cxrlab.report import readme_text

ROOT = Path(__file__).resolve().parents[1]


def test_readme_matches_index():
    assert (ROOT / "README.md").read_text() == readme_text(ROOT / "nbs" / "index.ipynb"), \
        "README.md is out of sync with nbs/index.ipynb: run `cxrlab readme`"


def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "<!-- main-command -->" in readme
    assert "test-command" in ci, ".ci/run must extract and run the README's test command"


def test_quickstart_has_exactly_two_commands():
    quick = (ROOT / "README.md").read_text().split("## Quickstart")[1].split("\n## ")[0]
    assert quick.count("```bash") == 2
