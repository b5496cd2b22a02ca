"""ReMiX: the shared sentence splitter on SynthCXR reports, padded chunks through the real data path, one tokenizer call
and one chunk forward per batch, BioViL / GLoRIA release folders (written offline with random weights), and runs
that reload and show up in 07's evaluation."""
import json, math, random, re
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
        model, loss = ReMiXModel(b.model, combo).eval(), ReMiXLoss(form, self_repulsion=0. if form == 'v2' else 0.5)
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


# --- the seed's recipe (issue 24): v2 loss, fixed-count chunking, the seed's DCG, the seed preset

def _seed_contrastive(img, txt, tau, txt_mask=None):
    "LocalGlobalContrasterV2.contrastive_loss (imadejski/remix contraster.py), re-written: unit inputs, means not re-normalised."
    if img.dim() == 3: img = img.mean(1)
    if txt.dim() == 3:
        if txt_mask is None: txt = txt.mean(1)
        else:
            m = txt_mask.float().unsqueeze(-1)
            txt = (txt * m).sum(1) / m.sum(1)
    sim = img @ txt.T / tau
    y = torch.arange(len(img))
    return (torch.nn.functional.cross_entropy(sim, y) + torch.nn.functional.cross_entropy(sim.T, y)) / 2


def _seed_repulsive(x, mask=None):
    "LocalGlobalContrasterV2.self_repulsive_loss, re-written."
    sims = x @ x.mT
    m = 1 - torch.eye(sims.shape[1]).expand(sims.shape)
    if mask is not None: m = m * (mask.float().unsqueeze(-1) @ mask.float().unsqueeze(-1).mT)
    return (m * sims).sum() / m.sum()


@pytest.mark.parametrize('combo', list(LOSS_COMBOS))
def test_v2_loss_is_the_seeds_arithmetic(combo):
    "With every chunk real (fixed-count chunking) loss_form='v2' is the seed's v2 loss to 1e-6; with padding, the seed's with its mask."
    g = torch.Generator().manual_seed(7)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)
    B, P, S, D = 6, 5, 4, 8
    ig, il, tg, tl = unit(B, D), unit(B, P, D), unit(B, D), unit(B, S, D)
    one, allp = torch.ones(B, 1, dtype=torch.bool), torch.ones(B, P, dtype=torch.bool)
    for tmask in (torch.ones(B, S, dtype=torch.bool), torch.rand(B, S, generator=g) > 0.4):
        tmask[:, 0] = True
        scales = {'ig': (ig[:, None], one), 'tg': (tg[:, None], one), 'il': (il, allp), 'tl': (tl, tmask)}
        isc, tsc = LOSS_COMBOS[combo]
        keep = {k: v for k, v in scales.items() if k[1] in (isc if k[0] == 'i' else tsc)}
        loss = ReMiXLoss('v2')
        got = loss({'scales': keep, 'logit_scale': torch.tensor(1.)})['loss']
        tau = float(1 / loss.logit_scale.exp())
        assert tau == pytest.approx(0.5)
        i_parts = [ig] + ([il] if 'l' in isc else [])
        t_parts = [(tg, None)] + ([(tl, tmask)] if 'l' in tsc else [])
        pairs = [_seed_contrastive(i, t, tau, m) for i in i_parts for t, m in t_parts]
        reps = ([_seed_repulsive(il)] if 'l' in isc else []) + ([_seed_repulsive(tl, tmask)] if 'l' in tsc else [])
        ref = sum(pairs) / len(pairs) + (sum(reps) / len(reps) if reps else 0.)
        assert abs(float(got) - float(ref)) < 1e-6, (combo, float(got), float(ref))


def _seed_dcg(rel):
    "evaluation/general_mimic_accuracy.py calculate_dcg, re-written."
    if len(rel) == 0: return 0.0
    return rel[0] + sum(rel[i] / math.log2(i + 1) for i in range(1, len(rel)))


def _seed_ndcg(rel):
    "calculate_ndcg: normalised by the same list sorted."
    idcg = _seed_dcg(sorted(rel, reverse=True))
    return 0.0 if idcg == 0 else _seed_dcg(rel) / idcg


def test_seed_dcg_reproduces_the_seeds_number():
    from cxrlab.metrics import ndcg_at_k, relevant_ranks
    from cxrlab.remix import dcg_remix_seed, ndcg_remix_seed
    ranked = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    sim = -torch.arange(15.).double()[None]
    rr = relevant_ranks(sim, torch.tensor(ranked).bool()[None])
    assert float(ndcg_remix_seed(rr, 5)) == pytest.approx(0.8099531166, abs=1e-9)  # = _seed_ndcg(ranked[:5])
    assert float(ndcg_remix_seed(rr, 5)) == pytest.approx(_seed_ndcg(ranked[:5]), abs=1e-12)
    assert float(ndcg_at_k(rr, 5)) == pytest.approx(0.6548086578, abs=1e-9)  # the proper nDCG of the same list
    rng = random.Random(0)
    for _ in range(200):  # random galleries and cut-offs: the seed's value wherever it reports one, NaN where it does not
        G, k = rng.randint(3, 40), rng.randint(1, 12)
        rel = [int(rng.random() < 0.3) for _ in range(G)]
        order = list(range(G)); rng.shuffle(order)
        scores = torch.tensor([-float(order.index(i)) for i in range(G)]).double()[None]
        ranked_rel = [rel[i] for i in sorted(range(G), key=lambda i: order.index(i))]
        rr = relevant_ranks(scores, torch.tensor(rel).bool()[None])
        got_n, got_d = float(ndcg_remix_seed(rr, k)), float(dcg_remix_seed(rr, k))
        if sum(rel) >= k and G >= k:
            assert got_n == pytest.approx(_seed_ndcg(ranked_rel[:k]), abs=1e-12)
            assert got_d == pytest.approx(_seed_dcg(ranked_rel[:k]), abs=1e-12)
        else:
            assert math.isnan(got_n) and math.isnan(got_d)


def test_fixed_count_chunking_reaches_the_batches(tmp_path):
    exp = setup_remix({'loss_combo': 'ig_tgl'}, chunking='fixed_count', num_chunks=3, n_patients=48, epochs=1,
                      out_dir=str(tmp_path / 'runs'), device='cpu')
    s = exp.datasets['train'][0]
    assert len(s['sentences']) == 3 and s['sentence_mask'].all()
    sents = split_sentences(s['text'])
    if len(sents) >= 3: assert ' '.join(s['sentences']) == ' '.join(sents)  # consecutive sentences, every one once
    else: assert s['sentences'][len(sents):] == [s['text']] * (3 - len(sents))
    with torch.no_grad():
        out = exp.model.eval()(next(iter(exp.loader('train', batch_size=4))))
    assert out['scales']['tl'][0].shape[:2] == (4, 3) and out['scales']['tl'][1].all()
    assert exp.run.params['chunking'] == 'fixed_count' and exp.params['method']['config']['data']['num_chunks'] == 3
    with pytest.raises(ValueError, match="chunking='words'"):
        setup_remix({'loss_combo': 'ig_tgl'}, chunking='words', n_patients=48, out_dir=str(tmp_path / 'runs'))


def test_seed_preset_runs_the_seeds_recipe(tmp_path):
    "-p preset seed: v2 loss, MLM 0.15 in one shared pass, 6 fixed-count chunks, the seed's optimiser settings; an explicit value wins."
    r = run_notebook(NB, {'preset': 'seed', 'loss_combo': 'igl_tgl', 'epochs': 1, 'lr': 1e-3, 'n_patients': 48, 'n_resamples': 10,
                          'device': 'cpu'},
                     run_name='seed', reports_dir=tmp_path / 'reports', out_dir=tmp_path / 'runs', html=False, progress=False)
    params = load_json(r.run_dir / 'params.json')['params']
    cfg = params['method']['config']
    assert cfg['loss']['loss_form'] == 'v2' and cfg['model']['mlm_probability'] == 0.15 and cfg['model']['mlm_shared_pass']
    assert cfg['data'] == {'chunking': 'fixed_count', 'num_chunks': 6} and params['remix_preset'] == 'seed'
    assert params['data']['images_per_study'] == 'one' and params['data']['frontal_only'] is True
    assert params['model_name'] == 'synth-tiny-frontal-findings-igl_tgl_v2-mlm0.15'
    train = params['train']
    assert train['lr'] == 1e-3 and train['batch_size'] == 16 and train['weight_decay'] == 0 and train['grad_clip'] is None
    assert train['warmup_ratio'] == pytest.approx(0.5)  # one epoch of warmup, at most half the run
    header = (r.run_dir / 'train_log.csv').read_text().splitlines()[0].split(',')
    assert {'mlm', 'self_repulsion', 'il_tl', 'ig_tg'} <= set(header)
    m = load_json(r.run_dir / 'metrics.json')
    assert 'test/label_query_seed/max_template/max_study/macro/R-Precision' in m
    assert 'test/label_query_ci/max/macro/nDCG_remix_seed@10' in m
