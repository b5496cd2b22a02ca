"""A deliberately simple negation-aware regex labeler, and its comparison with cxrlab.labels on IU X-Ray dev reports.

The baseline is what issue 26 measured cxrlab against: one mention pattern per label, a sentence-level negation
word list and a sentence-level hedge word list (a mention in a sentence with a negation word before it is 0, with a
hedge word anywhere in the sentence -1, else 1; per label the highest value wins). About 60 lines, no exclusions,
no clause scope, no attributes. It exists so the comparison is reproducible in-project.

Only the development uids (1-1500) are read (`read_nlm_reports` refuses the held-out ones); the reports are read
from the installed torchxrayvision wheel at run time and never stored.

Usage:  OMP_NUM_THREADS=1 python benchmarks/labels_baseline.py [--iu PATH] [--n-resamples 1000]
"""
import argparse
import re

import numpy as np
import pandas as pd

BASELINE_MENTIONS = {  # one mention pattern per IU label
    'Atelectasis': r'atelecta\w*|collapse',
    'Cardiomegaly': r'cardiomegaly|(?:heart|cardiac silhouette|cardiac) (?:is |size is )?(?:\w+ )?enlarge\w*|enlarged (?:heart|cardiac)',
    'Consolidation': r'consolidat\w*',
    'Edema': r'edema|(?:vascular|pulmonary) congestion|heart failure|chf',
    'Fracture': r'fractur\w*',
    'Lung Lesion': r'nodul\w*|mass(?:es)?|tumou?r|neoplasm|carcinoma',
    'Lung Opacity': r'opacit\w*|infiltrat\w*|airspace disease|air space disease|densit\w*',
    'Pleural Effusion': r'effusions?',
    'Pneumonia': r'pneumonia|infection',
    'Pneumothorax': r'pneumothora\w*',
}
NEGATION = r'\b(?:no|not|without|negative for|free of|clear of|resolved|resolution of|removed|absence of)\b'
HEDGE = r'\b(?:may|might|could|possible|possibly|probable|questionable|suspicious|concerning|suspected|cannot exclude|' \
        r'not excluded|versus|vs|or|likely|suggest\w*|differential)\b'
_MENTION = {label: re.compile(rf'\b(?:{p})\b') for label, p in BASELINE_MENTIONS.items()}
_NEG, _HEDGE = re.compile(NEGATION), re.compile(HEDGE)
_SENTENCE = re.compile(r'[^.\n]+')


def baseline_label(text: str) -> dict:
    "1 / 0 / -1 / NaN for each BASELINE_MENTIONS label of one report text."
    out = dict.fromkeys(BASELINE_MENTIONS, np.nan)
    for sent in _SENTENCE.findall(text.lower()):
        for label, rx in _MENTION.items():
            for m in rx.finditer(sent):
                value = 0.0 if _NEG.search(sent, 0, m.start()) else -1.0 if _HEDGE.search(sent) else 1.0
                rank = {0.0: 0, -1.0: 1, 1.0: 2}
                if np.isnan(out[label]) or rank[value] > rank[out[label]]: out[label] = value
    return out


def baseline_labels(texts) -> pd.DataFrame:
    "One row per text, one column per BASELINE_MENTIONS label."
    return pd.DataFrame([baseline_label(t) for t in texts], columns=list(BASELINE_MENTIONS))


def main(argv=None):
    from cxrlab.labels import (IU_DEV_UIDS, IU_LABELS, UNCERTAINTY_POLICIES, agreement, binarize, binary_f1,
                               find_nlm_reports, label_reports, mesh_labels, read_nlm_reports, section_text)
    from cxrlab.metrics import bootstrap_ci
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--iu', default=None, help='IU X-Ray NLM XML reports (.whl / .tgz / folder); default: torchxrayvision')
    ap.add_argument('--n-resamples', type=int, default=1000)
    a = ap.parse_args(argv)
    path = find_nlm_reports(a.iu)
    if path is None: raise SystemExit('no IU X-Ray reports installed: pip install torchxrayvision')
    iu = read_nlm_reports(path, IU_DEV_UIDS)
    gold = [mesh_labels(t) for t in iu['mesh']]
    keep = np.array([g is not None for g in gold])
    iu, ref = iu[keep].reset_index(drop=True), pd.DataFrame([g for g in gold if g is not None], columns=IU_LABELS)
    texts = [section_text(r, mode='both') for r in iu[['findings', 'impression']].to_dict('records')]
    preds = {'baseline (regex)': baseline_labels(texts)[IU_LABELS].fillna(0.0),
             'cxrlab.labels': label_reports(iu[['findings', 'impression']], mode='both', progress=False)[IU_LABELS].fillna(0.0)}
    def f1s(*pg):
        out = {}
        for k, (p, g) in enumerate(zip(pg[::2], pg[1::2])):
            f = binary_f1(p, g); out |= {f'{k}/{l}': v for l, v in zip(IU_LABELS, f)} | {f'{k}/macro': float(np.nanmean(f))}
        out['diff/macro'] = out['1/macro'] - out['0/macro']
        return out
    for policy in UNCERTAINTY_POLICIES:
        arrays = []
        for p in preds.values():
            b = binarize(p, policy).to_numpy()
            arrays += [np.nan_to_num(b), np.where(np.isnan(b), 0.0, ref.to_numpy())]
        ci = bootstrap_ci(f1s, *arrays, n_resamples=a.n_resamples, seed=0)
        table = pd.DataFrame({name: [f"{ci[f'{k}/{l}']['estimate']:.3f} [{ci[f'{k}/{l}']['low']:.2f}, {ci[f'{k}/{l}']['high']:.2f}]"
                                     for l in IU_LABELS + ['macro']] for k, name in enumerate(preds)}, index=IU_LABELS + ['macro'])
        d = ci['diff/macro']
        print(f"\n{policy}: F1 [95% CI] on {len(ref)} IU dev reports (uids {IU_DEV_UIDS[0]}-{IU_DEV_UIDS[1]}); "
              f"cxrlab - baseline macro-F1 = {d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (paired bootstrap)")
        print(table.to_string())
        assert abs(agreement(preds['cxrlab.labels'], ref, IU_LABELS, policy).loc['macro', 'f1'] - ci['1/macro']['estimate']) < 1e-9
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
