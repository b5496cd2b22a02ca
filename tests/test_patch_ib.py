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
