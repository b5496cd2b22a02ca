"""Cost of ranking by the MedProbCLIP match probability, measured against the dot product in the same run.

The match probability needs the [queries, gallery, D] broadcast of the MedProbCLIP distance (PCME++'s distance
reduces to matrix products), so it costs more than a dot product. This script times, on random Gaussians:

1. exact study-level ranks through `cxrlab.evaluate.scored_relevant_ranks` (chunked, no [Q, G] matrix) for the
   dot product (the metrics' fast path), the PCME++ and the MedProbCLIP match probability;
2. the blocked MedProbCLIP distance against one dense broadcast, to show the blocks cost nothing extra.

CPU time (time.process_time) is reported beside wall time: the machine is shared, so wall time is noisy; ratios are
to the dot product measured in the same run. Usage: `python benchmarks/probclip_bench.py [--n 2000] [--dim 128]`.

`--recipe` instead trains cxrlab's earlier recipe and the seed-equal defaults (frontal, and PA + lateral) on SynthCXR
and compares t2i R@10 and the R@10 certainty split (most − least certain σ² decile) with patient CIs (minutes).
"""
import argparse
import time

import torch
import torch.nn.functional as F

from cxrlab.evaluate import scored_relevant_ranks
from cxrlab.models import DotScorer
from cxrlab.probclip import MatchProbabilityScorer, csd_distance


def timed(fn, repeats: int = 3):
    "(best wall s, best CPU s, result) over `repeats` calls."
    best_w = best_c = float('inf')
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_w, best_c = min(best_w, time.perf_counter() - w), min(best_c, time.process_time() - c)
    return best_w, best_c, out


def recipe_comparison(a):
    "cxrlab's earlier MedProbCLIP recipe against the seed-equal defaults: t2i R@10 and the R@10 certainty split, with patient CIs."
    import time as _time
    from cxrlab.evaluate import evaluate_run, mean_ci, study_ranks
    from cxrlab.metrics import recall_at_k
    from cxrlab.probclip import resolve_probclip_options, setup_probclip
    setting = dict(n_patients=a.patients, epochs=a.epochs, image_size=64, batch_size=32, device='cpu', precision='fp32', seed=0,
                   out_dir=a.out, section='report')
    laterals = {'frontal_only': False, 'synth_views': ['PA', 'LATERAL']}
    runs = {'before: normalised μ, MLP σ head, λ 0.5/0.5, β 1e-3 (frontal)': ('normalised_mu', {}, 'none'),
            'after: seed-equal defaults, seed view-2 aug (frontal)': (None, {}, 'seed'),
            'after: seed-equal defaults, PA + lateral, seed view-2 aug': (None, laterals, 'seed')}
    print(f"SynthCXR {a.patients} patients, 64 px, tiny backbone from scratch, {a.epochs} epochs, batch 32 (cxrlab's tiny optimiser "
          f"settings for every run); test split, frontal images, {a.resamples} patient resamples")
    fmt = lambda r, k: f"{r[k]:.3f} [{r[k + '_ci_low']:.3f}, {r[k + '_ci_high']:.3f}]"
    hits = {}
    for name, (preset, data_options, aug) in runs.items():
        t0 = _time.time()
        ro = resolve_probclip_options(preset, {'second_view_augment': aug})
        exp = setup_probclip(**ro['data'], model_options=ro['model'], loss_options=ro['loss'], data_options=data_options,
                             run_name=f"{ro['preset']}-{aug}-{'lat' if data_options else 'pa'}", **setting)
        exp.fit()
        test = exp.manifest[(exp.manifest['split'] == 'test') & exp.manifest['is_frontal'].astype(bool)]
        ev = evaluate_run(exp.run.dir, test, 'test', n_resamples=a.resamples, device='cpu', out_dir=a.out, figures=False,
                          families='retrieval')
        m = ev.metrics
        sr = study_ranks(ev.embeddings, 't2i')
        hits[name] = (recall_at_k(sr.rr, 10), sr.query_studies, sr.query_subjects)
        print(f"\n{name}  ({_time.time() - t0:.0f} s)\n  t2i R@10 {fmt(m, 't2i/R@10')}, i2t R@10 {fmt(m, 'i2t/R@10')} "
              f"(chance {m['t2i/chance_R@10']:.3f}; {len(sr.query_studies)} studies)")
        for d in ('t2i', 'i2t'):
            k = f'uncertainty/{d}/R@10/certain_minus_uncertain'
            print(f"  {d} R@10 most-certain decile {fmt(m, f'uncertainty/{d}/R@10/bin01')}, least-certain {fmt(m, f'uncertainty/{d}/R@10/bin10')}, "
                  f"difference {fmt(m, k)}, ρ(σ², rank) {fmt(m, f'uncertainty/{d}/spearman_sigma2_rank')}")
        print(f"  mean σ²: image {m['uncertainty/image_sigma2_mean']:.4g}, text {m['uncertainty/text_sigma2_mean']:.4g}", flush=True)
    (b, qb, gb), (f, qf, _) = list(hits.values())[:2]
    assert qb == qf  # the same queries: a paired difference
    print(f"\npaired t2i R@10, after − before (frontal, same queries): {fmt(mean_ci({'d': f - b}, gb, a.resamples), 'd')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=2000, help='queries = gallery items')
    ap.add_argument('--dim', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--recipe', action='store_true', help="train the earlier and the seed-equal recipes, compare retrieval and σ² deciles")
    ap.add_argument('--patients', type=int, default=600)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--resamples', type=int, default=1000)
    ap.add_argument('--out', default='/tmp/probclip_recipe_runs')
    a = ap.parse_args(argv)
    if a.recipe: torch.set_num_threads(1); return recipe_comparison(a)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    mu = F.normalize(torch.randn(a.n, a.dim, generator=g), dim=-1)
    side = lambda: {'mu': mu + 0.3 * torch.randn(a.n, a.dim, generator=g), 'logvar': -4 + 0.5 * torch.randn(a.n, a.dim, generator=g)}
    img, txt = side(), side()
    img['embeds'], txt['embeds'] = F.normalize(img['mu'], dim=-1), F.normalize(txt['mu'], dim=-1)
    target = torch.arange(a.n)
    print(f"n = {a.n} queries x {a.n} gallery items, D = {a.dim}, 1 thread (shared machine: CPU time is the steadier figure)")
    print(f"{'ranking (t2i, exact, chunked)':<44}{'wall s':>9}{'CPU s':>9}{'CPU ratio':>11}{'R@1':>7}")
    ref = None
    for name, sc in (('dot product (fast path)', DotScorer()), ('match probability, PCME++ distance', MatchProbabilityScorer('pcmepp', 5., 5.)),
                     ('match probability, MedProbCLIP distance', MatchProbabilityScorer('csd', 0.5, 0.))):
        w, c, rr = timed(lambda: scored_relevant_ranks(sc, txt, img, target, query_side='text'), a.repeats)
        ref = ref or c
        print(f"{name:<44}{w:>9.3f}{c:>9.3f}{c / ref:>10.1f}x{float((rr.pos[:, 0] <= 1).double().mean()):>7.3f}")
    q = {k: v[:256] for k, v in txt.items()}
    w1, c1, d1 = timed(lambda: csd_distance(q['mu'], q['logvar'], img['mu'], img['logvar']), a.repeats)
    w2, c2, d2 = timed(lambda: csd_distance(q['mu'], q['logvar'], img['mu'], img['logvar'], block_elements=1 << 40), a.repeats)
    assert torch.allclose(d1, d2, rtol=1e-5, atol=1e-4)
    print(f"\nMedProbCLIP distance, 256 x {a.n}: blocked (2^24 elements) CPU {c1:.3f} s, one dense broadcast "
          f"({256 * a.n * a.dim * 4 / 2**20:.0f} MB) CPU {c2:.3f} s, ratio {c1 / c2:.2f}")


if __name__ == '__main__':
    main()
