"The claims table: paired patient-bootstrap CIs, verdicts, and the table the pipeline writes from a reports folder."
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrlab.core import load_json, save_json
from cxrlab.evaluate import save_values, values_path
from cxrlab.report import (CLAIMS, Claim, StageResult, claim_verdict, collate, judge_claims, paired_difference,
                           queries_needed, results_markdown)


def independent_bootstrap(a, b, patients, n_resamples, seed, alpha=0.05):
    "Percentile CI of mean(a) - mean(b) over patient resamples, written without cxrlab (numpy's default_rng draw)."
    ids = sorted(set(patients))
    rows = {p: [i for i, q in enumerate(patients) if q == p] for p in ids}
    rng, reps = np.random.default_rng(seed), []
    for _ in range(n_resamples):
        items = [i for k in rng.integers(0, len(ids), len(ids)) for i in rows[ids[k]]]
        reps.append(np.mean([a[i] for i in items]) - np.mean([b[i] for i in items]))
    return np.quantile(reps, [alpha / 2, 1 - alpha / 2])


def test_paired_ci_matches_an_independent_patient_bootstrap():
    rng = np.random.default_rng(11)
    patients = [f"p{i}" for i in rng.integers(0, 15, 40)]
    a, b = rng.random(40), rng.random(40)
    r = paired_difference(a, b, patients, n_resamples=400, seed=7)
    lo, hi = independent_bootstrap(a, b, patients, 400, 7)
    assert r["low"] == pytest.approx(lo, abs=1e-12) and r["high"] == pytest.approx(hi, abs=1e-12)
    assert r["estimate"] == pytest.approx(a.mean() - b.mean()) and r["n_patients"] == len(set(patients))


def test_patient_resampling_widens_the_ci_when_a_patients_queries_agree():
    "Ten queries per patient that all share the patient's difference: resampling queries would be ~3x too narrow."
    rng = np.random.default_rng(0)
    per_patient = rng.normal(0.0, 1.0, 30)
    diff = np.repeat(per_patient, 10)
    by_patient = paired_difference(diff, np.zeros(300), np.repeat(np.arange(30), 10), n_resamples=1000)
    by_query = paired_difference(diff, np.zeros(300), np.arange(300), n_resamples=1000)
    width = lambda r: r["high"] - r["low"]
    assert width(by_patient) > 2.5 * width(by_query)
    # and the patient-level width is what the normal approximation over 30 patients gives
    assert width(by_patient) == pytest.approx(2 * 1.96 * per_patient.std() / math.sqrt(30), rel=0.15)


def test_a_ci_known_exactly():
    "Every patient's difference is 0.2: every resample gives 0.2."
    a = np.array([0.7, 0.4, 0.9, 0.2]); patients = ["x", "x", "y", "z"]
    r = paired_difference(a, a - 0.2, patients, n_resamples=100)
    assert (r["estimate"], r["low"], r["high"]) == pytest.approx((0.2, 0.2, 0.2))


@pytest.mark.parametrize("low,high,direction,verdict", [
    (0.01, 0.3, "higher", "holds"), (-0.3, -0.01, "higher", "does not hold"), (-0.01, 0.3, "higher", "unresolved"),
    (-0.3, -0.01, "lower", "holds"), (0.01, 0.3, "lower", "does not hold"), (0.0, 0.3, "higher", "unresolved"),
    (math.nan, math.nan, "higher", "unresolved")])
def test_verdict_from_the_ci(low, high, direction, verdict):
    assert claim_verdict(low, high, direction) == verdict


def test_queries_needed_is_the_normal_formula():
    # sd 0.4 per query, difference 0.02: (1.96 * 0.4 / 0.02)^2 = 1536.6 -> 1537, whatever n the SE came from
    for n in (100, 900):
        assert queries_needed(0.02, 0.4 / math.sqrt(n), n) == 1537
    assert queries_needed(-0.02, 0.4 / 10, 100) == 1537 and queries_needed(0.0, 0.1, 10) == math.inf
    # on data: with the number of queries it asks for, the CI of a fresh sample excludes 0 about half the time
    rng = np.random.default_rng(3)
    x = rng.normal(0.05, 0.5, 200)
    r = paired_difference(x, np.zeros(200), np.arange(200), n_resamples=1000)
    n = queries_needed(r["estimate"], r["std"], 200)
    assert n == pytest.approx((1.96 * x.std(ddof=1) / x.mean()) ** 2, rel=0.1)


# --- an end-to-end reports folder ---------------------------------------------------------------------------------

def _run(root: Path, name: str, method: str, values: dict, metrics: dict | None = None, extra: dict | None = None,
         patients=None) -> str:
    d = root / name
    (d / "checkpoints" / "best").mkdir(parents=True)
    save_json({"params": {"method": {"name": method, "config": {"backbone": {"name": "tiny"}}}, **(extra or {})}}, d / "params.json")
    save_json({f"test/{k}": v for k, v in (metrics or {}).items()}, d / "metrics.json")
    frames = []
    for key, v in values.items():
        v = np.asarray(v, dtype=float)
        pats = patients if patients is not None else [f"p{i // 2}" for i in range(len(v))]
        ok = ~np.isnan(v)
        frames.append(pd.DataFrame({"key": key, "item": np.flatnonzero(ok), "subject_id": np.asarray(pats)[ok], "value": v[ok]}))
    save_values(pd.concat(frames, ignore_index=True), values_path(d, "test"))
    return str(d)


@pytest.fixture
def reports(tmp_path):
    "A finished pipeline's folders: baseline, Patch-IB A and C, MedProbCLIP, two localization runs, the evaluation."
    rng = np.random.default_rng(0)
    n = 80
    hits = (rng.random(n) < 0.5).astype(float)
    pa = (rng.random(n) < 0.3).astype(float)
    pc = pa.copy(); pc[:2] = 1 - pc[:2]  # C = A except two queries: unresolved
    ca, cc = (rng.random(n) < 0.5).astype(float), (rng.random(n) < 0.95).astype(float)
    runs = tmp_path / "runs"
    base = _run(runs, "base", "clip", {"t2i/R@10": hits, "t2i/chance_R@10": np.full(n, 0.05)})
    a = _run(runs, "pa", "patch_ib", {"grounding/similarity/PointingGame": pa, "contrast/i2t": ca}, extra={"variant": "A"})
    c = _run(runs, "pc", "patch_ib", {"grounding/similarity/PointingGame": pc, "contrast/i2t": cc,
                                      "grounding/mask/PointingGame": np.full(n, 0.9)}, extra={"variant": "C"})
    unc = np.arange(n) % 10  # deciles by query position: bin 1 all hits, bin 10 none
    bins = {f"uncertainty/t2i/R@10/bin{b + 1:02d}": np.where(unc == b, float(b == 0), np.nan) for b in range(10)}
    pb = _run(runs, "pb", "probclip", {"t2i/R@10": hits, "mu_dot/t2i/R@10": hits * (rng.random(n) < 0.5), **bins})
    labels = np.array(["Edema", "Nodule"])[np.arange(n) % 2]
    dice = lambda level: {f"{level}/{lab}": np.where(labels == lab, v, np.nan) for lab, v in (("Edema", 0.6), ("Nodule", 0.4))}
    text_vals = {**{k: v + 0.1 * rng.random(n) for k, v in dice("loc/Dice").items()},
                 **dice("prior/finding/Dice"), **{k: v - 0.3 for k, v in dice("prior/centre/Dice").items()}}
    loc_metrics = {"loc/Dice/macro": 0.55, "prior/finding/Dice/macro": 0.5, "prior/centre/Dice/macro": 0.2}
    lt = _run(runs, "lt", "localize", text_vals, loc_metrics, extra={"stage": "text"})
    lb = _run(runs, "lb", "localize", {k: v - 0.2 for k, v in dice("loc/Dice").items()}, {"loc/Dice/macro": 0.3}, extra={"stage": "blind"})
    parent = runs / "loc-parent"; parent.mkdir()
    save_json({"params": {"child_runs": [lt, lb]}}, parent / "params.json")
    ev = runs / "eval"; ev.mkdir()
    save_json({"params": {"runs": [base, a, c, pb]}}, ev / "params.json")
    mean = lambda v: float(np.nanmean(v))
    m = {"test/base/t2i/R@10": mean(hits), "test/pa/grounding/similarity/PointingGame": mean(pa), "test/pa/contrast/i2t": mean(ca),
         "test/pc/grounding/similarity/PointingGame": mean(pc), "test/pc/contrast/i2t": mean(cc), "test/pc/grounding/mask/PointingGame": 0.9,
         "test/pb/t2i/R@10": mean(hits), "test/oracle: labels/t2i/R@10": 0.9,
         "test/prior: centre (image-blind)/grounding/similarity/PointingGame": 0.15,
         "test/prior: finding + side + zone (image-blind)/grounding/similarity/PointingGame": 0.42}
    save_json(m, ev / "metrics.json")
    save_values(pd.DataFrame({"key": "t2i/R@10", "item": range(n), "subject_id": [f"p{i // 2}" for i in range(n)],
                              "value": (np.arange(n) % 10 != 0).astype(float)}).assign(system="oracle: labels"),
                ev / "values" / "test-references.csv.gz")
    results = [StageResult("02b_train.ipynb", "ok", 1.0, run_dir=base), StageResult("03_patch_ib.ipynb", "ok", 1.0, run_dir=a),
               StageResult("06_localization.ipynb", "ok", 1.0, run_dir=str(parent)),
               StageResult("07_retrieval_eval.ipynb", "ok", 1.0, run_dir=str(ev))]
    return tmp_path, results


def test_the_pipeline_leaderboard_judges_every_claim(reports):
    tmp, results = reports
    rep = tmp / "reports"
    collate(results, rep, "ci")
    claims = load_json(rep / "leaderboard.json")["claims"]
    got = {(c["claim"], c["system"].split(" (")[0]): c for c in claims}
    assert len(claims) == len(CLAIMS)  # one row per claim: every system matched at most once, absent ones listed
    v = lambda claim, system: got[(claim, system)]["verdict"]
    assert v("the baseline retrieves better than chance", "clip") == "holds"
    assert v("the baseline retrieves better than knowing only the labels", "clip") == "does not hold"
    assert got[("the baseline retrieves better than knowing only the labels", "clip")]["pairing"] == "paired"
    assert v("C tells side/zone-swapped reports apart better than A", "patch_ib C") == "holds"
    pg = got[("C points at findings better than A", "patch_ib C")]
    assert pg["verdict"] == "unresolved" and pg["queries_needed"] > pg["n_queries"] and pg["pairing"] == "paired"
    mask = got[("C's mask points at findings better than the best image-blind prior", "patch_ib C")]
    assert mask["verdict"] == "holds" and mask["versus"].startswith("prior: finding + side + zone") and "no per-item" in mask["pairing"]
    for variant in "BDE":  # never trained in this folder: listed, not dropped
        assert v(f"{variant} points at findings better than A", f"patch_ib {variant}") == "not run"
    for combo in ("igl_tg", "ig_tgl", "igl_tgl"):
        assert v(f"{combo} beats global-only ig_tg on sentence queries", f"remix {combo}") == "not run"
    assert v("match probability retrieves better than the μ dot product", "probclip") == "holds"
    dec = got[("most-certain decile of report queries beats the least-certain", "probclip")]
    assert dec["verdict"] == "holds" and dec["pairing"] == "disjoint query groups" and dec["difference"] == pytest.approx(1.0)
    assert v("most-certain decile of image queries beats the least-certain", "probclip") == "not run"  # no i2t bins saved
    blind = got[("the sentence matters: text-conditioned beats its text-blind twin", "localize text")]
    assert blind["verdict"] == "holds" and blind["difference"] == pytest.approx(0.2 + 0.05, abs=0.03)
    prior = got[("the text-conditioned U-Net beats the best image-blind prior", "localize text")]
    assert prior["versus"].endswith("prior/finding/Dice") and prior["verdict"] == "holds"
    md = (rep / "leaderboard.md").read_text()
    assert "### Claims" in md and "| clip | the baseline retrieves better than chance | clip (tiny) vs clip (tiny) · t2i/chance_R@10 |" in md
    assert "<h3>Claims</h3>" in (rep / "index.html").read_text()  # the index embeds the leaderboard


def test_the_readme_results_show_the_claims(reports):
    tmp, results = reports
    rep = tmp / "reports"
    collate(results, rep, "ci")
    save_json({"_pipeline": {"profile": "ci", "finished": "now"}, "07_retrieval_eval.ipynb": {"status": "ok", "seconds": 1.0}},
              rep / "pipeline_state.json")
    (tmp / "root").mkdir()
    md = results_markdown(rep, tmp / "runs", root=tmp / "root")
    assert "### Claims" in md and "the baseline retrieves better than chance" in md


def test_runs_on_different_test_sets_are_refused(reports):
    tmp, results = reports
    other = pd.DataFrame({"key": "grounding/similarity/PointingGame", "item": range(80), "subject_id": "someone else", "value": 1.0})
    save_values(other, values_path(tmp / "runs" / "pa", "test"))
    collate(results, tmp / "reports", "ci")  # the leaderboard is still written; the claim says why it has no verdict
    claims = load_json(tmp / "reports" / "leaderboard.json")["claims"]
    c = next(c for c in claims if c["claim"] == "C points at findings better than A")
    assert c["verdict"] == "not comparable" and "not evaluated on the same test queries" in c["note"]
    assert "not comparable: claim 'C points at findings better than A'" in (tmp / "reports" / "leaderboard.md").read_text()


def test_a_claim_is_one_line():
    "A method adds its claim by adding one Claim to a list; the registry checks its direction."
    extra = Claim("mine", "M beats the baseline", "mine", "clip", "t2i/R@10")
    rows = {"clip (tiny)": {"t2i/R@10": 0.1}}
    judged = judge_claims(rows, {}, [extra])
    assert [j["verdict"] for j in judged] == ["not run"]
    with pytest.raises(ValueError, match="direction"):
        Claim("mine", "x", "a", "b", "m", direction="bigger")
