"""ReMiX: the shared sentence splitter on SynthCXR reports, padded chunks through the real data path, one tokenizer call
and one chunk forward per batch, BioViL / GLoRIA release folders (written offline with random weights), and runs
that reload and show up in 07's evaluation."""
import json, re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from cxrlab.core import load_json
from cxrlab.data import CXRDataset, build_manifest, make_collate, make_transforms, split_sentences
from cxrlab.models import PretrainedWeightsError, create_model, write_wordpiece_vocab
from cxrlab.remix import (LOSS_COMBOS, LOSS_FORMS, ReMiXLoss, ReMiXModel, default_mask_token_id, sentence_queries,
                          setup_remix)
from cxrlab.report import run_notebook

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / 'nbs' / '04_remix.ipynb'
WORDS = ('no acute cardiopulmonary process pleural effusion left right small large pneumothorax consolidation lobe '
         'heart size normal lungs clear lower upper zone base nodule mass opacity').split()


@pytest.fixture(scope='module')
def synth():
    manifest, _ = build_manifest('synth', n_patients=48, image_size=64)
    return manifest


def test_splitter_reproduces_synthcxr_sentences(synth):
    "Every section splits into exactly the sentences its generator recorded (a record may hold several sentences)."
    n, numbered = 0, 0
    for _, row in synth.iterrows():
        for section in ('findings', 'impression'):
            records = [s['text'] for s in row['sentences'] if s['section'] == section]
            numbered += sum(bool(re.match(r'\d[.)] ', r)) for r in records)
            records = [re.sub(r'^\d{1,2}[.)]\s+', '', r) for r in records]  # a numbered impression item loses its number
            assert split_sentences(row[section]) == [s for r in records for s in split_sentences(r)], (section, row[section])
            n += len(records)
    assert n > 200 and numbered > 0


def test_sentence_queries_have_locations_and_their_own_image(synth):
    rows = synth[synth['split'] == 'train'].reset_index(drop=True)
    queries, skipped = sentence_queries(rows)
    assert queries and skipped.get('no_location', 0) > 0  # heart-size / normal sentences are counted, not queried
    facts = [frozenset(f) for f in rows['image_facts']]
    assert all(q['facts'] <= facts[q['row']] for q in queries)
    assert all(any(f.split('|')[-1].startswith(('side:', 'zone:')) for f in q['facts']) for q in queries)


def _batches(manifest, tokenizer, max_sentences, n=6):
    ds = CXRDataset(manifest.head(n), 'sentences', make_transforms('tiny'), section='findings', max_sentences=max_sentences)
    return next(iter(DataLoader(ds, batch_size=n, collate_fn=make_collate(tokenizer, ('text', 'sentences')))))


@pytest.mark.parametrize('form', LOSS_FORMS)
def test_padded_chunks_change_the_loss_by_less_than_1e6(synth, form):
    "The same samples with 16 and with 32 chunk slots (16 more padded chunks each): the loss of every combo agrees."
    b = create_model('tiny')
    few, many = _batches(synth, b.tokenizer, 16), _batches(synth, b.tokenizer, 32)
    assert many['sentence_mask'].sum() == few['sentence_mask'].sum() and many["sentences_input_ids"].shape[1] == 32
    for combo in LOSS_COMBOS:
        model, loss = ReMiXModel(b.model, combo).eval(), ReMiXLoss(form, self_repulsion=0.5)
        with torch.no_grad():
            a, c = loss(model(few))['loss'], loss(model(many))['loss']
        assert abs(a - c) < 1e-6, (combo, form, a, c)


def test_one_tokenizer_call_per_key_and_one_chunk_forward(synth):
    b = create_model('tiny')
    calls = []
    tok = lambda texts, max_length=None: (calls.append(len(texts)), b.tokenizer(texts, max_length=max_length))[1]
    batch = _batches(synth, tok, 12, n=5)
    assert calls == [5, 5 * 12]  # the reports, then every chunk of the batch at once
    forwards = []
    hook = b.model.text_tower.register_forward_hook(lambda *a: forwards.append(a[1][0].shape[0]))
    try:
        for combo, n_text in (('ig_tg', 1), ('ig_tgl', 2), ('igl_tgl', 2)):
            forwards.clear(); ReMiXModel(b.model, combo).train()(batch)
            assert len(forwards) == n_text, (combo, forwards)
        assert forwards[1] == int(batch['sentence_mask'].sum())  # only the real chunks go through the tower
        forwards.clear()
        ReMiXModel(b.model, 'ig_tgl', mlm_probability=0.15, mask_token_id=default_mask_token_id(b.config),
                   vocab_size=b.config['text']['vocab_size']).train()(batch)
        assert len(forwards) == 3  # + the masked global text
    finally:
        hook.remove()


def _bert_snapshot(folder: Path, prefix: str = 'bert.') -> Path:
    "A CXR-BERT-style text snapshot: config.json, pytorch_model.bin (BERT under `prefix`, an MLM head), vocab.txt."
    from transformers import BertConfig, BertModel
    vocab = write_wordpiece_vocab(folder, WORDS)
    n = len((vocab / 'vocab.txt').read_text().split())
    cfg = BertConfig(vocab_size=n, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    cfg.save_pretrained(folder)
    bert = BertModel(cfg, add_pooling_layer=False)
    torch.save({**{prefix + k: v for k, v in bert.state_dict().items()}, 'cls.predictions.bias': torch.zeros(n)},
               folder / 'pytorch_model.bin')
    return folder


@pytest.fixture(scope='module')
def biovil_dir(tmp_path_factory):
    "A BioViL release folder: the image checkpoint next to the CXR-BERT files, random weights, small text tower."
    import torchvision
    d = _bert_snapshot(tmp_path_factory.mktemp('biovil'))
    trunk = torchvision.models.resnet50(weights=None); trunk.fc = torch.nn.Identity()
    sd = {'encoder.encoder.' + k: v for k, v in trunk.state_dict().items()}
    sd['projector.model.0.weight'] = torch.zeros(128, 2048, 1, 1)
    torch.save(sd, d / 'biovil_image_resnet50_proj_size_128.pt')
    return d


def test_biovil_folder_trains_with_mlm_and_reloads(biovil_dir, tmp_path):
    r = run_notebook(NB, {'loss_combo': 'igl_tgl', 'backbone': 'biovil', 'pretrained': f'local-dir:{biovil_dir}',
                          'model_overrides': json.dumps({'embed_dim': 32}), 'image_size': 64, 'epochs': 1, 'batch_size': 8,
                          'n_patients': 48, 'mlm_probability': 0.15, 'n_resamples': 10, 'device': 'cpu'},
                     run_name='biovil', reports_dir=tmp_path / 'reports', out_dir=tmp_path / 'runs', html=False, progress=False)
    params = load_json(r.run_dir / 'params.json')['params']
    cfg = params['method']['config']
    assert cfg['backbone']['loaded']['image_trunk'].endswith('biovil_image_resnet50_proj_size_128.pt')
    assert cfg['backbone']['loaded']['text_trunk'] == str(biovil_dir) and params['tokenizer']['kind'] == 'wordpiece'
    assert params['model_name'] == 'synth-biovil-frontal-findings-igl_tgl-mlm0.15'
    from cxrlab.train import load_run
    lr = load_run(r.run_dir)
    mask_id = lr.tokenizer.tok.mask_token_id
    assert cfg['model']['mask_token_id'] == mask_id == lr.model.mask_token_id and lr.model.mlm_head is not None
    tf = lr.eval_transform
    assert (tf.resize, tf.crop) == (68, 64) and lr.model.dual.image_tower.trunk.layer4[0].conv1.weight.shape[0] == 512
    log = (r.run_dir / 'train_log.csv').read_text().splitlines()
    assert 'mlm' in log[0].split(',') and 'il2tl' in log[0].split(',')
    m = load_json(r.run_dir / 'metrics.json')
    assert m['train/steps'] >= 1 and 'test/sentence_query/R@10' in m and 'test/label_query_ci/max/macro/R-Precision' in m


def test_gloria_folder_loads(tmp_path, synth):
    "GLoRIA's Lightning checkpoint (image and BERT inside) plus a text/ snapshot for config and vocabulary."
    import torchvision
    d = tmp_path / 'gloria'; d.mkdir()
    text = _bert_snapshot(d / 'text')
    from transformers import BertConfig, BertModel
    bert = BertModel(BertConfig.from_pretrained(text), add_pooling_layer=False)
    trunk = torchvision.models.resnet50(weights=None); trunk.fc = torch.nn.Identity()
    sd = {**{'gloria.img_encoder.model.' + k: v for k, v in trunk.state_dict().items()},
          **{'gloria.text_encoder.model.' + k: v for k, v in bert.state_dict().items()}}
    torch.save({'state_dict': sd, 'epoch': 1}, d / 'chexpert_resnet50.ckpt')
    exp = setup_remix({'loss_combo': 'ig_tgl'}, max_chunks=4, backbone='gloria', pretrained=f'local-dir:{d}',
                      model_overrides={'embed_dim': 32}, image_size=64, n_patients=48, epochs=1, out_dir=str(tmp_path / 'runs'))
    assert exp.params['method']['config']['backbone']['loaded']['text_trunk'].endswith('chexpert_resnet50.ckpt')
    assert exp.datasets['train'].max_sentences == 4
    x = exp.datasets['train'][0]['image']
    assert x.shape == (3, 64, 64) and x.min() < -0.5  # GLoRIA normalises with mean = std = 0.5
    with torch.no_grad():
        out = exp.model.eval()(next(iter(exp.loader('train', batch_size=4))))
    assert out['scales']['tl'][0].shape[:2] == (4, 4)


def test_a_missing_backbone_folder_is_a_clear_error(tmp_path, synth):
    with pytest.raises(PretrainedWeightsError, match='does not exist'):
        setup_remix({'loss_combo': 'ig_tgl'}, backbone='biovil', pretrained=f'local-dir:{tmp_path}/absent', n_patients=48,
                    out_dir=str(tmp_path / 'runs'))


def test_loss_combo_all_writes_one_block_per_combo_and_07_evaluates_the_runs(tmp_path):
    r = run_notebook(NB, {'loss_combo': 'all', 'epochs': 1, 'n_patients': 48, 'n_resamples': 10, 'device': 'cpu'},
                     run_name='all', reports_dir=tmp_path / 'reports', out_dir=tmp_path / 'runs', html=False, progress=False)
    params = load_json(r.run_dir / 'params.json')['params']
    children = [Path(c) for c in params['child_runs']]
    assert [c.name for c in children] == [f'all-{c}' for c in LOSS_COMBOS]
    m = load_json(r.run_dir / 'metrics.json')
    for c in LOSS_COMBOS:
        assert f'{c}/test/sentence_query/R@10' in m and f'{c}/test/t2i/R@10' in m
    assert 'compare/igl_tgl_minus_ig_tg/test/sentence_query/R@10_diff_ci_low' in m
    from cxrlab.report import trained_runs
    assert trained_runs(r.run_dir) == [str(c) for c in children]  # what the pipeline hands to 07
    e = run_notebook(ROOT / 'nbs' / '07_retrieval_eval.ipynb', {'runs': ','.join(str(c) for c in children[:2]), 'n_resamples': 10,
                                                              'device': 'cpu'},
                     run_name='eval', reports_dir=tmp_path / 'reports', out_dir=tmp_path / 'runs', html=False, progress=False)
    em = load_json(e.run_dir / 'metrics.json')
    for c in children[:2]:
        assert f'test/{c.name}/t2i/R@10' in em and f'test/{c.name}/sentence_query/R@10' in em
