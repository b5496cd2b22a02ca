"""Property-based tests (hypothesis) of cxrlab.metrics against brute-force definitions written out in plain Python.

Scores are drawn from a few integer levels (so ties are frequent), sometimes negative or -0.0, in float32 and float64;
relevance is random and may leave queries without relevant items. Each brute force builds the ranked list
explicitly (sort by score, tie policy as the secondary key) and reads the metric off it.
"""
import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from sklearn.metrics import average_precision_score

from cxrlab import metrics as M

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def retrieval_problem(draw, max_q=6, max_g=12):
    q, g = draw(st.integers(1, max_q)), draw(st.integers(1, max_g))
    levels = draw(st.sampled_from([[0., 1.], [-2., -0.0, 0.0, 1.5], [0., 1., 2., 3., 4.], [-1e-3, 1e-3, 7.]]))
    sim = np.array(draw(st.lists(st.sampled_from(levels), min_size=q * g, max_size=q * g))).reshape(q, g)
    rel = np.array(draw(st.lists(st.booleans(), min_size=q * g, max_size=q * g))).reshape(q, g)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return torch.tensor(sim, dtype=dtype), torch.tensor(rel)


def ranked_relevance(scores, rel, ties):
    "The ranked list's relevance flags: score descending; among equal scores irrelevant first (pessimistic) or last."
    key = (lambda j: (-scores[j], rel[j])) if ties == "pessimistic" else (lambda j: (-scores[j], not rel[j]))
    return [bool(rel[j]) for j in sorted(range(len(scores)), key=key)]


def brute_force(sim, rel, ties, k):
    "Per-query positions and metrics from the explicit ranked list (None for queries without relevant items)."
    out = []
    for s, r in zip(sim.tolist(), rel.tolist()):
        ranked = ranked_relevance([0.0 if x == 0 else x for x in s], r, ties)  # -0.0 == 0.0
        pos = [i + 1 for i, x in enumerate(ranked) if x]
        if not pos: out.append(None); continue
        R = len(pos)
        out.append(dict(pos=pos, hit=float(pos[0] <= k), rr=1 / pos[0], rprec=sum(p <= R for p in pos) / R,
                        ap=sum((i + 1) / p for i, p in enumerate(pos)) / R,
                        ap_r=sum((i + 1) / p for i, p in enumerate(pos) if p <= R) / R,
                        prec=sum(p <= k for p in pos) / k, recall=sum(p <= k for p in pos) / R,
                        ndcg=sum(1 / math.log2(p + 1) for p in pos if p <= k) / sum(1 / math.log2(j + 1) for j in range(1, min(R, k) + 1))))
    return out


@SETTINGS
@given(retrieval_problem(), st.sampled_from(M.TIE_POLICIES), st.sampled_from(["count", "sort", "auto"]), st.integers(1, 5))
def test_relevant_ranks_and_metrics_match_the_ranked_list(problem, ties, method, k):
    sim, rel = problem
    rr = M.relevant_ranks(sim, rel, ties=ties, method=method)
    ref = brute_force(sim, rel, ties, k)
    ours = dict(hit=M.recall_at_k(rr, k), rr=M.reciprocal_rank(rr), rprec=M.r_precision(rr), ap=M.average_precision(rr),
                ap_r=M.average_precision_at_r(rr), prec=M.precision_at_k(rr, k), recall=M.recall_fraction_at_k(rr, k),
                ndcg=M.ndcg_at_k(rr, k))
    for q, r in enumerate(ref):
        if r is None:
            assert rr.n_rel[q] == 0 and all(v[q].isnan() for v in ours.values())
            continue
        assert rr.pos[q, :len(r["pos"])].tolist() == r["pos"] and rr.pos[q, len(r["pos"]):].isinf().all()
        for name, v in ours.items():
            assert math.isclose(v[q].item(), r[name], rel_tol=1e-12, abs_tol=1e-12), (name, q, v[q].item(), r[name])


@SETTINGS
@given(retrieval_problem(max_q=5, max_g=30), st.sampled_from(M.TIE_POLICIES), st.integers(1, 7), st.integers(1, 4),
       st.integers(1, 4))
def test_chunked_ranks_with_a_non_dot_scorer_equal_the_dense_ranks(problem, ties, chunk, qchunk, dim):
    "Integer embeddings make -||q - g||^2 exact in float64, so ties in the dense matrix are exact ties."
    _, rel = problem
    q_n, g_n = rel.shape
    gen = torch.Generator().manual_seed(q_n * 100 + g_n)
    qe, ge = torch.randint(-2, 3, (q_n, dim), generator=gen).double(), torch.randint(-2, 3, (g_n, dim), generator=gen).double()
    score = lambda a, b: -((a["embeds"][:, None] - b["embeds"][None]) ** 2).sum(-1)
    lists = [r.nonzero().flatten() for r in rel]
    chunked = M.chunked_relevant_ranks({"embeds": qe}, {"embeds": ge}, lists, ties, chunk_size=chunk, query_chunk_size=qchunk,
                                       score_fn=score)
    dense = M.relevant_ranks(score({"embeds": qe}, {"embeds": ge}), rel, ties)
    assert torch.equal(chunked.n_rel, dense.n_rel)
    assert torch.equal(chunked.pos[:, :dense.pos.shape[1]], dense.pos[:, :chunked.pos.shape[1]])


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 12), st.integers(1, 9))
def test_chunked_topk_scores_equal_the_dense_topk(n_q, n_g, k, chunk):
    gen = torch.Generator().manual_seed(n_q * 1000 + n_g)
    qe, ge = torch.randint(-3, 4, (n_q, 3), generator=gen).double(), torch.randint(-3, 4, (n_g, 3), generator=gen).double()
    s, i = M.chunked_topk(qe, ge, k, chunk_size=chunk)
    dense = qe @ ge.T
    assert torch.equal(s, dense.topk(min(k, n_g), dim=1).values)           # the k best scores, in order
    assert torch.equal(dense.gather(1, i), s) and all(len(set(r)) == len(r) for r in i.tolist())  # distinct items carrying them


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=30))
def test_auroc_is_the_pairwise_probability_and_auprc_is_average_precision(pairs):
    s = [float(a) for a, _ in pairs]; t = [b for _, b in pairs]
    pos, neg = [x for x, y in zip(s, t) if y], [x for x, y in zip(s, t) if not y]
    if not pos or not neg:
        assert math.isnan(M.auroc(s, t)) and math.isnan(M.auprc(s, t)); return
    pairwise = sum((a > b) + .5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
    assert math.isclose(M.auroc(s, t), pairwise, rel_tol=1e-12)
    assert math.isclose(M.auprc(s, t), average_precision_score(t, s), rel_tol=1e-12)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.data())
def test_dice_iou_pixel_accuracy_match_set_definitions(b, h, w, data):
    p = np.array(data.draw(st.lists(st.sampled_from([0., .2, .5, .7, 1.]), min_size=b * h * w, max_size=b * h * w))).reshape(b, h, w)
    t = np.array(data.draw(st.lists(st.booleans(), min_size=b * h * w, max_size=b * h * w))).reshape(b, h, w)
    dice, iou, acc = M.dice_score(p, t), M.iou_score(p, t), M.pixel_accuracy(p, t)
    for i in range(b):
        P = {ix for ix, v in np.ndenumerate(p[i]) if v >= .5}; T = {ix for ix, v in np.ndenumerate(t[i]) if v}
        assert dice[i].item() == (1.0 if not P | T else 2 * len(P & T) / (len(P) + len(T)))
        assert iou[i].item() == (1.0 if not P | T else len(P & T) / len(P | T))
        assert math.isclose(acc[i].item(), 1 - len(P ^ T) / (h * w))


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(1, 3), st.data())
def test_label_overlap_relevance_counts_shared_positives_only(n_q, n_g, n_l, min_shared, data):
    vals = st.sampled_from([1., 0., -1., float("nan")])
    lq = np.array(data.draw(st.lists(vals, min_size=n_q * n_l, max_size=n_q * n_l))).reshape(n_q, n_l)
    lg = np.array(data.draw(st.lists(vals, min_size=n_g * n_l, max_size=n_g * n_l))).reshape(n_g, n_l)
    if min_shared > n_l: return
    rel = M.label_overlap_relevance(lq, lg, min_shared)
    for i in range(n_q):
        for j in range(n_g):
            assert bool(rel[i, j]) == (sum(lq[i, l] == 1 and lg[j, l] == 1 for l in range(n_l)) >= min_shared)
