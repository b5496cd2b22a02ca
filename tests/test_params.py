"""Parameters are checked first: `cxrlab run` with a bad `-p` fails in seconds, before any cell runs, naming the
parameter and its value; inside a kernel the check cell after the parameters cell does the same (papermill)."""
import json, resource, subprocess, sys, time

import nbformat
import papermill as pm
import pytest

from cxrlab.core import ParameterError, preflight_params
from cxrlab.report import PROFILES, experiment_notebooks

from conftest import ROOT

NBS = experiment_notebooks(ROOT / "nbs")


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
def test_every_experiment_notebook_checks_its_parameters_right_after_the_parameters_cell(nb):
    cells = nbformat.read(str(nb), as_version=4).cells
    i = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    assert "check_params(globals()" in cells[i + 1].source, f"{nb.name}: cell {i + 1} is not the parameter check"


@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_defaults_and_every_profile_pass_the_check(nb, profile):
    declared = pm.inspect_notebook(str(nb))
    params = {k: v for k, v in (PROFILES.get(profile) or {}).items() if k in declared}
    assert preflight_params(nb, params) is True


BAD = [  # (notebook, parameter, value, what the message must say)
    ("01_data", "dataset", "mimic", "dataset='mimic' needs data_root"),
    ("01a_labels", "uncertain_as", "maybe", "uncertain_as='maybe': must be one of positive, negative, ignore"),
    ("01b_synth", "difficulty", "1.5", "difficulty=1.5: must be <= 1"),
    ("02b_train", "epochs", "-1", "epochs=-1: must be >= 1"),
    ("03_patch_ib", "variant", "Z", "variant='Z': must be one of"),
    ("04_remix", "loss_combo", "ig_xx", "loss_combo='ig_xx': must be one of"),
    ("05_probclip", "distance", "l2", "distance='l2': must be one of csd, pcmepp"),
    ("06_localization", "image_size", "70", "image_size=70: must be divisible by 32"),
    ("07_retrieval_eval", "families", "retrieval,speed", "families='retrieval,speed': must be one of"),
    ("08_viz", "n_images", "zero", "n_images='zero': expected int"),
]


@pytest.mark.parametrize("stem,name,value,message", BAD, ids=[b[0] for b in BAD])
def test_cli_run_fails_in_seconds_naming_the_parameter(stem, name, value, message, tmp_path):
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(["cxrlab", "run", str(ROOT / "nbs" / f"{stem}.ipynb"), "-p", name, value,
                        "--reports-dir", str(tmp_path / "r"), "--no-html"], capture_output=True, text=True, cwd=tmp_path)
    seconds, ru = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(f"{stem} -p {name} {value}: exit {p.returncode} after {seconds:.1f} s wall, {cpu:.1f} s CPU")
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr, p.stderr
    assert not (tmp_path / "r" / stem).exists() or not any((tmp_path / "r" / stem).iterdir())  # no cell executed
    # CPU time, not wall time: the import of torch and cxrlab and the check, no training (the inline checks above the
    # parameters cell alone cost ~45 s of CPU); wall time on a shared machine measures its load, not this code
    assert cpu < 20, f"{cpu:.1f} s CPU"


def test_the_check_cell_works_inside_a_kernel_under_papermill(tmp_path):
    "papermill runs the cells above the parameters cell first; the check cell finds the defaults in the kernel's history."
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("epochs = 2\nmode = 'a'\nresume = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from cxrlab.core import check_params\ncheck_params(globals(), {'epochs': dict(min=1), 'mode': dict(choices=('a', 'b'))})"),
        nbformat.v4.new_code_cell("print('reached')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    src = tmp_path / "nb.ipynb"; nbformat.write(nb, str(src))
    pm.execute_notebook(str(src), str(tmp_path / "ok.ipynb"), parameters={"epochs": 3, "resume": "yes"}, progress_bar=False)
    for params, msg in (({"epochs": 0}, "epochs=0: must be >= 1"), ({"resume": "perhaps"}, "resume='perhaps': expected bool"),
                        ({"epochs": "two"}, "epochs='two': expected int")):
        with pytest.raises(pm.PapermillExecutionError) as e:
            pm.execute_notebook(str(src), str(tmp_path / "bad.ipynb"), parameters=params, progress_bar=False)
        assert msg in str(e.value)
        out = json.loads((tmp_path / "bad.ipynb").read_text())
        assert not any("reached" in str(c.get("outputs")) for c in out["cells"])


def test_preflight_runs_no_notebook_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("raise SystemExit('a cell ran')"),
        nbformat.v4.new_code_cell("lr = 0.1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from cxrlab.core import check_params\ncheck_params(globals(), {'lr': dict(above=0)})")])
    src = tmp_path / "nb.ipynb"; nbformat.write(nb, str(src))
    assert preflight_params(src, {"lr": "0.5"}) is True
    with pytest.raises(ParameterError, match=r"lr=-0\.5: must be > 0"):
        preflight_params(src, {"lr": -0.5})
