"""The notebook runner: every experiment notebook keeps its `parameters` tag through nbdev_clean,
`-p` really overrides its defaults, and a failing notebook makes `cxrlab run` fail naming the cell."""
import json, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pytest

from cxrlab.core import load_json
from cxrlab.report import experiment_notebooks, parameters_cell, run_notebook, main, PROFILES

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = experiment_notebooks(ROOT / "nbs")
CONTRACT = {"out_dir", "run_name", "seed"}  # every experiment notebook declares these (DESIGN §3)


def _ids(p): return p.stem


def test_there_are_experiment_notebooks():
    assert EXPERIMENTS, "no notebook in nbs/ has a cell tagged `parameters`"


@pytest.mark.parametrize("nb", EXPERIMENTS, ids=_ids)
def test_parameters_tag_survives_nbdev_clean(nb, tmp_path):
    "nbdev_clean must keep papermill's tag (settings.ini: allowed_cell_metadata_keys = tags)."
    copy = tmp_path / nb.name
    shutil.copy(nb, copy)
    subprocess.run(["nbdev_clean", "--fname", str(copy)], cwd=ROOT, check=True, capture_output=True)
    assert parameters_cell(copy) is not None


@pytest.mark.parametrize("nb", EXPERIMENTS, ids=_ids)
def test_parameters_cell_declares_the_contract(nb):
    import papermill as pm
    declared = set(pm.inspect_notebook(str(nb)))
    assert CONTRACT <= declared, f"{nb.name} lacks parameters {sorted(CONTRACT - declared)}"


@pytest.mark.parametrize("nb", EXPERIMENTS, ids=_ids)
def test_p_overrides_defaults(nb, tmp_path):
    "Run each experiment on the ci profile with a non-default seed; its params.json must record the override."
    import papermill as pm
    default_seed = pm.inspect_notebook(str(nb))["seed"]["default"]
    seed = 4321 if default_seed != "4321" else 1234
    r = run_notebook(nb, {"seed": seed}, profile="ci", run_name="override", reports_dir=tmp_path / "reports",
                     out_dir=tmp_path / "runs", html=False, progress=False)
    params = load_json(tmp_path / "runs" / "override" / "params.json")["params"]
    assert params["seed"] == seed
    assert r.run_dir == tmp_path / "runs" / "override"
    assert (r.run_dir / "metrics.json").exists(), f"{nb.name} wrote no metrics.json"
    metrics = load_json(r.run_dir / "metrics.json")
    assert metrics and all(isinstance(v, (int, float)) or v is None for v in metrics.values())


def _notebook(path: Path, cells, tagged):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.cells[tagged].metadata["tags"] = ["parameters"]
    nbformat.write(nb, str(path))
    return path


def test_failing_notebook_fails_the_cli(tmp_path):
    nb = _notebook(tmp_path / "bad.ipynb", ["x = 1", "import missing_module_xyz"], tagged=0)
    p = subprocess.run(["cxrlab", "run", str(nb), "--reports-dir", str(tmp_path / "r"), "--no-html"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1
    assert "failed in cell 1" in p.stderr and "ModuleNotFoundError" in p.stderr
    assert (tmp_path / "r" / "bad").exists(), "the executed notebook with the traceback must still be written"


def test_cli_run_writes_notebook_and_html(tmp_path):
    nb = _notebook(tmp_path / "ok.ipynb", ["greeting = 'hi'", "print(greeting * 2)"], tagged=0)
    p = subprocess.run(["cxrlab", "run", str(nb), "-p", "greeting", "yo", "--run-name", "r1",
                        "--reports-dir", str(tmp_path / "r")], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = nbformat.read(str(tmp_path / "r" / "ok" / "r1.ipynb"), as_version=4)
    assert out.cells[-1].outputs[0]["text"].strip() == "yoyo"
    html = (tmp_path / "r" / "ok" / "r1.html").read_text()
    assert "yoyo" in html and "print(greeting" not in html


def test_cli_run_streams_the_notebooks_log_lines(tmp_path):
    "`cxrlab run` prints the notebook's cxrlab log lines (epochs, evaluations) while it runs; plain prints stay in the notebook."
    nb = _notebook(tmp_path / "talk.ipynb", ["n = 2", "from cxrlab.core import get_logger\nlog = get_logger('cxrlab.train')\n"
                                             "for i in range(n): log.info(f'epoch {i + 1}/{n}: done')\nprint('not a log line')"], tagged=0)
    p = subprocess.run(["cxrlab", "run", str(nb), "--run-name", "t", "--no-html", "--reports-dir", str(tmp_path / "r")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if 'cxrlab.train' in l]
    assert [l.split('cxrlab.train: ')[1] for l in lines] == ['epoch 1/2: done', 'epoch 2/2: done'], p.stdout
    assert 'not a log line' not in p.stdout


def test_param_file_and_unknown_parameter(tmp_path):
    nb = _notebook(tmp_path / "ok.ipynb", ["a = 1\nb = 2", "print(a + b)"], tagged=0)
    (tmp_path / "p.yaml").write_text("a: 10\nb: 5\n")
    assert main(["run", str(nb), "-f", str(tmp_path / "p.yaml"), "-p", "b", "20", "--run-name", "f",
                 "--reports-dir", str(tmp_path / "r"), "--no-html"]) == 0
    out = nbformat.read(str(tmp_path / "r" / "ok" / "f.ipynb"), as_version=4)
    assert out.cells[-1].outputs[0]["text"].strip() == "30"
    with pytest.raises(ValueError, match="has no parameter"):
        main(["run", str(nb), "-p", "c", "1", "--reports-dir", str(tmp_path / "r")])


def test_profiles_command(capsys):
    assert main(["profiles"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(PROFILES) == {"ci", "demo", "gpu"}


def test_ci_pipeline_hands_every_trained_run_to_the_evaluation(tmp_path):
    "02b and 03 train; 07 reloads each of their runs through the method registry and scores it."
    from cxrlab.report import run_pipeline
    nbs = [ROOT / "nbs" / n for n in ("02b_train.ipynb", "03_patch_ib.ipynb", "07_retrieval_eval.ipynb")]
    from cxrlab.report import trained_runs
    res = run_pipeline("ci", nbs, reports_dir=tmp_path / "reports", out_dir=tmp_path / "runs",
                       stage_params={"03_patch_ib": {"variant": "A,C"}})
    assert [r.status for r in res] == ["ok"] * 3, [r.error for r in res]
    ev = load_json(Path(res[2].run_dir) / "params.json")["params"]
    trained = {Path(r).name for r in ev["runs"]}
    children = {Path(r).name for r in trained_runs(res[1].run_dir)}  # 03 with two variants: one run each
    assert len(children) == 2 and trained == {Path(res[0].run_dir).name} | children
    m = load_json(Path(res[2].run_dir) / "metrics.json")
    for name in trained:
        assert f"test/{name}/t2i/R@10" in m and f"test/{name}/same_label/t2i/R@1" in m
    assert any(k.endswith("faithfulness/deletion_auc/mask") for k in m)  # the Patch-IB C run brought its own evaluation
    rep = tmp_path / "reports"
    assert all((rep / f).exists() for f in ("leaderboard.md", "leaderboard.png", "index.html", "pipeline_state.json"))
    assert "patch_ib C (tiny_vit)" in (rep / "leaderboard.md").read_text()  # every Patch-IB variant on the one ViT
    # the claims table: C vs A paired on the same grounding items and twin pairs; the variants not trained are listed
    claims = {(c["claim"], c["system"].split(" (")[0]): c for c in load_json(rep / "leaderboard.json")["claims"]}
    for claim in ("C points at findings better than A", "C tells side/zone-swapped reports apart better than A"):
        c = claims[(claim, "patch_ib C")]
        assert c["verdict"] in ("holds", "does not hold", "unresolved") and c["pairing"] == "paired", c
        assert c["ci_low"] <= c["difference"] <= c["ci_high"] and (c["verdict"] == "unresolved" or c["queries_needed"] is None)
    for claim in ("the baseline retrieves better than chance", "the baseline retrieves better than knowing only the labels"):
        assert claims[(claim, "clip")]["pairing"] == "paired", claims[(claim, "clip")]
    assert claims[("B points at findings better than A", "patch_ib B")]["verdict"] == "not run"
    from cxrlab.evaluate import load_values, values_path  # each run's saved per-query values average to its metrics
    for r in ev["runs"]:
        means, mr = load_values(values_path(r, "test")).groupby("key")["value"].mean(), load_json(Path(r) / "metrics.json")
        shared = [k for k in means.index if f"test/{k}" in mr]
        assert len(shared) > 20 and all(abs(means[k] - mr[f"test/{k}"]) < 1e-9 for k in shared), r
    assert "### Claims" in (rep / "leaderboard.md").read_text()
    # --resume: nothing changed, so no stage runs again
    again = run_pipeline("ci", nbs, reports_dir=rep, out_dir=tmp_path / "runs", stage_params={"03_patch_ib": {"variant": "A,C"}},
                         resume=True)
    assert [r.run_dir for r in again] == [r.run_dir for r in res]


def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path):
    "SIGKILL during the second stage; --resume skips the finished first stage and reruns the killed one."
    import os, signal, time
    rep, runs = tmp_path / "reports", tmp_path / "runs"
    cmd = ["cxrlab", "pipeline", "--profile", "ci", "--notebooks", str(ROOT / "nbs" / "01b_synth.ipynb"),
           str(ROOT / "nbs" / "02b_train.ipynb"), "--reports-dir", str(rep), "--out-dir", str(runs)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    state, deadline = rep / "pipeline_state.json", time.time() + 300
    while time.time() < deadline and p.poll() is None:  # 01b has finished, 02b is running: kill everything
        if state.exists() and "01b_synth.ipynb" in load_json(state) and any(runs.glob("02b_train-*")):
            break
        time.sleep(0.2)
    assert p.poll() is None, "the pipeline finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    first = load_json(state)["01b_synth.ipynb"]
    assert "02b_train.ipynb" not in load_json(state)
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "01b_synth: unchanged since its finished run" in r.stdout + r.stderr
    after = load_json(state)
    assert after["01b_synth.ipynb"]["run_dir"] == first["run_dir"] and after["02b_train.ipynb"]["status"] == "ok"
