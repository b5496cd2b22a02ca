"""The method contract: a method registered outside cxrlab trains, reloads and is compared through one interface."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from cxrlab.core import load_json, save_json
from cxrlab.train import RunLoadError, load_run, setup_experiment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import method_plugin  # noqa: E402  (registers 'residual_head')

SMALL = dict(dataset='synth', n_patients=48, image_size=64, epochs=1, batch_size=16, device='cpu', precision='fp32')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A baseline run and a run of the plugin method on the same small SynthCXR set."
    out = tmp_path_factory.mktemp('runs')
    runs = {}
    for method in ('clip', 'residual_head'):
        exp = setup_experiment(method, out_dir=str(out), run_name=method, **SMALL)
        exp.fit()
        runs[method] = exp
    return out, runs


def test_new_method_trains_with_its_own_terms(trained):
    out, runs = trained
    log = (out / 'residual_head' / 'train_log.csv').read_text().splitlines()
    assert 'residual_l2' in log[0] and len(log) > 1  # every term of the method's loss is logged per step
    rec = load_json(out / 'residual_head' / 'params.json')['params']['method']
    assert rec['name'] == 'residual_head' and rec['module'] == 'method_plugin' and rec['config']['model'] == {'hidden': 32}


def test_load_run_rebuilds_the_same_model(trained):
    out, runs = trained
    exp = runs['residual_head']
    lr = load_run(out / 'residual_head', device='cpu')
    assert type(lr.model).__name__ == 'ResidualHeadModel' and lr.method.name == 'residual_head'
    batch = exp.collate([exp.datasets['test'][i] for i in range(4)])
    exp.model.eval()
    with torch.no_grad():
        a, b = exp.model.embed(batch), lr.model.embed(batch)
    torch.testing.assert_close(a['image']['embeds'], b['image']['embeds'])
    torch.testing.assert_close(a['text']['embeds'], b['text']['embeds'])
    from cxrlab.core import get_device
    auto = load_run(out / 'residual_head', device='auto')  # the profiles' default ('auto' failed inside torch before)
    assert next(auto.model.parameters()).device.type == get_device('auto').type


def test_load_run_names_the_problem(trained, tmp_path):
    out, _ = trained
    import shutil
    bad = tmp_path / 'unknown'; shutil.copytree(out / 'clip', bad)
    meta = load_json(bad / 'params.json'); meta['params']['method']['name'] = 'no_such_method'
    meta['params']['method']['module'] = None; save_json(meta, bad / 'params.json')
    with pytest.raises(RunLoadError, match=r"run unknown: unknown method 'no_such_method'"):
        load_run(bad)
    wrong = tmp_path / 'wrong'; shutil.copytree(out / 'clip', wrong)
    meta = load_json(wrong / 'params.json'); meta['params']['method'] = load_json(out / 'residual_head' / 'params.json')['params']['method']
    save_json(meta, wrong / 'params.json')
    with pytest.raises(RunLoadError, match=r"run wrong: checkpoint .*ResidualHeadModel.*113 missing key\(s\) \['dual\..*108 unexpected key\(s\)"):
        load_run(wrong)
    with pytest.raises(FileNotFoundError, match="no checkpoint 'epoch_007'"):
        load_run(out / 'clip', checkpoint='epoch_007')


def test_07_evaluates_the_new_method_beside_the_baseline(trained, tmp_path):
    "The evaluation notebook reloads both runs through the registry (the plugin's module is imported from params.json)."
    from cxrlab.report import run_notebook
    out, _ = trained
    os.environ['PYTHONPATH'] = os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')])
    r = run_notebook(ROOT / 'nbs' / '07_retrieval_eval.ipynb',
                     {'runs': f"{out / 'clip'},{out / 'residual_head'}", 'n_resamples': 20, 'device': 'cpu'},
                     run_name='compare', reports_dir=tmp_path / 'reports', out_dir=out, html=False, progress=False)
    m = load_json(r.run_dir / 'metrics.json')
    for name in ('clip', 'residual_head'):
        for k in ('t2i/R@10', 't2i/R@10_ci_low', 'i2t/R@1', 'same_label/t2i/R@1', 'zero_shot/AUROC_macro'):
            assert f'test/{name}/{k}' in m, (name, k)
    # both were scored on the same rows, and the new method's stored embeddings carry its scorer
    assert m['test/clip/t2i/n_queries'] == m['test/residual_head/t2i/n_queries']
    emb = list((out / 'residual_head' / 'embeddings').glob('*-test-*.json'))
    assert emb and json.loads(emb[0].read_text())['meta']['scorer']['name'] == 'dot'
