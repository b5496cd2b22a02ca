"""Cost of ranking by the MedProbCLIP match probability, measured against the dot product in the same run.

The match probability needs the [queries, gallery, D] broadcast of the MedProbCLIP distance (PCME++'s distance
reduces to matrix products), so it costs more than a dot product. This script times, on random Gaussians:

1. exact study-level ranks through `cxrlab.evaluate.scored_relevant_ranks` (chunked, no [Q, G] matrix) for the
   dot product (the metrics' fast path), the PCME++ and the MedProbCLIP match probability;
2. the blocked MedProbCLIP distance against one dense broadcast, to show the blocks cost nothing extra.

CPU time (time.process_time) is reported beside wall time: the machine is shared, so wall time is noisy; ratios are
to the dot product measured in the same run. Usage: `python benchmarks/probclip_bench.py [--n 2000] [--dim 128]`.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=2000, help='queries = gallery items')
    ap.add_argument('--dim', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args(argv)
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
