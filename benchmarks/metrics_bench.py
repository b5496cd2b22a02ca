"""Speed and memory of cxrlab.metrics.

Part 1: all retrieval metrics for a 3,041 x 3,041 similarity matrix (the MIMIC-CXR official test size), against
torchmetrics' functional retrieval metrics run on the same matrix in the same process; the values are compared too.
Three relevance structures: one-to-one, study-level (a few relevant items per query) and label overlap
(M.label_overlap_relevance on CheXpert-style labels: ~840 relevant items per query, the row-sort path).
Part 2: text->image top-k search of 3,000 queries over a 377,110-image gallery of random 512-D unit vectors, with
FAISS (exact IndexFlatIP), with the chunked torch fallback, and the exact rank of each query's target image
(chunked_relevant_ranks), each in its own subprocess so that the peak resident
memory (VmHWM, falling back to ru_maxrss) belongs to that method alone; then the agreement of their top-k lists.
tracemalloc is reported too but only sees Python/numpy allocations, not torch's or FAISS's.

Usage:  OMP_NUM_THREADS=1 python benchmarks/metrics_bench.py [--quick] [--threads 1] [--json out.json]
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import torch

from cxrlab import metrics as M


def _best_time(fn, repeat):
    "Best wall time and best process CPU time of `repeat` calls, and the last result."
    wall, cpu, out = math.inf, math.inf, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


# ----------------------------------------------------------------------------------------------- part 1: metrics
def _relevance(kind, n, gen):
    "Relevance matrices: one-to-one, study-level (items sharing a random group id), label-overlap (dense)."
    if kind == "one-to-one":
        return None
    if kind == "study-level (shared group id)":
        group = torch.randint(0, n // 2, (n,), generator=gen)  # items sharing a group id are relevant to each other
        return group[:, None] == group[None, :]
    # label overlap: CheXpert-style labels (1 positive 15%, -1 uncertain 10%, 0 negative 35%, blank 40%),
    # relevant = at least one finding positive in both (M.label_overlap_relevance: positives only)
    u = torch.rand(n, 14, generator=gen)
    labels = torch.where(u < .15, 1., torch.where(u < .25, -1., torch.where(u < .6, 0., math.nan)))
    return M.label_overlap_relevance(labels, labels)


def _torchmetrics_all(sim, rel, ks):
    "The same metrics with torchmetrics' functional forms, one query at a time (their API is per query)."
    import torchmetrics.functional.retrieval as tmr
    kmax = max(ks)
    names = [f"R@{k}" for k in ks] + ["MRR", f"nDCG@{kmax}", "R-Precision", f"P@{kmax}", "mAP"]
    vals = {n: [] for n in names}
    for q in range(sim.shape[0]):
        p, t = sim[q], rel[q]
        if not t.any():
            continue
        for k in ks:
            vals[f"R@{k}"].append(tmr.retrieval_hit_rate(p, t, top_k=k))
        vals["MRR"].append(tmr.retrieval_reciprocal_rank(p, t))
        vals[f"nDCG@{kmax}"].append(tmr.retrieval_normalized_dcg(p, t, top_k=kmax))
        vals["R-Precision"].append(tmr.retrieval_r_precision(p, t))
        vals[f"P@{kmax}"].append(tmr.retrieval_precision(p, t, top_k=kmax))
        vals["mAP"].append(tmr.retrieval_average_precision(p, t))
    return {n: torch.stack(v).float().mean().item() for n, v in vals.items()}


def bench_metrics(n, ks=(1, 5, 10), repeat=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # similarities in (0, 1]: torchmetrics ignores items scored <= 0 in several metrics; continuous -> no ties
    sim = torch.rand(n, n, generator=gen) * 0.999 + 0.001
    rows = []
    for kind in ("one-to-one", "study-level (shared group id)", "label-overlap (dense)"):
        rel = _relevance(kind, n, gen)
        t_ours, c_ours, ours = _best_time(lambda: M.retrieval_metrics(sim, rel, ks), repeat)
        rel_full = torch.eye(n, dtype=torch.bool) if rel is None else rel
        _torchmetrics_all(sim[:20], rel_full[:20], ks)  # warm-up (first-call overheads)
        t_ref, c_ref, ref = _best_time(lambda: _torchmetrics_all(sim, rel_full, ks), 1)
        max_diff = max(abs(ours[k] - ref[k]) for k in ref)
        rows.append(dict(relevance=kind, mean_relevant=float(rel_full.sum(1).float().mean()),
                         max_relevant=int(rel_full.sum(1).max()),
                         ours_cpu_s=c_ours, ours_wall_s=t_ours, torchmetrics_cpu_s=c_ref, torchmetrics_wall_s=t_ref,
                         speedup_cpu=c_ref / c_ours, speedup_wall=t_ref / t_ours, max_abs_diff=max_diff,
                         metrics_compared=len(ref), ours_extra=sorted(set(ours) - set(ref))))
    return rows


# ------------------------------------------------------------------------------------------ part 2: large gallery
def _gallery_chunks(n_gallery, dim, seed, chunk=32768):
    "Random unit vectors, chunk c drawn from its own seed so every consumer sees identical data."
    for c, g0 in enumerate(range(0, n_gallery, chunk)):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + c)
        x = torch.randn(min(chunk, n_gallery - g0), dim, generator=gen)
        yield g0, torch.nn.functional.normalize(x, dim=1)


def _queries(targets_rows, noise, seed):
    "Text queries = noisy copies of their target image embedding (so Recall@K is neither 0 nor 1)."
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 500_000)  # no gallery chunk uses it (CPU seeds are 32-bit)
    z = torch.randn(targets_rows.shape, generator=gen) / math.sqrt(targets_rows.shape[1])
    return torch.nn.functional.normalize(targets_rows + noise * z, dim=1)


def _peak_rss_mib():
    "Peak resident memory of this process. /proc VmHWM is reset at exec; ru_maxrss can carry the parent's peak."
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes on macOS


def run_search(method, n_gallery, n_queries, dim, k, noise, seed, out_path):
    "One method in this process: build data, search, record time and peak memory (child-process entry point)."
    baseline = _peak_rss_mib()
    tracemalloc.start()
    targets = torch.randperm(n_gallery, generator=torch.Generator().manual_seed(seed))[:n_queries]
    target_rows = torch.empty(n_queries, dim)
    t0 = time.perf_counter()
    if method == "faiss":
        def chunks():  # added to the index as generated: the gallery exists once, inside FAISS
            for g0, x in _gallery_chunks(n_gallery, dim, seed):
                sel = (targets >= g0) & (targets < g0 + len(x))
                target_rows[sel] = x[targets[sel] - g0]
                yield x
        gallery = M.faiss_flat_index(chunks())
    else:
        gallery = torch.empty(n_gallery, dim)
        for g0, x in _gallery_chunks(n_gallery, dim, seed):
            gallery[g0:g0 + len(x)] = x
        target_rows = gallery[targets]
    t_build = time.perf_counter() - t0
    queries = _queries(target_rows, noise, seed)
    t0 = time.perf_counter()
    ranks = None
    if method == "faiss":
        scores, indices = M.faiss_topk(queries, gallery, k)
    elif method == "chunked":
        scores, indices = M.chunked_topk(queries, gallery, k)
    else:  # exact rank of every target (MedR, MRR, mAP need it; top-k lists cannot give it)
        rr = M.chunked_relevant_ranks(queries, gallery, targets)
        ranks, scores, indices = rr.pos[:, 0], None, None
    t_search = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    peak = _peak_rss_mib()
    torch.save(dict(scores=scores, indices=indices, ranks=ranks, targets=targets, build_s=t_build, search_s=t_search,
                    peak_rss_mib=peak, baseline_rss_mib=baseline, tracemalloc_peak_mib=py_peak / 2**20), out_path)


def bench_search(n_gallery, n_queries, dim, k, noise, seed, threads, tmpdir):
    rows, results = [], {}
    methods = (["faiss"] if M.faiss_available() else []) + ["chunked", "chunked_ranks"]
    for method in methods:
        out = os.path.join(tmpdir, f"search_{method}.pt")
        cmd = [sys.executable, __file__, "--child", method, "--n-gallery", str(n_gallery), "--n-queries", str(n_queries),
               "--dim", str(dim), "--k", str(k), "--noise", str(noise), "--seed", str(seed), "--threads", str(threads),
               "--out", out]
        subprocess.run(cmd, check=True)
        r = torch.load(out, weights_only=False)
        results[method] = r
        if r["ranks"] is None:
            hits = r["indices"] == r["targets"][:, None]
            recall = {f"R@{kk}": hits[:, :kk].any(1).float().mean().item() for kk in (1, 10)}
            medr = math.nan
        else:
            recall = {f"R@{kk}": (r["ranks"] <= kk).float().mean().item() for kk in (1, 10)}
            medr = r["ranks"].quantile(.5).item()
        rows.append(dict(method=method, build_s=r["build_s"], search_s=r["search_s"],
                         peak_rss_mib=r["peak_rss_mib"], delta_rss_mib=r["peak_rss_mib"] - r["baseline_rss_mib"],
                         tracemalloc_peak_mib=r["tracemalloc_peak_mib"], MedR=medr, **recall))
    agreement = None
    if "faiss" in results:
        a, b = results["faiss"], results["chunked"]
        same_list = (a["indices"] == b["indices"]).all(1)
        same_set = torch.tensor([set(x.tolist()) == set(y.tolist()) for x, y in zip(a["indices"], b["indices"])])
        agreement = dict(identical_topk_lists=same_list.float().mean().item(),
                         identical_topk_sets=same_set.float().mean().item(),
                         max_abs_score_diff=(a["scores"] - b["scores"]).abs().max().item())
    return rows, agreement


# ------------------------------------------------------------------------------------------------------ printing
def _table(rows, cols, fmt):
    widths = [max(len(c), *(len(fmt.get(c, "{}").format(r[c])) for r in rows)) for c in cols]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    print(line); print("-" * len(line))
    for r in rows:
        print("  ".join(fmt.get(c, "{}").format(r[c]).rjust(w) for c, w in zip(cols, widths)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), for checking the script")
    ap.add_argument("--n", type=int, default=3041, help="queries = gallery size for part 1")
    ap.add_argument("--n-gallery", type=int, default=377_110)
    ap.add_argument("--n-queries", type=int, default=3000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--noise", type=float, default=4.5, help="query noise relative to the target embedding")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--child", choices=["faiss", "chunked", "chunked_ranks"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.child:
        try:
            import faiss; faiss.omp_set_num_threads(a.threads)
        except ImportError:
            pass
        return run_search(a.child, a.n_gallery, a.n_queries, a.dim, a.k, a.noise, a.seed, a.out)
    if a.quick:
        a.n, a.n_gallery, a.n_queries = 600, 20_000, 300
    print(f"torch {torch.__version__}, {a.threads} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes slow every timing alike)")
    print(f"\nPart 1: all retrieval metrics on a {a.n} x {a.n} similarity matrix (best of 3; torchmetrics: 1 run)")
    rows = bench_metrics(a.n, seed=a.seed)
    _table(rows, ["relevance", "mean_relevant", "max_relevant", "ours_cpu_s", "ours_wall_s", "torchmetrics_cpu_s",
                  "torchmetrics_wall_s", "speedup_cpu", "speedup_wall", "max_abs_diff"],
           {"mean_relevant": "{:.1f}", "ours_cpu_s": "{:.3f}", "ours_wall_s": "{:.3f}", "torchmetrics_cpu_s": "{:.2f}",
            "torchmetrics_wall_s": "{:.2f}", "speedup_cpu": "{:.0f}x", "speedup_wall": "{:.0f}x",
            "max_abs_diff": "{:.1e}"})
    print("cpu = process CPU time (robust to other load on the machine); wall = elapsed; max_abs_diff = largest "
          "difference between our value and torchmetrics' over the compared metrics")
    print(f"ours also returns {rows[0]['ours_extra']} (no torchmetrics equivalent); "
          f"{rows[0]['metrics_compared']} metrics compared")
    for r in rows:
        print(f"ratio {r['relevance']}: torchmetrics / ours = {r['torchmetrics_cpu_s']:.2f} s / {r['ours_cpu_s']:.3f} s CPU "
              f"= {r['speedup_cpu']:.1f}x (wall {r['speedup_wall']:.1f}x), same run"
              + (" [target >= 10x]" if r['relevance'].startswith('label-overlap') else ""))
    result = dict(metrics=rows)
    if not a.skip_search:
        print(f"\nPart 2: top-{a.k} search, {a.n_queries} queries x {a.n_gallery:,} gallery x {a.dim}-D "
              f"(gallery alone: {a.n_gallery * a.dim * 4 / 2**20:.0f} MiB float32); each method in its own process")
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            srows, agreement = bench_search(a.n_gallery, a.n_queries, a.dim, a.k, a.noise, a.seed, a.threads, tmp)
        _table(srows, ["method", "build_s", "search_s", "peak_rss_mib", "delta_rss_mib", "R@1", "R@10", "MedR"],
               {"build_s": "{:.1f}", "search_s": "{:.1f}", "peak_rss_mib": "{:.0f}", "delta_rss_mib": "{:.0f}",
                "R@1": "{:.3f}", "R@10": "{:.3f}", "MedR": "{:.1f}"})
        print("faiss / chunked: exact top-k lists (R@K from the lists); chunked_ranks: exact rank of every target "
              "(chunked_relevant_ranks), so MedR too; build = generating the gallery (+ FAISS index)")
        print("peak_rss = VmHWM of the method's process (absolute, includes python+torch); "
              "delta = peak minus RSS after imports")
        if agreement:
            print("FAISS vs chunked: " + ", ".join(f"{k} = {v:.4g}" for k, v in agreement.items()))
        result.update(search=srows, agreement=agreement)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
