"""Tests of cxrlab.metrics against independent references (scikit-learn, torchmetrics) and hand-computed cases."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

import torchmetrics.functional.retrieval as tmr  # a dev requirement: a missing reference is a failure, not a skip

from cxrlab import metrics as M


def _tied_problem(seed, q=25, g=30, n_empty=3, max_level=5):
    "Integer-valued (heavily tied) positive scores, random many-to-many relevance, some empty rows."
    gen = torch.Generator().manual_seed(seed)
    sim = torch.randint(1, max_level + 1, (q, g), generator=gen).float()
    rel = torch.rand(q, g, generator=gen) < torch.rand(q, 1, generator=gen) * 0.4
    rel[:n_empty] = False
    return sim, rel


REFERENCES = {  # name -> (ours(rr, k), reference(preds, target, k)); preds are tie-broken, distinct, positive
    "hit_rate": (M.recall_at_k, lambda p, t, k: tmr.retrieval_hit_rate(p, t, top_k=k)),
    "recall": (M.recall_fraction_at_k, lambda p, t, k: tmr.retrieval_recall(p, t, top_k=k)),
    "precision": (M.precision_at_k, lambda p, t, k: tmr.retrieval_precision(p, t, top_k=k)),
    "mrr": (lambda rr, k: M.reciprocal_rank(rr), lambda p, t, k: tmr.retrieval_reciprocal_rank(p, t)),
    "r_precision": (lambda rr, k: M.r_precision(rr), lambda p, t, k: tmr.retrieval_r_precision(p, t)),
    "map_tm": (lambda rr, k: M.average_precision(rr), lambda p, t, k: tmr.retrieval_average_precision(p, t)),
    "map_sk": (lambda rr, k: M.average_precision(rr), lambda p, t, k: average_precision_score(t.numpy(), p.numpy())),
    "ndcg_tm": (M.ndcg_at_k, lambda p, t, k: tmr.retrieval_normalized_dcg(p, t, top_k=k)),
    "ndcg_sk": (M.ndcg_at_k, lambda p, t, k: ndcg_score(t.numpy()[None].astype(float), p.numpy()[None], k=k)),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", M.TIE_POLICIES)
@pytest.mark.parametrize("method", ["count", "sort"])
@pytest.mark.parametrize("k", [1, 4, 10])
def test_retrieval_matches_references_with_ties_and_empty_rows(seed, ties, method, k):
    sim, rel = _tied_problem(seed)
    rr = M.relevant_ranks(sim, rel, ties=ties, method=method)
    tb = torch.as_tensor(M.tie_broken_scores(sim, rel, ties))
    rows = [q for q in range(len(rel)) if rel[q].any()]
    empty = [q for q in range(len(rel)) if not rel[q].any()]
    assert len(empty) >= 3
    for name, (ours_fn, ref_fn) in REFERENCES.items():
        ours = ours_fn(rr, k)
        ref = torch.tensor([float(ref_fn(tb[q], rel[q], k)) for q in rows], dtype=torch.float64)
        torch.testing.assert_close(ours[rows], ref, rtol=0, atol=1e-6, msg=f"{name} ({ties}, {method}, k={k})")
        assert ours[empty].isnan().all(), name


def test_ties_change_results_so_the_cross_check_is_not_vacuous():
    sim, rel = _tied_problem(0)
    p, o = (M.retrieval_metrics(sim, rel, ties=t) for t in M.TIE_POLICIES)
    assert p["mAP"] < o["mAP"] and p["MRR"] < o["MRR"]


def test_sklearn_ndcg_with_raw_ties_lies_between_pessimistic_and_optimistic():
    sim, rel = _tied_problem(3, q=40)
    rows = [q for q in range(len(rel)) if rel[q].any()]
    sk = torch.tensor([ndcg_score(rel[q].numpy()[None].astype(float), sim[q].numpy()[None], k=5) for q in rows],
                      dtype=torch.float64)
    lo, hi = (M.ndcg_at_k(M.relevant_ranks(sim, rel, t), 5)[rows] for t in M.TIE_POLICIES)
    assert (lo <= sk + 1e-12).all() and (sk <= hi + 1e-12).all() and (lo < hi).any()


def test_map_at_r_against_explicit_loop():
    sim, rel = _tied_problem(4)
    for ties in M.TIE_POLICIES:
        tb = M.tie_broken_scores(sim, rel, ties)
        ours = M.average_precision_at_r(M.relevant_ranks(sim, rel, ties))
        for q in range(len(rel)):
            R = int(rel[q].sum())
            if R == 0:
                assert ours[q].isnan(); continue
            ranked = rel[q].numpy()[np.argsort(-tb[q])]
            ref = sum(ranked[: i + 1].sum() / (i + 1) for i in range(R) if ranked[i]) / R
            assert ours[q].item() == pytest.approx(ref, abs=1e-12)


def test_one_to_one_diagonal_equals_explicit_identity_relevance():
    gen = torch.Generator().manual_seed(5)
    sim = torch.randint(0, 4, (50, 50), generator=gen).float()
    a = M.retrieval_metrics(sim)
    b = M.retrieval_metrics(sim, torch.eye(50, dtype=torch.bool))
    assert a == pytest.approx(b)


def test_hand_computed_retrieval_case():
    sim = torch.tensor([[.5, .5, .1, .0], [.9, .2, .8, .3], [.1, .2, .3, .4]])
    rel = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]).bool()
    m = M.retrieval_metrics(sim, rel, ks=(1, 2))
    # q0: relevant tied with an irrelevant item -> rank 2 (pessimistic); q1: relevant at ranks 1 and 3; q2 excluded
    assert (m["n_queries"], m["n_queries_without_relevant"]) == (2, 1)
    assert m["R@1"] == .5 and m["R@2"] == 1. and m["MedR"] == 1.5 and m["MRR"] == .75
    assert m["mAP"] == pytest.approx((.5 + (1 + 2 / 3) / 2) / 2)
    assert m["mAP@R"] == pytest.approx((0 + .5) / 2)
    assert m["R-Precision"] == pytest.approx(.25)
    assert m["nDCG@2"] == pytest.approx((1 / math.log2(3) + 1 / (1 + 1 / math.log2(3))) / 2)
    assert M.retrieval_metrics(sim, rel, ks=(1,), ties="optimistic")["R@1"] == 1.


def test_contract_keys_and_prefix():
    m = M.retrieval_metrics(torch.randn(12, 12), prefix="val/")
    for key in ['R@1', 'R@5', 'R@10', 'MedR', 'MeanR', 'MRR', 'nDCG@10', 'R-Precision', 'P@10', 'mAP', 'mAP@R']:
        assert isinstance(m["val/" + key], float)
    b = M.bidirectional_retrieval_metrics(torch.randn(8, 8))
    assert {"i2t/R@1", "t2i/R@1", "i2t/mAP", "t2i/mAP"} <= set(b)


def test_constant_similarity_is_worst_case_not_perfect():
    m = M.retrieval_metrics(torch.ones(20, 20), ks=(1,))
    assert m["R@1"] == 0 and m["MedR"] == 20


def test_ndcg_retrieved_list_normalised_inflates():
    sim, rel = _tied_problem(6, q=60, g=80)
    rr = M.relevant_ranks(sim, rel)
    std, lst = M.ndcg_at_k(rr, 10), M.ndcg_retrieved_list_normalised(rr, 10)
    ok = ~std.isnan()
    assert (lst[ok] >= std[ok] - 1e-12).all() and (lst[ok] > std[ok] + 1e-6).any()


@pytest.mark.parametrize("bad, msg", [
    (lambda: M.retrieval_metrics(torch.rand(3, 4)), "square"),
    (lambda: M.retrieval_metrics(torch.tensor([[1., float("nan")], [0., 1.]])), "row 0, column 1"),
    (lambda: M.retrieval_metrics(torch.rand(2, 2), torch.zeros(2, 2, dtype=torch.bool)), "none of the 2 queries"),
    (lambda: M.retrieval_metrics(torch.rand(2, 2), torch.ones(2, 3, dtype=torch.bool)), "rel shape"),
    (lambda: M.retrieval_metrics(torch.rand(2, 2), ties="random"), "ties must be"),
])
def test_bad_retrieval_input(bad, msg):
    with pytest.raises(ValueError, match=msg):
        bad()


def test_chunked_and_faiss_topk_match_dense():
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(23, 12, generator=gen), dim=1)
    g = torch.nn.functional.normalize(torch.randn(517, 12, generator=gen), dim=1)
    ref = (q @ g.T).topk(15, dim=1)
    s, i = M.chunked_topk(q, g, k=15, chunk_size=10, query_chunk_size=7)
    assert torch.equal(i, ref.indices) and torch.allclose(s, ref.values, atol=1e-6)
    if M.faiss_available():
        fs, fi = M.faiss_topk(q, g, k=15)
        assert torch.equal(fi, ref.indices) and torch.allclose(fs, ref.values, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_auprc_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    s, t = rng.integers(0, 4, 80).astype(float), rng.random(80) < .35
    assert M.auroc(s, t) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert M.auprc(s, t) == pytest.approx(average_precision_score(t, s), abs=1e-12)


def test_classification_metrics_policies_and_undefined_labels():
    rng = np.random.default_rng(0)
    lab = rng.choice([1., 0., -1., np.nan], size=(150, 14), p=[.3, .5, .1, .1])
    lab[:, 5] = 0.  # Fracture: no positives -> undefined, counted
    sc = rng.integers(0, 6, (150, 14)).astype(float)
    m = M.classification_metrics(sc, lab)
    assert "AUROC/Fracture" not in m and m["n_labels_undefined"] == 1 and m["n_labels_evaluated"] == 13
    ok = (lab[:, 0] == 0) | (lab[:, 0] == 1)
    assert m["AUROC/Atelectasis"] == pytest.approx(roc_auc_score(lab[ok, 0], sc[ok, 0]))
    z = M.classification_metrics(sc, lab, uncertain="negative")
    okz = ~np.isnan(lab[:, 1])
    assert z["AUPRC/Cardiomegaly"] == pytest.approx(average_precision_score(lab[okz, 1] == 1, sc[okz, 1]))
    with pytest.raises(ValueError, match="uncertain must be"):
        M.classification_metrics(sc, lab, uncertain="drop")


def test_zero_shot_and_linear_probe_are_separate_and_work():
    rng = np.random.default_rng(1)
    d = 16
    pos, neg = torch.tensor(rng.normal(size=(3, d)), dtype=torch.float32), torch.tensor(rng.normal(size=(3, d)), dtype=torch.float32)
    y = rng.random((200, 3)) < .5
    img = torch.tensor(np.where(y[..., None], pos.numpy()[None], neg.numpy()[None]).sum(1) + rng.normal(size=(200, d)),
                       dtype=torch.float32)
    probs = M.zero_shot_pos_neg_probs(img, pos, neg, logit_scale=10.)
    assert probs.shape == (200, 3) and ((probs > 0) & (probs < 1)).all()
    assert M.classification_metrics(probs, y.astype(float), ["a", "b", "c"])["AUROC_macro"] > .9
    lp, skipped = M.linear_probe_scores(img[:150], y[:150].astype(float), img[150:])
    assert skipped == [] and M.classification_metrics(lp, y[150:].astype(float), ["a", "b", "c"])["AUROC_macro"] > .9


def test_segmentation_hand_case_and_empty_convention():
    t = torch.zeros(3, 4, 4); t[0, :2, :2] = 1; t[1, 0, 0] = 1
    p = torch.zeros(3, 4, 4); p[0, :2, :3] = .9; p[1, 3, 3] = .7
    assert M.dice_score(p, t).tolist() == pytest.approx([.8, 0., 1.])
    assert M.iou_score(p, t).tolist() == pytest.approx([4 / 6, 0., 1.])
    assert M.iou_score(p, t, empty=float("nan"))[2].isnan()
    m = M.segmentation_metrics(p, t)
    assert m["n_both_empty"] == 1 and m["PixelAcc"] == pytest.approx((14 / 16 * 2 + 1) / 3)


def test_grounding_hand_cases():
    maps = torch.zeros(2, 3, 3); maps[0, 1:, 1:] = 1; maps[0, 0, 0] = .1; maps[1] = 1.
    reg = torch.zeros(2, 3, 3, dtype=torch.bool); reg[:, 1:, 1:] = True
    cnr = M.contrast_to_noise_ratio(maps, reg)
    assert cnr[0].item() == pytest.approx(.98 / .04) and cnr[1].isnan()
    assert M.pointing_game(maps, reg).tolist() == [1., 0.]
    masks = M.boxes_to_masks(torch.tensor([[1., 1., 3., 3.], [1., 1., 3., 3.]]), 3, 3)
    assert torch.equal(masks, reg)


def test_bootstrap_width_does_not_shrink_with_resamples_and_groups_widen():
    x = (np.random.default_rng(1).random(400) < .3).astype(float)
    widths = [(lambda c: c["high"] - c["low"])(M.bootstrap_ci(np.mean, x, n_resamples=b, seed=0)) for b in (200, 2000)]
    expected = 2 * 1.96 * math.sqrt(.3 * .7 / 400)
    assert all(abs(w - expected) / expected < .2 for w in widths), widths
    xp, pid = np.repeat(x[:80], 5), np.repeat(np.arange(80), 5)
    wi = (lambda c: c["high"] - c["low"])(M.bootstrap_ci(np.mean, xp, n_resamples=400))
    wg = (lambda c: c["high"] - c["low"])(M.bootstrap_ci(np.mean, xp, groups=pid, n_resamples=400))
    assert 1.8 < wg / wi < 2.8
    assert M.bootstrap_ci(np.mean, x, n_resamples=30, seed=7) == M.bootstrap_ci(np.mean, x, n_resamples=30, seed=7)


def test_retrieval_metrics_ci_contains_point_estimate():
    sim, rel = _tied_problem(8, q=60, g=60, n_empty=5)
    m = M.retrieval_metrics_ci(sim, rel, groups=np.arange(60) // 3, n_resamples=100)
    ref = M.retrieval_metrics(sim, rel)
    assert m["n_queries_without_relevant"] == (~rel.any(1)).sum().item() >= 5
    for k in ("R@1", "MRR", "mAP", "nDCG@10", "MedR"):
        assert m[k] == pytest.approx(ref[k]) and m[k + "_ci_low"] <= m[k] <= m[k + "_ci_high"]


def test_chunked_relevant_ranks_match_dense_ranks():
    gen = torch.Generator().manual_seed(3)
    q, g = torch.randn(25, 6, generator=gen), torch.randn(150, 6, generator=gen)
    lists = [torch.randperm(150, generator=gen)[: int(n)] for n in torch.randint(0, 5, (25,), generator=gen)]
    lists[0] = []
    rel = torch.zeros(25, 150, dtype=torch.bool)
    for i, l in enumerate(lists):
        rel[i, l] = True
    for ties in M.TIE_POLICIES:
        dense = M.relevant_ranks(q @ g.T, rel, ties)
        chunked = M.chunked_relevant_ranks(q, g, lists, ties=ties, chunk_size=11, query_chunk_size=4)
        assert torch.equal(chunked.n_rel, dense.n_rel) and torch.equal(chunked.pos, dense.pos)
    targets = torch.randint(0, 150, (25,), generator=gen)
    one = M.chunked_relevant_ranks(q, g, targets, chunk_size=13)
    rel1 = torch.zeros(25, 150, dtype=torch.bool); rel1[torch.arange(25), targets] = True
    assert torch.equal(one.pos, M.relevant_ranks(q @ g.T, rel1).pos)
    with pytest.raises(ValueError, match="out of range"):
        M.chunked_relevant_ranks(q, g, targets + 1000)


def _neg_sq_dist(a, b):
    "A scorer that is not a dot product: -||q - g||^2 on the 'embeds' of dict row sets."
    return -((a["embeds"][:, None, :] - b["embeds"][None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("ties", M.TIE_POLICIES)
def test_chunked_ranks_and_topk_with_a_non_dot_scorer_equal_dense_results(ties):
    gen = torch.Generator().manual_seed(11)
    q = {"embeds": torch.randn(23, 5, generator=gen), "logvar": torch.zeros(23, 5)}
    g = {"embeds": torch.randn(301, 5, generator=gen), "logvar": torch.zeros(301, 5)}
    g["embeds"][150:] = g["embeds"][:151].clone()                        # duplicated gallery rows: exact ties across chunks
    dense = _neg_sq_dist(q, g)
    lists = [torch.randperm(301, generator=gen)[: int(n)] for n in torch.randint(0, 30, (23,), generator=gen)]
    rel = torch.zeros(23, 301, dtype=torch.bool)
    for i, l in enumerate(lists):
        rel[i, l] = True
    blocks = []
    def scorer(a, b):
        blocks.append((len(a["embeds"]), len(b["embeds"])))
        return _neg_sq_dist(a, b)
    chunked = M.chunked_relevant_ranks(q, g, lists, ties, chunk_size=40, query_chunk_size=6, score_fn=scorer)
    ref = M.relevant_ranks(dense, rel, ties)
    assert torch.equal(chunked.n_rel, ref.n_rel) and torch.equal(chunked.pos, ref.pos)
    assert max(b[0] for b in blocks) <= 6 and max(b[1] for b in blocks) <= 40   # no [Q, G] block was ever scored
    s, i = M.chunked_topk(q, g, k=7, chunk_size=40, query_chunk_size=6, score_fn=scorer)
    assert torch.equal(s, dense.topk(7, dim=1).values) and torch.equal(dense.gather(1, i), s)


def test_chunked_ranks_name_the_query_row_of_a_nan_score():
    gen = torch.Generator().manual_seed(12)
    q, g = torch.randn(9, 4, generator=gen), torch.randn(50, 4, generator=gen)
    def scorer(a, b):  # NaN for the pair (query 7, gallery 33) only
        s = a @ b.T
        return s.masked_fill((a[:, :1] == q[7, 0]) & (b[:, :1] == g[33, 0]).T, float("nan"))
    with pytest.raises(ValueError, match="query row 7 against gallery row 33"):
        M.chunked_relevant_ranks(q, g, torch.arange(9), chunk_size=16, query_chunk_size=4, score_fn=scorer)
    with pytest.raises(ValueError, match="query row 7 against gallery row 33"):
        M.chunked_topk(q, g, k=3, chunk_size=16, query_chunk_size=4, score_fn=scorer)


def test_chunked_ranks_with_a_matching_pair_fn_and_the_default_scorer_agree():
    gen = torch.Generator().manual_seed(13)
    q, g = torch.randn(20, 6, generator=gen), torch.randn(90, 6, generator=gen)
    t = torch.randint(0, 90, (20,), generator=gen)
    a = M.chunked_relevant_ranks(q, g, t, chunk_size=32)
    b = M.chunked_relevant_ranks(q, g, t, chunk_size=32, score_fn=M.dot_product_scores, pair_fn=lambda x, y: (x * y).sum(1))
    assert torch.equal(a.pos, b.pos) and torch.equal(a.pos, M.relevant_ranks(q @ g.T, torch.nn.functional.one_hot(t, 90).bool()).pos)


def test_label_overlap_relevance_uses_positive_findings_only():
    nan = float("nan")
    labels = np.array([[1., 0., nan], [1., nan, 0.], [0., 0., nan], [nan, nan, nan], [-1., 1., 1.], [nan, 1., -1.]])
    rel = M.label_overlap_relevance(labels, labels)
    expected = np.array([[l1 == 1 and l2 == 1 for l1, l2 in zip(a, b)] for a in labels for b in labels]).reshape(6, 6, 3).any(-1)
    assert rel.numpy().tolist() == expected.tolist()
    assert not rel[2, 2] and not rel[3, 3] and not rel[2, 3]       # sharing negatives or blanks is not relevance
    assert rel[4, 5] and not rel[0, 4]                             # -1 (uncertain) is not a positive finding
    m = M.retrieval_metrics(torch.rand(6, 6, generator=torch.Generator().manual_seed(0)), rel)
    assert m["n_queries_without_relevant"] == 2                    # the all-negative and the all-blank study


def test_key_sort_matches_argsort_and_counting_on_a_large_tied_problem():
    "The integer-key sort (CPU float32 path) against the argsort path and the counting path, 300 x 500, heavy ties."
    gen = torch.Generator().manual_seed(14)
    sim = torch.randint(-20, 20, (300, 500), generator=gen).float() / 4
    rel = torch.rand(300, 500, generator=gen) < torch.rand(300, 1, generator=gen) * .5
    for ties in M.TIE_POLICIES:
        key = M.relevant_ranks(sim, rel, ties, method="sort").pos
        assert torch.equal(key, M.relevant_ranks(sim, rel, ties, method="count").pos)
        # zeros shifted to 1e-300 (not a float32 value) send float64 scores down the argsort path; the order is unchanged
        assert torch.equal(key, M.relevant_ranks(sim.double() + 1e-300, rel, ties, method="sort").pos)
