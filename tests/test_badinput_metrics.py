"""Bad input to every public function of cxrlab.metrics: a named error (type + message), or a documented result.

One row per (function, input). `test_every_public_function_has_bad_input_cases` fails when a public function is
added without rows here. The rows marked `# issue 12` are the inputs reported there (each returned a number or a
traceback from torch/numpy internals before).
"""
import math

import numpy as np
import pytest
import torch

from cxrlab import metrics as M

NAN, INF = float("nan"), float("inf")
gen = torch.Generator().manual_seed(0)
SIM = torch.rand(4, 4, generator=gen)
REL = torch.eye(4, dtype=torch.bool)
RR = M.relevant_ranks(SIM, REL)
Q, G = torch.randn(5, 8, generator=gen), torch.randn(40, 8, generator=gen)
TARGETS = torch.arange(5)
PRED, MASK = torch.rand(3, 4, 4, generator=gen), torch.rand(3, 4, 4, generator=gen) > .5
LABELS = np.array([[1., 0., np.nan], [-1., 1., 0.], [0., 0., 1.], [1., np.nan, 0.]])
MAPS, REGIONS = torch.rand(2, 3, 3, generator=gen), torch.zeros(2, 3, 3, dtype=torch.bool)
REGIONS[:, 1:, 1:] = True


def nan_at(x, *index):
    "A copy of x with NaN at index."
    x = torch.as_tensor(x, dtype=torch.float64 if not torch.is_tensor(x) or not x.is_floating_point() else x.dtype).clone()
    x[index] = NAN
    return x


def raises(exc, match):
    return ("raises", exc, match)


def returns(check, what):
    return ("returns", check, what)


# (function name, input, call, expectation)
CASES = [
    # ---------------------------------------------------------------- similarity / relevance validation
    ("as_sim_rel", "1-D sim", lambda: M.as_sim_rel(torch.rand(4)), raises(ValueError, "2-D")),
    ("as_sim_rel", "NaN similarity", lambda: M.as_sim_rel(nan_at(SIM, 2, 1)), raises(ValueError, "row 2, column 1")),
    ("as_sim_rel", "+inf similarity", lambda: M.as_sim_rel(SIM.index_fill(1, torch.tensor([3]), INF)), raises(ValueError, "non-finite")),
    ("as_sim_rel", "empty gallery", lambda: M.as_sim_rel(torch.rand(3, 0), torch.ones(3, 0)), raises(ValueError, "gallery is empty")),
    ("as_sim_rel", "no queries", lambda: M.as_sim_rel(torch.rand(0, 3), torch.ones(0, 3)), raises(ValueError, "no queries")),
    ("as_sim_rel", "bool sim", lambda: M.as_sim_rel(REL), raises(ValueError, "real-valued")),
    ("as_sim_rel", "non-square with rel=None", lambda: M.as_sim_rel(torch.rand(3, 4)), raises(ValueError, "square")),
    ("as_sim_rel", "rel of another shape", lambda: M.as_sim_rel(SIM, torch.ones(4, 5)), raises(ValueError, "rel shape")),
    ("as_sim_rel", "rel with value 2", lambda: M.as_sim_rel(SIM, torch.full((4, 4), 2)), raises(ValueError, "boolean")),
    ("as_sim_rel", "rel with NaN", lambda: M.as_sim_rel(SIM, nan_at(REL.double(), 0, 0)), raises(ValueError, "boolean")),
    ("relevant_ranks", "NaN similarity", lambda: M.relevant_ranks(nan_at(SIM, 0, 0), REL), raises(ValueError, "row 0, column 0")),
    ("relevant_ranks", "empty gallery", lambda: M.relevant_ranks(torch.rand(3, 0), torch.ones(3, 0)), raises(ValueError, "gallery is empty")),  # issue 12
    ("relevant_ranks", "unknown tie policy", lambda: M.relevant_ranks(SIM, ties="random"), raises(ValueError, "ties must be")),
    ("relevant_ranks", "unknown method", lambda: M.relevant_ranks(SIM, method="fast"), raises(ValueError, "method must be")),
    ("relevant_ranks", "rows without relevant items", lambda: M.relevant_ranks(SIM, torch.zeros(4, 4, dtype=torch.bool)),
     returns(lambda rr: rr.n_rel.eq(0).all() and rr.pos.isinf().all(), "n_rel 0, +inf positions")),
    # ---------------------------------------------------------------- per-query metrics of RelevantRanks
    *[(f.__name__, "a similarity matrix instead of RelevantRanks", (lambda f=f, takes_k=takes_k: f(SIM, 1) if takes_k else f(SIM)),
       raises(TypeError, "RelevantRanks"))
      for f, takes_k in [(M.first_relevant_rank, False), (M.reciprocal_rank, False), (M.r_precision, False),
                         (M.average_precision, False), (M.average_precision_at_r, False), (M.recall_at_k, True),
                         (M.recall_fraction_at_k, True), (M.precision_at_k, True), (M.ndcg_at_k, True),
                         (M.ndcg_retrieved_list_normalised, True)]],
    *[(f.__name__, f"k={k!r}", (lambda f=f, k=k: f(RR, k)), raises(ValueError, "k must be a positive integer"))
      for f in (M.recall_at_k, M.recall_fraction_at_k, M.precision_at_k, M.ndcg_at_k, M.ndcg_retrieved_list_normalised)
      for k in (0, -1, 1.5, True)],
    ("first_relevant_rank", "query without relevant item", lambda: M.first_relevant_rank(M.relevant_ranks(SIM, REL & (torch.arange(4) > 0)[:, None])),
     returns(lambda v: v[0].isnan() and not v[1:].isnan().any(), "NaN for that query only")),
    ("nanmean_counted", "empty", lambda: M.nanmean_counted(torch.tensor([])), raises(ValueError, "no values")),
    ("nanmean_counted", "all NaN", lambda: M.nanmean_counted(torch.tensor([NAN, NAN])), raises(ValueError, "all 2 values are NaN")),
    ("nanmean_counted", "some NaN", lambda: M.nanmean_counted(torch.tensor([1., NAN, 3.])), returns(lambda r: r == (2.0, 1), "(mean of the rest, count dropped)")),
    # ---------------------------------------------------------------- aggregate retrieval metrics
    *[(fn, f"ks={ks!r}", (lambda fn=fn, ks=ks: getattr(M, fn)(SIM, REL, ks=ks)), raises(ValueError, "ks"))  # issue 12
      for fn in ("retrieval_metrics", "retrieval_per_query", "bidirectional_retrieval_metrics", "retrieval_metrics_ci")
      for ks in ((0,), (), (-1,), (1, 1), 5)],
    ("check_ks", "a string", lambda: M.check_ks("1,5,10"), raises(ValueError, "sequence of positive integers")),
    ("check_ks", "numpy array", lambda: M.check_ks(np.array([1, 5])), returns(lambda r: r == (1, 5), "(1, 5)")),
    ("retrieval_metrics", "empty gallery", lambda: M.retrieval_metrics(torch.rand(3, 0), torch.ones(3, 0, dtype=torch.bool)), raises(ValueError, "gallery is empty")),  # issue 12
    ("retrieval_metrics", "NaN similarity", lambda: M.retrieval_metrics(nan_at(SIM, 1, 2)), raises(ValueError, "row 1, column 2")),
    ("retrieval_metrics", "no query has a relevant item", lambda: M.retrieval_metrics(SIM, torch.zeros(4, 4)), raises(ValueError, "none of the 4 queries")),
    ("retrieval_metrics", "bad tie policy", lambda: M.retrieval_metrics(SIM, ties="average"), raises(ValueError, "ties must be")),
    ("bidirectional_retrieval_metrics", "equal prefixes", lambda: M.bidirectional_retrieval_metrics(SIM, prefixes=("a/", "a/")), raises(ValueError, "two different")),
    ("bidirectional_retrieval_metrics", "rel of another shape", lambda: M.bidirectional_retrieval_metrics(SIM, torch.ones(4, 3)), raises(ValueError, "rel shape")),
    ("per_query_from_ranks", "ks=(0,)", lambda: M.per_query_from_ranks(RR, ks=(0,)), raises(ValueError, "ks")),
    ("per_query_from_ranks", "not ranks", lambda: M.per_query_from_ranks(SIM), raises(TypeError, "expected the RelevantRanks")),
    ("summarise_per_query", "nothing to summarise", lambda: M.summarise_per_query({}), raises(ValueError, "no per-query values")),
    ("summarise_per_query", "keep of another length", lambda: M.summarise_per_query(M.per_query_from_ranks(RR), keep=torch.ones(3, dtype=torch.bool)), raises(ValueError, "keep has shape")),
    ("summarise_per_query", "keep selects nothing", lambda: M.summarise_per_query(M.per_query_from_ranks(RR), keep=torch.zeros(4, dtype=torch.bool)), raises(ValueError, "none of the 0 kept queries")),
    ("summarise_per_query", "groups of another length", lambda: M.summarise_per_query(M.per_query_from_ranks(RR), groups=[0, 1]), raises(ValueError, "4 query rows")),
    ("retrieval_metrics_ci", "groups shorter than the queries", lambda: M.retrieval_metrics_ci(SIM, REL, groups=[0, 1, 1], n_resamples=5), raises(ValueError, "4 query rows")),  # issue 12
    ("retrieval_metrics_ci", "2-D groups", lambda: M.retrieval_metrics_ci(SIM, REL, groups=np.zeros((4, 1)), n_resamples=5), raises(ValueError, "groups has shape")),
    ("retrieval_metrics_ci", "alpha = 0", lambda: M.retrieval_metrics_ci(SIM, REL, alpha=0, n_resamples=5), raises(ValueError, "alpha")),
    ("retrieval_metrics_ci", "zero resamples", lambda: M.retrieval_metrics_ci(SIM, REL, n_resamples=0), raises(ValueError, "n_resamples")),
    ("label_overlap_relevance", "label value 2", lambda: M.label_overlap_relevance([[2., 0.]], [[1., 0.]]), raises(ValueError, "labels_q row 0, column 0")),
    ("label_overlap_relevance", "label columns differ", lambda: M.label_overlap_relevance(LABELS, LABELS[:, :2]), raises(ValueError, "label columns")),
    ("label_overlap_relevance", "1-D labels", lambda: M.label_overlap_relevance(LABELS[0], LABELS), raises(ValueError, r"\[N, L\]")),
    ("label_overlap_relevance", "min_shared=0", lambda: M.label_overlap_relevance(LABELS, LABELS, 0), raises(ValueError, "min_shared")),
    ("label_overlap_relevance", "min_shared above L", lambda: M.label_overlap_relevance(LABELS, LABELS, 4), raises(ValueError, "exceeds the 3 label columns")),
    ("label_overlap_relevance", "string labels", lambda: M.label_overlap_relevance([["yes", "no"]], [["no", "no"]]), raises(ValueError, "must hold numbers")),
    ("label_overlap_relevance", "blank and negative never match", lambda: M.label_overlap_relevance([[0., NAN, -1.]], [[0., NAN, -1.]]),
     returns(lambda r: not r.any(), "nothing relevant")),
    ("tie_broken_scores", "rel of another shape", lambda: M.tie_broken_scores(SIM, REL[:3]), raises(ValueError, "same")),
    ("tie_broken_scores", "bad tie policy", lambda: M.tie_broken_scores(SIM, REL, "x"), raises(ValueError, "ties must be")),
    # ---------------------------------------------------------------- large-gallery search
    ("as_row_set", "dict not row-aligned", lambda: M.as_row_set({"embeds": Q, "logvar": Q[:3]}, "queries"), raises(ValueError, "not row-aligned")),
    ("as_row_set", "NaN row in a dict value", lambda: M.as_row_set({"embeds": nan_at(Q, 3, 0)}, "gallery"), raises(ValueError, r"gallery\['embeds'\] row 3")),
    ("as_row_set", "scalar", lambda: M.as_row_set(torch.tensor(1.), "queries"), raises(ValueError, "scalar")),
    ("as_row_set", "empty dict", lambda: M.as_row_set({}, "queries"), raises(ValueError, "empty dict")),
    ("dot_product_scores", "dict without 'embeds'", lambda: M.dot_product_scores({"tokens": Q}, G), raises(ValueError, "without 'embeds'")),
    ("dot_product_scores", "3-D embeddings", lambda: M.dot_product_scores(Q[None], G), raises(ValueError, r"\[N, D\]")),
    ("dot_product_scores", "float64 queries, float32 gallery", lambda: M.dot_product_scores(Q.double(), G),
     returns(lambda s: s.dtype == torch.float64 and s.shape == (5, 40), "promoted [5, 40] scores")),
    ("chunked_topk", "NaN gallery row", lambda: M.chunked_topk(Q, nan_at(G, 17, 2), k=3), raises(ValueError, "gallery row 17")),  # issue 12
    ("chunked_topk", "NaN query row", lambda: M.chunked_topk(nan_at(Q, 4, 0), G, k=3), raises(ValueError, "queries row 4")),
    ("chunked_topk", "scorer returns NaN", lambda: M.chunked_topk(Q, G, 3, score_fn=lambda a, b: (a @ b.T).index_fill(1, torch.tensor([0]), NAN)),
     raises(ValueError, "query row 0 against gallery row 0")),
    ("chunked_topk", "scorer returns the wrong shape", lambda: M.chunked_topk(Q, G, 3, score_fn=lambda a, b: a @ a.T), raises(ValueError, "expected a")),
    ("chunked_topk", "widths differ", lambda: M.chunked_topk(Q, G[:, :6]), raises(ValueError, "width D=8 but gallery rows D=6")),
    ("chunked_topk", "empty gallery", lambda: M.chunked_topk(Q, G[:0]), raises(ValueError, "gallery is empty")),
    ("chunked_topk", "no queries", lambda: M.chunked_topk(Q[:0], G), raises(ValueError, "no queries")),
    ("chunked_topk", "k = 0", lambda: M.chunked_topk(Q, G, k=0), raises(ValueError, "k must be")),
    ("chunked_topk", "chunk_size = 0", lambda: M.chunked_topk(Q, G, chunk_size=0), raises(ValueError, "chunk_size")),
    ("chunked_topk", "k larger than the gallery", lambda: M.chunked_topk(Q, G[:4], k=10), returns(lambda r: r[1].shape == (5, 4), "k = G")),
    ("chunked_relevant_ranks", "NaN query row", lambda: M.chunked_relevant_ranks(nan_at(Q, 2, 5), G, TARGETS), raises(ValueError, "queries row 2")),  # issue 12
    ("chunked_relevant_ranks", "NaN gallery row", lambda: M.chunked_relevant_ranks(Q, nan_at(G, 11, 0), TARGETS), raises(ValueError, "gallery row 11")),  # issue 12
    ("chunked_relevant_ranks", "scorer returns NaN for one pair", lambda: M.chunked_relevant_ranks(
        Q, G, TARGETS, score_fn=lambda a, b: (a @ b.T).masked_fill((a[:, :1] == Q[3, 0]) & (b[:, :1] == G[30, 0]).T, NAN)),
     raises(ValueError, "query row 3 against gallery row 30")),
    ("chunked_relevant_ranks", "pair_fn returns NaN", lambda: M.chunked_relevant_ranks(Q, G, TARGETS, pair_fn=lambda a, b: torch.full((len(a),), NAN)),
     raises(ValueError, "pair score of query row 0")),
    ("chunked_relevant_ranks", "pair_fn disagrees with score_fn", lambda: M.chunked_relevant_ranks(Q, G, TARGETS, pair_fn=lambda a, b: -(a * b).sum(1)),
     raises(ValueError, "pair_fn disagrees")),
    ("chunked_relevant_ranks", "pair_fn wrong length", lambda: M.chunked_relevant_ranks(Q, G, TARGETS, pair_fn=lambda a, b: torch.zeros(2)), raises(ValueError, "expected a")),
    ("chunked_relevant_ranks", "widths differ", lambda: M.chunked_relevant_ranks(Q, G[:, :5], TARGETS), raises(ValueError, "width D=8 but gallery rows D=5")),  # issue 12
    ("chunked_relevant_ranks", "empty gallery", lambda: M.chunked_relevant_ranks(Q, G[:0], TARGETS), raises(ValueError, "gallery is empty")),  # issue 12
    ("chunked_relevant_ranks", "index out of range", lambda: M.chunked_relevant_ranks(Q, G, TARGETS + 38), raises(ValueError, "relevant index 40 of query row 2")),
    ("chunked_relevant_ranks", "negative index", lambda: M.chunked_relevant_ranks(Q, G, [[0], [-1], [2], [3], [4]]), raises(ValueError, "relevant index -1 of query row 1")),
    ("chunked_relevant_ranks", "duplicate index", lambda: M.chunked_relevant_ranks(Q, G, [[0], [1, 1], [2], [3], [4]]), raises(ValueError, "query row 1 lists gallery index 1")),
    ("chunked_relevant_ranks", "fractional index", lambda: M.chunked_relevant_ranks(Q, G, TARGETS + .5), raises(ValueError, "non-integer")),
    ("chunked_relevant_ranks", "a boolean mask", lambda: M.chunked_relevant_ranks(Q, G, torch.ones(5, dtype=torch.bool)), raises(ValueError, "boolean")),
    ("chunked_relevant_ranks", "fewer targets than queries", lambda: M.chunked_relevant_ranks(Q, G, TARGETS[:3]), raises(ValueError, "3 entries for 5 queries")),
    ("chunked_relevant_ranks", "dict without 'embeds', no scorer", lambda: M.chunked_relevant_ranks({"tokens": Q}, {"tokens": G}, TARGETS), raises(ValueError, "without 'embeds'")),
    ("chunked_relevant_ranks", "bad tie policy", lambda: M.chunked_relevant_ranks(Q, G, TARGETS, ties="x"), raises(ValueError, "ties must be")),
    ("faiss_flat_index", "NaN gallery row", lambda: M.faiss_flat_index(nan_at(G, 6, 1)), raises(ValueError, "gallery row 6")),
    ("faiss_flat_index", "chunks of different widths", lambda: M.faiss_flat_index([G[:20], G[20:, :4]]), raises(ValueError, "starting at row 20 has width 4")),
    ("faiss_flat_index", "no chunks", lambda: M.faiss_flat_index([]), raises(ValueError, "gallery is empty")),
    ("faiss_topk", "NaN query row", lambda: M.faiss_topk(nan_at(Q, 1, 1), G), raises(ValueError, "queries row 1")),
    ("faiss_topk", "widths differ", lambda: M.faiss_topk(Q[:, :4], G), raises(ValueError, "width D=4")),
    ("faiss_topk", "dict row set", lambda: M.faiss_topk({"embeds": Q}, G), raises(ValueError, "chunked_topk")),
    ("faiss_topk", "k = 0", lambda: M.faiss_topk(Q, G, k=0), raises(ValueError, "k must be")),
    # ---------------------------------------------------------------- classification
    ("binary_targets", "label value 2", lambda: M.binary_targets([[1., 2.]]), raises(ValueError, r"found \[2.0\]")),
    ("binary_targets", "string labels", lambda: M.binary_targets([["pos"]]), raises(ValueError, "numbers 1, 0, -1 or NaN")),
    ("binary_targets", "bad uncertain policy", lambda: M.binary_targets([1.], "drop"), raises(ValueError, "uncertain must be")),
    *[(f.__name__, desc, (lambda f=f, s=s, t=t: f(s, t)), raises(ValueError, msg))  # issue 12 (first three)
      for f in (M.auroc, M.auprc)
      for desc, s, t, msg in [("NaN score", [.1, NAN, .3, .4], [0, 1, 0, 1], "finite"),
                              ("3 scores for 4 targets", [.1, .2, .3], [0, 1, 0, 1], "3 scores for 4 targets"),
                              ("targets [0, 2, 2, 0]", [.1, .2, .3, .4], [0, 2, 2, 0], "0/1 or bool"),
                              ("+inf score", [.1, INF, .3, .4], [0, 1, 0, 1], "finite"),
                              ("NaN target", [.1, .2, .3, .4], [0, NAN, 1, 0], "0/1 or bool"),
                              ("2-D scores", [[.1, .2]], [[0, 1]], "1-D"),
                              ("bool scores", [True, False], [0, 1], "real numbers")]],
    *[(f.__name__, "one class only", (lambda f=f: f([.1, .2, .3], [1, 1, 1])), returns(math.isnan, "NaN (undefined)"))
      for f in (M.auroc, M.auprc)],
    *[(f.__name__, "no scores", (lambda f=f: f([], [])), returns(math.isnan, "NaN (undefined)")) for f in (M.auroc, M.auprc)],
    ("classification_metrics", "inf score on a scored image", lambda: M.classification_metrics(np.where(LABELS == 1, INF, 0.), LABELS, ["a", "b", "c"]),
     raises(ValueError, "label 'a': 2 non-finite")),
    ("classification_metrics", "NaN score on a scored image", lambda: M.classification_metrics(np.where((np.arange(4)[:, None] == 0) & (np.arange(3) == 1), NAN, np.arange(12.).reshape(4, 3)), LABELS, ["a", "b", "c"]),
     raises(ValueError, "label 'b': 1 non-finite .* first at row 0")),
    ("classification_metrics", "scores of another shape", lambda: M.classification_metrics(np.zeros((4, 2)), LABELS), raises(ValueError, "must both be")),
    ("classification_metrics", "label names do not match", lambda: M.classification_metrics(np.zeros((4, 3)), LABELS, ["a", "b"]), raises(ValueError, "2 label names for 3")),
    ("classification_metrics", "repeated label name", lambda: M.classification_metrics(np.zeros((4, 3)), LABELS, ["a", "a", "b"]), raises(ValueError, "repeat")),
    ("classification_metrics", "no label has both classes", lambda: M.classification_metrics(np.zeros((2, 1)), [[1.], [1.]]), raises(ValueError, "no label has both")),
    ("classification_metrics", "label value 3", lambda: M.classification_metrics(np.zeros((4, 3)), np.where(LABELS == 1, 3, LABELS)), raises(ValueError, r"found \[3.0\]")),
    ("prompt_ensemble", "empty list", lambda: M.prompt_ensemble([]), raises(ValueError, "no classes")),
    ("prompt_ensemble", "NaN prompt", lambda: M.prompt_ensemble(nan_at(torch.randn(3, 4), 1, 0)), raises(ValueError, "vector 1 is not finite")),
    ("prompt_ensemble", "opposite prompts average to zero", lambda: M.prompt_ensemble(torch.tensor([[1., 0.], [-1., 0.]])), raises(ValueError, "all zeros")),
    ("prompt_ensemble", "classes of different widths", lambda: M.prompt_ensemble([torch.randn(2, 4), torch.randn(2, 5)]), raises(ValueError, "widths")),
    ("prompt_ensemble", "1-D input", lambda: M.prompt_ensemble(torch.randn(4)), raises(ValueError, r"\[P, D\]")),
    ("zero_shot_similarity_scores", "widths differ", lambda: M.zero_shot_similarity_scores(Q, G[:3, :4]), raises(ValueError, "width 8 but class_embeds 4")),
    ("zero_shot_similarity_scores", "zero image embedding", lambda: M.zero_shot_similarity_scores(Q.index_fill(0, torch.tensor([2]), 0.), G[:3]), raises(ValueError, "image_embeds vector 2 is all zeros")),
    ("zero_shot_similarity_scores", "NaN class embedding", lambda: M.zero_shot_similarity_scores(Q, nan_at(G[:3], 0, 0)), raises(ValueError, "class_embeds vector 0")),
    ("zero_shot_similarity_scores", "1-D image embedding", lambda: M.zero_shot_similarity_scores(Q[0], G[:3]), raises(ValueError, "2 dimensions")),
    ("zero_shot_pos_neg_probs", "pos and neg differ in shape", lambda: M.zero_shot_pos_neg_probs(Q, G[:3], G[:2]), raises(ValueError, "pair up")),
    ("zero_shot_pos_neg_probs", "negative logit scale", lambda: M.zero_shot_pos_neg_probs(Q, G[:3], G[3:6], -1.), raises(ValueError, "logit_scale")),
    ("zero_shot_pos_neg_probs", "NaN logit scale", lambda: M.zero_shot_pos_neg_probs(Q, G[:3], G[3:6], NAN), raises(ValueError, "logit_scale")),
    ("linear_probe_scores", "NaN train embedding", lambda: M.linear_probe_scores(nan_at(G[:4], 2, 0), LABELS, G[4:6]), raises(ValueError, "train_embeds row 2")),
    ("linear_probe_scores", "NaN test embedding", lambda: M.linear_probe_scores(G[:4], LABELS, nan_at(G[4:6], 1, 0)), raises(ValueError, "test_embeds row 1")),
    ("linear_probe_scores", "widths differ", lambda: M.linear_probe_scores(G[:4], LABELS, G[4:6, :3]), raises(ValueError, "width 8 but test_embeds 3")),
    ("linear_probe_scores", "labels for fewer rows", lambda: M.linear_probe_scores(G[:5], LABELS, G[4:6]), raises(ValueError, "5 train embeddings but 4 label rows")),
    ("linear_probe_scores", "C = 0", lambda: M.linear_probe_scores(G[:4], LABELS, G[4:6], C=0), raises(ValueError, "C must be")),
    ("linear_probe_scores", "1-D labels", lambda: M.linear_probe_scores(G[:4], LABELS[:, 0], G[4:6]), raises(ValueError, r"\[N, L\]")),
    # ---------------------------------------------------------------- segmentation
    *[(f.__name__, desc, (lambda f=f, p=p, t=t: f(p, t)), raises(ValueError, msg))
      for f in (M.dice_score, M.iou_score, M.pixel_accuracy, M.segmentation_metrics)
      for desc, p, t, msg in [("NaN in the prediction", nan_at(PRED, 1, 2, 2), MASK, "pred image 1 contains NaN"),  # issue 12 (dice)
                              ("logits instead of probabilities", PRED * 8 - 4, MASK, r"outside \[0, 1\]"),
                              ("0/255 target", PRED, MASK.float() * 255, "0/1 or bool"),
                              ("soft target", PRED, MASK.float() * .7, "0/1 or bool"),
                              ("NaN in the target", PRED, nan_at(MASK.float(), 0, 0, 0), "target image 0 contains NaN"),
                              ("shapes differ", PRED, MASK[:, :2], "differ"),
                              ("unbatched mask", PRED[0, 0], MASK[0, 0], "batched"),
                              ("images without pixels", PRED[:, :0], MASK[:, :0], "no pixels")]],
    *[(f.__name__, "threshold 1.5", (lambda f=f: f(PRED, MASK, 1.5)), raises(ValueError, "threshold must be"))
      for f in (M.dice_score, M.iou_score, M.pixel_accuracy, M.segmentation_metrics)],
    *[(f.__name__, "a batch of 0", (lambda f=f: f(PRED[:0], MASK[:0])), returns(lambda v: v.shape == (0,), "an empty [0] tensor"))  # issue 12 (iou)
      for f in (M.dice_score, M.iou_score, M.pixel_accuracy)],
    ("segmentation_metrics", "a batch of 0", lambda: M.segmentation_metrics(PRED[:0], MASK[:0]), raises(ValueError, "batch of 0")),  # issue 12
    ("dice_score", "both masks empty", lambda: M.dice_score(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)), returns(lambda v: v.tolist() == [1.0], "`empty` (1.0)")),
    ("boxes_to_masks", "x1 < x0", lambda: M.boxes_to_masks(torch.tensor([[3., 0., 1., 2.]]), 4, 4), raises(ValueError, "boxes\\[0\\] box 0")),
    ("boxes_to_masks", "NaN coordinate", lambda: M.boxes_to_masks([torch.tensor([[0., 0., 1., 1.], [0., NAN, 1., 1.]])], 4, 4), raises(ValueError, "box 1")),
    ("boxes_to_masks", "3 coordinates", lambda: M.boxes_to_masks(torch.tensor([[0., 0., 1.]]), 4, 4), raises(ValueError, r"\[N, 4\]")),
    ("boxes_to_masks", "height 0", lambda: M.boxes_to_masks(torch.tensor([[0., 0., 1., 1.]]), 0, 4), raises(ValueError, "height")),
    ("boxes_to_masks", "no images", lambda: M.boxes_to_masks([], 4, 4), returns(lambda m: m.shape == (0, 4, 4), "[0, H, W]")),
    # ---------------------------------------------------------------- grounding
    *[(f.__name__, desc, (lambda f=f, m=m, r=r: f(m, r)), raises(ValueError, msg))
      for f in (M.contrast_to_noise_ratio, M.pointing_game, M.miou_over_thresholds, M.grounding_metrics)
      for desc, m, r, msg in [("NaN in a map", nan_at(MAPS, 1, 0, 0), REGIONS, "maps image 1"),
                              ("shapes differ", MAPS, REGIONS[:1], r"same \[B, H, W\]"),
                              ("soft region", MAPS, REGIONS.float() * .3, "0/1 or bool"),
                              ("images without pixels", MAPS[:, :0], REGIONS[:, :0], "no pixels")]],
    *[(f.__name__, "a batch of 0", (lambda f=f: f(MAPS[:0], REGIONS[:0])), returns(lambda v: v.shape == (0,), "an empty [0] tensor"))  # issue 12
      for f in (M.contrast_to_noise_ratio, M.pointing_game, M.miou_over_thresholds)],
    ("grounding_metrics", "a batch of 0", lambda: M.grounding_metrics(MAPS[:0], REGIONS[:0]), raises(ValueError, "batch of 0")),  # issue 12
    ("miou_over_thresholds", "threshold above 1", lambda: M.miou_over_thresholds(MAPS, REGIONS, (.5, 2.)), raises(ValueError, "threshold")),
    ("miou_over_thresholds", "no thresholds", lambda: M.miou_over_thresholds(MAPS, REGIONS, ()), raises(ValueError, "non-empty")),
    ("contrast_to_noise_ratio", "region covers the image", lambda: M.contrast_to_noise_ratio(MAPS, torch.ones(2, 3, 3, dtype=torch.bool)),
     returns(lambda v: v.isnan().all(), "NaN (undefined)")),
    # ---------------------------------------------------------------- bootstrap
    ("bootstrap_ci", "no arrays", lambda: M.bootstrap_ci(np.mean), raises(ValueError, "at least one array")),
    ("bootstrap_ci", "arrays of different lengths", lambda: M.bootstrap_ci(lambda a, b: 0., np.ones(3), np.ones(4)), raises(ValueError, "different lengths")),
    ("bootstrap_ci", "length 0", lambda: M.bootstrap_ci(np.mean, np.ones(0)), raises(ValueError, "length 0")),
    ("bootstrap_ci", "groups shorter than the rows", lambda: M.bootstrap_ci(np.mean, np.ones(5), groups=[1, 2]), raises(ValueError, "for 5 rows")),
    ("bootstrap_ci", "missing group id", lambda: M.bootstrap_ci(np.mean, np.ones(3), groups=np.array([1., NAN, 2.])), raises(ValueError, "groups row 1")),
    ("bootstrap_ci", "alpha 1.5", lambda: M.bootstrap_ci(np.mean, np.ones(3), alpha=1.5), raises(ValueError, "alpha")),
    ("bootstrap_ci", "n_resamples -5", lambda: M.bootstrap_ci(np.mean, np.ones(3), n_resamples=-5), raises(ValueError, "n_resamples")),
    ("bootstrap_ci", "metric_fn returns a string", lambda: M.bootstrap_ci(lambda a: "high", np.ones(3)), raises(ValueError, "number or a dict")),
    ("bootstrap_ci", "metric_fn changes its keys", lambda: M.bootstrap_ci(lambda a: {"m": 1.} if len(set(a.tolist())) > 2 else {"n": 1.}, np.arange(3.), n_resamples=50, seed=1),
     raises(ValueError, "returned keys")),
    ("with_ci_keys", "not a bootstrap_ci result", lambda: M.with_ci_keys({"R@1": 0.5}), raises(ValueError, r"ci\['R@1'\]")),
    # ---------------------------------------------------------------- per-item recording (claims)
    ("record_per_item", "fewer patient ids than values", lambda: _recorded(lambda: M.record_per_item({"R@1": torch.ones(3)}, ["p0"])),
     raises(ValueError, "3 values but 1 patient ids")),
    ("record_per_item", "2-D values", lambda: _recorded(lambda: M.record_per_item({"R@1": torch.ones(3, 2)})), raises(ValueError, r"expected \[N\]")),
    ("record_per_item", "no recording active", lambda: M.record_per_item({"R@1": torch.ones(3, 2)}, ["p0"]), returns(lambda r: r is None, "a no-op")),
    ("recording_per_item", "an inner recording", lambda: _recorded(lambda: _recorded(lambda: M.record_per_item({"x": torch.ones(2)}))),
     returns(lambda r: r == {}, "the outer recording sees nothing of the inner one")),
]


def _recorded(fn):
    "What a recording collects while `fn` runs."
    with M.recording_per_item() as store: fn()
    return store


@pytest.mark.parametrize("name, what, call, expect", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input(name, what, call, expect):
    if name.startswith("faiss") and not M.faiss_available():
        pytest.fail("faiss-cpu is a dev requirement (settings.ini dev_requirements); install it")
    kind, a, b = expect
    if kind == "raises":
        with pytest.raises(a, match=b):
            call()
    else:
        out = call()
        assert a(out), f"{name} on {what}: expected {b}, got {out!r}"


def test_every_public_function_has_bad_input_cases():
    "A public function added to cxrlab.metrics without rows in CASES fails here."
    covered = {c[0] for c in CASES}
    not_functions = {"TIE_POLICIES", "UNCERTAIN_POLICIES", "RelevantRanks", "faiss_available"}  # constants, a type, no input
    missing = [n for n in M.__all__ if n not in covered | not_functions]
    assert not missing, f"no bad-input cases for {missing}"
