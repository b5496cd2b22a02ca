"""What each rule family of cxrlab.labels contributes: ablate it, re-label, compare.

For every family (a trigger list, or a kind of vocabulary entry) the labeler runs once with that family switched off
(its regex never matches, or its entries are dropped from the compiled vocabulary) on
  * the IU X-Ray development reports (uids 1-1500 only, findings + impression, against the MeSH-derived labels):
    report x label cells that change, and the change of macro-F1 under U-Ones, U-Zeros, U-Ignore and U-Findings;
  * the notebook's DEV_SET (hand-written sentences in real report language): cells that change;
  * SynthCXR report-only studies (800 patients, seed 7, prevalence 2.5, as tests/test_synth.py): cells that disagree
    with the generator's labels (0 = the 100% agreement the tests hold the labeler to).
A family that changes no IU dev F1 under any policy for the worse and keeps SynthCXR at 100% adds nothing measurable.
Switching families off goes through the module's private compiled tables; nothing is written back.

Usage:  OMP_NUM_THREADS=1 python benchmarks/labels_ablation.py [--families NAME ...]
"""
import argparse
import re

import numpy as np
import pandas as pd

import cxrlab.labels as L

NEVER = re.compile(r'(?!x)x')
FAMILIES = {  # name -> the compiled trigger tables it switches off, or the vocabulary key it drops
    'pseudo-triggers (no change)': dict(rx=['pseudo']), 'pre-mention negated uncertainty (cannot exclude X)': dict(rx=['pre_neg_unc']),
    'post-mention uncertainty (X is possible, not excluded)': dict(rx=['post_unc']),
    'pre-negation (no, without)': dict(rx=['neg']), 'post-negation (X is not seen)': dict(rx=['post_neg']),
    'breaking hedges (may, possible)': dict(rx=['unc']), 'weak hedges (suggest, concerning)': dict(rx=['unc_weak']),
    'differential scope': dict(rx=['ddx']), 'coordination (X or Y)': dict(rx=['coord']), 'clause breaks': dict(rx=['clause']),
    'hedged terms': dict(rules='hedged'), 'qualified attributes': dict(rules='attributes'), 'exclusions': dict(rules='exclude'),
    'misspellings': dict(rules='misspell'), 'historical (old pneumonia)': dict(rules='historical'),
}
POLICIES = ('U-Ones', 'U-Zeros', 'U-Ignore', 'U-Findings')


def compiled_without(key):
    "The compiled vocabulary with one kind of entry dropped ('misspell': no misspellings)."
    drop = lambda rules: {k: v for k, v in rules.items() if k != key}
    return {**{k: L._compile_rules(drop(v), () if key == 'misspell' else L.MISSPELLINGS.get(k, ()))
               for k, v in L.LABEL_RULES.items() if v}, L.OTHER: L._compile_rules(drop(L.OTHER_FINDINGS))}


def changed(a: pd.DataFrame, b: pd.DataFrame) -> int:
    return int(((a != b) & ~(a.isna() & b.isna())).to_numpy().sum())


def main(argv=None):
    from cxrlab.core import CHEXPERT_LABELS
    from cxrlab.synth import synth_reports
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--families', nargs='*', default=list(FAMILIES))
    ap.add_argument('--iu', default=None, help='IU X-Ray NLM XML reports (.whl / .tgz / folder); default: torchxrayvision')
    a = ap.parse_args(argv)
    iu = L.read_nlm_reports(L.find_nlm_reports(a.iu), L.IU_DEV_UIDS)
    gold = [L.mesh_labels(t) for t in iu['mesh']]
    keep = np.array([g is not None for g in gold])
    iu_recs = iu[keep][['findings', 'impression']].to_dict('records')
    ref = pd.DataFrame([g for g in gold if g is not None], columns=L.IU_LABELS)
    dev_reports, _ = L.dev_frames()
    syn = synth_reports(n_patients=800, seed=7, prevalence=2.5)
    syn_truth = pd.DataFrame([{l: r[l] for l in CHEXPERT_LABELS} for r in syn], columns=CHEXPERT_LABELS).astype(float)
    syn_recs = [{'findings': r['findings'], 'impression': r['impression']} for r in syn]

    def run():
        return (L.label_reports(iu_recs, mode='both', progress=False)[L.IU_LABELS].fillna(0.0),
                L.label_reports(dev_reports, progress=False), L.label_reports(syn_recs, mode='both', progress=False))
    macro = lambda p, pol: L.agreement(p, ref, L.IU_LABELS, uncertain_as=pol).loc['macro', 'f1']
    rules, rx = L._RULES, dict(L._RX)
    base = run()
    print(f"{len(ref)} IU dev reports, {len(dev_reports)} DEV_SET reports, {len(syn_recs)} SynthCXR studies; full labeler: "
          + ', '.join(f"{p} {macro(base[0], p):.4f}" for p in POLICIES) + f"; SynthCXR cells wrong {changed(base[2], syn_truth)}")
    L.log.setLevel('ERROR')  # the empty-report warning was shown once above
    rows = []
    for name in a.families:
        f = FAMILIES[name]
        try:
            L._RX = {k: NEVER if k in f.get('rx', ()) else v for k, v in rx.items()}
            if 'rules' in f: L._RULES = compiled_without(f['rules'])
            out = run()
        finally: L._RULES, L._RX = rules, dict(rx)
        rows.append({'family switched off': name, 'IU cells changed': changed(out[0], base[0]),
                     **{f'd {p}': macro(out[0], p) - macro(base[0], p) for p in POLICIES},
                     'DEV_SET cells changed': changed(out[1], base[1]), 'SynthCXR cells wrong': changed(out[2], syn_truth)})
    pd.set_option('display.width', 250)
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
