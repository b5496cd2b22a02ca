"""MedProbCLIP runs: train on studies, reload through the registry, evaluate through the match probability (here and in 07)."""
import random
from pathlib import Path

import pytest
import torch

from cxrlab.core import load_json
from cxrlab.evaluate import EmbeddingSet, embedding_path, evaluate_run
from cxrlab.probclip import (MatchProbabilityScorer, ProbCLIPModel, StudyPairs, augment_report, is_protected_word,
                             setup_probclip)
from cxrlab.train import load_run

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(dataset='synth', n_patients=48, image_size=64, epochs=1, batch_size=16, device='cpu', precision='fp32', seed=0)
LATERALS = {'frontal_only': False, 'synth_views': ['PA', 'LATERAL']}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A tiny MedProbCLIP run on SynthCXR with lateral views (real multi-view training)."
    out = tmp_path_factory.mktemp('runs')
    exp = setup_probclip(prefix='05_probclip', out_dir=str(out), run_name='probclip', data_options=LATERALS, **SMALL)
    exp.fit()
    return out, exp


def test_training_sees_two_views_and_two_sections(trained):
    _, exp = trained
    s = exp.datasets['train'][0]
    assert s['images'].shape[0] == 2 and s['view_mask'].all() and s['section_mask'].all()
    views = exp.datasets['train'].ds.studies['views']
    assert views.map(lambda v: set(v) == {'PA', 'LATERAL'}).any()  # laterals reach the training samples ...
    i = int(views.map(lambda v: set(v) == {'PA', 'LATERAL'}).to_numpy().nonzero()[0][0])
    assert not exp.datasets['train'][i]['view_copy']  # ... as the second view, not a copy
    log = (exp.run.dir / 'train_log.csv').read_text().splitlines()[0]
    for term in ('inter', 'image_image', 'text_text', 'kl_image', 'kl_text', 'w_kl_text', 'text_sigma2', 'match_scale'):
        assert term in log, term


def test_load_run_rebuilds_and_evaluate_run_uses_the_match_probability(trained):
    out, exp = trained
    lr = load_run(exp.run.dir, device='cpu')
    assert isinstance(lr.model, ProbCLIPModel) and lr.method.name == 'probclip'
    batch = exp.collate([exp.datasets['test'][i] for i in range(4)])
    exp.model.eval()
    with torch.no_grad():
        a, b = exp.model.embed(batch), lr.model.embed(batch)
    for side in ('image', 'text'):
        for k in ('mu', 'logvar'):
            torch.testing.assert_close(a[side][k], b[side][k])
    sc = lr.scorer()
    assert isinstance(sc, MatchProbabilityScorer) and sc.scale == pytest.approx(float(exp.model.match.scale))
    ev = evaluate_run(exp.run.dir, exp.manifest, 'test', n_resamples=10, device='cpu', out_dir=out, figures=False,
                      families='retrieval,protocol')
    assert ev.embeddings.meta['scorer']['name'] == 'match_probability'
    rows = exp.manifest[exp.manifest['split'] == 'test'].reset_index(drop=True)
    saved = EmbeddingSet.load(embedding_path(exp.run.dir, rows, 'test'))  # what 07 and later evaluations reuse
    assert saved.meta['scorer'] == sc.spec() and {'mu', 'logvar', 'embeds'} <= set(saved.image)
    m = load_json(exp.run.dir / 'metrics.json')
    for k in ('test/t2i/R@1', 'test/mu_dot/t2i/R@1', 'test/uncertainty/t2i/R@1/bin01', 'test/calibration/match/ECE',
              'test/pmrp/t2i/R-Precision', 'test/mu_dot/pmrp/t2i/R-Precision'):
        assert k in m, k
    assert 0 <= m['test/calibration/t2i_top1/ECE'] <= 1


def test_07_scores_the_run_by_its_match_probability(trained, tmp_path):
    "The evaluation notebook reloads the run through the registry and ranks by the method's scorer."
    from cxrlab.report import run_notebook
    out, exp = trained
    r = run_notebook(ROOT / 'nbs' / '07_retrieval_eval.ipynb', {'runs': str(exp.run.dir), 'n_resamples': 10, 'device': 'cpu',
                                                                 'families': 'retrieval'},
                     run_name='compare', reports_dir=tmp_path / 'reports', out_dir=out, html=False, progress=False)
    m = load_json(r.run_dir / 'metrics.json')
    assert 'test/probclip/t2i/R@10' in m and 'test/probclip/uncertainty/t2i/R@1/bin01' in m
    for meta in (exp.run.dir / 'embeddings').glob('*.json'):
        assert load_json(meta)['meta']['scorer']['name'] == 'match_probability'


def test_single_view_single_section_studies_fall_back_to_augmented_copies(tmp_path):
    exp = setup_probclip(prefix='05_probclip', out_dir=str(tmp_path), run_name='frontal', **SMALL)
    ds = exp.datasets['train'].ds
    ds.texts['impression'] = [''] * len(ds.texts['impression'])  # studies with findings only
    sp = StudyPairs(ds, word_dropout=0.3)
    torch.manual_seed(0)
    s = sp[0]
    assert s['view_copy'] and s['section_copy'] and s['section_mask'].all()
    assert s['texts'][1] != s['texts'][0]
    kept = [w for w in s['texts'][0].split() if is_protected_word(w)]
    assert all(w in s['texts'][1] for w in kept)  # negation / laterality words survive the copy


def test_bad_options_are_refused_by_name(tmp_path):
    with pytest.raises(KeyError, match=r"unknown option\(s\) \{'model': \['distanse'\]\}"):
        setup_probclip(model_options={'distanse': 'csd'}, out_dir=str(tmp_path), **SMALL)
    with pytest.raises(ValueError, match="distance='kl'"):
        setup_probclip(model_options={'distance': 'kl'}, out_dir=str(tmp_path), **SMALL)
    with pytest.raises(ValueError, match="objective='hinge'"):
        setup_probclip(loss_options={'objective': 'hinge'}, out_dir=str(tmp_path), **SMALL)
    with pytest.raises(ValueError, match="mode 'study'"):
        from cxrlab.data import CXRDataset
        StudyPairs(CXRDataset(setup_probclip(out_dir=str(tmp_path), **SMALL).manifest.head(4), 'pair'))
    with pytest.raises(ValueError, match='word_dropout=-0.1'):
        augment_report('No effusion.', random.Random(0), word_dropout=-0.1)
