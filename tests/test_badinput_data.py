"""Bad input to every public function of cxrlab.data: a named error (type + message), or a documented result.

One row per (function, input); each call gets a context `c` with a fresh copy of the clean study-CSV fixture
(`c.root`), its manifest (`c.df`) and a scratch folder (`c.tmp`). `test_every_public_function_has_bad_input_cases`
fails when a public function is added without rows here. Adapter-level corruption (truncated, binary, mistyped
files) is in test_data_corruption.py.
"""
import gzip, json, math, zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlab import data as D
from cxrlab.core import CHEXPERT_LABELS, MANIFEST_COLUMNS
from test_data import materialise


@pytest.fixture
def c(tmp_path):
    root = materialise('csv_clean', tmp_path)
    df, _ = D.build_manifest('csv', root, frontal_only=False)
    scratch = tmp_path/'scratch'; scratch.mkdir()
    return SimpleNamespace(root=root, df=df, tmp=scratch)


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def manifest_rows(**changes):
    "A two-row manifest with every column, then `changes` (column -> list of 2 values)."
    rows = pd.DataFrame({col: ['x', 'y'] for col in MANIFEST_COLUMNS})
    rows[CHEXPERT_LABELS] = 0.0
    rows['image_id'], rows['image_path'] = ['a', 'b'], ['a.png', 'b.png']
    rows['view'], rows['split'], rows['is_frontal'] = ['PA', 'PA'], ['train', 'train'], [True, True]
    for k, v in changes.items(): rows[k] = v
    return rows


def raises(exc, match): return ("raises", exc, match)
def returns(check, what): return ("returns", check, what)
def counted(reason, where): return ("counted", reason, where)  # (qc, df) -> the skip is counted and named


def junk_image(c, name='junk.png'): return write(c.tmp/name, b'\x89PNG\r\n\x1a\n' + b'\x00' * 20)


CASES = [
    ("QCReport", "strict skip", lambda c: D.QCReport(strict=True).skip('bad_thing', 'f.csv:line 3', 'why'), raises(D.DataError, r"f.csv:line 3: bad_thing \(why\)")),
    ("QCReport", "skip of no rows", lambda c: (lambda q: (q.skip('x', []), q.total)[1])(D.QCReport(strict=True)), returns(lambda n: n == 0, "nothing counted, no error")),
    ("drop_rows", "mask of the wrong length", lambda c: D.drop_rows(c.df, [True], D.QCReport(), 'r'), raises(ValueError, "mask of shape")),
    ("require_columns", "missing column", lambda c: D.require_columns(c.df, ['image_id', 'nope'], 'thing'), raises(D.DataError, r"thing needs column\(s\) \['nope'\]")),
    ("read_csv_checked", "missing file", lambda c: D.read_csv_checked(c.tmp/'nope.csv', D.QCReport()), raises(FileNotFoundError, "nope.csv")),
    ("read_csv_checked", "a folder", lambda c: D.read_csv_checked(c.tmp, D.QCReport()), raises(D.DataError, "cannot read")),
    ("read_csv_checked", "empty file", lambda c: D.read_csv_checked(write(c.tmp/'e.csv', b''), D.QCReport()), raises(D.DataError, "e.csv: empty file")),
    ("read_csv_checked", "required column missing", lambda c: D.read_csv_checked(write(c.tmp/'m.csv', 'a,b\n1,2\n'), D.QCReport(), ['zz']), raises(D.DataError, r"missing column\(s\) \['zz'\]")),
    ("read_csv_checked", "header not UTF-8", lambda c: D.read_csv_checked(write(c.tmp/'h.csv', b'a,\xff\n1,2\n3,4\n'), D.QCReport()), raises(D.DataError, "h.csv:line 1")),
    ("read_csv_checked", ".gz that is not gzip", lambda c: D.read_csv_checked(write(c.tmp/'n.csv.gz', 'a,b\n'), D.QCReport()), raises(D.DataError, "not a readable gzip")),
    ("read_csv_checked", "truncated .gz, strict", lambda c: D.read_csv_checked(write(c.tmp/'t.csv.gz', gzip.compress(b'a,b\n' + b''.join(b'%d,%d\n' % (i, i * 7919 % 10007) for i in range(5000)))[:400]), D.QCReport(strict=True)),
     raises(D.DataError, "t.csv.gz: truncated_file")),
    ("read_csv_checked", "row with a NUL byte", lambda c: (lambda q: (D.read_csv_checked(write(c.tmp/'z.csv', b'a,b\n1,2\n3,\x00\n'), q), q)[1])(D.QCReport()),
     returns(lambda q: q.examples['undecodable_csv_row'] == ['z.csv:line 3 (bytes that are not UTF-8 text, or NUL)'], "counted, named by line")),
    ("parse_label_values", "label 'yes'", lambda c: D.parse_label_values(pd.DataFrame({'Edema': ['1', 'yes'], '_src': 'l.csv', '_line': [2, 3]}), D.QCReport(strict=True)),
     raises(D.DataError, r"l.csv:line 3: bad_label_value \(Edema='yes'")),
    ("parse_label_values", "label 0.5", lambda c: (lambda q: (D.parse_label_values(pd.DataFrame({'Edema': [0.5, 1.0]}), q), q.counts['bad_label_value'])[1])(D.QCReport()),
     returns(lambda n: n == 1, "one row counted")),
    ("normalise_view", "a list", lambda c: D.normalise_view(['pa', None, ' lat ']), returns(lambda s: s.tolist() == ['PA', 'UNKNOWN', 'LATERAL'], "PA, UNKNOWN, LATERAL")),
    ("paths_inside", "escaping paths", lambda c: D.paths_inside(pd.Series(['a/b.png', '../x.png', 'a/../../x', '/etc/passwd']), c.root),
     returns(lambda m: m.tolist() == [True, False, False, False], "only the first inside")),
    ("validate_manifest", "missing columns", lambda c: D.validate_manifest(c.df.drop(columns=['split'])), raises(D.DataError, r"missing column\(s\) \['split'\]")),
    ("validate_manifest", "NaN image_id", lambda c: D.validate_manifest(manifest_rows(image_id=['a', np.nan]), D.QCReport(strict=True)), raises(D.DataError, "manifest row 1: empty_image_id")),
    ("validate_manifest", "split 'holdout'", lambda c: D.validate_manifest(manifest_rows(split=['train', 'holdout']), D.QCReport(strict=True)), raises(D.DataError, "manifest row 1: bad_split")),
    ("validate_manifest", "view 'SIDEWAYS'", lambda c: D.validate_manifest(manifest_rows(view=['PA', 'SIDEWAYS']), D.QCReport(strict=True)), raises(D.DataError, "unknown_view")),
    ("validate_manifest", "label 5", lambda c: D.validate_manifest(manifest_rows(Edema=[0., 5.]), D.QCReport(strict=True)), raises(D.DataError, "bad_label_value")),
    ("validate_manifest", "duplicate image_id", lambda c: D.validate_manifest(manifest_rows(image_id=['a', 'a']), D.QCReport(strict=True)), raises(D.DataError, "duplicate_image_id")),
    ("validate_manifest", "is_frontal 'maybe'", lambda c: D.validate_manifest(manifest_rows(is_frontal=['true', 'maybe']), D.QCReport(strict=True)), raises(D.DataError, "bad_is_frontal")),
    ("validate_manifest", "path outside data_root", lambda c: D.validate_manifest(manifest_rows(image_path=['a.png', '../../b.png']), D.QCReport(strict=True), data_root=c.tmp),
     raises(D.DataError, "path_outside_root")),
    ("validate_manifest", "image file missing", lambda c: D.validate_manifest(manifest_rows(), D.QCReport(strict=True), data_root=c.tmp, check_files=True), raises(D.DataError, "missing_image")),
    ("save_manifest", "a .csv path", lambda c: D.save_manifest(c.df, c.tmp/'m.csv'), raises(ValueError, ".jsonl or .parquet")),
    ("load_manifest", "missing file", lambda c: D.load_manifest(c.tmp/'none.jsonl'), raises(FileNotFoundError, "manifest not found")),
    ("load_manifest", "corrupt JSON line", lambda c: D.load_manifest(write(c.tmp/'b.jsonl', '{"image_id": "a"}\n{"image_id": \n')), raises(D.DataError, r"b.jsonl:line 2")),
    ("load_manifest", "binary .jsonl", lambda c: D.load_manifest(write(c.tmp/'bin.jsonl', b'\xff\xfe\x00\x01' * 10)), raises(D.DataError, "bin.jsonl:line 1")),
    ("load_manifest", "corrupt parquet", lambda c: D.load_manifest(write(c.tmp/'p.parquet', b'PAR1 not really')), raises(D.DataError, "not a readable Parquet")),
    ("load_manifest", "JSON lines of something else", lambda c: D.load_manifest(write(c.tmp/'o.jsonl', '{"a": 1}\n{"a": 2}\n')), raises(D.DataError, "no manifest columns")),
    ("image_root", "meta without data_root, no manifest path", lambda c: D.image_root({}), returns(lambda r: r is None, "None")),
    ("normalise_section_name", "None", lambda c: D.normalise_section_name(None), raises(TypeError, "a section name is a string")),
    ("clean_text", "None", lambda c: D.clean_text(None), returns(lambda t: t == '', "''")),
    ("split_sections", "None", lambda c: D.split_sections(None), returns(lambda s: s == [], "[]")),
    ("split_sections", "bytes", lambda c: D.split_sections(b' IMPRESSION: x'), returns(lambda s: s == [], "[] (not text)")),
    ("parse_report", "None", lambda c: D.parse_report(None), returns(lambda r: r == {'findings': '', 'impression': '', 'addendum': '', 'source': 'empty'}, "empty sections")),
    ("parse_report", "only an addendum", lambda c: D.parse_report(" FINAL ADDENDUM\n ADDENDUM: Tube in the stomach.\n"),
     returns(lambda r: r['impression'] == '' and r['addendum'] == 'Tube in the stomach.', "no impression, the addendum on its own")),
    ("patient_split", "fractions not summing to 1", lambda c: D.patient_split(['a'], (0.5, 0.4, 0.2)), raises(ValueError, "summing to 1")),
    ("patient_split", "two fractions", lambda c: D.patient_split(['a'], (0.5, 0.5)), raises(ValueError, "three non-negative")),
    ("patient_split", "a missing subject id", lambda c: D.patient_split(['a', None, 'b']), raises(D.DataError, "subject_ids row 1 is missing")),
    ("patient_split", "an empty subject id", lambda c: D.patient_split(['a', ' ']), raises(D.DataError, "subject_ids row 1")),
    ("patient_split", "no ids", lambda c: D.patient_split([]), returns(lambda a: len(a) == 0, "an empty array")),
    ("check_patient_disjoint", "a patient in two splits", lambda c: D.check_patient_disjoint(pd.DataFrame({'subject_id': ['p', 'p'], 'split': ['train', 'test']})),
     raises(D.DataError, "not patient-disjoint.*'p'")),
    ("check_patient_disjoint", "no split column", lambda c: D.check_patient_disjoint(pd.DataFrame({'subject_id': ['p']})), raises(D.DataError, r"needs column\(s\) \['split'\]")),
    ("label_texts", "unknown mode", lambda c: D.label_texts(c.df, 'all'), raises(ValueError, "choose 'both' or 'first'")),
    ("apply_labeler", "labeler without the 14 columns", lambda c: D.apply_labeler(c.df, lambda texts: pd.DataFrame({'Edema': [0.] * len(texts)})), raises(D.DataError, "labeler returned no column")),
    ("dataset_problem", "an unknown name", lambda c: D.dataset_problem('mimic-cxr'), returns(lambda m: m.startswith('choose one of') and 'hf:<hub id' in m, "a message naming the choices")),
    ("dataset_problem", "'hf:' with no source", lambda c: D.dataset_problem('hf:'), returns(lambda m: m is not None and 'hf:<hub id' in m, "a message")),
    ("load_hf_dataset", "a folder that is not save_to_disk", lambda c: D.load_hf_dataset(c.tmp), raises(D.DataError, "not a `save_to_disk` folder")),
    ("load_hf_dataset", "a path that does not exist", lambda c: D.load_hf_dataset(c.tmp/'nope'), raises(D.DataError, "no such folder")),
    ("read_iu_hf", "a folder that is not save_to_disk", lambda c: D.read_iu_hf(c.tmp, D.QCReport()), raises(D.DataError, "not a `save_to_disk` folder")),
    ("load_image", "missing file", lambda c: D.load_image(c.tmp/'none.png'), raises(FileNotFoundError, "none.png")),
    ("load_image", "junk bytes", lambda c: D.load_image(junk_image(c)), raises(D.DataError, "junk.png: cannot decode image")),
    ("load_image", "empty file", lambda c: D.load_image(write(c.tmp/'empty.jpg', b'')), raises(D.DataError, "empty.jpg: cannot decode")),
    ("load_image", "a folder", lambda c: D.load_image(c.tmp), raises(D.DataError, "cannot decode")),
    ("image_problem", "missing file", lambda c: D.image_problem(c.tmp/'none.png'), returns(lambda m: m == 'file not found', "'file not found'")),
    ("image_problem", "junk bytes", lambda c: D.image_problem(junk_image(c)), returns(lambda m: m.startswith('cannot decode image'), "'cannot decode image ...'")),
    ("finalize_manifest", "check_images='yes'", lambda c: D.finalize_manifest(c.df, D.QCReport(), c.root, check_images='yes'), raises(ValueError, "check_images")),
    ("finalize_manifest", "images_per_study='two'", lambda c: D.finalize_manifest(c.df, D.QCReport(), c.root, images_per_study='two'), raises(ValueError, "images_per_study")),
    ("finalize_manifest", "max_samples=0", lambda c: D.finalize_manifest(c.df, D.QCReport(), c.root, max_samples=0), raises(ValueError, "max_samples")),
    ("finalize_manifest", "no view column", lambda c: D.finalize_manifest(c.df.drop(columns=['view']), D.QCReport(), c.root), raises(D.DataError, r"\['view'\]")),
    ("finalize_manifest", "an empty subject_id", lambda c: D.finalize_manifest(c.df.assign(subject_id=[''] + list(c.df.subject_id[1:])), D.QCReport(), c.root, frontal_only=False),
     returns(lambda df: len(df) == 7, "the row dropped (counted as empty_subject_id)")),
    ("ReportStore", "missing folder", lambda c: D.ReportStore(c.tmp/'none'), raises(FileNotFoundError, "reports not found")),
    ("ReportStore", "a zip that is not one", lambda c: D.ReportStore(write(c.tmp/'r.zip', b'PK\x03\x04 not really')), raises(D.DataError, "r.zip: not a readable zip archive")),
    ("ReportStore", "binary report", lambda c: D.ReportStore(write(c.tmp/'files/p1/p1/s2.txt', b'\x00\x00ab').parents[2]).get('p1/p1/s2'), raises(D.DataError, "binary content")),
    ("ReportStore", "report not UTF-8", lambda c: D.ReportStore(write(c.tmp/'files/p1/p1/s3.txt', b'caf\xe9').parents[2]).get('p1/p1/s3'), raises(D.DataError, "s3.txt: not UTF-8")),
    ("ReportStore", "absent study", lambda c: D.ReportStore(write(c.tmp/'files/p1/p1/s4.txt', b'ok').parents[2]).get('p1/p1/s999'), returns(lambda t: t is None, "None (counted as missing_report)")),
    ("read_mimic", "no metadata CSV", lambda c: D.read_mimic(c.tmp, D.QCReport()), raises(FileNotFoundError, "no metadata CSV")),
    ("read_mimic", "metadata without ViewPosition", lambda c: D.read_mimic(write(c.tmp/'m/mimic-cxr-2.0.0-metadata.csv', 'dicom_id,subject_id,study_id\nd1,1,2\n').parent, D.QCReport()),
     raises(D.DataError, r"missing column\(s\) \['ViewPosition'\]")),
    ("read_iu", "no indiana_reports.csv", lambda c: D.read_iu(c.tmp, D.QCReport()), raises(FileNotFoundError, "indiana_reports.csv")),
    ("read_iu_xml", "no XML files", lambda c: D.read_iu_xml(c.tmp, D.QCReport()), raises(FileNotFoundError, "no \\*.xml report files")),
    ("read_chexpert_plus", "no CSV", lambda c: D.read_chexpert_plus(c.tmp, D.QCReport()), raises(FileNotFoundError, "df_chexpert_plus")),
    ("read_chexpert_plus", "CSV without section columns", lambda c: D.read_chexpert_plus(write(c.tmp/'x/df_chexpert_plus_1.csv', 'path_to_image,split\na.jpg,train\n').parent, D.QCReport()),
     raises(D.DataError, "missing column")),
    ("read_study_csv", "CSV without image_paths", lambda c: D.read_study_csv(write(c.tmp/'s/studies.csv', 'study_id,findings\ns1,x\n').parent, D.QCReport()),
     raises(D.DataError, r"missing column\(s\) \['image_paths'\]")),
    ("read_study_csv", "no CSV at all", lambda c: D.read_study_csv(c.tmp, D.QCReport()), raises(FileNotFoundError, "no study CSV")),
    ("read_synth", "folder without a manifest", lambda c: D.read_synth(c.tmp, D.QCReport()), raises(FileNotFoundError, "SynthCXR manifest")),
    ("read_synth", "manifest missing columns", lambda c: D.read_synth(write(c.tmp/'manifest.jsonl', '{"image_id": "a", "dataset": "synth"}\n'), D.QCReport()),
     raises(D.DataError, "missing column")),
    ("build_manifest", "unknown dataset", lambda c: D.build_manifest('mimic4', c.root), raises(ValueError, "choose one of")),
    ("build_manifest", "data_root that does not exist", lambda c: D.build_manifest('csv', c.tmp/'none'), raises(FileNotFoundError, "does not exist")),
    ("build_manifest", "mimic without data_root", lambda c: D.build_manifest('mimic', None), raises(ValueError, "needs data_root")),
    ("build_manifest", "max_samples=0", lambda c: D.build_manifest('csv', c.root, max_samples=0), raises(ValueError, "max_samples")),
    ("build_manifest", "split file that does not exist", lambda c: D.build_manifest('csv', c.root, split_scheme=str(c.tmp/'split.csv')), raises(FileNotFoundError, "split.csv")),
    ("build_manifest", "every row filtered out", lambda c: D.build_manifest('csv', c.root, views=['SWIMMERS']), raises(D.DataError, "no rows left")),
    ("build_manifest", "check_images='always'", lambda c: D.build_manifest('csv', c.root, check_images='always'), raises(ValueError, "check_images")),
    ("label_stats", "value 2", lambda c: D.label_stats(c.df, 2.0), raises(ValueError, "count one of")),
    ("label_stats", "level 'patient'", lambda c: D.label_stats(c.df, level='patient'), raises(ValueError, "'image' or 'study'")),
    ("label_stats", "no label columns", lambda c: D.label_stats(c.df.drop(columns=CHEXPERT_LABELS)), raises(D.DataError, "label_stats needs")),
    ("group_studies", "no view column", lambda c: D.group_studies(c.df.drop(columns=['view'])), raises(D.DataError, r"group_studies needs column\(s\) \['view'\]")),
    ("make_transforms", "unknown preset", lambda c: D.make_transforms('resnet'), raises(ValueError, "choose one of")),
    ("make_transforms", "image_size 0", lambda c: D.make_transforms('tiny', image_size=0), raises(ValueError, "image_size")),
    ("make_transforms", "unknown augment key", lambda c: D.make_transforms('tiny', train=True, augment={'rotate': 5}), raises(ValueError, r"unknown key\(s\) \['rotate'\]")),
    ("CXRTransform", "RGBA image", lambda c: D.make_transforms('tiny')(Image.new('RGBA', (30, 40))), returns(lambda x: tuple(x.shape) == (3, 64, 64), "converted, [3, 64, 64]")),
    ("split_sentences", "None", lambda c: D.split_sentences(None), returns(lambda s: s == [], "[]")),
    ("select_text", "unknown section", lambda c: D.select_text('f', 'i', 'r', 'summary'), raises(ValueError, "choose one of")),
    ("CXRDataset", "unknown mode", lambda c: D.CXRDataset(c.df, 'triplet'), raises(ValueError, "mode='triplet'")),
    ("CXRDataset", "manifest without labels", lambda c: D.CXRDataset(c.df.drop(columns=['Edema'])), raises(D.DataError, r"CXRDataset needs column\(s\) \['Edema'\]")),
    ("CXRDataset", "label column of strings", lambda c: D.CXRDataset(c.df.assign(Edema='positive')), raises(D.DataError, "not numeric")),
    ("CXRDataset", "max_sentences=0", lambda c: D.CXRDataset(c.df, 'sentences', max_sentences=0), raises(ValueError, "max_sentences")),
    ("CXRDataset", "unknown study section", lambda c: D.CXRDataset(c.df, 'study', sections=('history',)), raises(ValueError, "sections=")),
    ("CXRDataset", "mask mode without mask_path", lambda c: D.CXRDataset(c.df, 'mask'), raises(D.DataError, "mask_path")),
    ("CXRDataset", "image deleted after the manifest was built", lambda c: ((c.root/c.df.image_path[0]).unlink(), D.CXRDataset(c.df)[0]), raises(FileNotFoundError, "s1_pa.jpg")),
    ("CXRDataset", "image corrupted after the manifest was built", lambda c: ((c.root/c.df.image_path[0]).write_bytes(b'\xff\xd8\xff\x00'), D.CXRDataset(c.df)[0]),
     raises(D.DataError, "cannot decode image")),
    ("make_collate", "no samples", lambda c: D.make_collate()([]), raises(ValueError, "empty list of samples")),
    ("make_collate", "studies with different numbers of texts", lambda c: D.make_collate(lambda t, max_length=None: {'input_ids': None, 'attention_mask': None}, text_keys=('texts',))(
        [{'texts': ['a', 'b']}, {'texts': ['a']}]), raises(ValueError, "different numbers of texts")),
    ("build_image_cache", "size 0", lambda c: D.build_image_cache(c.df, c.tmp/'cache', size=0, progress=False), raises(ValueError, "size=0")),
    ("build_image_cache", "quality 0", lambda c: D.build_image_cache(c.df, c.tmp/'cache', size=16, quality=0, progress=False), raises(ValueError, "quality")),
    ("build_image_cache", "no image_path column", lambda c: D.build_image_cache(c.df.drop(columns=['image_path']), c.tmp/'cache', progress=False), raises(D.DataError, "image_path")),
    ("build_image_cache", "a corrupt image, strict", lambda c: ((c.root/c.df.image_path[1]).write_bytes(b'junk'), D.build_image_cache(c.df, c.tmp/'cache', size=16, num_workers=1, strict=True, progress=False)),
     raises(D.DataError, "corrupt_image")),
    ("with_image_cache", "size -1", lambda c: D.with_image_cache(c.df, c.tmp/'cache', size=-1), raises(ValueError, "size=-1")),
    ("with_image_cache", "no image_path column", lambda c: D.with_image_cache(c.df.drop(columns=['image_path']), c.tmp/'cache'), raises(D.DataError, "image_path")),
]


@pytest.mark.parametrize("name, what, call, expect", CASES, ids=[f"{x[0]}: {x[1]}" for x in CASES])
def test_bad_input(name, what, call, expect, c):
    kind, a, b = expect
    if kind == "raises":
        with pytest.raises(a, match=b):
            call(c)
    else:
        out = call(c)
        assert a(out), f"{name} on {what}: expected {b}, got {out!r}"


def test_every_public_function_has_bad_input_cases():
    "A public function or class added to cxrlab.data without rows in CASES fails here."
    covered = {x[0] for x in CASES}
    no_input = {'DataError', 'empty_manifest', 'meta_path'}  # an exception type; functions of nothing / of a path only
    missing = [n for n in D.__all__ if callable(getattr(D, n)) and n not in covered | no_input]
    assert not missing, f"no bad-input cases for {missing}"
