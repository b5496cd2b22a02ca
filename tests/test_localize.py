"""cxrlab.localize: real-mask readers on native-format fixtures (and their bad inputs), metrics against
segmentation-models-pytorch, and the two-phase localizer reloading through load_run."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlab.data import QCReport, build_manifest
from cxrlab.localize import (LocalizationDataset, MaskError, attach_masks, chexlocalize_key, coco_rle_counts, decode_mask,
                             item_metrics, localizer_transforms, mask_to_rle, read_chexlocalize, read_iu_masks, read_ms_cxr,
                             read_siim, rle_to_mask)

FIX = Path(__file__).parent / 'fixtures'
LOC = FIX / 'localize'


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- COCO RLE (CheXlocalize)

def test_coco_rle_agrees_with_pycocotools():
    import pycocotools.mask as pm  # a dev requirement: missing must fail, not skip
    rng = np.random.default_rng(1)
    for shape in [(7, 5), (32, 17), (1, 9)]:
        m = rng.random(shape) < 0.35
        ref = pm.encode(np.asfortranarray(m.astype(np.uint8)))
        assert mask_to_rle(m)['counts'] == ref['counts'].decode()
        np.testing.assert_array_equal(rle_to_mask(coco_rle_counts(ref['counts'].decode()), ref['size']), m)


def test_chexlocalize_fixture():
    t = read_chexlocalize(LOC / 'chexlocalize' / 'gt_segmentations_val.json')
    assert len(t) == 4 and t['empty'].tolist() == [False, False, True, True]
    assert t['label'].tolist() == ['Cardiomegaly', 'Lung Opacity', 'Pneumothorax', 'Edema']  # Airspace Opacity is CheXpert's Lung Opacity
    hand = np.zeros((4, 5), bool); hand[1:3, 1:3] = True
    np.testing.assert_array_equal(decode_mask(t['mask'][0]), hand)
    np.testing.assert_array_equal(decode_mask(t['mask'][1]), np.pad(np.ones((4, 1), bool), ((0, 0), (4, 0))))
    assert decode_mask(t['mask'][3]).shape == (2320, 2828) and not decode_mask(t['mask'][3]).any()
    assert chexlocalize_key('CheXpert-v1.0/valid/patient64600/study1/view1_frontal.jpg') == 'patient64600_study1_view1_frontal'
    man = pd.DataFrame({'image_id': ['valid/patient64600/study1/view1_frontal.jpg', 'valid/patient1/study1/view1_frontal.jpg'],
                        'subject_id': ['patient64600', 'patient1'], 'report': ['r0', 'r1']})
    qc = QCReport()
    trip = attach_masks(man, t, chexlocalize_key, qc=qc)
    assert trip['row'].tolist() == [0, 0] and trip['text'].tolist() == ['Cardiomegaly', 'Lung Opacity']
    assert qc.filtered['empty_mask'] == 2


@pytest.mark.parametrize('edit, message', [
    (lambda s: s[:-20], 'not valid JSON'),
    (lambda s: s.replace('"52207"', '"52208"'), 'patient64600_study1_view1_frontal/Cardiomegaly: run lengths sum to 21'),
    (lambda s: s.replace('"size": [4, 5], "counts": "52207"', '"size": [4, 5]'), "Cardiomegaly: expected {'size'"),
    (lambda s: s.replace('"size": [2320, 2828]', '"size": [2320, -1]'), 'Edema: size must be [H, W] positive integers'),
    (lambda s: s.replace('"52207"', '"52~07"'), "character '~' at position 2 is not COCO RLE"),
])
def test_chexlocalize_bad_input(tmp_path, edit, message):
    p = tmp_path / 'gt_segmentations_val.json'
    p.write_text(edit((LOC / 'chexlocalize' / 'gt_segmentations_val.json').read_text()))
    with pytest.raises(MaskError, match=message.replace('[', r'\[').replace('{', r'\{').replace('(', r'\(')):
        read_chexlocalize(p)


# ---------------------------------------------------------------- MS-CXR boxes

def test_ms_cxr_fixture():
    t = read_ms_cxr(LOC / 'ms_cxr' / 'MS_CXR_Local_Alignment_v1.1.0.csv')
    assert len(t) == 3 and t['text'].tolist()[0] == 'small left pleural effusion'
    m = decode_mask(t['mask'][0])
    assert m.shape == (80, 64) and m.sum() == 12 * 8 + 4 * 4  # the union of the phrase's two (disjoint) boxes
    assert m[60:68, 40:52].all() and m[50:54, 30:34].all() and not m[55, 45]
    man = pd.DataFrame({'image_id': ['e5f2-bb'], 'subject_id': ['10000002'], 'report': ['...']})
    qc = QCReport()
    trip = attach_masks(man, t, qc=qc)
    assert trip['text'].tolist() == ['right apical pneumothorax'] and trip['side'].tolist() == ['right']
    assert qc.counts['mask_without_image'] == 2  # the two phrases of an image not in the manifest


@pytest.mark.parametrize('line, new, message', [
    (2, 'd0a1-aa,Pleural Effusion,small left pleural effusion,p.jpg,60,60,12,8,64,80,train', ':2: box .* lies outside the 64x80 image'),
    (3, 'd0a1-aa,Pleural Effusion,small left pleural effusion,p.jpg,30,50,four,4,64,80,train', ':3: box and image size must be numbers'),
    (4, 'd0a1-aa,Cardiomegaly,enlarged cardiac silhouette,p.jpg,20,30,0,20,64,80,train', ':4: box 0.0x20.0 .* sizes must be > 0'),
    (3, 'd0a1-aa,Pleural Effusion,small left pleural effusion,p.jpg,30,50,4,4,128,160,train', ':3: image size 128x160 differs from'),
])
def test_ms_cxr_bad_input(tmp_path, line, new, message):
    lines = (LOC / 'ms_cxr' / 'MS_CXR_Local_Alignment_v1.1.0.csv').read_text().splitlines()
    lines[line - 1] = new
    p = tmp_path / 'ms.csv'; p.write_text('\n'.join(lines) + '\n')
    with pytest.raises(MaskError, match='ms.csv' + message):
        read_ms_cxr(p)


def test_ms_cxr_missing_column(tmp_path):
    df = pd.read_csv(LOC / 'ms_cxr' / 'MS_CXR_Local_Alignment_v1.1.0.csv').drop(columns='label_text')
    df.to_csv(tmp_path / 'ms.csv', index=False)
    with pytest.raises(MaskError, match=r"ms.csv: missing column\(s\) \['label_text'\]"):
        read_ms_cxr(tmp_path / 'ms.csv')


# ---------------------------------------------------------------- SIIM-ACR RLE

def test_siim_fixture():
    t = read_siim(LOC / 'siim' / 'train-rle.csv')
    assert t['image_id'].tolist() == ['1.2.276.0.7230010.3.1.4.1.1', '1.2.276.0.7230010.3.1.4.1.2']
    assert t['empty'].tolist() == [False, True]
    m = decode_mask(t['mask'][0])
    expect = np.zeros((1024, 1024), bool)
    expect[904:914, 4] = expect[904:914, 5] = True  # pixels 5000-5009 and 6024-6033, column-major
    expect[608:611, 58] = True  # the second row of the same image: pixels 60000-60002
    np.testing.assert_array_equal(m, expect)
    assert not decode_mask(t['mask'][1]).any()


@pytest.mark.parametrize('row, message', [
    ('1.2.3, 5000 10 1014', 'train-rle.csv:2: EncodedPixels has an odd number of values'),
    ('1.2.3, 1048570 10', 'train-rle.csv:2: run at pixel 1048570 of length 10 passes the end'),
    ('1.2.3, 12 ab', 'train-rle.csv:2: EncodedPixels must be integers'),
    (', 5 5', 'train-rle.csv:2: empty ImageId'),
])
def test_siim_bad_input(tmp_path, row, message):
    p = tmp_path / 'train-rle.csv'; p.write_text(f'ImageId, EncodedPixels\n{row}\n')
    with pytest.raises(MaskError, match=message):
        read_siim(p)


def test_siim_mask_and_no_mask_for_one_image_is_an_error(tmp_path):
    p = tmp_path / 'train-rle.csv'; p.write_text('ImageId, EncodedPixels\n1.2.3, 5 5\n1.2.3, -1\n')
    with pytest.raises(MaskError, match="train-rle.csv:3: image 1.2.3 has both a mask and '-1'"):
        read_siim(p)


# ---------------------------------------------------------------- IU masked/ folder

@pytest.fixture
def iu_root(tmp_path):
    root = _copy(FIX / 'iu', tmp_path / 'iu')
    for line in (root / 'images.txt').read_text().split('\n'):
        if line.strip():
            rel = line.split()[0]; (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16), 128, np.uint8)).save(root / rel)
    _copy(LOC / 'iu_masked' / 'masked', root / 'masked')
    return root


def test_iu_masked_fixture(iu_root):
    man, _ = build_manifest('iu', data_root=iu_root, frontal_only=False)
    qc = QCReport()
    t = read_iu_masks(man, 'masked', qc)
    assert dict(zip(t['where'], t['image_id'])) == {'1_IM-0001-4001.dcm.png': '1_IM-0001-4001.dcm.png',  # by file name
                                                    '3_mask.png': '3_IM-1384-1001.dcm.png',  # by uid
                                                    'CXR2_1.jpg': '2_IM-0652-1001.dcm.png'}  # by uid, the frontal one
    assert qc.counts['iu_mask_unpaired'] == 1 and '999.png' in qc.examples['iu_mask_unpaired'][0]
    block = np.zeros((16, 16), bool); block[8:12, 9:13] = True
    np.testing.assert_array_equal(decode_mask(t['mask'][t['where'] == 'CXR2_1.jpg'].iloc[0]), block)  # RGB JPEG, thresholded
    b01 = decode_mask(t['mask'][t['where'] == '3_mask.png'].iloc[0])
    assert b01.sum() == 16 and b01[3:7, 10:14].all()  # a 0/1 PNG
    trip = attach_masks(man, t)
    assert (trip['text'] == man['report'].iloc[trip['row']].to_numpy()).all()  # no sentence: the report is the text


def test_iu_masked_ambiguous_uid_is_a_counted_skip(iu_root):
    man, _ = build_manifest('iu', data_root=iu_root, frontal_only=False)
    man.loc[man['study_id'] == '2', 'is_frontal'] = True  # uid 2 now has two frontal images
    qc = QCReport()
    t = read_iu_masks(man, 'masked', qc)
    assert 'CXR2_1.jpg' not in set(t['where']) and qc.counts['iu_mask_ambiguous_uid'] == 1
    with pytest.raises(MaskError, match='masked/ folder not found'):
        read_iu_masks(man, 'nowhere')


# ---------------------------------------------------------------- dataset geometry

def test_dataset_resizes_a_full_resolution_mask_and_rejects_another_picture(tmp_path):
    Image.fromarray(np.zeros((40, 32), np.uint8)).save(tmp_path / 'img.png')  # a 32x40 copy of a 64x80 image
    rows = pd.DataFrame({'image_path': ['img.png']})
    boxes = {'kind': 'boxes', 'boxes': [[32, 0, 32, 80]], 'size': [80, 64], 'where': 'ms.csv:2'}  # the image's right half
    trip = pd.DataFrame([{'row': 0, 'image_id': 'img', 'subject_id': 'p', 'text': 't', 'label': 'x', 'side': None, 'zone': None, 'mask': boxes}])
    ds = LocalizationDataset(rows, trip, localizer_transforms({'backbone': {'transform': 'tiny'}, 'model': {'image_size': 32}}), data_root=tmp_path)
    m = ds.mask(0, (32, 40))
    assert m.shape == (40, 32) and m[:, 16:].all() and not m[:, :16].any()
    other = dict(boxes, size=[64, 64])
    ds2 = LocalizationDataset(rows, trip.assign(mask=[other]), ds.transform, data_root=tmp_path)
    with pytest.raises(MaskError, match='ms.csv:2: mask is 64x64 but image img is 32x40'):
        ds2[0]


# ---------------------------------------------------------------- metrics against segmentation-models-pytorch

def test_dice_iou_pixel_accuracy_match_smp_metrics():
    import segmentation_models_pytorch as smp
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 16, 16, generator=g)
    target = torch.rand(6, 16, 16, generator=g) < 0.3
    ours = item_metrics(probs, target, 0.5)
    tp, fp, fn, tn = smp.metrics.get_stats((probs >= 0.5).long()[:, None], target.long()[:, None], mode='binary')
    torch.testing.assert_close(ours['Dice'].float(), smp.metrics.f1_score(tp, fp, fn, tn)[:, 0].float())
    torch.testing.assert_close(ours['IoU'].float(), smp.metrics.iou_score(tp, fp, fn, tn)[:, 0].float())
    torch.testing.assert_close(ours['PixelAcc'].float(), smp.metrics.accuracy(tp, fp, fn, tn)[:, 0].float())


# ---------------------------------------------------------------- the two phases through the engine, reloaded

SMALL = dict(encoder='resnet18', decoder_channels=[16, 16, 8, 8, 8], image_size=64)
DATA = dict(n_patients=24, batch_size=8, epochs=1, device='cpu', precision='fp32', seed=0)


def test_two_phases_reload_through_load_run(tmp_path):
    from cxrlab.evaluate import evaluate_run
    from cxrlab.localize import fit_stage, load_phase1_encoder, save_encoder, setup_stage
    from cxrlab.train import load_run
    p1 = setup_stage('localize_recon', model_options=SMALL, out_dir=tmp_path, run_name='p1', early_stop_metric='psnr', **DATA)
    fit_stage(p1)
    save_encoder(p1.model, p1.run)
    ev1 = evaluate_run(p1.run.dir, p1.manifest, 'test', n_resamples=20, device='cpu', out_dir=tmp_path, figures=False)
    assert 5 < ev1.metrics['recon/PSNR'] < 60 and 'recon/SSIM_ci_low' in ev1.metrics
    exp = setup_stage('localize', model_options=SMALL, loss_options={'pos_weight': 3.0}, out_dir=tmp_path, run_name='p2',
                      early_stop_metric='dice', **DATA)
    load_phase1_encoder(exp.model, p1.run.dir, exp.params['method']['config']['model'])
    torch.testing.assert_close(exp.model.unet.encoder.conv1.weight, p1.model.unet.encoder.conv1.weight)
    text_before = {k: v.clone() for k, v in exp.model.text_tower.state_dict().items()}
    fit = fit_stage(exp)
    assert fit['best_metric'] == 'dice' and 'val/dice' in fit['history'][0]
    assert all(torch.equal(v, exp.model.text_tower.state_dict()[k]) for k, v in text_before.items())  # frozen
    torch.testing.assert_close(exp.model.unet.encoder.conv1.weight, p1.model.unet.encoder.conv1.weight)  # phase 2 keeps phase 1's encoder
    lr = load_run(exp.run.dir)
    for k, v in exp.model.state_dict().items(): torch.testing.assert_close(lr.model.state_dict()[k], v)
    ev = evaluate_run(exp.run.dir, exp.manifest, 'test', n_resamples=20, device='cpu', out_dir=tmp_path)
    m = ev.metrics
    for key in ('loc/Dice/macro', 'loc/Dice/macro_ci_low', 'prior/finding_side_zone/Dice/macro', 'loc/Dice/macro_minus_best_prior',
                'prior/oracle_geometry/Dice/macro', 'loc/Dice/macro_minus_oracle_geometry',
                'calibration/ECE', 'laterality/n', 'finding_swap/n'):
        assert key in m, key
    assert (exp.run.dir / 'localization' / 'test_items.csv').exists() and (exp.run.dir / 'figures' / 'tri_panels.png').exists()
    assert json.loads((exp.run.dir / 'metrics.json').read_text())['test/loc/Dice/macro'] == m['loc/Dice/macro']
    other = setup_stage('localize', model_options={**SMALL, 'encoder': 'resnet34'}, out_dir=tmp_path, run_name='p2b', **DATA)
    with pytest.raises(ValueError, match=r"phase-1 run p1 has a different encoder: .*'encoder': \('resnet34', 'resnet18'\)"):
        load_phase1_encoder(other.model, p1.run.dir, other.params['method']['config']['model'])


def test_text_tower_of_a_trained_run(tmp_path):
    from cxrlab.localize import adopt_text_tower, setup_stage, text_run_backbone
    from cxrlab.train import setup_experiment
    clip = setup_experiment('clip', out_dir=tmp_path, run_name='clip', **DATA)
    clip.fit()
    assert text_run_backbone(clip.run.dir)['backbone'] == 'tiny'
    exp = setup_stage('localize', model_options=SMALL, out_dir=tmp_path, run_name='loc', **DATA)
    adopt_text_tower(exp.model, clip.run.dir, exp.tokenizer)
    for k, v in clip.model.text_tower.state_dict().items(): torch.testing.assert_close(exp.model.text_tower.state_dict()[k], v)
    assert not any(p.requires_grad for p in exp.model.text_tower.parameters())
    wide = setup_stage('localize', model_options=SMALL, out_dir=tmp_path, run_name='loc64', embed_dim=64, **DATA)
    with pytest.raises(ValueError, match="text tower does not fit this model"):
        adopt_text_tower(wide.model, clip.run.dir)


# ---------------------------------------------------------------- side-swapped negatives and mirroring in phase 2

def test_laterality_training_through_the_engine(tmp_path):
    from cxrlab.core import load_json
    from cxrlab.data import make_collate
    from cxrlab.localize import LateralityTraining, fit_stage, mask_side, setup_stage, side_of_text, swap_laterality
    side = {'negative_prob': 1.0, 'mirror_prob': 0.5}
    exp = setup_stage('localize', model_options=SMALL, laterality_training=side, out_dir=tmp_path, run_name='side',
                      early_stop_metric='dice', **DATA)
    train = exp.datasets['train']
    assert isinstance(train, LateralityTraining) and len(train.negatives) > 0
    assert len(train) == len(exp.triplets['train']) + len(train.negatives)
    assert not isinstance(exp.datasets['validate'], LateralityTraining)  # validation and test see the plain triplets
    assert load_json(exp.run.dir / 'params.json')['params']['laterality_training'] == side
    n = len(train.base)
    batch = make_collate(exp.tokenizer)([train[n + k] for k in range(min(4, len(train.negatives)))])
    assert batch['mask'].sum() == 0 and batch['input_ids'].shape[0] == batch['mask'].shape[0]
    for k, neg in train.negatives.head(4).iterrows():  # the negative's sentence names the side its finding is not on
        item = int(neg['item'])
        assert neg['swapped'] == swap_laterality(train.base.texts[item])
        finding_side = mask_side(train.base.mask(item))
        assert finding_side in ('right', 'left') and side_of_text(neg['swapped']) == {'right': 'left', 'left': 'right'}[finding_side]
    fit = fit_stage(exp)
    assert 'val/dice' in fit['history'][0]
    plain = setup_stage('localize', model_options=SMALL, laterality_training={'negative_prob': 0.0, 'mirror_prob': 0.0},
                        out_dir=tmp_path, run_name='plain', **DATA)
    assert not isinstance(plain.datasets['train'], LateralityTraining)  # options off: the baseline pipeline unchanged


# ---------------------------------------------------------------- the seed's recipe: 1x1 head, frozen encoder, report text

def _notebook_defaults() -> dict:
    import ast
    nb = json.loads((Path(__file__).parents[1] / 'nbs' / '06_localization.ipynb').read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', []))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(''.join(cell['source'])).body}


def test_seed_table_defaults_are_the_notebook_parameters():
    "Every preset row's 06 parameter is the table's cxrlab default, or unset (None) where the seed differs; the preset gives the seed's values."
    from cxrlab.localize import LOCALIZE_PRESETS, LOCALIZE_SEED_TABLE, apply_localize_preset
    nbd = _notebook_defaults()
    for r in LOCALIZE_SEED_TABLE:
        if r['param'] in LOCALIZE_PRESETS['seed']:
            assert nbd[r['param']] == r['cxrlab'] or (nbd[r['param']] is None and r['seed'] != r['cxrlab']), (r['param'], nbd[r['param']], r)
    values = {k: nbd[k] for k in LOCALIZE_PRESETS['seed']}
    got = apply_localize_preset(values, 'seed')
    assert {k: got['values'][k] for k in LOCALIZE_PRESETS['seed']} == LOCALIZE_PRESETS['seed'] and got['kept'] == {}
    plain = apply_localize_preset(values, None)['values']
    assert plain == {r['param']: r['cxrlab'] for r in LOCALIZE_SEED_TABLE if r['param'] in LOCALIZE_PRESETS['seed']}
    assert LOCALIZE_PRESETS['seed']['head_kernel_size'] == 1 and LOCALIZE_PRESETS['seed']['freeze_encoder'] is True
    assert LOCALIZE_PRESETS['seed']['text_source'] == 'report' and plain['text_source'] == 'sentence'  # the sentence stays the default


def test_localizer_head_is_1x1_and_phase2_encoder_frozen():
    from cxrlab.models import get_method, model_config
    m = get_method('localize')
    model = m.build(m.config(model_config('tiny'), {**SMALL, 'fusion_norm': False, 'text_norm': False}))
    head = model.unet.segmentation_head[0]
    assert isinstance(head, torch.nn.Conv2d) and head.kernel_size == (1, 1) and head.padding == (0, 0)
    assert not any(p.requires_grad for p in model.unet.encoder.parameters()) and all(p.requires_grad for p in model.fusion.parameters())
    assert isinstance(model.fusion.norm, torch.nn.Identity) and isinstance(model.fusion.text_norm, torch.nn.Identity)
    trained = m.build(m.config(model_config('tiny'), {**SMALL, 'freeze_encoder': False, 'head_kernel_size': 3}))
    assert trained.unet.segmentation_head[0].kernel_size == (3, 3) and all(p.requires_grad for p in trained.unet.encoder.parameters())


def test_report_text_source_for_real_masks():
    from cxrlab.localize import triplets_for
    man = pd.DataFrame({'image_id': ['e5f2-bb'], 'subject_id': ['10000002'], 'report': ['FINDINGS: Small left pleural effusion. No pneumothorax.']})
    csv = LOC / 'ms_cxr' / 'MS_CXR_Local_Alignment_v1.1.0.csv'
    sent = triplets_for(man, {'masks': f'ms_cxr:{csv}'}, qc=QCReport())
    rep = triplets_for(man, {'masks': f'ms_cxr:{csv}', 'text_source': 'report'}, qc=QCReport())
    assert len(sent) == len(rep) > 0 and set(rep['text']) == {man['report'][0]} and 'right apical pneumothorax' in sent['text'].tolist()
    with pytest.raises(ValueError, match="text_source='impression'"):
        triplets_for(man, {'masks': f'ms_cxr:{csv}', 'text_source': 'impression'})


# ---------------------------------------------------------------- text-only priors

def test_unstated_side_gets_the_finding_prior():
    "A sentence that does not state its side gets the finding-only prior although the finding was drawn on one side."
    from cxrlab.localize import fit_priors, prior_predict, synth_triplets, with_text_location
    man, _ = build_manifest('synth', n_patients=60, image_size=64, seed=0)
    trip = with_text_location(synth_triplets(man))
    root = man.attrs['meta']['data_root']
    masks = torch.stack([torch.from_numpy(decode_mask(m, root)) for m in trip['mask']])
    pri = fit_priors(masks, trip)
    unstated = trip[trip['side'].notna() & trip['text_side'].isna()].reset_index(drop=True)
    assert len(unstated) >= 3, 'SynthCXR draws sides (e.g. bilateral edema) that some sentences do not state'
    for level in ('finding_side', 'finding_side_zone'):
        assert torch.equal(prior_predict(pri, unstated, level), prior_predict(pri, unstated, 'finding'))
    oracle = prior_predict(pri, unstated, 'oracle_geometry')
    for i, r in unstated.iterrows():  # the oracle is keyed on the annotation: the mean mask of its drawn (finding, side, zone)
        zone = None if not isinstance(r['zone'], str) else r['zone']
        mean, th = pri['oracle_geometry'][(r['label'], r['side'], zone)]
        assert torch.equal(oracle[i], mean >= th)
    stated = trip[trip['text_side'].isin(['left', 'right'])].reset_index(drop=True)
    assert (prior_predict(pri, stated, 'finding_side') != prior_predict(pri, stated, 'finding')).flatten(1).any(1).any()


def test_collate_puts_the_localizer_priors_beside_it(tmp_path):
    "The pipeline's leaderboard takes the prior rows from the localization run's own test triplets, named with that run."
    from cxrlab.report import StageResult, collate
    run = tmp_path / 'runs' / '06_localization-x'
    (run / 'checkpoints' / 'best').mkdir(parents=True)
    method = {'name': 'localize', 'module': 'cxrlab.localize', 'config': {'backbone': {'name': 'tiny'}}}
    (run / 'params.json').write_text(json.dumps({'params': {'stage': 'text', 'method': method}}))
    (run / 'metrics.json').write_text(json.dumps({'test/loc/n_items': 10.0, 'test/loc/Dice/macro': 0.3, 'test/prior/finding_side_zone/Dice/macro': 0.25,
                                                  'test/prior/oracle_geometry/Dice/macro': 0.27}))
    rows = collate([StageResult('06_localization.ipynb', 'ok', 1.0, run_dir=str(run))], tmp_path / 'reports')
    assert rows['localize text (tiny)']['loc/Dice/macro'] == 0.3
    assert rows['prior: finding + side + zone (text-only; test triplets of 06_localization-x, n=10)']['loc/Dice/macro'] == 0.25
    assert rows['oracle geometry: finding + drawn side + zone (annotations; test triplets of 06_localization-x, n=10)']['loc/Dice/macro'] == 0.27
    assert (tmp_path / 'reports' / 'leaderboard.md').exists()
