"""Experiment trackers through accelerate: `tracker='tensorboard'` leaves an event file in the run folder with every
logged loss term per optimizer step, the validation metrics per epoch, the test metrics and the figures; `none`
leaves nothing; an unknown or uninstalled tracker is a clear error before training."""
import csv, importlib.util, json

import pytest

from cxrlab.core import ParameterError, preflight_params
from cxrlab.evaluate import evaluate_run
from cxrlab.train import setup_experiment

from conftest import ROOT

EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def _events(run_dir):
    files = sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert files, f"no event file under {run_dir / 'tensorboard'}"
    accs = []
    for f in files:
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0, "images": 0}); ea.Reload(); accs.append(ea)
    return accs


def _experiment(tmp_path, tracker):
    return setup_experiment("clip", prefix="trk", n_patients=48, image_size=64, epochs=2, batch_size=16, seed=0,
                            device="cpu", out_dir=str(tmp_path / "runs"), tracker=tracker)


def test_tensorboard_event_file_has_every_loss_term_per_step_and_the_metrics(tmp_path):
    exp = _experiment(tmp_path, "tensorboard")
    exp.fit()
    evaluate_run(exp.run.dir, exp.manifest, "test", n_resamples=20, device="cpu", out_dir=str(tmp_path / "runs"),
                 families="retrieval")
    ea = next(a for a in _events(exp.run.dir) if a.Tags()["scalars"])
    scalars = set(ea.Tags()["scalars"])
    with open(exp.run.dir / "train_log.csv") as f: steps = list(csv.DictReader(f))
    terms = [k for k in steps[0] if k != "step"]
    assert "loss" in terms and "lr" in terms and "grad_norm" in terms
    for term in terms:  # every column of the step log, at every optimizer step, with the same values
        got = ea.Scalars(f"step/{term}")
        assert [e.step for e in got] == [int(r["step"]) for r in steps], term
        assert [e.value for e in got] == pytest.approx([float(r[term]) for r in steps], rel=1e-5, abs=1e-6), term
    val = sorted(k for k in scalars if k.startswith("val/"))
    assert "val/rsum" in val and "val/t2i/R@10" in val
    assert len(ea.Scalars("val/rsum")) == 2  # one per epoch
    metrics = json.loads((exp.run.dir / "metrics.json").read_text())
    for k in ("test/t2i/R@10", "test/i2t/R@10", "train/loss", "validate/rsum"):  # what metrics.json holds reaches the tracker
        assert k in scalars, k
        assert ea.Scalars(k)[-1].value == pytest.approx(metrics[k], rel=1e-5)
    images = {t for a in _events(exp.run.dir) for t in a.Tags()["images"]}
    assert "figures/training_curve" in images and "figures/recall_at_k" in images, images
    print(f"event scalars: {len(scalars)} tags; step terms: {terms}; images: {sorted(images)}")


def test_tracker_none_writes_no_event_file(tmp_path):
    exp = _experiment(tmp_path, "none")
    exp.cfg.epochs = 1
    exp.fit()
    assert not (exp.run.dir / "tensorboard").exists()
    assert exp.run.tracker is None


def test_unknown_tracker_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ParameterError, match="tracker='tensorbord': must be one of none, "):
        preflight_params(ROOT / "nbs" / "02b_train.ipynb", {"tracker": "tensorbord"})
    with pytest.raises(ValueError, match="tracker='tensorbord'"):
        from cxrlab.core import start_run
        from cxrlab.train import open_tracker
        open_tracker(start_run({}, out_dir=tmp_path / "runs"), "tensorbord")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_writes_its_run_into_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline"); monkeypatch.setenv("WANDB_SILENT", "true")
    exp = _experiment(tmp_path, "wandb")
    exp.cfg.epochs = 1
    exp.fit(); exp.run.tracker.finish()
    assert list((exp.run.dir / "wandb").glob("offline-run-*"))
