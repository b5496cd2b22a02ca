"""Patch-IB with a pretrained BiomedCLIP-layout folder (open_clip config + weights, written offline with random weights)."""
import json
from pathlib import Path

import pytest

from cxrlab.core import load_json
from cxrlab.models import SMALL_OVERRIDES, create_model, save_open_clip_checkpoint, write_wordpiece_vocab
from cxrlab.report import NotebookFailed, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / 'nbs' / '03_patch_ib.ipynb'
WORDS = 'no acute cardiopulmonary process pleural effusion left right small large pneumothorax consolidation lobe'.split()


@pytest.fixture(scope='module')
def biomedclip_dir(tmp_path_factory):
    "A BiomedCLIP release folder as the hub has it (open_clip_config.json, weights, vocab), small towers, random weights."
    tmp = tmp_path_factory.mktemp('biomedclip')
    vocab = write_wordpiece_vocab(tmp / 'vocab', WORDS)
    d = save_open_clip_checkpoint(create_model('biomedclip', tokenizer_dir=vocab, **SMALL_OVERRIDES['biomedclip']), tmp / 'release')
    (d / 'vocab.txt').write_text((vocab / 'vocab.txt').read_text())
    assert {'open_clip_config.json', 'open_clip_pytorch_model.bin', 'vocab.txt'} <= {p.name for p in d.iterdir()}
    return d


def test_variant_c_runs_from_a_biomedclip_folder(biomedclip_dir, tmp_path):
    small = {k: v for k, v in SMALL_OVERRIDES['biomedclip'].items() if k != 'image_size'}
    r = run_notebook(NB, {'variant': 'C', 'backbone': 'biomedclip', 'pretrained': f'local-dir:{biomedclip_dir}',
                          'model_overrides': json.dumps(small), 'image_size': 64, 'epochs': 1, 'batch_size': 8,
                          'n_patients': 48, 'n_resamples': 10, 'device': 'cpu'},
                     run_name='bmc', reports_dir=tmp_path / 'reports', out_dir=tmp_path / 'runs', html=False, progress=False)
    params = load_json(r.run_dir / 'params.json')['params']
    assert params['method']['config']['backbone']['loaded']['model'].endswith('open_clip_pytorch_model.bin')
    assert params['tokenizer']['kind'] == 'wordpiece'  # the vocabulary travels with the run ...
    from cxrlab.models import WordPieceTokenizer
    from cxrlab.train import load_run
    lr = load_run(r.run_dir)  # ... so it reloads without the weights folder
    assert isinstance(lr.tokenizer, WordPieceTokenizer) and lr.model.variant == 'C'
    assert lr.tokenizer(['left pleural effusion'])['input_ids'].tolist() == create_model(
        'biomedclip', pretrained=f'local-dir:{biomedclip_dir}', **SMALL_OVERRIDES['biomedclip']).tokenizer(['left pleural effusion'])['input_ids'].tolist()
    m = load_json(r.run_dir / 'metrics.json')
    assert m['train/steps'] >= 1 and 'test/t2i/R@10' in m and 'test/grounding/n_pairs' in m


def test_a_missing_weights_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NotebookFailed, match='PretrainedWeightsError.*does not exist'):
        run_notebook(NB, {'variant': 'C', 'backbone': 'biomedclip', 'pretrained': f'local-dir:{tmp_path}/absent', 'epochs': 1},
                     run_name='missing', reports_dir=tmp_path / 'reports', out_dir=tmp_path / 'runs', html=False, progress=False)


def test_the_seed_preset_trains_d_as_its_config(biomedclip_dir, tmp_path):
    "`-p preset seed -p variant D`: the seed's model_d_topk options, both contrastive terms, retrieval on both embeddings."
    small = {k: v for k, v in SMALL_OVERRIDES['biomedclip'].items() if k != 'image_size'}
    r = run_notebook(NB, {'variant': 'D', 'preset': 'seed', 'pretrained': f'local-dir:{biomedclip_dir}',
                          'model_overrides': json.dumps(small), 'image_size': 64, 'epochs': 1, 'batch_size': 8,
                          'n_patients': 48, 'n_resamples': 10, 'device': 'cpu'},
                     run_name='seed-d', reports_dir=tmp_path / 'reports', out_dir=tmp_path / 'runs', html=False, progress=False)
    params = load_json(r.run_dir / 'params.json')['params']
    assert params['seed_config'] == 'model_d_topk' and params['backbone'] == 'biomedclip'
    t, cfg = params['train'], params['method']['config']
    assert (t['lr'], t['layer_decay'], t['grad_accum'], t['warmup_steps'], t['weight_decay']) == (1e-5, 0.85, 3, 500, 0.02)
    assert (cfg['loss']['local_weight'], cfg['loss']['sparsity_weight'], cfg['loss']['local_warmup']) == (1000., 5., 1111.)
    assert (cfg['model']['ratio_start'], cfg['model']['k_ratio'], cfg['model']['ratio_anneal_steps']) == (0.5, 0.25, 2222.)
    logged = (r.run_dir / 'train_log.csv').read_text().splitlines()[0].split(',')
    assert {'nce_mask', 'nce_full', 'local', 'sparsity', 'consistency', 'w_local', 'w_sparsity'} <= set(logged)
    m = load_json(r.run_dir / 'metrics.json')
    assert 'test/t2i/R@10' in m and 'test/full/t2i/R@10' in m  # retrieval on the masked and on the full embedding
