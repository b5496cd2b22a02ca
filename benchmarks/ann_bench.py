"""Approximate vs exact gallery search with cxrlab.evaluate: build time, query time and recall@k of IVF and HNSW
indexes against the exact inner-product search (FAISS IndexFlatIP), in one run.

    OMP_NUM_THREADS=2 python benchmarks/ann_bench.py              # 100k x 512-D gallery, 1,000 queries
    python benchmarks/ann_bench.py --n-gallery 20000 --quick      # seconds

Embeddings are random unit vectors around 2,000 cluster centres (real image embeddings are clustered, and
uniform random vectors are the worst case for any index); queries are noisy copies of gallery items.
"""
import argparse, time

import torch

from cxrlab.evaluate import build_index, search, search_recall


def clustered(n, dim, n_centres, spread, gen):
    centres = torch.nn.functional.normalize(torch.randn(n_centres, dim, generator=gen), dim=1)
    x = centres[torch.randint(0, n_centres, (n,), generator=gen)] + spread * torch.randn(n, dim, generator=gen) / dim ** .5
    return torch.nn.functional.normalize(x, dim=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-gallery", type=int, default=100_000)
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer index settings")
    a = ap.parse_args(argv)
    gen = torch.Generator().manual_seed(a.seed)
    gallery = clustered(a.n_gallery, a.dim, 2000, 1.0, gen)
    picks = torch.randint(0, a.n_gallery, (a.n_queries,), generator=gen)
    queries = torch.nn.functional.normalize(gallery[picks] + 0.5 * torch.randn(a.n_queries, a.dim, generator=gen) / a.dim ** .5, dim=1)

    t0 = time.perf_counter(); flat = build_index(gallery, "flat"); t_build = time.perf_counter() - t0
    t0 = time.perf_counter(); _, exact = search(queries, k=a.k, index=flat); t_search = time.perf_counter() - t0
    rows = [("flat (exact)", t_build, t_search, 1.0)]
    t0 = time.perf_counter(); _, chunked = search(queries, gallery, a.k, backend="torch"); t_chunk = time.perf_counter() - t0
    rows.append(("chunked torch (exact)", 0.0, t_chunk, search_recall(chunked, exact)))
    settings = [("ivf", dict(nprobe=8)), ("ivf", dict(nprobe=32)), ("hnsw", dict(hnsw_m=32, ef_search=64))]
    if not a.quick: settings += [("hnsw", dict(hnsw_m=32, ef_search=256))]
    for kind, kw in settings:
        t0 = time.perf_counter(); idx = build_index(gallery, kind, **kw); tb = time.perf_counter() - t0
        t0 = time.perf_counter(); _, approx = search(queries, k=a.k, index=idx); ts = time.perf_counter() - t0
        rows.append((f"{kind} {kw}", tb, ts, search_recall(approx, exact)))

    print(f"gallery {a.n_gallery:,} x {a.dim}, {a.n_queries:,} queries, k={a.k}, torch threads {torch.get_num_threads()}")
    print(f"{'index':34s} {'build s':>8s} {'search s':>9s} {'queries/s':>10s} {'recall@k vs exact':>18s} {'speed-up vs flat':>17s}")
    for name, tb, ts, rec in rows:
        print(f"{name:34s} {tb:8.2f} {ts:9.3f} {a.n_queries / ts:10.0f} {rec:18.4f} {t_search / ts:16.1f}x")


if __name__ == "__main__":
    main()
