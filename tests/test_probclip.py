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


# --- the seed's recipe (issue 24)

def _seed_csd(mu_x, logvar_x, mu_y, logvar_y, eps=1e-6):
    "MedProbClip.csd (FOURM-LAB/MedProbCLIP medprobclip_model.py), re-written."
    sx, sy = logvar_x.exp().clamp_min(eps), logvar_y.exp().clamp_min(eps)
    dx = mu_x.unsqueeze(1) - mu_y.unsqueeze(0)
    s_sum = sx.unsqueeze(1) + sy.unsqueeze(0)
    return 0.5 * ((dx * dx) / s_sum + (s_sum + eps).log()).sum(-1)


def _seed_total(views, a, b, lambda_I=1.0, lambda_T=0.1, beta_I=1e-4, beta_T=1e-4, eps=1e-6):
    "MedProbClipLoss.forward with the training script's weights, re-written from medprobclip_losses.py."
    F = torch.nn.functional
    def sym(x, y):
        logits = -max(a, 1e-3) * _seed_csd(*x, *y, eps=eps) + b
        t = torch.arange(len(logits))
        return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2
    kl = lambda mu, lv: (0.5 * (lv.exp() + mu.pow(2) - 1.0 - lv)).sum(-1).mean()
    i1, t1, i2, t2 = views
    inter = (sym(i1, t1) + sym(i1, t2) + sym(i2, t1) + sym(i2, t2)) / 4
    vib = beta_I * (kl(*i1) + kl(*i2)) / 2 + beta_T * (kl(*t1) + kl(*t2)) / 2
    return inter + lambda_I * sym(i1, i2) + lambda_T * sym(t1, t2) + vib


def test_default_loss_is_the_seeds_loss_with_its_training_weights():
    "ProbCLIPLoss() (defaults: λ_I 1, λ_T 0.1, β 1e-4) on small Gaussians equals the seed's loss recomputed its own way."
    from cxrlab.probclip import ProbCLIPLoss
    g = torch.Generator().manual_seed(3)
    B, D = 6, 5
    r = lambda: torch.randn(B, D, generator=g, dtype=torch.float64)
    i1, i2, t1, t2 = [(r() * 2, r().clamp(-6, 6)) for _ in range(4)]
    out = {'image_mu': torch.stack([i1[0], i2[0]], 1), 'image_logvar': torch.stack([i1[1], i2[1]], 1),
           'text_mu': torch.stack([t1[0], t2[0]], 1), 'text_logvar': torch.stack([t1[1], t2[1]], 1),
           'view_mask': torch.ones(B, 2, dtype=torch.bool), 'section_mask': torch.ones(B, 2, dtype=torch.bool),
           'match_scale': torch.tensor(0.8, dtype=torch.float64), 'match_shift': torch.tensor(-0.4, dtype=torch.float64), 'distance': 'csd'}
    loss = ProbCLIPLoss()
    assert (loss.lambda_image, loss.lambda_text, loss.w['kl_image'].weight, loss.w['kl_text'].weight) == (1.0, 0.1, 1e-4, 1e-4)
    got = loss(out)
    ref = _seed_total((i1, t1, i2, t2), 0.8, -0.4, eps=0.)  # the seed's formula without its 1e-6 guards
    assert float(got['loss']) == pytest.approx(float(ref), rel=1e-9, abs=1e-9)
    seed_number = _seed_total((i1, t1, i2, t2), 0.8, -0.4)  # with them (σ² ≥ 1e-6, log(σx² + σy² + 1e-6)): they move it by < 1e-5
    assert abs(float(got['loss']) - float(seed_number)) < 1e-5
    other = _seed_total((i1, t1, i2, t2), 0.8, -0.4, lambda_I=0.5, lambda_T=0.5, beta_I=1e-3, beta_T=1e-3)
    assert abs(float(other) - float(ref)) > 1e-3  # the weights matter on this example


def test_default_model_is_the_seeds_head_and_the_seed_preset_its_init(tmp_path):
    from cxrlab.models import create_model
    from cxrlab.probclip import PROBCLIP, build_probclip, resolve_probclip_options
    b = create_model('tiny')
    m = build_probclip(PROBCLIP.config(b.config), b.model)
    assert not m.normalize_mu and m.image_uncertainty.clamp == 'hard' and m.image_uncertainty.form == 'linear'
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        e = m.eval().encode_image(x)
        torch.testing.assert_close(e['mu'], b.model.encode_image(x)['global'])  # μ as the backbone gives it
    ro = resolve_probclip_options('seed', {})
    s = build_probclip(PROBCLIP.config(b.config, ro['model'], ro['loss'], ro['data']))
    assert (float(s.match.scale), float(s.match.shift)) == (1.0, 0.0)
    with torch.no_grad():
        lv = s.eval().encode_image(x)['logvar']
    assert lv.std() > 0 and lv.abs().max() <= 6  # PyTorch's default init: not a constant start
