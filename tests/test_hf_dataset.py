"""IU X-Ray in the Hugging Face open-i schema (`uid`, `findings`, `impression`, encoded images in `img_frontal` /
`img_lateral`), as radiology-clip-mini reads `ykumards/open-i`: a dataset built here from SynthCXR studies, saved with
`save_to_disk`, read offline by `dataset='hf:<folder>'` into the standard manifest (QC, labels, patient split), and
trained on by the 02b_train engine for one short epoch."""
import json

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from cxrlab.core import CHEXPERT_LABELS
from cxrlab.data import DataError, build_manifest, image_root, load_manifest
from cxrlab.synth import ensure_synthcxr
from cxrlab.train import setup_experiment


@pytest.fixture(scope="module")
def open_i_folder(tmp_path_factory):
    "SynthCXR studies written in the open-i schema: frontal and (for every third study) lateral bytes, one corrupt image."
    path = ensure_synthcxr(n_patients=60, image_size=64, seed=3)
    df, meta = load_manifest(path)
    root = image_root(meta, path)
    rows = {"uid": [], "findings": [], "impression": [], "MeSH": [], "img_frontal": [], "img_lateral": []}
    for i, (sid, g) in enumerate(df.groupby("study_id", sort=True)):
        r = g.iloc[0]
        png = (root / r.image_path).read_bytes()
        rows["uid"].append(f"CXR{i + 1}"); rows["findings"].append(r.findings); rows["impression"].append(r.impression)
        rows["MeSH"].append("normal"); rows["img_frontal"].append(png if i != 5 else b"\x00\x01 truncated")
        rows["img_lateral"].append(png if i % 3 == 0 else None)
    features = datasets.Features({"uid": datasets.Value("string"), "findings": datasets.Value("string"),
                                  "impression": datasets.Value("string"), "MeSH": datasets.Value("string"),
                                  "img_frontal": datasets.Value("binary"), "img_lateral": datasets.Image()})
    rows["img_lateral"] = [{"bytes": b, "path": None} if b else None for b in rows["img_lateral"]]
    ds = datasets.Dataset.from_dict(rows, features=features)
    out = tmp_path_factory.mktemp("hf") / "open-i-synth"
    ds.save_to_disk(str(out))
    return out, rows


def test_hf_folder_reads_into_the_manifest_with_qc_labels_and_split(open_i_folder):
    folder, rows = open_i_folder
    m, qc = build_manifest(f"hf:{folder}", frontal_only=False)
    n_lateral = sum(b is not None for b in rows["img_lateral"])
    assert qc.counts["corrupt_image"] == 1
    assert len(m) == len(rows["uid"]) - 1 + n_lateral
    assert set(m.view) == {"FRONTAL", "LATERAL"} and m.dataset.eq("iu_hf").all()
    assert set(m.split) <= {"train", "validate", "test"} and m.attrs["meta"]["split_scheme"].startswith("patient")
    assert (m.label_source != "").all() and m[CHEXPERT_LABELS].notna().any().any()  # the labeler filled the labels
    first = m[m.study_id == "CXR1"].iloc[0]
    assert first.findings and rows["findings"][0].startswith(first.findings[:20])
    img = Image.open(f"{m.attrs['meta']['data_root']}/{first.image_path}")
    assert img.size == (64, 64)
    assert len(build_manifest(f"hf:{folder}")[0]) == len(rows["uid"]) - 1  # frontal only by default


def test_iu_hf_named_dataset_takes_data_root_and_bad_sources_fail_clearly(open_i_folder, tmp_path):
    folder, rows = open_i_folder
    m, _ = build_manifest("iu_hf", str(folder))
    assert len(m) == len(rows["uid"]) - 1
    with pytest.raises(DataError, match="no such folder"):
        build_manifest(f"hf:{tmp_path / 'missing'}")
    datasets.Dataset.from_dict({"uid": ["1"], "text": ["x"]}).save_to_disk(str(tmp_path / "other"))
    with pytest.raises(DataError, match="not the open-i schema"):
        build_manifest(f"hf:{tmp_path / 'other'}")


def test_the_hf_manifest_trains_with_the_02b_engine(open_i_folder, tmp_path):
    folder, _ = open_i_folder
    exp = setup_experiment("clip", prefix="hf", dataset=f"hf:{folder}", epochs=1, batch_size=8, image_size=64,
                           device="cpu", out_dir=str(tmp_path / "runs"))
    out = exp.fit()
    assert out["epochs_run"] == 1 and np.isfinite(out["loss"])
    params = json.loads((exp.run.dir / "params.json").read_text())["params"]
    assert params["data"]["dataset"] == f"hf:{folder}"
    assert (exp.run.dir / "checkpoints" / "best").exists() or (exp.run.dir / "checkpoints" / "last").exists()
