"""SynthCXR foundation towers (cxrlab.foundation): the corpus shares nothing with the evaluation data, the towers are
written in the released-weights formats and load back through the path every method stage takes, the cache hits on
a second run, and the 02b baseline fine-tunes from them end to end. One tiny foundation is trained per session."""
import json
import os

import pytest
import torch

from cxrlab.core import load_json
from cxrlab.data import build_manifest
from cxrlab.foundation import (FOUNDATION_SEED, build_foundation, cached_foundation, foundation_corpus,
                               foundation_fingerprint, foundation_spec)
from cxrlab.models import (ClipBPETokenizer, PretrainedWeightsError, create_model, foundation_dir,
                           to_open_clip_state_dict)

N, SIZE = 24, 64  # patients of the corpus and of the evaluation data; image side


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    "A private CXRLAB_CACHE for this module (the foundation's `latest` pointer must not leak into other tests)."
    old = os.environ.get('CXRLAB_CACHE')
    os.environ['CXRLAB_CACHE'] = str(tmp_path_factory.mktemp('foundation-cache'))
    yield os.environ['CXRLAB_CACHE']
    if old is None: os.environ.pop('CXRLAB_CACHE')
    else: os.environ['CXRLAB_CACHE'] = old


@pytest.fixture(scope='module')
def spec():
    return foundation_spec('tiny,tiny_vit', n_patients=N, image_size=SIZE, epochs=1, batch_size=16, lr=1e-3)


@pytest.fixture(scope='module')
def foundation(cache, spec):
    folder, record, hit = build_foundation(spec, device='cpu', precision='fp32', n_resamples=20)
    assert not hit
    return folder, record


def _checkpoint(folder, name):
    return torch.load(folder / name / 'open_clip_pytorch_model.bin', weights_only=True)


def _assert_same(model, sd):
    own = to_open_clip_state_dict(model)
    assert sorted(own) == sorted(sd)
    for k, v in sd.items():
        assert torch.equal(own[k], v), k


# ---- the corpus ---------------------------------------------------------------------------------------------------
def test_corpus_shares_no_patient_and_no_report_with_the_evaluation_data(cache):
    corpus, record = foundation_corpus(N, SIZE, eval_seed=0)
    evaluation, _ = build_manifest('synth', n_patients=N, image_size=SIZE, seed=0)  # the call setup_experiment makes
    assert len(corpus) > 0 and record['corpus_seed'] == FOUNDATION_SEED
    assert not set(corpus['subject_id']) & set(evaluation['subject_id'])
    assert not set(corpus['report']) & set(evaluation['report'])  # no report of any split, let alone the test split
    assert not set(corpus['study_id']) & set(evaluation['study_id'])
    assert record['dropped_shared_patient'] == 0 and record['dropped_shared_test_report'] == 0


def test_corpus_seed_must_differ_from_the_evaluation_seed(cache):
    with pytest.raises(ValueError, match='equals the evaluation seed'):
        foundation_corpus(N, SIZE, corpus_seed=5, eval_seed=5)


# ---- formats and loading ------------------------------------------------------------------------------------------
def test_folder_layout(foundation):
    folder, record = foundation
    assert (folder / 'foundation.json').exists() and load_json(folder / 'foundation.json')['fingerprint'] == folder.name
    for name in ('tiny', 'tiny_vit'):
        d = folder / name
        for f in ('open_clip_config.json', 'open_clip_pytorch_model.bin', 'heads.safetensors', 'text/config.json',
                  'text/model.safetensors', 'text/vocab.json', 'text/merges.txt', 'text/tokenizer_config.json'):
            assert (d / f).exists(), f
        cfg = json.loads((d / 'open_clip_config.json').read_text())
        assert cfg['cxrlab_backbone']['name'] == name
    # the ViT has an open_clip model config open_clip itself can build; the small CNN has none
    assert json.loads((folder / 'tiny_vit' / 'open_clip_config.json').read_text())['model_cfg']['vision_cfg']['patch_size'] == 8
    assert json.loads((folder / 'tiny' / 'open_clip_config.json').read_text())['model_cfg'] is None


@pytest.mark.parametrize('name', ['tiny', 'tiny_vit'])
def test_every_way_a_stage_names_the_foundation_loads_the_same_tensors(foundation, name):
    folder, _ = foundation
    sd = _checkpoint(folder, name)
    for pretrained in ('foundation', f'foundation:{folder.name}', f'local-dir:{folder}', f'local-dir:{folder / name}'):
        b = create_model(name, pretrained=pretrained, image_size=SIZE)
        _assert_same(b.model, sd)
        assert b.config['loaded'] == {'model': str(folder / name / 'open_clip_pytorch_model.bin')}
    fresh = to_open_clip_state_dict(create_model(name, image_size=SIZE).model)
    assert any(not torch.equal(fresh[k], v) for k, v in sd.items())  # not what a random init gives


def test_open_clip_builds_the_vit_foundation_from_its_folder(foundation):
    "The ViT tower's checkpoint is a real open_clip checkpoint: open_clip's own loader reads it."
    import open_clip
    folder, _ = foundation
    d = folder / 'tiny_vit'
    ref = open_clip.create_model(f'local-dir:{d}').eval()
    ours = create_model('tiny_vit', pretrained='foundation', image_size=SIZE).model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(ref.encode_image(x), ours.image_tower(x)['global'], atol=1e-5)


def test_text_folder_holds_the_text_tower_and_a_tokenizer_transformers_reads(foundation):
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer
    folder, _ = foundation
    text = folder / 'tiny' / 'text'
    model = create_model('tiny', pretrained='foundation', image_size=SIZE).model
    saved = load_file(str(text / 'model.safetensors'))
    own = model.text_tower.text.state_dict()
    assert sorted(saved) == sorted(own) and all(torch.equal(saved[k], own[k]) for k in saved)
    cfg = json.loads((text / 'config.json').read_text())
    assert (cfg['vocab_size'], cfg['hidden_size'], cfg['num_hidden_layers']) == (49408, 64, 2)
    reports = ['Small left pleural effusion. No pneumothorax.', 'Moderate cardiomegaly; lungs are clear.']
    hf = CLIPTokenizer.from_pretrained(str(text))
    ours = ClipBPETokenizer(160)(reports)
    for i, r in enumerate(reports):
        n = int(ours['attention_mask'][i].sum())
        assert hf(r)['input_ids'] == ours['input_ids'][i, :n].tolist()


# ---- the cache ----------------------------------------------------------------------------------------------------
def test_second_run_is_a_cache_hit_that_trains_nothing(foundation, spec, monkeypatch):
    import cxrlab.foundation as fnd
    folder, record = foundation
    monkeypatch.setattr(fnd, 'pretrain_backbone', lambda *a, **k: pytest.fail('a cache hit must not train'))
    hit_folder, hit_record, hit = fnd.build_foundation(spec, device='cpu', precision='fp32')
    assert hit and hit_folder == folder and hit_record['towers'].keys() == record['towers'].keys()
    assert cached_foundation(foundation_fingerprint(spec)) == folder


def test_fingerprint_follows_config_and_seed(spec):
    fp = foundation_fingerprint(spec)
    assert fp == foundation_fingerprint(dict(spec))
    assert fp != foundation_fingerprint({**spec, 'corpus_seed': spec['corpus_seed'] + 1})
    assert fp != foundation_fingerprint({**spec, 'epochs': 2})


def test_report_metrics_are_measured_with_cis(foundation):
    _, record = foundation
    for name, r in record['towers'].items():
        m = r['metrics']
        for k in ('labels/AUROC_macro', 'mlm/accuracy', 't2i/R@1', 't2i/R@10'):
            assert m[f'{k}_ci_low'] <= m[k] <= m[f'{k}_ci_high'], (name, k)
        assert 0 <= m['mlm/accuracy'] <= 1 and m['mlm/n_masked'] > 0
        assert len(r['history']) == 1 and r['history'][0]['loss'] > 0


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_missing_foundation_or_backbone_is_a_clear_error(foundation, tmp_path, monkeypatch):
    folder, _ = foundation
    with pytest.raises(PretrainedWeightsError, match="towers for \\['tiny', 'tiny_vit'\\], not for rclip_mini"):
        create_model('rclip_mini', pretrained=f'local-dir:{folder}')
    with pytest.raises(PretrainedWeightsError, match='no finished foundation'):
        foundation_dir('0000deadbeef0000')
    monkeypatch.setenv('CXRLAB_CACHE', str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match='cxrlab run nbs/02c_foundation.ipynb'):
        create_model('tiny', pretrained='foundation')
    with pytest.raises(PretrainedWeightsError, match='no published weights and .* holds no open_clip checkpoint'):
        create_model('tiny', pretrained=f'local-dir:{tmp_path}')


# ---- a method stage fine-tunes from it ------------------------------------------------------------------------------
def test_baseline_fine_tunes_from_the_foundation(foundation, tmp_path):
    "02b's experiment with pretrained='foundation' starts from the foundation's tensors, records them, and trains on."
    from cxrlab.train import setup_experiment
    folder, _ = foundation
    sd = _checkpoint(folder, 'tiny')
    exp = setup_experiment('clip', prefix='02b_train', pretrained='foundation', n_patients=N, image_size=SIZE, epochs=1,
                           batch_size=16, device='cpu', precision='fp32', out_dir=str(tmp_path))
    _assert_same(exp.model, sd)
    rec = load_json(exp.run.dir / 'params.json')['params']
    assert rec['pretrained'] == 'foundation'
    assert rec['method']['config']['backbone']['loaded'] == {'model': str(folder / 'tiny' / 'open_clip_pytorch_model.bin')}
    exp.fit()
    after = to_open_clip_state_dict(exp.model)
    assert any(not torch.equal(after[k], v) for k, v in sd.items() if v.is_floating_point())  # it fine-tuned


def test_demo_backbone_with_a_learned_vocabulary_round_trips(cache, tmp_path):
    "The demo backbone's WordPiece vocabulary is learned from the corpus's train reports, shipped in text/ and reused."
    from transformers import AutoModel
    from cxrlab.train import setup_experiment
    spec = foundation_spec('demo', n_patients=N, image_size=SIZE, epochs=1, batch_size=16, lr=1e-3)
    folder, record, _ = build_foundation(spec, device='cpu', precision='fp32', n_resamples=10)
    d = folder / 'demo'
    assert (d / 'text' / 'tokenizer.json').exists() and (d / 'text' / 'config.json').exists()
    sd = _checkpoint(folder, 'demo')
    b = create_model('demo', pretrained=f'foundation:{folder.name}', image_size=SIZE)  # no corpus: the vocabulary comes from text/
    _assert_same(b.model, sd)
    assert b.tokenizer.source == str(d / 'text') and b.tokenizer.vocab_size == b.config['text']['vocab_size']
    hf = AutoModel.from_pretrained(str(d / 'text'))  # the text folder is a Hugging Face BERT folder
    own = b.model.text_tower.transformer.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in hf.state_dict().items() if k in own)
    exp = setup_experiment('clip', pretrained=f'foundation:{folder.name}', backbone='demo', n_patients=N, image_size=SIZE,
                           epochs=1, batch_size=16, device='cpu', precision='fp32', out_dir=str(tmp_path))
    _assert_same(exp.model, sd)  # the stage's own train reports did not replace the foundation's vocabulary
    assert exp.tokenizer.source == str(d / 'text')
