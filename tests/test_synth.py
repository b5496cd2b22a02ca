"SynthCXR: determinism, mask/label/report agreement, and every native layout read back with independent parsers."
import gzip, io, json, math, re, zipfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab.core import CHEXPERT_LABELS
from cxrlab import synth as S

SIZE = 64
KEYWORDS = {'Atelectasis': ['atelectasis'], 'Cardiomegaly': ['cardiomegaly', 'heart', 'cardiac'],
            'Consolidation': ['consolidation'], 'Edema': ['edema'],
            'Enlarged Cardiomediastinum': ['mediastin'], 'Fracture': ['fracture'], 'Lung Lesion': ['nodul', 'mass', 'lesion'],
            'Lung Opacity': ['opacit'], 'Pleural Effusion': ['effusion'], 'Pleural Other': ['pleural thickening'],
            'Pneumonia': ['pneumonia'], 'Pneumothorax': ['pneumothorax'],
            'Support Devices': ['tube', 'catheter', 'line', 'pacemaker']}


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file() and not p.name.endswith('.meta.json')}


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    out = tmp_path_factory.mktemp('synth') / 'ds'
    S.generate_synthcxr(out, n_patients=24, image_size=SIZE, seed=11, views=('PA', 'AP', 'LATERAL'), prevalence=3.0, progress=False)
    return out


@pytest.fixture(scope='module')
def recs(ds):
    return S.load_synth_manifest(ds)


def test_determinism(tmp_path):
    kw = dict(n_patients=5, image_size=SIZE, views=('PA', 'LATERAL'), prevalence=2.0, progress=False)
    a, b, c = (S.generate_synthcxr(tmp_path / n, seed=s, **kw).parent for n, s in (('a', 3), ('b', 3), ('c', 4)))
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb  # same seed -> identical bytes (images, masks, manifest)
    assert fa.keys() != fc.keys() or fa != fc
    img_a = [v for k, v in fa.items() if k.startswith('images/')]
    img_c = [v for k, v in fc.items() if k.startswith('images/')]
    assert img_a[0] != img_c[0]


def test_parallel_matches_serial(tmp_path):
    "1 worker and 2 workers write the same bytes: images, masks, manifest and the counterfactuals."
    kw = dict(n_patients=30, image_size=SIZE, seed=5, prevalence=3.0, progress=False)
    a = S.generate_synthcxr(tmp_path / 'a', **kw).parent
    b = S.generate_synthcxr(tmp_path / 'b', num_workers=2, **kw).parent
    fa = _files(a)
    assert fa['contrast.jsonl'] and any(k.startswith('contrast/images/') for k in fa)
    assert fa == _files(b)


def test_manifest_columns_and_splits(recs):
    df = pd.DataFrame(recs)
    from cxrlab.core import MANIFEST_COLUMNS
    assert set(MANIFEST_COLUMNS + ['mask_path']) <= set(df.columns)
    assert set(df.split) <= {'train', 'validate', 'test'}
    assert df.groupby('subject_id').split.nunique().max() == 1  # patient-disjoint
    assert set(df.view) <= {'PA', 'AP', 'LATERAL'} and (df.is_frontal == (df.view != 'LATERAL')).all()
    for l in CHEXPERT_LABELS:
        assert set(df[l].dropna().unique()) <= {1.0, 0.0, -1.0}
    assert df.groupby('study_id').subject_id.nunique().max() == 1
    assert df.image_id.is_unique


def test_masks_exactly_for_present_labels_and_inside_thorax(ds, recs):
    frontal = [r for r in recs if r['is_frontal']]
    assert sum(r['No Finding'] != 1.0 for r in frontal) > 10
    for r in frontal:
        bits = np.asarray(Image.open(ds / r['mask_path']), dtype=np.int64)
        assert bits.shape == (SIZE, SIZE)
        a = S.sample_anatomy(S._rng(11, 1, r['patient_index']))
        thorax = S.thorax_mask(a, r['pose'], SIZE)
        for l in CHEXPERT_LABELS:
            m = (bits & S.MASK_BITS[l]) != 0
            assert m.any() == (r[l] in (1.0, -1.0) and l != 'No Finding'), (r['image_id'], l, r[l])
            if m.any() and l != 'Support Devices':
                assert (m & ~thorax).sum() <= 0.02 * m.sum() + 1, (r['image_id'], l)


def test_sites_lie_on_their_side_and_in_their_zone(ds, recs):
    "Every annotated site's mask part is on the patient side it names (patient's left = image right) and its zone matches its height."
    checked = 0
    for r in (r for r in recs if r['is_frontal']):
        a = S.sample_anatomy(S._rng(11, 1, r['patient_index']))
        for an in r['annotations']:
            if an['label'] == 'Support Devices': continue
            for site in an['sites']:
                x, y, w, h = site['bbox']
                cx = (x + w / 2) / SIZE
                assert (cx > 0.5) == (site['side'] == 'left'), (r['image_id'], an['finding'], site)
                assert S.REGIONS[site['region']] == site['zone'], site
                checked += 1
    assert checked >= 20


def test_sentence_sides_match_the_facts(recs):
    "A sentence that names one side only states facts of that side (lingula/retrocardiac imply left, middle lobe right)."
    checked = 0
    for r in recs:
        for s in r['sentences']:
            words = set(re.findall(r'[a-z]+', s['text'].lower()))
            sides = {t.split(':', 1)[1].split('/')[0] for t in s['facts'] if '|region:' in t}
            if not sides or not s['findings'] or s['findings'][0] == 'Support Devices': continue
            if 'right' in words and 'left' not in words and not words & {'lingula', 'lingular', 'retrocardiac'}: assert sides == {'right'}, s
            if 'left' in words and 'right' not in words and 'middle' not in words: assert sides == {'left'}, s
            checked += 1
    assert checked >= 20


def test_labels_consistent_with_report(recs):
    for r in recs:
        lab = S.label_from_sentences([dict(mentions=s['labels']) for s in r['sentences']])
        for l in CHEXPERT_LABELS:
            assert (math.isnan(lab[l]) and math.isnan(r[l])) or lab[l] == r[l]
        text = r['report'].lower()
        for l in S.PATHOLOGIES:
            if r[l] in (1.0, -1.0): assert any(k in text for k in KEYWORDS[l]), (l, text)
        for s in r['sentences']:
            if s['labels'] and set(s['labels'].values()) == {0}:
                assert re.search(r'\b(no|not|normal|within normal limits|sharp|unremarkable|clear)\b', s['text'].lower()), s['text']
            if -1 in s['labels'].values():
                assert re.search(r'possibl|cannot be excluded|cannot exclude|cannot rule out|may|questionable|concerning|not excluded|'
                                 r'suspect|probable|could|suspicious|equivocal', s['text'].lower()), s['text']
        assert r['findings'] in r['report'] and r['impression'] in r['report']
        for sec in ('EXAMINATION:', 'INDICATION:', 'COMPARISON:', 'FINDINGS:', 'IMPRESSION:'): assert sec in r['report']


def test_report_noise_is_recorded(tmp_path):
    recs = S.load_synth_manifest(S.generate_synthcxr(tmp_path / 'n', n_patients=20, image_size=SIZE, seed=2, prevalence=3.0,
                                                     report_noise=1.0, progress=False))
    noisy = [r for r in recs if r['report_noise']]
    assert len(noisy) > 5 and all(re.match(r'(dropped|laterality_flipped):', r['report_noise']) for r in noisy)


def test_refuses_non_empty_and_bad_config(tmp_path):
    (tmp_path / 'x').mkdir(); (tmp_path / 'x' / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='not empty'): S.generate_synthcxr(tmp_path / 'x', n_patients=1, progress=False)
    S.generate_synthcxr(tmp_path / 'x', n_patients=1, overwrite=True, progress=False)
    assert (tmp_path / 'x' / 'keep.txt').read_text() == 'mine'  # overwrite only removes what SynthCXR generates
    with pytest.raises(ValueError, match='views'): S.generate_synthcxr(tmp_path / 'y', views=('LATERAL',), progress=False)
    with pytest.raises(TypeError, match='unknown SynthCXR options'): S.generate_synthcxr(tmp_path / 'z', colour='red', progress=False)


def test_ensure_caches(tmp_path, monkeypatch):
    monkeypatch.setenv('CXRLAB_CACHE', str(tmp_path / 'cache'))
    m = S.ensure_synthcxr(n_patients=4, image_size=SIZE, seed=0)
    assert str(m).startswith(str(tmp_path / 'cache')) and m.exists()
    mtime = m.stat().st_mtime_ns
    assert S.ensure_synthcxr(n_patients=4, image_size=SIZE, seed=0) == m and m.stat().st_mtime_ns == mtime
    assert not list((tmp_path / 'cache' / 'synthcxr').glob('.*tmp*'))


# ---------------------------------------------------------------- native layouts, read back independently
@pytest.fixture(scope='module')
def layouts(ds, tmp_path_factory):
    root = tmp_path_factory.mktemp('layouts')
    return {lay: S.write_layout(ds, root / lay, lay) for lay in S.LAYOUTS}


def test_mimic_layout(layouts, recs):
    out = layouts['mimic']
    with gzip.open(out / 'mimic-cxr-2.0.0-metadata.csv.gz', 'rt') as f:
        assert f.readline().strip() == ('dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,'
                                        'StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,'
                                        'PatientOrientationCodeSequence_CodeMeaning')
    meta = pd.read_csv(out / 'mimic-cxr-2.0.0-metadata.csv.gz')
    assert len(meta) == len(recs) and set(meta.ViewPosition) <= {'PA', 'AP', 'LATERAL'}
    assert meta.dicom_id.str.fullmatch(r'[0-9a-f]{8}(-[0-9a-f]{8}){4}').all()
    assert meta.StudyDate.astype(str).str.fullmatch(r'2\d{7}').all() and (meta.Rows == SIZE).all()
    split = pd.read_csv(out / 'mimic-cxr-2.0.0-split.csv.gz')
    assert list(split.columns) == ['dicom_id', 'study_id', 'subject_id', 'split'] and set(split.split) <= {'train', 'validate', 'test'}
    chex_raw = gzip.open(out / 'mimic-cxr-2.0.0-chexpert.csv.gz', 'rt').read().splitlines()
    assert chex_raw[0] == 'subject_id,study_id,' + ','.join(CHEXPERT_LABELS)
    cells = {c for line in chex_raw[1:] for c in line.split(',')[2:]}
    assert cells <= {'1.0', '0.0', '-1.0', ''} and {'1.0', '0.0', ''} <= cells
    chex = pd.read_csv(out / 'mimic-cxr-2.0.0-chexpert.csv.gz')
    assert chex.study_id.is_unique and len(chex) == len({r['study_id'] for r in recs})
    for _, row in meta.iterrows():
        p = out / f"files/p{str(row.subject_id)[:2]}/p{row.subject_id}/s{row.study_id}/{row.dicom_id}.jpg"
        assert p.exists() and Image.open(p).format == 'JPEG'
    z = zipfile.ZipFile(out / 'mimic-cxr-reports.zip')
    names = sorted(z.namelist())
    assert len(names) == len(chex) and all(re.fullmatch(r'files/p1\d/p1\d{7}/s5\d{7}\.txt', n) for n in names)
    txt = z.read(names[0]).decode()
    assert txt == (out / names[0]).read_text()
    assert txt.lstrip().startswith('FINAL REPORT') and ' EXAMINATION:  CHEST' in txt and ' INDICATION:  ___' in txt and ' IMPRESSION:' in txt


def test_iu_layout(layouts, recs):
    out = layouts['iu']
    rep = pd.read_csv(out / 'indiana_reports.csv')
    assert list(rep.columns) == ['uid', 'MeSH', 'Problems', 'image', 'indication', 'comparison', 'findings', 'impression']
    proj = pd.read_csv(out / 'indiana_projections.csv')
    assert list(proj.columns) == ['uid', 'filename', 'projection'] and set(proj.projection) <= {'Frontal', 'Lateral'}
    assert proj.filename.str.fullmatch(r'\d+_IM-\d{4}-\d{4}\.dcm\.png').all()
    assert all((out / 'images' / 'images_normalized' / f).exists() for f in proj.filename)
    assert set(proj.uid) == set(rep.uid) and len(proj) == len(recs)
    assert (rep.MeSH == 'normal').any() and rep.indication.str.contains('XXXX').all()


def test_iu_xml_layout(layouts):
    out = layouts['iu_xml']
    xmls = sorted((out / 'ecgen-radiology').glob('*.xml'), key=lambda p: int(p.stem))
    assert xmls and xmls[0].name == '1.xml'
    for p in xmls:
        root = ET.parse(p).getroot()
        assert root.tag == 'eCitation' and root.find('uId').get('id') == f'CXR{p.stem}'
        labels = [a.get('Label') for a in root.iter('AbstractText')]
        assert labels == ['COMPARISON', 'INDICATION', 'FINDINGS', 'IMPRESSION']
        assert root.find('MeSH').find('major') is not None
        ids = [pi.get('id') for pi in root.iter('parentImage')]
        assert ids and all(re.fullmatch(rf'CXR{p.stem}_IM-\d{{4}}-\d{{4}}', i) for i in ids)
        assert all((out / 'NLMCXR_png' / f'{i}.png').exists() for i in ids)
    proj = pd.read_csv(out / 'indiana_projections.csv')
    assert list(proj.columns) == ['uid', 'filename', 'projection'] and set(proj.projection) <= {'Frontal', 'Lateral'}
    assert {'CXR' + f[:-len('.dcm.png')] for f in proj.filename} == {pi.get('id') for p in xmls for pi in ET.parse(p).getroot().iter('parentImage')}


def test_chexpert_plus_layout(layouts, recs):
    out = layouts['chexpert_plus']
    df = pd.read_csv(out / 'df_chexpert_plus_240401.csv')
    assert list(df.columns) == S.CHEXPERT_PLUS_COLUMNS and len(df) == len(recs)
    assert df.path_to_image.str.fullmatch(r'(train|valid)/patient\d{5}/study\d+/view\d+_(frontal|lateral)\.jpg').all()
    assert set(df.split) <= {'train', 'valid'} and set(df.frontal_lateral) <= {'Frontal', 'Lateral'}
    assert set(df.ap_pa.dropna()) <= {'AP', 'PA'} and df.ap_pa.isna().sum() == (df.frontal_lateral == 'Lateral').sum()
    assert all((out / p).exists() for p in df.path_to_image)
    for name in ('report_fixed.json', 'findings_fixed.json', 'impression_fixed.json'):
        rows = [json.loads(l) for l in (out / 'chexbert_labels' / name).read_text().splitlines()]
        assert [r['path_to_image'] for r in rows] == list(df.path_to_image)
        assert all(set(r) == {'path_to_image', *CHEXPERT_LABELS} for r in rows)
        assert {v for r in rows for k, v in r.items() if k != 'path_to_image'} <= {1.0, 0.0, -1.0, None}


def test_csv_layout(layouts, recs):
    out = layouts['csv']
    df = pd.read_csv(out / 'studies.csv')
    assert list(df.columns) == ['study_id', 'image_paths', 'view_names', 'findings', 'impression']
    assert len(df) == len({r['study_id'] for r in recs})
    for _, row in df.iterrows():
        paths, views = row.image_paths.split(';'), row.view_names.split(';')
        assert len(paths) == len(views) and all((out / p).exists() for p in paths)
    assert sum(len(pd.read_csv(out / f'{s}.csv')) for s in ('train', 'validate', 'test')) == len(df)


def test_ms_cxr_layout(layouts):
    out = layouts['ms_cxr']
    df = pd.read_csv(out / 'MS_CXR_Local_Alignment_v1.1.0.csv')
    assert list(df.columns) == ['dicom_id', 'category_name', 'label_text', 'path', 'x', 'y', 'w', 'h', 'image_width', 'image_height', 'split']
    assert len(df) > 0 and set(df.category_name) <= set(S.MS_CXR_CATEGORIES) and set(df.split) <= {'train', 'val', 'test'}
    assert ((df.x >= 0) & (df.y >= 0) & (df.x + df.w <= df.image_width) & (df.y + df.h <= df.image_height) & (df.w > 0)).all()
    assert all((out / p).exists() for p in df.path)


def test_cli(tmp_path, capsys):
    out = tmp_path / 'cli'
    assert S.synth_cli(['--out', str(out), '--patients', '3', '--image-size', '64', '--layout', 'mimic', '--seed', '1']) == 0
    assert (out / 'mimic-cxr-2.0.0-metadata.csv.gz').exists()
    assert S.synth_cli(['--out', str(out), '--patients', '3', '--layout', 'iu']) == 2
    assert 'not empty' in capsys.readouterr().err
    assert S.synth_cli(['--out', str(out), '--patients', '3', '--layout', 'iu', '--overwrite']) == 0
    assert (out / 'indiana_reports.csv').exists()
    assert S.synth_cli(['--out', str(tmp_path / 'plain'), '--patients', '2']) == 0
    assert (tmp_path / 'plain' / 'manifest.jsonl').exists() and (tmp_path / 'plain' / 'contrast.jsonl').exists()
    assert S.synth_cli(['--out', str(tmp_path / 'nc'), '--patients', '12', '--no-contrast']) == 0
    assert not (tmp_path / 'nc' / 'contrast.jsonl').exists() and not (tmp_path / 'nc' / 'contrast').exists()
    with pytest.raises(SystemExit): S.synth_cli(['--out', str(tmp_path / 'bad'), '--layout', 'nope'])


def _agreement(studies, LB):
    "Per-label share of studies whose cxrlab.labels labels (findings + impression) equal the SynthCXR labels, and the first misses."
    df = pd.DataFrame([{'findings': r['findings'], 'impression': r['impression']} for r in studies])
    pred = LB.label_reports(df, mode='both').reset_index(drop=True)
    out, misses = {}, []
    for l in CHEXPERT_LABELS:
        truth = np.array([r[l] for r in studies], dtype=float)
        got = pred[l].astype(float).to_numpy()
        ok = np.where(np.isnan(truth), np.isnan(got), truth == got)
        out[l] = ok.mean()
        misses += [(l, truth[i], got[i], studies[i]['findings'] + ' | ' + studies[i]['impression']) for i in np.flatnonzero(~ok)[:2]]
    return out, misses


def test_reports_agree_with_independent_labeler(recs):
    "The project's rule-based CheXpert labeler (cxrlab.labels), run on findings+impression, recovers every SynthCXR label."
    import cxrlab.labels as LB  # a hard dependency: a missing module must fail, not skip
    agree, misses = _agreement(list({r['study_id']: r for r in recs}.values()), LB)
    assert min(agree.values()) == 1.0, misses


def test_labeler_agreement_on_many_reports():
    "100% agreement with cxrlab.labels over ~1,500 report-only studies at raised prevalence, hedges and follow-ups included."
    import cxrlab.labels as LB  # a hard dependency: a missing module must fail, not skip
    studies = S.synth_reports(n_patients=800, seed=7, prevalence=2.5)
    assert len(studies) > 1200 and sum(r[l] == -1.0 for r in studies for l in CHEXPERT_LABELS) > 100
    agree, misses = _agreement(studies, LB)
    assert min(agree.values()) == 1.0, misses


def test_synth_reports_match_the_dataset(ds, recs):
    "Report-only generation gives exactly the dataset's reports, labels and facts (reports depend on the geometry, not on pixels)."
    reps = {r['study_id']: r for r in S.synth_reports(n_patients=24, seed=11, views=('PA', 'AP', 'LATERAL'), prevalence=3.0)}
    for r in recs:
        q = reps[r['study_id']]
        assert (q['findings'], q['impression'], q['image_facts']) == (r['findings'], r['impression'], r['image_facts'])
        assert [s['facts'] for s in q['sentences']] == [s['facts'] for s in r['sentences']]
        assert all((math.isnan(q[l]) and math.isnan(r[l])) or q[l] == r[l] for l in CHEXPERT_LABELS)


def test_report_numbers_are_the_drawn_ones(ds, recs):
    "The stated cardiothoracic ratio matches the one measured on the image; nodule sizes match the mask; a named rib is the drawn one."
    ctr_checked = size_checked = 0
    for r in (r for r in recs if r['is_frontal'] and r['view'] == 'PA'):
        for s in r['sentences']:
            m = re.search(r'cardiothoracic ratio (?:of |is )?(0\.\d\d)', s['text'])
            if m:
                assert abs(float(m.group(1)) - r['ctr']) <= 0.04, (s['text'], r['ctr']); ctr_checked += 1
        for an in r['annotations']:
            if an['finding'] != 'Lung Lesion' or len(an['sites']) != 1: continue
            sent = next(s for s in r['sentences'] if s['findings'] == ['Lung Lesion'] and s['section'] == 'findings')
            m = re.search(r'(\d+(?:\.\d)?) (mm|cm)', sent['text'])
            if not m: continue
            mm = float(m.group(1)) * (10 if m.group(2) == 'cm' else 1)
            px = mm / S.MM_PER_UNIT * SIZE / 2 * r['pose']['scale']  # drawn diameter in pixels
            assert abs(max(an['sites'][0]['bbox'][2:]) - px) <= 2 + 0.3 * px, (sent['text'], an['sites'][0], px)
            size_checked += 1
    assert ctr_checked >= 5 and size_checked >= 2, (ctr_checked, size_checked)


def test_pneumothorax_is_drawn_in_the_named_zone(tmp_path):
    "The mask of a small or moderate pneumothorax has its centre of mass in the zone the report names (apical / lateral / basilar)."
    m = S.generate_synthcxr(tmp_path / 'p', n_patients=40, image_size=96, seed=3, prevalence={'Pneumothorax': 0.6}, progress=False)
    hits = n = 0
    for r in S.load_synth_manifest(m):
        for an in r['annotations']:
            if an['label'] != 'Pneumothorax' or an['severity'] == 'large' or not r['is_frontal']: continue
            a = S.sample_anatomy(S._rng(3, 1, r['patient_index']))
            mask = S.read_mask(m.parent / r['mask_path'], 'Pneumothorax')
            U, V = S._pose_grid(96, r['pose'])
            hits += S._zone_at(a, float(V[mask].mean()))[0] == an['zone']; n += 1
    assert n >= 8 and hits / n >= 0.9, (hits, n)


def test_lesion_and_fracture_masks_visible_at_128(tmp_path):
    "At 128 px the median lung-lesion and fracture masks cover at least 9 pixels."
    m = S.generate_synthcxr(tmp_path / 'v', n_patients=60, image_size=128, seed=1, prevalence={'Lung Lesion': 0.5, 'Fracture': 0.5}, progress=False)
    areas = {'Lung Lesion': [], 'Fracture': []}
    for r in S.load_synth_manifest(m):
        for an in r['annotations']:
            if an['label'] in areas and r['is_frontal']: areas[an['label']] += [site['area'] for site in an['sites']]
    assert all(len(v) >= 15 and np.median(v) >= 9 for v in areas.values()), {k: (len(v), np.median(v)) for k, v in areas.items()}


def test_every_layout_is_byte_reproducible(ds, tmp_path):
    "Writing a layout twice gives the same bytes (gzip headers and zip entries carry no wall clock), and so does the CLI."
    for lay in S.LAYOUTS:
        a, b = S.write_layout(ds, tmp_path / f'{lay}-a', lay), S.write_layout(ds, tmp_path / f'{lay}-b', lay)
        fa, fb = _files(a), _files(b)
        assert fa and fa == fb, (lay, [k for k in fa if fa[k] != fb.get(k)][:3])
    for n in ('c1', 'c2'):
        assert S.synth_cli(['--out', str(tmp_path / n), '--patients', '4', '--layout', 'mimic', '--seed', '2']) == 0
    assert _files(tmp_path / 'c1') == _files(tmp_path / 'c2')


@pytest.fixture(scope='module')
def demo_like():
    "A cached dataset read the way every notebook reads it: cxrlab.data.build_manifest('synth', ...)."
    from cxrlab.data import build_manifest
    df, _ = build_manifest('synth', n_patients=400, image_size=48, seed=4, split_scheme='official')
    return df


def test_contrast_set_through_build_manifest(demo_like):
    "The contrast set of the cached dataset: test split only, same patient and positive labels, one named change, readable by CXRDataset."
    from cxrlab.data import CXRDataset
    df = demo_like
    cs = S.load_contrast_set(df)
    test = df[df['split'] == 'test']
    assert len(cs) >= 5 and set(cs['contrast_of']) <= set(test['image_id']) and (cs['split'] == 'test').all()
    assert set(cs.columns) >= set(df.columns) - {'label_source'} | {'contrast_of', 'contrast_change'}
    orig = df.set_index('image_id')
    for r in cs.itertuples():
        o = orig.loc[r.contrast_of]
        assert r.subject_id == o['subject_id'] and r.study_id != o['study_id'] and r.report != o['report']
        assert {l for l in CHEXPERT_LABELS if cs.at[r.Index, l] == 1.0} == {l for l in CHEXPERT_LABELS if o[l] == 1.0}
        kind, rest = r.contrast_change.split(':', 1)
        assert kind in ('side', 'zone', 'severity', 'swap_sides'), r.contrast_change
        differ = set(r.image_facts) ^ set(o['image_facts'])
        assert differ and all('|' in t or t.startswith('heart|') for t in differ), (r.contrast_change, differ)  # labels never change
    ds = CXRDataset(cs, mode='mask')
    x = ds[0]
    assert x['image'].ndim == 3 and x['mask'].shape[-1] == x['image'].shape[-1]
    kinds = pd.Series([c.split(':')[0] for c in cs['contrast_change']]).value_counts()
    assert len(kinds) >= 2, kinds


def test_oracles(demo_like):
    "Without report noise every true pair agrees on all facts; the structure oracle beats the label oracle; noise makes the sides differ."
    test = demo_like[demo_like['split'] == 'test'].reset_index(drop=True)
    iv, tv = S.oracle_embeddings(test, 'structure')
    diag = (iv * tv).sum(1)
    assert iv.shape == tv.shape and iv.shape[0] == len(test) and ((diag >= 0) & (diag < 0.2)).all()
    lab, st = S.oracle_retrieval(test, 'labels'), S.oracle_retrieval(test, 'structure')
    assert st['t2i/R@1'] >= lab['t2i/R@1'] + 0.1 and st['i2t/R@1'] > lab['i2t/R@1'], (lab, st)
    ab = S.oracle_retrieval(test, 'labels', abnormal_only=True)
    assert ab['t2i/n_queries'] < lab['t2i/n_queries']


def test_oracle_text_side_follows_report_noise(tmp_path):
    "Under report noise the text vector is the noisy report's: the true pair then disagrees on at least one fact."
    m = S.generate_synthcxr(tmp_path / 'n', n_patients=30, image_size=32, seed=2, prevalence=3.0, report_noise=1.0, progress=False)
    df = pd.DataFrame(S.load_synth_manifest(m))
    iv, tv = S.oracle_embeddings(df, 'structure')
    diag = np.floor((iv * tv).sum(1).numpy())
    noisy = df['report_noise'].str.len().to_numpy() > 0
    assert noisy.sum() > 5 and (diag[noisy] <= -1).all() and (diag[~noisy] == 0).all()


def test_prior_localization_rows(demo_like):
    "Three prior rows with pointing game / Dice / IoU in [0, 1]; knowing the finding (and where the report says it is) beats the centre."
    tr, te = demo_like[demo_like['split'] == 'train'], demo_like[demo_like['split'] == 'test']
    res = S.prior_localization_metrics(tr, te)
    assert set(res) == {'centre', 'finding', 'finding_side_zone'}
    for row in res.values():
        assert all(0 <= row[k] <= 1 for k in ('PointingGame', 'Dice', 'IoU')) and 0 < row['threshold'] < 1 and row['n_queries'] > 10
    for row in ('finding', 'finding_side_zone'):  # the finding (and where the report puts it) beats the image centre by far
        assert res[row]['Dice'] > res['centre']['Dice'] + 0.03 and res[row]['PointingGame'] > res['centre']['PointingGame'] + 0.05, res
