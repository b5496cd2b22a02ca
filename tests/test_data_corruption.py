"""cxrlab.data adapters under corrupted input (issue 12).

Targeted cases (one corruption each, every adapter): with strict=False the offending row is a counted skip whose
example names the file (and line), with strict=True the same input raises a DataError naming it. Then random
corruption (seeded): truncated files, junk lines, fields of the wrong type, emptied or binary files, truncated
gzip streams, broken images. Whatever happens, the only exceptions are DataError / FileNotFoundError naming a
file, never a traceback from pandas, csv, gzip, json or PIL; rows are never lost without a counted skip.
"""
import gzip, random, shutil, zipfile
from pathlib import Path

import pytest

from cxrlab.data import DataError, build_manifest
from test_data import materialise, keyword_labeler  # the fixture writer and stand-in labeler of the adapter tests

ADAPTER_FIXTURE = {'mimic': 'mimic', 'iu': 'iu', 'iu_xml': 'iu_xml', 'chexpert_plus': 'chexpert_plus', 'csv': 'csv_clean'}
OPTIONS = dict(frontal_only=False, check_images='decode', labeler=keyword_labeler)  # no filtering: every loss is a skip
REPORTS = 'mimic-cxr-reports/files'


def edit_line(path: Path, lineno: int, old: bytes, new: bytes):
    "Replace `old` by `new` on line `lineno` (1-based) of a file, asserting it is there."
    lines = path.read_bytes().split(b'\n')
    assert old in lines[lineno - 1], (path.name, lineno, lines[lineno - 1])
    lines[lineno - 1] = lines[lineno - 1].replace(old, new, 1)
    path.write_bytes(b'\n'.join(lines))


def gzip_truncated(path: Path, keep: float = 0.6):
    "Replace a CSV by a .csv.gz whose stream stops part-way."
    z = gzip.compress(path.read_bytes() * 20)  # long enough that the cut falls inside the data
    path.with_name(path.name + '.gz').write_bytes(z[:int(len(z) * keep)])
    path.unlink()


def write_xml_image_id(root: Path, new_id: str):
    p = root/'ecgen-radiology/3.xml'
    p.write_text(p.read_text().replace('id="CXR3_IM-1384-1001"', f'id="{new_id}"', 1))


TARGETED = {  # name: (adapter, mutation(root), reason, text the example and the strict error must contain)
    'mimic binary report': ('mimic', lambda r: (r/REPORTS/'p12/p12000012/s52000001.txt').write_bytes(b'\x00\x01PK\xff' * 40),
                            'unreadable_report', 's52000001.txt'),
    'mimic report not UTF-8': ('mimic', lambda r: (r/REPORTS/'p12/p12000012/s52000001.txt').write_bytes(
                               ' IMPRESSION: Small effusion near the caf\xe9 of the hilum, no pneumothorax.\n'.encode('latin-1')),
                               'unreadable_report', 'not UTF-8'),
    'mimic empty report': ('mimic', lambda r: (r/REPORTS/'p12/p12000012/s52000001.txt').write_bytes(b''),
                           'short_report', 'mimic-cxr-2.0.0-metadata.csv:line 8'),
    'mimic Rows not a number': ('mimic', lambda r: edit_line(r/'mimic-cxr-2.0.0-metadata.csv', 8, b',3056,', b',three thousand,'),
                                'bad_metadata_value', 'mimic-cxr-2.0.0-metadata.csv:line 8'),
    'mimic subject_id not a number': ('mimic', lambda r: edit_line(r/'mimic-cxr-2.0.0-metadata.csv', 8, b'12000012', b'12OOOO12'),
                                      'bad_id', 'mimic-cxr-2.0.0-metadata.csv:line 8'),
    'mimic empty dicom_id': ('mimic', lambda r: edit_line(r/'mimic-cxr-2.0.0-metadata.csv', 8, b'd07,', b','),
                             'empty_image_id', 'mimic-cxr-2.0.0-metadata.csv:line 8'),
    'mimic unterminated quote': ('mimic', lambda r: edit_line(r/'mimic-cxr-2.0.0-metadata.csv', 10, b'CHEST (PORTABLE AP),AP', b'"CHEST (PORTABLE AP),AP'),
                                 'malformed_csv_row', 'mimic-cxr-2.0.0-metadata.csv:line 10'),
    'mimic truncated metadata.csv.gz': ('mimic', lambda r: gzip_truncated(r/'mimic-cxr-2.0.0-metadata.csv'),
                                        'truncated_file', 'mimic-cxr-2.0.0-metadata.csv.gz'),
    'mimic label value yes': ('mimic', lambda r: edit_line(r/'mimic-cxr-2.0.0-chexpert.csv', 2, b',1.0,', b',yes,'),
                              'bad_label_value', "mimic-cxr-2.0.0-chexpert.csv:line 2 (Edema='yes'"),
    'mimic junk image': ('mimic', lambda r: (r/'files/p12/p12000012/s52000001/d07.jpg').write_bytes(b'\xff\xd8\xff' + b'\x00' * 30),
                         'corrupt_image', 'd07.jpg'),
    'iu report row not UTF-8': ('iu', lambda r: edit_line(r/'indiana_reports.csv', 3, b'Borderline cardiomegaly', b'Borderline cardiom\xe9galy'),
                                'undecodable_csv_row', 'indiana_reports.csv:line 3'),
    'iu path escaping the root': ('iu', lambda r: edit_line(r/'indiana_projections.csv', 6, b'3_IM-1384-1001.dcm.png', b'../../../../etc/x.png'),
                                  'path_outside_root', 'indiana_projections.csv:line 6'),
    'iu unknown projection': ('iu', lambda r: edit_line(r/'indiana_projections.csv', 6, b'Frontal', b'Sideways'),
                              'unknown_view', 'indiana_projections.csv:line 6'),
    'iu truncated image': ('iu', lambda r: (r/'images/images_normalized/3_IM-1384-1001.dcm.png').write_bytes(
                           (r/'images/images_normalized/3_IM-1384-1001.dcm.png').read_bytes()[:60]), 'corrupt_image', '3_IM-1384-1001'),
    'iu_xml binary report file': ('iu_xml', lambda r: (r/'ecgen-radiology/3.xml').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00'),
                                  'malformed_xml', '3.xml'),
    'iu_xml empty report file': ('iu_xml', lambda r: (r/'ecgen-radiology/3.xml').write_bytes(b''), 'malformed_xml', '3.xml'),
    'iu_xml image id escaping the root': ('iu_xml', lambda r: write_xml_image_id(r, '../../../../tmp/CXR3'), 'path_outside_root', '3.xml'),
    'chexpert_plus frontal_lateral of the wrong kind': ('chexpert_plus', lambda r: edit_line(r/'df_chexpert_plus_240401.csv', 2, b',Frontal,', b',3.5,'),
                                                        'bad_frontal_lateral', 'df_chexpert_plus_240401.csv:line 2'),
    'chexpert_plus label line not UTF-8': ('chexpert_plus', lambda r: edit_line(r/'chexbert_labels/report_fixed.json', 2, b'"Support Devices"', b'"Support D\xe9vices"'),
                                           'malformed_json_line', 'report_fixed.json:line 2'),
    'chexpert_plus path escaping the root': ('chexpert_plus', lambda r: edit_line(r/'df_chexpert_plus_240401.csv', 4, b'train/patient00002/study1/view1_frontal.jpg,', b'../../../x/view1_frontal.jpg,'),
                                             'path_outside_root', 'df_chexpert_plus_240401.csv:line 4'),
    'csv row not UTF-8': ('csv', lambda r: edit_line(r/'studies.csv', 4, b'Mild interstitial edema', b'Mild interstitial \xff\xfe edema'),
                          'undecodable_csv_row', 'studies.csv:line 4'),
    'csv NUL byte': ('csv', lambda r: edit_line(r/'studies.csv', 4, b'Mild interstitial edema', b'Mild \x00 edema'),
                     'undecodable_csv_row', 'studies.csv:line 4'),
    'csv unterminated quote swallowing the file': ('csv', lambda r: edit_line(r/'studies.csv', 5, b'Left basilar', b'"Left basilar'),
                                                   'malformed_csv_row', 'studies.csv:line 5'),
    'csv empty study_id': ('csv', lambda r: edit_line(r/'studies.csv', 6, b's5,', b','), 'empty_study_id', 'studies.csv:line 6'),
    'csv label of the wrong type': ('csv', lambda r: edit_line(r/'studies.csv', 6, b',0,0', b',[0],0'), 'bad_label_value', 'studies.csv:line 6'),
}


def _strict_error(adapter, root):
    "The DataError message of a strict build, or None if it succeeds."
    try: build_manifest(adapter, root, strict=True, **OPTIONS)
    except DataError as e: return str(e)
    return None


@pytest.mark.parametrize('case', sorted(TARGETED))
def test_targeted_corruption_is_a_named_skip_or_a_named_error(case, tmp_path):
    adapter, mutate, reason, where = TARGETED[case]
    root = materialise(ADAPTER_FIXTURE[adapter], tmp_path)
    before = _strict_error(adapter, root)  # the mimic, iu, iu_xml and chexpert_plus fixtures carry problems of their own
    mutate(root)
    df, qc = build_manifest(adapter, root, **OPTIONS)
    assert qc.counts[reason] >= 1, qc
    assert any(where in ex for ex in qc.examples[reason]), qc.examples[reason]
    after = _strict_error(adapter, root)
    assert after is not None, 'strict=True accepted the corrupted input'
    # strict stops at the first problem in reading order: ours, or the fixture's own first one if that comes earlier
    assert (reason in after and where.split(' (')[0].split(':line')[0] in after) or after == before, (before, after)


def test_unterminated_quote_counts_every_swallowed_line(tmp_path):
    root = materialise('csv_clean', tmp_path)
    edit_line(root/'studies.csv', 5, b'Left basilar', b'"Left basilar')  # the quote never closes: lines 5..7 are one record
    df, qc = build_manifest('csv', root, **OPTIONS)
    assert qc.counts['malformed_csv_row'] == 3 and sorted(df['study_id'].unique()) == ['s1', 's2', 's3']
    assert [e.split(' (')[0] for e in qc.examples['malformed_csv_row']] == [f'studies.csv:line {i}' for i in (5, 6, 7)]


def test_unreadable_reports_zip_is_an_error_naming_it(tmp_path):
    root = materialise('mimic', tmp_path)
    with zipfile.ZipFile(root/'mimic-cxr-reports.zip', 'w') as z:
        for p in (root/'mimic-cxr-reports').rglob('*.txt'):
            z.write(p, 'mimic-cxr-reports/' + str(p.relative_to(root/'mimic-cxr-reports')))
    shutil.rmtree(root/'mimic-cxr-reports')
    data = (root/'mimic-cxr-reports.zip').read_bytes()
    (root/'mimic-cxr-reports.zip').write_bytes(data[:len(data) // 3])  # the central directory is gone
    with pytest.raises(DataError, match=r'mimic-cxr-reports.zip: not a readable zip archive'):
        build_manifest('mimic', root)


def test_corrupt_zip_member_is_a_counted_skip(tmp_path):
    root = materialise('mimic', tmp_path)
    with zipfile.ZipFile(root/'mimic-cxr-reports.zip', 'w', zipfile.ZIP_DEFLATED) as z:
        for p in sorted((root/'mimic-cxr-reports').rglob('*.txt')):
            z.write(p, 'mimic-cxr-reports/' + str(p.relative_to(root/'mimic-cxr-reports')))
    shutil.rmtree(root/'mimic-cxr-reports')
    info = zipfile.ZipFile(root/'mimic-cxr-reports.zip').getinfo('mimic-cxr-reports/files/p12/p12000012/s52000001.txt')
    data = bytearray((root/'mimic-cxr-reports.zip').read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 2] ^= 0xFF  # one flipped byte inside the compressed member: a CRC or inflate error
    (root/'mimic-cxr-reports.zip').write_bytes(bytes(data))
    df, qc = build_manifest('mimic', root, **OPTIONS)
    assert qc.counts['unreadable_report'] >= 1 and 's52000001.txt' in qc.examples['unreadable_report'][0]
    assert 'd07' not in set(df['image_id'])


# ---------------------------------------------------------------- random corruption
JUNK_LINES = [b'\x00\x01\xff\xfe', b'\xff\xd8\xff garbage \x00', 'caf\xe9 \u2603'.encode('latin-1', 'replace'), b'{"unclosed": [1, 2']
WRONG_VALUES = [b'abc', b'', b'1e309', b'-5', b'[1, 2]', b'../../etc/passwd', b'/etc/hostname', b'NaN', b'3.7', b'"', b'"unterminated',
                '\xe9\xe8'.encode('latin-1')]
KINDS = ['truncate', 'junk_line', 'field', 'field', 'empty', 'binary_file', 'gzip_truncate', 'image']


def _corrupt(root: Path, rng: random.Random) -> str:
    "Apply one random corruption; return what was done."
    texts = sorted(p for p in root.rglob('*') if p.is_file() and p.suffix in ('.csv', '.json', '.xml', '.txt') and p.name != 'images.txt')
    images = sorted(p for p in root.rglob('*') if p.is_file() and p.suffix in ('.jpg', '.png'))
    kind = rng.choice(KINDS)
    if kind == 'image':
        p = rng.choice(images); b = p.read_bytes()
        p.write_bytes(b[:rng.randrange(len(b))] if rng.random() < .5 else bytes(rng.randrange(256) for _ in range(50)))
        return f"{kind} {p.relative_to(root)}"
    p = rng.choice(texts); b = p.read_bytes()
    if kind == 'truncate': p.write_bytes(b[:rng.randrange(len(b) + 1)])
    elif kind == 'empty': p.write_bytes(b'')
    elif kind == 'binary_file': p.write_bytes(bytes(rng.randrange(256) for _ in range(200)))
    elif kind == 'gzip_truncate' and p.suffix == '.csv':
        z = gzip.compress(b); p.with_name(p.name + '.gz').write_bytes(z[:rng.randrange(10, len(z))]); p.unlink()
    else:
        lines = b.split(b'\n'); i = rng.randrange(len(lines))
        if kind == 'junk_line': lines[i] = rng.choice(JUNK_LINES)
        else:
            fields = lines[i].split(b','); fields[rng.randrange(len(fields))] = rng.choice(WRONG_VALUES); lines[i] = b','.join(fields)
        p.write_bytes(b'\n'.join(lines))
    return f"{kind} {p.relative_to(root)}"


@pytest.fixture(scope='module')
def clean_manifests(tmp_path_factory):
    "The uncorrupted manifest of each fixture, built once."
    out = {}
    for adapter, fixture in ADAPTER_FIXTURE.items():
        out[adapter] = build_manifest(adapter, materialise(fixture, tmp_path_factory.mktemp(adapter)), **OPTIONS)[0]
    return out


@pytest.mark.parametrize('seed', range(8))
@pytest.mark.parametrize('adapter', sorted(ADAPTER_FIXTURE))
def test_random_corruption_never_escapes_as_a_traceback_or_a_silent_drop(adapter, seed, tmp_path, clean_manifests):
    rng = random.Random(f"{adapter}-{seed}")
    root = materialise(ADAPTER_FIXTURE[adapter], tmp_path)
    what = _corrupt(root, rng)
    names = {p.name for p in root.rglob('*')} | {'no rows left'}
    try:
        df, qc = build_manifest(adapter, root, **OPTIONS)
    except (DataError, FileNotFoundError) as e:  # a whole file unusable (no header, required column gone, nothing left)
        assert any(n in str(e) for n in names), f"{what}: error names no file: {e}"
        return
    lost = clean_manifests[adapter]['study_id'].nunique() - df['study_id'].nunique()
    if not what.startswith('truncate'):  # a plain file cut at a line end is indistinguishable from a shorter file
        assert lost <= qc.total, f"{what}: {lost} studies lost but only {qc.total} rows skipped ({qc!r})"
    for reason, examples in qc.examples.items():
        assert all(any(n in ex for n in names) for ex in examples), (what, reason, examples)
    if qc.total:
        with pytest.raises(DataError) as e:
            build_manifest(adapter, root, strict=True, **OPTIONS)
        assert any(n in str(e.value) for n in names), f"{what}: strict error names no file: {e.value}"
