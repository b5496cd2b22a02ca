"""The docs site. Without Quarto (fast): nbdev's own docs processors, configured by settings.ini, give every experiment
page its committed figures. With Quarto (slow, `pytest -m slow tests/test_docs.py` or CXRLAB_SLOW=1): `nbdev_docs` on a
fresh clone builds a page per notebook and the experiment pages contain images. The Quarto binary comes from the
`docs` extra (`quarto-cli`, whose install downloads it from GitHub) or any Quarto on PATH."""
import os, shutil, subprocess, sys
from pathlib import Path

import pytest

from conftest import ROOT

nbdev = pytest.importorskip("nbdev")
from cxrlab.report import DOCS_FIGURES, docs_figure_paths

NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb"))


def _processed(nb_path):
    "The notebook after the extra processors settings.ini names (nbdev's own ones execute cells: not needed here)."
    from execnb.nbio import read_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import FilterDefaults
    os.chdir(ROOT)  # nbdev reads settings.ini (and its `procs`) from the working folder upwards
    procs = FilterDefaults().xtra_procs()
    assert any(p.__name__ == "docs_figures" for p in procs), procs
    nb = read_nb(nb_path)
    NBProcessor(nb=nb, procs=procs).process()
    return nb


@pytest.mark.parametrize("stem", sorted(DOCS_FIGURES))
def test_every_experiment_page_gets_its_committed_figures(stem):
    paths = docs_figure_paths(stem, ROOT)
    assert paths, f"figures/ has none of {DOCS_FIGURES[stem]} for {stem}"
    nb = _processed(ROOT / "nbs" / f"{stem}.ipynb")
    last = nb.cells[-1].source
    assert last.startswith("## Figures from the pipeline") and last.count("](data:image/png;base64,") == len(paths)


def test_pages_without_figures_are_left_alone():
    nb = _processed(ROOT / "nbs" / "00_core.ipynb")
    assert "Figures from the pipeline" not in nb.cells[-1].source


def _quarto():
    return shutil.which("quarto")


@pytest.mark.slow
def test_nbdev_docs_builds_the_site_on_a_fresh_clone(tmp_path):
    if not (os.environ.get("CXRLAB_SLOW") == "1" or "slow" in (os.environ.get("PYTEST_ADDOPTS", "") + " ".join(sys.argv))):
        pytest.skip("slow: run with -m slow or CXRLAB_SLOW=1")
    if _quarto() is None:
        pytest.skip("no Quarto binary: pip install -e '.[docs]' (quarto-cli downloads it from GitHub at install time)")
    clone = tmp_path / "cxrlab"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    p = subprocess.run(["nbdev_docs"], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    site = clone / "_docs"
    for nb in NOTEBOOKS:
        page = site / ("index.html" if nb.stem == "index" else f"{nb.stem}.html")
        assert page.exists(), f"no page for {nb.name} in {sorted(q.name for q in site.glob('*.html'))}"
    for stem in DOCS_FIGURES:
        html = (site / f"{stem}.html").read_text()
        assert html.count("<img") >= len(docs_figure_paths(stem, clone)), stem
