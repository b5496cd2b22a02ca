"""Tests of cxrlab.data: adapters on hand-written native layouts, report sections, bad input, datasets, cache."""
import json, math, os, shutil, zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlab.core import CHEXPERT_LABELS, MANIFEST_COLUMNS
from cxrlab.data import (DataError, QCReport, build_manifest, build_image_cache, check_patient_disjoint, CXRDataset,
                         group_studies, label_stats, load_manifest, make_collate, make_transforms, parse_report,
                         patient_split, save_manifest, validate_manifest)

FIXTURES = Path(__file__).parent/'fixtures'


def materialise(name: str, tmp_path: Path) -> Path:
    "Copy a fixture folder and write the images its images.txt lists (valid, truncated or junk)."
    root = tmp_path/name
    shutil.copytree(FIXTURES/name, root)
    listing = root/'images.txt'
    for line in listing.read_text().splitlines() if listing.exists() else []:
        if not line.strip() or line.startswith('#'): continue
        rel, kind = line.split()
        p = root/rel; p.parent.mkdir(parents=True, exist_ok=True)
        a = (np.add.outer(np.arange(48), np.arange(40)) * 3 % 256).astype(np.uint8)
        Image.fromarray(a).save(p, format='PNG' if p.suffix == '.png' else 'JPEG')
        if kind == 'truncated': p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
        elif kind == 'junk': p.write_bytes(b'\x00' * 64)
    return root


def keyword_labeler(texts):
    "Stand-in labeler: Edema = 1 if 'edema' is in the text else 0; other labels blank."
    return pd.DataFrame({l: [float('edema' in t.lower()) if l == 'Edema' else np.nan for t in texts] for l in CHEXPERT_LABELS})


# ---------------------------------------------------------------- report sections
@pytest.mark.parametrize('name', sorted(json.loads((FIXTURES/'reports/expected.json').read_text())))
def test_parse_report_fixtures(name):
    expected = json.loads((FIXTURES/'reports/expected.json').read_text())[name]
    assert parse_report((FIXTURES/'reports'/name).read_text()) == expected


# ---------------------------------------------------------------- MIMIC
def test_mimic_fixture_qc(tmp_path):
    root = materialise('mimic', tmp_path)
    df, qc = build_manifest('mimic', root)
    assert df['image_id'].tolist() == ['d01', 'd07', 'd09']
    assert dict(qc.counts) == {'malformed_csv_row': 1, 'bad_label_value': 1, 'missing_report': 1, 'unknown_view': 1,
                               'duplicate_image_id': 1, 'short_report': 1, 'missing_image': 1}
    assert dict(qc.filtered) == {'not_frontal': 2}
    ex = qc.examples
    assert ex['malformed_csv_row'] == ['mimic-cxr-2.0.0-metadata.csv:line 7 (3 fields, expected 12)']
    assert ex['unknown_view'] == ["mimic-cxr-2.0.0-metadata.csv:line 6 (view='XYZ')"]
    assert ex['duplicate_image_id'][0].startswith('mimic-cxr-2.0.0-metadata.csv:line 9')
    assert ex['missing_image'][0].startswith('mimic-cxr-2.0.0-metadata.csv:line 5')
    assert ex['bad_label_value'] == ["mimic-cxr-2.0.0-chexpert.csv:line 5 (Edema='2' not in {1,0,-1,blank})"]
    assert ex['short_report'][0].startswith('mimic-cxr-2.0.0-metadata.csv:line 4')
    assert list(df.columns[:len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    r = df.set_index('image_id')
    assert r.loc['d01', 'impression'] == 'No acute cardiopulmonary process.'
    assert (r.loc['d01', 'Edema'], r.loc['d01', 'Pleural Effusion']) == (1.0, -1.0) and math.isnan(r.loc['d01', 'Fracture'])
    assert r.loc['d07', 'label_source'] == ''  and math.isnan(r.loc['d07', 'Edema'])  # its label row was bad
    assert r.loc['d09', 'impression'] == 'Nasogastric tube tip in the distal esophagus; advance by 10 cm.'
    assert r['split'].tolist() == ['train', 'test', 'train']
    assert qc.notes['study_without_label_row'] >= 1
    # decode check catches the truncated JPEG
    df2, qc2 = build_manifest('mimic', root, check_images='decode')
    assert df2['image_id'].tolist() == ['d01', 'd07'] and qc2.counts['corrupt_image'] == 1
    assert 'd09.jpg' in qc2.examples['corrupt_image'][0]


def test_mimic_zip_reports_give_same_manifest(tmp_path):
    root = materialise('mimic', tmp_path)
    folder, _ = build_manifest('mimic', root)
    with zipfile.ZipFile(root/'mimic-cxr-reports.zip', 'w') as z:
        for p in (root/'mimic-cxr-reports').rglob('*.txt'):
            z.write(p, 'mimic-cxr-reports/' + str(p.relative_to(root/'mimic-cxr-reports')))
    shutil.rmtree(root/'mimic-cxr-reports')
    zipped, _ = build_manifest('mimic', root)
    pd.testing.assert_frame_equal(folder, zipped)


def test_mimic_options(tmp_path):
    root = materialise('mimic', tmp_path)
    allv, qc = build_manifest('mimic', root, frontal_only=False)
    assert set(allv['image_id']) == {'d01', 'd02', 'd07', 'd09', 'd10'}
    assert allv.set_index('image_id').loc['d10', 'view'] == 'UNKNOWN'
    one, qc = build_manifest('mimic', root, frontal_only=False, images_per_study='one')
    assert one['image_id'].tolist() == ['d01', 'd07', 'd09'] and qc.filtered['extra_image_in_study'] == 2
    lat, _ = build_manifest('mimic', root, views=['LATERAL'])
    assert lat['image_id'].tolist() == ['d02']
    with pytest.raises(DataError, match=r'mimic-cxr-2.0.0-metadata.csv:line 7: malformed_csv_row'):
        build_manifest('mimic', root, strict=True)


def test_mimic_relabel_with_cxrlab_labels(tmp_path):
    root = materialise('mimic', tmp_path)
    df, _ = build_manifest('mimic', root, relabel=True)
    assert set(df['label_source']) == {'cxrlab.labels'}
    d = df.set_index('image_id')
    assert d.loc['d01', 'No Finding'] == 1.0  # "No acute cardiopulmonary process."
    assert d.loc['d07', 'Pleural Effusion'] == 1.0 and d.loc['d07', 'Atelectasis'] == 1.0


# ---------------------------------------------------------------- bad input, one problem at a time
def _edit_line(path, lineno, old, new):
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[lineno - 1], (lineno, lines[lineno - 1])
    lines[lineno - 1] = lines[lineno - 1].replace(old, new); path.write_text(''.join(lines))


def _corrupt(root, rel, keep=0.5):
    p = root/rel; b = p.read_bytes(); p.write_bytes(b[:int(len(b) * keep)])


BAD_INPUT = {  # name: (mutation, reason, text the message/example must contain, build options)
    'truncated_jpeg': (lambda r: _corrupt(r, 'images/s3_pa.jpg'), 'corrupt_image', 's3_pa.jpg', {'check_images': 'decode'}),
    'truncated_png': (lambda r: _corrupt(r, 'images/s2_ap.png'), 'corrupt_image', 's2_ap.png', {'check_images': 'decode'}),
    'junk_jpeg': (lambda r: (r/'images/s5_pa.jpg').write_bytes(b'not an image'), 'corrupt_image', 's5_pa.jpg', {'check_images': 'decode'}),
    'missing_image': (lambda r: (r/'images/s5_pa.jpg').unlink(), 'missing_image', 'studies.csv:line 6', {}),
    'empty_report': (lambda r: _edit_line(r/'studies.csv', 6, 'No focal consolidation. No pneumothorax.,Normal chest radiograph.', ','),
                     'short_report', 'studies.csv:line 6 (0 chars', {}),
    'short_report': (lambda r: _edit_line(r/'studies.csv', 6, 'No focal consolidation. No pneumothorax.,Normal chest radiograph.', 'Clear.,Normal.'),
                     'short_report', 'studies.csv:line 6 (14 chars', {}),
    'malformed_row': (lambda r: open(r/'studies.csv', 'a').write('s7,p7,images/s5_pa.jpg\n'), 'malformed_csv_row', 'studies.csv:line 8', {}),
    'unknown_view': (lambda r: _edit_line(r/'studies.csv', 4, ',PA,', ',SIDEWAYS,'), 'unknown_view', "studies.csv:line 4 (view='SIDEWAYS')", {}),
    'bad_label': (lambda r: _edit_line(r/'studies.csv', 4, ',1,1', ',2,1'), 'bad_label_value', "studies.csv:line 4 (Edema='2'", {}),
    'duplicate_image_id': (lambda r: _edit_line(r/'studies.csv', 6, 'images/s5_pa.jpg', 'images/s3_pa.jpg'), 'duplicate_image_id', 'studies.csv:line 6', {}),
    'path_outside_root': (lambda r: _edit_line(r/'studies.csv', 6, 'images/s5_pa.jpg', '../../outside.jpg'), 'path_outside_root', 'studies.csv:line 6', {}),
    'absolute_path_outside_root': (lambda r: _edit_line(r/'studies.csv', 6, 'images/s5_pa.jpg', '/etc/hostname'), 'path_outside_root', 'studies.csv:line 6', {}),
}


def test_clean_csv_fixture(tmp_path):
    df, qc = build_manifest('csv', materialise('csv_clean', tmp_path), frontal_only=False, check_images='decode')
    assert len(df) == 8 and qc.total == 0 and not qc.filtered
    assert set(df['label_source']) == {'studies.csv'} and df.attrs['meta']['split_scheme'] == 'official'
    assert df.set_index('image_id').loc['images/s2_ap.png', 'Pleural Effusion'] == 1.0


@pytest.mark.parametrize('case', sorted(BAD_INPUT))
def test_bad_input_counted_or_raised(case, tmp_path):
    mutate, reason, where, opts = BAD_INPUT[case]
    root = materialise('csv_clean', tmp_path); mutate(root)
    df, qc = build_manifest('csv', root, frontal_only=False, **opts)
    assert dict(qc.counts) == {reason: 1}, qc
    assert where in qc.examples[reason][0], qc.examples[reason]
    assert len(df) == (8 if case == 'malformed_row' else 7)  # exactly the offending image is dropped
    with pytest.raises(DataError) as e:
        build_manifest('csv', root, frontal_only=False, strict=True, **opts)
    assert where.split(' (')[0] in str(e.value) and reason in str(e.value)


def test_patient_leak_is_an_error(tmp_path):
    root = materialise('csv_clean', tmp_path)
    _edit_line(root/'studies.csv', 7, ',PA,train,', ',PA,test,')  # p1 now in train and test
    with pytest.raises(DataError, match=r"not patient-disjoint.*'p1'"):
        build_manifest('csv', root, frontal_only=False)


def test_validate_manifest_bad_values():
    rows = pd.DataFrame({c: ['x', 'y'] for c in MANIFEST_COLUMNS})
    rows[CHEXPERT_LABELS] = 0.0
    rows['image_id'] = ['a', 'b']; rows['view'] = ['PA', 'PA']; rows['split'] = ['train', 'train']; rows['is_frontal'] = ['true', 'maybe']
    qc = QCReport()
    out = validate_manifest(rows, qc)
    assert out['image_id'].tolist() == ['a'] and dict(qc.counts) == {'bad_is_frontal': 1}


# ---------------------------------------------------------------- IU, CheXpert Plus
def test_iu_csv_pair(tmp_path):
    df, qc = build_manifest('iu', materialise('iu', tmp_path), labeler=keyword_labeler, seed=3)
    assert df['image_id'].tolist() == ['1_IM-0001-4001.dcm.png', '2_IM-0652-1001.dcm.png', '3_IM-1384-1001.dcm.png']
    assert dict(qc.counts) == {'short_report': 1} and qc.filtered['not_frontal'] == 2
    assert df['view'].tolist() == ['FRONTAL'] * 3 and df['is_frontal'].all()
    assert df.loc[0, 'findings'].endswith('There are no ___ of a pleural effusion. There is no evidence of pneumothorax.')
    assert df.loc[1, 'mesh'] == 'Cardiomegaly/borderline;Pulmonary Artery/enlarged'
    assert df['split'].tolist() == patient_split(['1', '2', '3'], seed=3).tolist()
    assert df.attrs['meta']['split_scheme'] == 'patient-70-10-20-seed3' and set(df['label_source']) == {'cxrlab.labels'}


def test_iu_xml_matches_csv_text(tmp_path):
    xml, qc = build_manifest('iu_xml', materialise('iu_xml', tmp_path), frontal_only=False, labeler=keyword_labeler)
    assert qc.counts['malformed_xml'] == 1 and qc.examples['malformed_xml'][0].startswith('9.xml')
    assert xml['image_id'].tolist() == ['CXR1_1_IM-0001-3001', 'CXR1_1_IM-0001-4001', 'CXR3_IM-1384-1001']
    assert xml['image_path'][0] == 'NLMCXR_png/CXR1_1_IM-0001-3001.png' and xml['mesh'][2] == 'Pleural Effusion/right/small'
    kag, _ = build_manifest('iu', materialise('iu', tmp_path), frontal_only=False, labeler=keyword_labeler)
    assert xml['report'][0] == kag['report'][0]
    # with the Kaggle projections next to the XML, views are known and the frontal filter works
    shutil.copy(FIXTURES/'iu/indiana_projections.csv', tmp_path/'iu_xml')
    fr, qc = build_manifest('iu_xml', tmp_path/'iu_xml', labeler=keyword_labeler)
    assert fr['image_id'].tolist() == ['CXR1_1_IM-0001-4001', 'CXR3_IM-1384-1001'] and qc.filtered['not_frontal'] == 1


def test_chexpert_plus(tmp_path):
    df, qc = build_manifest('chexpert_plus', materialise('chexpert_plus', tmp_path), frontal_only=False)
    assert df['image_path'].tolist()[0] == 'PNG/train/patient00001/study1/view1_frontal.png'
    assert df['view'].tolist() == ['AP', 'LL', 'PA', 'AP'] and df['is_frontal'].tolist() == [True, False, True, True]
    assert df['split'].tolist() == ['train', 'train', 'train', 'validate']
    assert dict(qc.counts) == {'malformed_json_line': 1, 'bad_label_value': 1, 'short_report': 1}
    assert qc.notes['impression_only'] == 2 and qc.notes['findings_only'] == 1
    # the oddity stays visible: impression text released under findings
    assert df.loc[2, 'findings'].startswith('Impression: Large right pleural effusion') and df.loc[2, 'impression'] == ''
    assert df.loc[2, 'sections_present'] == 'history,findings'
    assert df.loc[0, 'Support Devices'] == 1.0 and df.loc[0, 'label_source'] == 'chexbert:report_fixed.json'
    assert df.loc[2, 'label_source'] == '' and math.isnan(df.loc[2, 'Pleural Effusion'])  # its label line was truncated


# ---------------------------------------------------------------- storage, stats, splits
def test_save_load_roundtrip(tmp_path):
    df, qc = build_manifest('mimic', materialise('mimic', tmp_path))
    for ext in ('jsonl', 'parquet'):
        p = save_manifest(df, tmp_path/f'mimic_master_official.{ext}', df.attrs['meta'])
        back, meta = load_manifest(p)
        pd.testing.assert_frame_equal(back, df, check_dtype=False)
        assert meta['qc']['skipped'] == dict(qc.counts) and meta['split_scheme'] == 'official'
        assert Path(meta['data_root']) == (tmp_path/'mimic').resolve()


def test_label_stats_and_groups(tmp_path):
    df, _ = build_manifest('csv', materialise('csv_clean', tmp_path), frontal_only=False)
    st = label_stats(df)
    assert st.loc['images'].tolist() == [4, 1, 3, 8] and st.loc['patients', 'total'] == 5
    assert st.loc['Pleural Effusion'].tolist() == [1, 1, 0, 2] and label_stats(df, -1.0).loc['Pleural Effusion', 'test'] == 2
    g = group_studies(df)
    assert len(g) == 6 and g.set_index('study_id').loc['s4', 'views'] == ['PA', 'LATERAL']


def test_patient_split_is_stable():
    ids = [f'p{i}' for i in range(500)]
    a = patient_split(ids, seed=0); b = patient_split(ids + ['new1', 'new2'], seed=0)
    assert (a == b[:500]).all()
    check_patient_disjoint(pd.DataFrame({'subject_id': ids * 2, 'split': list(a) * 2}))


# ---------------------------------------------------------------- torch side
def test_dataset_modes_and_loader(tmp_path):
    df, _ = build_manifest('csv', materialise('csv_clean', tmp_path), frontal_only=False)
    tf = make_transforms('tiny', train=True, image_size=32)
    for mode in ('pair', 'labels', 'sentences', 'study'):
        ds = CXRDataset(df, mode, tf)
        dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2 if mode == 'pair' else 0,
                                         collate_fn=make_collate(lambda t, max_length=None: {'input_ids': torch.ones(len(t), 4, dtype=torch.long),
                                                                                              'attention_mask': torch.ones(len(t), 4, dtype=torch.long)},
                                                                 text_keys=('text', 'sentences', 'texts')))
        b = next(iter(dl))
        assert b['image'].shape == (3, 3, 32, 32) and b['labels'].shape == (3, 14) and b['input_ids'].shape == (3, 4)
        if mode == 'sentences': assert b['sentences_input_ids'].shape == (3, 16, 4) and b['sentence_mask'][0, :2].all()
        if mode == 'study': assert b['images'].shape == (3, 2, 3, 32, 32) and b['view_mask'][0].tolist() == [True, True]


@pytest.mark.parametrize('preset,side', [('biomedclip', 224), ('biovil', 480), ('gloria', 224), ('rclip_mini', 224), ('clip', 224), ('tiny', 64)])
def test_transform_presets(preset, side):
    im = Image.fromarray((np.random.default_rng(0).random((300, 260)) * 255).astype(np.uint8))
    for train in (False, True):
        x = make_transforms(preset, train=train)(im)
        assert x.shape == (3, side, side) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_image_cache_resumes(tmp_path):
    root = materialise('csv_clean', tmp_path)
    df, _ = build_manifest('csv', root, frontal_only=False)
    _corrupt(root, 'images/s3_pa.jpg')
    cached, qc = build_image_cache(df, tmp_path/'cache', size=24, num_workers=2, progress=False)
    assert len(cached) == 7 and dict(qc.counts) == {'corrupt_image': 1}
    info = cached.attrs['meta']['cache']; assert info['written'] == 7 and info['already_cached'] == 0
    assert all(min(Image.open(tmp_path/'cache/24'/p).size) == 24 for p in cached['image_path'])
    again, _ = build_image_cache(df, tmp_path/'cache', size=24, num_workers=1, progress=False)
    assert again.attrs['meta']['cache']['written'] == 0 and again.attrs['meta']['cache']['already_cached'] == 7
    x = CXRDataset(cached, 'pair', make_transforms('tiny', image_size=16))[0]['image']
    assert x.shape == (3, 16, 16)


# ---------------------------------------------------------------- SynthCXR round trips
@pytest.fixture(scope='module')
def synth_dir(tmp_path_factory):
    from cxrlab.synth import generate_synthcxr
    d = tmp_path_factory.mktemp('synth')/'syn'
    generate_synthcxr(d, n_patients=6, image_size=48, seed=5, views=('PA', 'AP', 'LATERAL'))
    return d


def _content(df, cols):
    return sorted(map(tuple, df[cols].fillna(-9).astype(str).to_numpy().tolist()))


@pytest.mark.parametrize('layout', ['mimic', 'iu', 'iu_xml', 'chexpert_plus', 'csv'])
def test_synth_layout_round_trip(layout, synth_dir, tmp_path):
    from cxrlab.synth import write_layout
    ref, _ = build_manifest('synth', synth_dir, frontal_only=False)
    df, qc = build_manifest(layout, write_layout(synth_dir, tmp_path/layout, layout), frontal_only=False, check_images='decode')
    assert qc.total == 0 and len(df) == len(ref)
    txt = ['findings', 'impression', 'is_frontal']
    assert _content(df, ['findings', 'impression']) == _content(ref, ['findings', 'impression'])
    if layout != 'iu_xml': assert _content(df, txt) == _content(ref, txt)
    if layout in ('mimic', 'chexpert_plus'):
        assert _content(df, txt + CHEXPERT_LABELS) == _content(ref, txt + CHEXPERT_LABELS)
    if layout == 'mimic':
        cols = ['subject_id', 'study_id', 'image_id', 'view', 'split'] + txt + CHEXPERT_LABELS
        pd.testing.assert_frame_equal(df.sort_values('image_id')[cols].reset_index(drop=True), ref.sort_values('image_id')[cols].reset_index(drop=True))
    if layout == 'csv': assert _content(df, ['study_id', 'view', 'split'] + txt) == _content(ref, ['study_id', 'view', 'split'] + txt)
    if layout in ('iu', 'iu_xml', 'csv'): assert set(df['label_source']) == {'cxrlab.labels'}
    # the images are the same pictures (JPEG re-encoding aside): compare sorted per-image mean intensities
    def means(d):
        root = Path(d.attrs['meta']['data_root'])
        return np.sort([np.asarray(Image.open(root/p).convert('L'), np.float32).mean() for p in d['image_path']])
    np.testing.assert_allclose(means(df), means(ref), atol=1.0)


def test_synth_default_cache_and_loader(tmp_path, monkeypatch):
    monkeypatch.setenv('CXRLAB_CACHE', str(tmp_path/'cache'))
    df, qc = build_manifest('synth', None, n_patients=4, image_size=48)
    assert len(df) >= 4 and df['is_frontal'].all() and set(df['label_source']) == {'synth'}
    assert str(tmp_path/'cache') in df.attrs['meta']['data_root']
    ds = CXRDataset(df[df.mask_path.notna()], 'mask', make_transforms('tiny', image_size=32))
    s = ds[0]
    assert s['mask'].shape == (1, 32, 32) and s['image'].shape == (3, 32, 32)


def test_max_samples_keeps_whole_patients_and_empty_is_an_error(tmp_path):
    root = materialise('csv_clean', tmp_path)
    df, qc = build_manifest('csv', root, frontal_only=False, max_samples=3)
    assert 1 <= len(df) <= 3 and qc.filtered['max_samples'] == 8 - len(df)
    full, _ = build_manifest('csv', root, frontal_only=False)
    for s in set(df['subject_id']): assert (df['subject_id'] == s).sum() == (full['subject_id'] == s).sum()  # whole patients
    assert build_manifest('csv', root, frontal_only=False, max_samples=3)[0]['image_id'].tolist() == df['image_id'].tolist()  # deterministic
    with pytest.raises(DataError, match='no rows left'):
        build_manifest('csv', root, views=['SWIMMERS'])


def test_synth_manifest_with_nested_columns_saves(synth_dir, tmp_path):
    df, _ = build_manifest('synth', synth_dir)
    for ext in ('jsonl', 'parquet'):
        back, meta = load_manifest(save_manifest(df, tmp_path/f'synth_master.{ext}'))
        assert back['image_id'].tolist() == df['image_id'].tolist() and meta['dataset'] == 'synth'
        assert back['sentences'].iloc[0][0]['text'] == df['sentences'].iloc[0][0]['text']


def test_mimic_row_missing_from_split_file(tmp_path):
    root = materialise('mimic', tmp_path)
    lines = (root/'mimic-cxr-2.0.0-split.csv').read_text().splitlines(keepends=True)
    (root/'mimic-cxr-2.0.0-split.csv').write_text(''.join(l for l in lines if not l.startswith('d07,')))
    df, qc = build_manifest('mimic', root)
    assert df['image_id'].tolist() == ['d01', 'd09'] and qc.counts['missing_split'] == 1
    assert qc.examples['missing_split'][0].startswith('mimic-cxr-2.0.0-metadata.csv:line 8')


def test_mimic_negbio_label_file(tmp_path):
    root = materialise('mimic', tmp_path)
    (root/'mimic-cxr-2.0.0-chexpert.csv').rename(root/'mimic-cxr-2.0.0-negbio.csv')
    with pytest.raises(FileNotFoundError, match='label_file=None'):
        build_manifest('mimic', root)  # the default chexpert file is gone: an error, not a silent switch to the labeler
    nolab, _ = build_manifest('mimic', root, label_file=None, labeler=keyword_labeler)
    assert set(nolab['label_source']) == {'cxrlab.labels'}
    df, _ = build_manifest('mimic', root, label_file='negbio')
    assert df.set_index('image_id').loc['d01', 'label_source'] == 'mimic-cxr-2.0.0-negbio.csv'
    assert df.set_index('image_id').loc['d01', 'Edema'] == 1.0


def test_data_prep_notebook_under_papermill(tmp_path):
    import papermill as pm
    root = materialise('mimic', tmp_path)
    nb = Path(__file__).parents[1]/'nbs/01_data.ipynb'
    pm.execute_notebook(str(nb), str(tmp_path/'out.ipynb'), parameters=dict(dataset='mimic', data_root=str(root), out_dir=str(tmp_path/'runs'),
                        run_name='prep', frontal_only='false'), cwd=str(nb.parent), progress_bar=False, kernel_name='python3')
    run = tmp_path/'runs/prep'
    df, meta = load_manifest(run/'mimic_master_official.jsonl')
    assert sorted(df['image_id']) == ['d01', 'd02', 'd07', 'd09', 'd10'] and meta['qc']['skipped']['missing_image'] == 1
    st = pd.read_csv(run/'label_stats.csv', index_col=0)
    assert st.loc['images', 'total'] == 5 and st.loc['Edema', 'train'] == 2  # d01 and d02 share the study labelled Edema
    metrics = json.loads((run/'metrics.json').read_text())
    assert metrics['all/images'] == 5 and metrics['all/qc_skipped/missing_image'] == 1 and (run/'figures/label_stats.png').exists()


# ---------------------------------------------------------------- MIMIC addenda (issue 12)
def test_mimic_addendum_after_underscores_stays_out_of_findings_and_impression(tmp_path):
    "A native-format report: impression, a line of 78 underscores, then an 'ADDENDUM ...' paragraph."
    root = materialise('mimic', tmp_path)
    native = (FIXTURES/'reports/addendum_after_separator.txt').read_text()
    assert '_' * 78 in native and '\n ADDENDUM The findings' in native
    (root/'mimic-cxr-reports/files/p10/p10000032/s53189527.txt').write_text(native)  # study of d03
    df, qc = build_manifest('mimic', root)
    d03 = df.set_index('image_id').loc['d03']
    assert d03['impression'] == 'Possible mild pulmonary edema.'
    assert d03['findings'].endswith('No focal consolidation, large effusion or pneumothorax.')
    assert d03['addendum'] == 'The findings were discussed with Dr. ___ at 10:00.'
    assert 'ADDENDUM' not in d03['report'] and 'discussed' not in d03['report'] and '___ ADDENDUM' not in d03['impression']
    assert df.set_index('image_id').loc['d09', 'addendum'] == 'The nasogastric tube tip is in the stomach, not the esophagus as stated.'
    with_add, _ = build_manifest('mimic', root, include_addendum=True)
    row = with_add.set_index('image_id').loc['d03']
    assert row['impression'] == 'Possible mild pulmonary edema.'            # still never in the impression
    assert row['report'].endswith('Possible mild pulmonary edema. The findings were discussed with Dr. ___ at 10:00.')


def test_synth_generation_options_reach_the_generator():
    "difficulty / report_noise / prevalence given to build_manifest change the generated data (not swallowed)."
    from cxrlab.data import DataError, build_manifest
    clean, _ = build_manifest('synth', n_patients=40, image_size=48)
    noisy, _ = build_manifest('synth', n_patients=40, image_size=48, report_noise=1.0)
    assert (clean['report_noise'].fillna('') == '').all() and (noisy['report_noise'].fillna('') != '').any()
    assert noisy.attrs['meta']['data_root'] != clean.attrs['meta']['data_root']  # its own cache entry
    with pytest.raises(DataError, match='only apply when the data is generated'):
        build_manifest('synth', clean.attrs['meta']['data_root'], report_noise=0.5)
