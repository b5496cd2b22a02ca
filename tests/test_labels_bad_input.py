"""Bad input for every public function of cxrlab.labels: None / NaN / non-string reports, empty strings, binary junk,
very long text and wrong option types either raise a clear error or give the documented result."""
import math

import numpy as np
import pandas as pd
import pytest

import cxrlab.labels as L
from cxrlab.core import CHEXPERT_LABELS

JUNK = ''.join(chr(c) for c in range(0, 600, 7)) + '\x00\ufffd\U0001F600'  # control characters, Latin-1, symbols, emoji
LONG = 'Small left pleural effusion. No pneumothorax. ' * 5000  # ~230k characters
ALL_NAN = {l: math.nan for l in CHEXPERT_LABELS}
AG = L.agreement(pd.DataFrame({'Edema': [1.0, 0.0]}), pd.DataFrame({'Edema': [1.0, 1.0]}))


def all_nan(d): return all(math.isnan(v) for v in d.values())


RAISES = [  # (function, call, exception, message fragment)
    ('sentence_spans', lambda: L.sentence_spans(None), TypeError, 'must be a str'),
    ('sentence_spans', lambda: L.sentence_spans(b'no effusion'), TypeError, 'must be a str'),
    ('words_back', lambda: L.words_back(None, 0, 0, 2), TypeError, 'needs a str'),
    ('words_back', lambda: L.words_back('a b c', 0, 5, -1), TypeError, 'word count'),
    ('words_fwd', lambda: L.words_fwd('a b c', 0, 5, 'two'), TypeError, 'word count'),
    ('classify_span', lambda: L.classify_span(42, 0, 1, 0, 1), TypeError, 'must be a str'),
    ('classify_span', lambda: L.classify_span('no effusion', 5, 3, 0, 11), ValueError, 'not in order'),
    ('classify_span', lambda: L.classify_span('no effusion', 3, 11, 0, 50), ValueError, 'not in order'),
    ('classify_span', lambda: L.classify_span('no effusion', 3.0, 11, 0, 11), TypeError, 'must be ints'),
    ('parse_location', lambda: L.parse_location('left effusion', 5, 13, 0, 99), ValueError, 'not in order'),
    ('parse_location', lambda: L.parse_location(None, 0, 0, 0, 0), TypeError, 'must be a str'),
    ('location_words', lambda: L.location_words(['left']), TypeError, 'must be a str'),
    ('parse_mentions', lambda: L.parse_mentions(None), TypeError, 'expects a str'),
    ('parse_mentions', lambda: L.parse_mentions(float('nan')), TypeError, 'expects a str'),
    ('parse_mentions', lambda: L.parse_mentions(b'effusion'), TypeError, 'expects a str'),
    ('parse_mentions', lambda: L.parse_mentions('effusion', strict='False'), TypeError, 'strict must be True or False'),
    ('parse_mentions', lambda: L.parse_mentions('effusion', locate=None), TypeError, 'locate must be True or False'),
    ('mentions_frame', lambda: L.mentions_frame(['effusion']), TypeError, 'expected Mention records'),
    ('aggregate', lambda: L.aggregate([{'label': 'Edema', 'status': 'positive'}]), TypeError, 'expected Mention records'),
    ('aggregate', lambda: L.aggregate([L.Mention('Edema', 'maybe', 'edema', 'edema', (0, 5))]), TypeError, 'known status'),
    ('split_sections', lambda: L.split_sections(None), TypeError, 'must be a str'),
    ('section_text', lambda: L.section_text(42), TypeError, 'must be a str or a mapping'),
    ('section_text', lambda: L.section_text(b'FINDINGS: clear'), TypeError, 'must be a str or a mapping'),
    ('section_text', lambda: L.section_text({'findings': 3.5}), TypeError, 'expected str'),
    ('section_text', lambda: L.section_text('x', sections='impression'), TypeError, 'list of section names'),
    ('section_text', lambda: L.section_text('x', sections=[1, 2]), TypeError, 'list of section names'),
    ('section_text', lambda: L.section_text('x', mode='all'), ValueError, "use 'first' or 'both'"),
    ('label_report', lambda: L.label_report(['Small effusion.']), TypeError, 'must be a str or a mapping'),
    ('label_report', lambda: L.label_report('Small effusion.', strict=1), TypeError, 'strict must be True or False'),
    ('label_report', lambda: L.label_report('Small effusion.', mode=None), ValueError, 'mode'),
    ('label_reports', lambda: L.label_reports(None), TypeError, 'list, Series or DataFrame'),
    ('label_reports', lambda: L.label_reports(42), TypeError, 'list, Series or DataFrame'),
    ('label_reports', lambda: L.label_reports('one report'), TypeError, 'use label_report'),
    ('label_reports', lambda: L.label_reports(['fine', 42]), TypeError, 'report 1'),
    ('label_reports', lambda: L.label_reports(['fine', b'bytes']), TypeError, 'report 1'),
    ('label_reports', lambda: L.label_reports(['fine'], progress='yes'), TypeError, 'progress must be True or False'),
    ('label_reports', lambda: L.label_reports(['fine'], sections='findings'), TypeError, 'list of section names'),
    ('label_reports', lambda: L.label_reports(['fine'], mode='last'), ValueError, 'mode'),
    ('label_reports', lambda: L.label_reports(pd.DataFrame({'x': ['a']})), KeyError, 'none of the columns'),
    ('parse_expected', lambda: L.parse_expected(None), TypeError, 'must be a str'),
    ('parse_expected', lambda: L.parse_expected('CM'), ValueError, 'expected ABBR=1'),
    ('parse_expected', lambda: L.parse_expected('CM=2'), ValueError, 'expected ABBR=1'),
    ('parse_expected', lambda: L.parse_expected('XX=1'), KeyError, 'unknown label abbreviation'),
    ('binarize', lambda: L.binarize(pd.DataFrame({'Edema': ['yes']})), ValueError, 'must be numbers'),
    ('binarize', lambda: L.binarize(np.array([2.0])), ValueError, 'must be 1, 0, -1 or NaN'),
    ('binarize', lambda: L.binarize(np.array([1.0]), uncertain_as=True), ValueError, 'uncertain_as'),
    ('agreement', lambda: L.agreement([[1.0]], pd.DataFrame({'Edema': [1.0]})), TypeError, 'pred must be a DataFrame'),
    ('agreement', lambda: L.agreement(pd.DataFrame({'Edema': [1.0]}), pd.DataFrame({'Edema': [1.0]}), labels='Edema'), TypeError, 'list of label names'),
    ('agreement', lambda: L.agreement(pd.DataFrame({'Edema': [1.0]}), pd.DataFrame({'Edema': ['x']})), ValueError, 'must be numbers'),
    ('label_queries', lambda: L.label_queries(None), KeyError, 'unknown label'),
    ('label_queries', lambda: L.label_queries(['Edema']), KeyError, 'unknown label'),
    ('label_queries', lambda: L.label_queries('Edema', generic='no'), TypeError, 'generic must be True or False'),
    ('reference_studies', lambda: L.reference_studies(None), TypeError, 'must be a DataFrame'),
    ('reference_studies', lambda: L.reference_studies(pd.DataFrame({'x': [1]})), KeyError, 'no study_id'),
    ('plot_label_f1', lambda: L.plot_label_f1(pd.DataFrame({'f1': [1.0]})), ValueError, 'the DataFrame `agreement` returns'),
    ('location_agreement', lambda: L.location_agreement(pd.DataFrame({'x': [1]})), KeyError, 'sentences'),
    ('mesh_labels', lambda: L.mesh_labels(None), TypeError, 'list of strings'),
    ('mesh_labels', lambda: L.mesh_labels('normal'), TypeError, 'list of strings'),
    ('mesh_labels', lambda: L.mesh_labels([b'normal']), TypeError, 'must be strings'),
    ('find_nlm_reports', lambda: L.find_nlm_reports('/nonexistent/NLMCXR_reports.tgz'), FileNotFoundError, 'pip install torchxrayvision'),
    ('read_nlm_reports', lambda: L.read_nlm_reports('.', uids=(1, 4000)), ValueError, 'held-out'),
    ('read_nlm_reports', lambda: L.read_nlm_reports('.', uids=(10, 1)), ValueError, 'first is after last'),
    ('read_nlm_reports', lambda: L.read_nlm_reports('.', uids=('1', '5')), TypeError, 'pair of ints'),
    ('binary_f1', lambda: L.binary_f1(np.array([[0.5]]), np.array([[1.0]])), ValueError, 'only 0 and 1'),
    ('binary_f1', lambda: L.binary_f1(np.array([[np.nan]]), np.array([[1.0]])), ValueError, 'only 0 and 1'),
    ('binary_f1', lambda: L.binary_f1(np.zeros((2, 2)), np.zeros((3, 2))), ValueError, 'differ in shape'),
    ('error_causes', lambda: L.error_causes(['a'], pd.DataFrame({'Edema': [1.0, 0.0]}), pd.DataFrame({'Edema': [1.0, 1.0]})), ValueError, 'align'),
    ('policy_per_label', lambda: L.policy_per_label('U-Twos', ['Edema']), ValueError, 'U-Twos'),
    ('policy_per_label', lambda: L.policy_per_label(None, ['Edema']), TypeError, 'name or a dict'),
    ('policy_per_label', lambda: L.policy_per_label({'Nodule': 'U-Ones', '*': 'U-Ones'}, ['Edema']), KeyError, 'Nodule'),
    ('binarize', lambda: L.binarize(np.array([-1.0]), 'U-Findings'), ValueError, 'pass a DataFrame'),
]


@pytest.mark.parametrize('fn, call, exc, match', RAISES, ids=[f"{r[0]}-{i}" for i, r in enumerate(RAISES)])
def test_bad_input_raises(fn, call, exc, match):
    with pytest.raises(exc, match=match): call()


DOCUMENTED = [  # (function, call, check of the documented result)
    ('label_report', lambda: L.label_report(None), all_nan),  # no text: every label NaN
    ('label_report', lambda: L.label_report(float('nan')), all_nan),
    ('label_report', lambda: L.label_report(pd.NA), all_nan),
    ('label_report', lambda: L.label_report(''), all_nan),
    ('label_report', lambda: L.label_report('   \n\t'), all_nan),
    ('label_report', lambda: L.label_report({'findings': None, 'impression': float('nan')}), all_nan),
    ('label_report', lambda: L.label_report(JUNK), lambda d: d['No Finding'] == 1.0 and sum(not math.isnan(v) for v in d.values()) == 1),
    ('label_report', lambda: L.label_report(LONG), lambda d: d['Pleural Effusion'] == 1.0 and d['Pneumothorax'] == 0.0),
    ('label_reports', lambda: L.label_reports([]), lambda df: df.shape == (0, 14)),
    ('label_reports', lambda: L.label_reports([None, float('nan'), '', JUNK]), lambda df: df.iloc[:3].isna().all().all()),
    ('parse_mentions', lambda: L.parse_mentions(''), lambda ms: ms == []),
    ('parse_mentions', lambda: L.parse_mentions(JUNK), lambda ms: ms == []),
    ('parse_mentions', lambda: L.parse_mentions(LONG, locate=False), lambda ms: len(ms) == 10000),
    ('sentence_spans', lambda: L.sentence_spans(''), lambda s: s == []),
    ('sentence_spans', lambda: L.sentence_spans('...\n\n!?'), lambda s: s == []),
    ('split_sections', lambda: L.split_sections(JUNK), lambda s: s == {}),
    ('section_text', lambda: L.section_text({}), lambda s: s == ''),
    ('location_words', lambda: L.location_words(''), lambda d: d == dict(laterality=None, zone=None, severity=None)),
    ('aggregate', lambda: L.aggregate([], has_text=False), all_nan),
    ('mentions_frame', lambda: L.mentions_frame([]), lambda df: len(df) == 0 and 'status' in df.columns),
    ('parse_expected', lambda: L.parse_expected(''), all_nan),
    ('binarize', lambda: L.binarize(np.array([np.nan, -1.0]), 'ignore'), lambda a: a[0] == 0.0 and np.isnan(a[1])),  # not mentioned = 0
    ('policy_per_label', lambda: L.policy_per_label('U-Findings', []), lambda p: p == []),  # no labels: nothing to decide
    ('mesh_labels', lambda: L.mesh_labels([]), lambda d: set(d.values()) == {0.0}),  # no term: negative for all ten
    ('mesh_labels', lambda: L.mesh_labels(['', '  ']), lambda d: set(d.values()) == {0.0}),
    ('binary_f1', lambda: L.binary_f1(np.zeros((0, 3)), np.zeros((0, 3))), lambda f: np.isnan(f).all()),
    ('plot_label_f1', lambda: L.plot_label_f1(AG), lambda fig: len(fig.axes) == 1),
    ('reference_studies', lambda: L.reference_studies(pd.DataFrame({'study_id': []})), lambda df: len(df) == 0),
    ('dev_frames', lambda: L.dev_frames(), lambda t: len(t[0]) == len(t[1]) == len(L.DEV_SET)),  # takes no input
]


@pytest.mark.parametrize('fn, call, check', DOCUMENTED, ids=[f"{r[0]}-{i}" for i, r in enumerate(DOCUMENTED)])
def test_bad_input_documented_result(fn, call, check):
    assert check(call())


def test_every_public_function_is_in_a_table():
    tabled = {r[0] for r in RAISES} | {r[0] for r in DOCUMENTED}
    public = {n for n in L.__all__ if callable(getattr(L, n)) and not isinstance(getattr(L, n), type)}
    assert public - tabled == set(), f"public functions without a bad-input test: {sorted(public - tabled)}"


def test_error_causes_without_errors_is_empty():
    pred = pd.DataFrame({'Edema': [1.0, np.nan]}); gold = pd.DataFrame({'Edema': [1.0, 0.0]})
    out = L.error_causes(['Pulmonary edema.', 'Clear.'], pred.fillna(0.0), gold)
    assert len(out) == 0 and list(out.columns)[:4] == ['row', 'label', 'error', 'cause']
