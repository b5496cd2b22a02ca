"""Tests for cxrlab.labels: the CheXpert-14 report labeler, location parser, query templates and agreement."""
import math

import numpy as np
import pandas as pd
import pytest

from cxrlab.core import CHEXPERT_LABELS
from cxrlab.labels import (DEV_SET, QUERY_TEMPLATES, Mention, agreement, binarize, dev_frames, label_queries, label_report,
                           label_reports, parse_mentions, section_text)


def labels_of(text, **kw):
    "Non-NaN labels of `text` as {label: value}."
    return {k: v for k, v in label_report(text, **kw).items() if not math.isnan(v)}


@pytest.mark.parametrize('i', range(len(DEV_SET)))
def test_dev_set_case(i):
    reports, expected = dev_frames()
    got = pd.Series(label_report(reports[i]))
    exp = expected.iloc[i]
    same = (got == exp) | (got.isna() & exp.isna())
    assert same.all(), f"{reports[i]!r}: expected {exp[~same].to_dict()}, got {got[~same].to_dict()}"


def test_dev_set_macro_f1():
    reports, expected = dev_frames()
    ag = agreement(label_reports(reports), expected)
    assert ag.loc['macro', 'f1'] >= 0.95


@pytest.mark.parametrize('text, label, value', [
    ('No focal consolidation, pleural effusion, or pneumothorax.', 'Pneumothorax', 0.0),
    ('Without evidence of pneumothorax or effusion.', 'Pleural Effusion', 0.0),
    ('Lungs are free of focal airspace disease.', 'Lung Opacity', 0.0),
    ('Interval resolution of left lower lobe pneumonia.', 'Pneumonia', 0.0),
    ('The right pneumothorax is no longer visualized.', 'Pneumothorax', 0.0),
    ('Pneumonia cannot be excluded.', 'Pneumonia', -1.0),
    ('Cannot rule out a small left effusion.', 'Pleural Effusion', -1.0),
    ('Possible right lower lobe consolidation.', 'Consolidation', -1.0),
    ('Opacity suspicious for pneumonia.', 'Pneumonia', -1.0),
    ('Atelectasis versus pneumonia.', 'Pneumonia', -1.0),
    ('Atelectasis versus pneumonia.', 'Atelectasis', -1.0),
    ('Findings likely reflect atelectasis.', 'Atelectasis', 1.0),  # CheXpert: "likely" stays positive
    ('Pneumonia is unlikely.', 'Pneumonia', 0.0),
    ('No significant change in the small left effusion.', 'Pleural Effusion', 1.0),  # pseudo-negation
    ('Partially resolved right lower lobe pneumonia.', 'Pneumonia', 1.0),
    ('No pneumothorax, possible small left effusion.', 'Pleural Effusion', -1.0),
    ('No pneumothorax is seen and the heart is enlarged.', 'Cardiomegaly', 1.0),  # negation scope ends at the verb
    ('Small effusion; no pneumothorax.', 'Pleural Effusion', 1.0),
    ('Small pericardial effusion.', 'Pleural Effusion', math.nan),  # exclusion
    ('Calcified granuloma in the left upper lobe.', 'Lung Lesion', math.nan),
    ('Heart size is normal.', 'Cardiomegaly', 0.0),
    ('The heart is not enlarged.', 'Cardiomegaly', 0.0),
    ('The cardiac silhouette is mildly enlarged.', 'Cardiomegaly', 1.0),
    ('Heart size is upper limits of normal.', 'Cardiomegaly', 0.0),
    ('Borderline heart size.', 'Cardiomegaly', -1.0),
    ('Stable heart size.', 'Cardiomegaly', math.nan),
    ('Widened mediastinum.', 'Enlarged Cardiomediastinum', 1.0),
    ('Pulmonary vascular congestion.', 'Edema', -1.0),  # CheXpert hedged term
    ('Congestive heart failure.', 'Cardiomegaly', -1.0),
    ('Blunting of the left costophrenic angle.', 'Pleural Effusion', math.nan),  # not a CheXpert effusion mention
    ('The costophrenic angles are sharp.', 'Pleural Effusion', 0.0),
    ('Lines and tubes in standard position.', 'Support Devices', 1.0),
    ('Interval removal of the right chest tube.', 'Support Devices', 0.0),
    ('Healed left rib fractures.', 'Fracture', 1.0),
    ('No acute cardiopulmonary process.', 'No Finding', 1.0),
    ('Stable small left effusion.', 'No Finding', math.nan),
    ('Emphysema. No acute process.', 'No Finding', math.nan),  # other findings block No Finding
    ('ET tube 4 cm above the carina. No acute process.', 'No Finding', 1.0),  # devices do not
])
def test_rules(text, label, value):
    got = label_report(text)[label]
    assert (math.isnan(value) and math.isnan(got)) or got == value, f"{text!r}: {label} = {got}, expected {value}"


def test_strict_mode_follows_chexpert():
    assert math.isnan(label_report('Stable cardiomediastinal silhouette.')['Enlarged Cardiomediastinum'])
    assert label_report('Stable cardiomediastinal silhouette.', strict=True)['Enlarged Cardiomediastinum'] == -1.0
    assert label_report('No new consolidation.')['Consolidation'] == 0.0
    assert label_report('No new consolidation.', strict=True)['Consolidation'] == -1.0


def test_sections_first_and_both():
    rep = {'findings': 'Small left pleural effusion.', 'impression': 'No acute cardiopulmonary process.'}
    assert math.isnan(label_report(rep)['Pleural Effusion'])
    assert label_report(rep, mode='both')['Pleural Effusion'] == 1.0
    assert label_report({'findings': 'Small left pleural effusion.', 'impression': None})['Pleural Effusion'] == 1.0
    text = 'INDICATION: rule out pneumonia.\nFINDINGS: Right lower lobe pneumonia.\nIMPRESSION: Pneumonia.'
    assert section_text(text) == 'Pneumonia.'
    assert math.isnan(label_report('INDICATION: evaluate for pneumonia. IMPRESSION: Clear lungs.')['Pneumonia'])
    assert label_report('Evaluate for pneumonia.')['Pneumonia'] == -1.0  # the same words, labelled when they are the report


def test_parse_mentions_locations():
    ms = parse_mentions('Small left pleural effusion and large right pneumothorax. Mild bibasilar atelectasis. '
                        'Consolidation in the right upper lobe.')
    got = {m.label: (m.status, m.laterality, m.zone, m.severity) for m in ms}
    assert got['Pleural Effusion'] == ('positive', 'left', None, 'small')
    assert got['Pneumothorax'] == ('positive', 'right', None, 'large')
    assert got['Atelectasis'] == ('positive', 'bilateral', 'base', 'small')
    assert got['Consolidation'] == ('positive', 'right', 'upper', None)
    m = ms[0]
    assert isinstance(m, Mention) and m.value == 1.0
    assert 'Small left pleural effusion and large right pneumothorax'[m.span[0]:m.span[1]] == m.text == 'pleural effusion'


def test_severity_vocabulary():
    sev = lambda t: [m.severity for m in parse_mentions(t) if m.label == 'Pleural Effusion'][0]
    assert sev('Trace left effusion.') == 'small'
    assert sev('Moderate right effusion.') == 'moderate'
    assert sev('Extensive right effusion.') == 'large'
    assert sev('Small to moderate bilateral effusions.') == 'moderate'


def test_label_reports_shapes_and_bad_input(caplog):
    s = pd.Series(['Right lower lobe pneumonia.', None, float('nan'), ''], index=list('abcd'))
    df = label_reports(s)
    assert list(df.columns) == CHEXPERT_LABELS and list(df.index) == list('abcd')
    assert df.loc['a', 'Pneumonia'] == 1.0 and df.loc[['b', 'c', 'd']].isna().all().all()
    assert '3 of 4 reports have no text' in caplog.text
    frame = pd.DataFrame({'findings': ['Small left effusion.', 'Clear.'], 'impression': [None, 'Mild cardiomegaly.']})
    out = label_reports(frame)
    assert out.loc[0, 'Pleural Effusion'] == 1.0 and out.loc[1, 'Cardiomegaly'] == 1.0 and math.isnan(out.loc[1, 'Pleural Effusion'])
    with pytest.raises(TypeError, match='report 1'): label_reports(['fine', 42])
    with pytest.raises(TypeError, match='expected str'): label_report({'findings': 3.5})
    with pytest.raises(ValueError, match='mode'): label_report('x', mode='last')
    with pytest.raises(KeyError, match='none of the columns'): label_reports(pd.DataFrame({'x': ['a']}))


def test_agreement_against_sklearn():
    from sklearn.metrics import precision_recall_fscore_support
    rng = np.random.default_rng(1)
    vals = [1.0, 0.0, -1.0, np.nan]
    p = pd.DataFrame(rng.choice(vals, size=(300, 14)), columns=CHEXPERT_LABELS)
    r = pd.DataFrame(rng.choice(vals, size=(300, 14)), columns=CHEXPERT_LABELS)
    for ua in ('positive', 'negative'):
        ag = agreement(p, r, uncertain_as=ua)
        P, R, F, S = precision_recall_fscore_support(binarize(r, ua).to_numpy(), binarize(p, ua).to_numpy(), zero_division=np.nan)
        np.testing.assert_allclose(ag.loc[CHEXPERT_LABELS, 'f1'], F)
        np.testing.assert_allclose(ag.loc[CHEXPERT_LABELS, 'recall'], R)
        assert ag.loc[CHEXPERT_LABELS, 'support'].tolist() == S.tolist()
    perfect = agreement(p, p)
    assert perfect.loc['macro', 'f1'] == 1.0
    with pytest.raises(ValueError, match='share no index'): agreement(p, r.set_index(r.index + 10_000))
    with pytest.raises(KeyError, match='missing'): agreement(p, r, labels=['Effusion'])
    with pytest.raises(ValueError, match='uncertain_as'): binarize(p, 'maybe')


def test_agreement_partial_overlap_is_reported(caplog):
    p = pd.DataFrame({'Edema': [1.0, 0.0, 1.0]}, index=[0, 1, 2])
    r = pd.DataFrame({'Edema': [1.0, 1.0]}, index=[1, 2])
    ag = agreement(p, r)
    assert ag.loc['Edema', 'n'] == 2 and ag.loc['Edema', 'tp'] == 1 and ag.loc['Edema', 'fn'] == 1
    assert '1 pred rows' in caplog.text


def test_queries_are_read_as_their_label():
    for label in CHEXPERT_LABELS:
        qs = label_queries(label)
        assert len(qs) >= 3 and all(isinstance(q, str) and q for q in qs)
        for q in qs: assert label_report(q)[label] in (1.0, -1.0), (label, q)
    assert 'Findings consistent with {label}.' in QUERY_TEMPLATES['generic']
    with pytest.raises(KeyError): label_queries('Nodule')


def test_throughput_floor():
    "A loose floor (the benchmark measures the real figure): 300 reports in well under a second of CPU."
    import time
    reps = [' '.join(r for r, _ in DEV_SET[i:i + 5]) for i in range(0, 300)]
    t = time.process_time(); label_reports(reps); dt = time.process_time() - t
    assert len(reps) / dt > 500, f"{len(reps) / dt:.0f} reports/s"


def test_location_agreement_on_synth_style_rows():
    from cxrlab.labels import location_agreement
    sent = {'text': 'Small left pleural effusion.', 'labels': {'Pleural Effusion': 1}, 'findings': ['Pleural Effusion']}
    ann = {'finding': 'Pleural Effusion', 'label': 'Pleural Effusion', 'side': 'left', 'zone': 'lower', 'severity': 'small'}
    ok = location_agreement(pd.DataFrame({'sentences': [[sent]], 'annotations': [[ann]]}))
    assert ok.loc['laterality', 'accuracy'] == 1.0 and ok.loc['severity', 'accuracy'] == 1.0
    assert ok.loc['zone', 'n'] == 0  # the sentence states no zone: not scored
    wrong = location_agreement(pd.DataFrame({'sentences': [[sent]], 'annotations': [[{**ann, 'side': 'right', 'severity': 'large'}]]}))
    assert wrong.loc['laterality', 'accuracy'] == 0.0 and wrong.loc['severity', 'accuracy'] == 0.0


def test_mapping_falls_back_to_sectioned_report():
    row = {'impression': None, 'findings': '', 'report': 'INDICATION: cough. FINDINGS: Small left effusion. IMPRESSION: Left effusion.'}
    assert label_report(row)['Pleural Effusion'] == 1.0
    assert math.isnan(label_report({'impression': None, 'report': 'INDICATION: evaluate for pneumonia.'})['Pneumonia'])


def test_labels_is_a_leaf_module():
    "cxrlab.labels imports nothing from cxrlab.data / cxrlab.synth; data takes LABELER_SOURCE from labels."
    import ast, pathlib, subprocess, sys
    import cxrlab.labels as L
    tree = ast.parse(pathlib.Path(L.__file__).read_text())
    imported = [n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    bad = [m for m in imported if m.split('.')[-1] in ('data', 'synth')]
    assert not bad, f"cxrlab/labels.py imports {bad}"
    loaded = subprocess.run([sys.executable, '-c', 'import sys, cxrlab.labels; print(sorted(m for m in sys.modules if m.startswith("cxrlab")))'],
                            capture_output=True, text=True, check=True).stdout
    assert 'cxrlab.data' not in loaded and 'cxrlab.synth' not in loaded, loaded
    import cxrlab.data as D
    assert D.LABELER_SOURCE is L.LABELER_SOURCE and 'LABELER_SOURCE' not in D.__all__


@pytest.mark.parametrize('i', range(len(__import__('cxrlab.labels', fromlist=['x']).CHEXPERT_DIFFERENCES)))
def test_chexpert_difference_holds(i):
    "Each deliberate deviation from CheXpert's labeler gives the value CHEXPERT_DIFFERENCES records."
    from cxrlab.labels import CHEXPERT_DIFFERENCES
    text, label, ours, chexpert, why = CHEXPERT_DIFFERENCES[i]
    got = label_report(text)[label]
    assert (math.isnan(ours) and math.isnan(got)) or got == ours, (text, label, got, why)


def test_uncertainty_policies_per_label():
    "U-Findings counts a hedged diagnosis negative and a hedged finding positive; the three CheXpert policies are uniform."
    from cxrlab.labels import HEDGED_DIAGNOSES, UNCERTAINTY_POLICIES, policy_per_label
    pred = pd.DataFrame([label_report('Patchy right basilar opacity, which may represent atelectasis or pneumonia.')])
    assert pred.loc[0, 'Pneumonia'] == -1.0 and pred.loc[0, 'Atelectasis'] == -1.0 and pred.loc[0, 'Lung Opacity'] == 1.0
    b = binarize(pred[['Pneumonia', 'Atelectasis', 'Lung Opacity']], 'U-Findings')
    assert b.iloc[0].tolist() == [0.0, 1.0, 1.0]
    for name, how in (('U-Ones', 1.0), ('U-Zeros', 0.0)):
        assert binarize(pred[['Pneumonia', 'Atelectasis']], name).iloc[0].tolist() == [how, how]
    assert binarize(pred[['Pneumonia']], 'U-Ignore').isna().all().all()
    assert set(HEDGED_DIAGNOSES) <= set(CHEXPERT_LABELS) and set(UNCERTAINTY_POLICIES) >= {'U-Ones', 'U-Zeros', 'U-Ignore'}
    assert policy_per_label({'*': 'U-Ones', 'Cardiomegaly': 'U-Zeros'}, ['Cardiomegaly', 'Edema']) == ['negative', 'positive']
