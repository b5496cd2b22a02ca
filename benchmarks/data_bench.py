"""Data-layer benchmark: manifest build at MIMIC scale, image decoding paths, loader and cache throughput.

    python benchmarks/data_bench.py            # full sizes (377,110 images / 227,827 studies; ~2-3 min incl. generation)
    python benchmarks/data_bench.py --quick    # small sizes, for a smoke run

Every figure is printed next to a reference measured in the same run:
- manifest build (cxrlab.data.build_manifest('mimic', check_images=False), one core) vs pandas.read_csv of the metadata table;
- decode: PIL full decode, PIL draft-mode decode, torchvision.io.decode_jpeg (each + resize to 224), on 512x512 JPEGs;
- loader: DataLoader(CXRDataset, biomedclip transform at 224, 2 workers) vs decode-only;
- cache: build_image_cache from full-resolution (2,500 x 3,000) JPEGs, images/s per core, vs plain full decode per core.
"""
import argparse, gzip, io, os, random, shutil, sys, tempfile, time, zipfile
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxrlab.core import CHEXPERT_LABELS
from cxrlab.data import (build_manifest, build_image_cache, CXRDataset, make_collate, make_transforms, load_image,
                         MIMIC_METADATA_COLUMNS)

torch.set_num_threads(1)

FINDINGS = ['The lungs are clear without focal consolidation.', 'There is a small left pleural effusion.',
            'Heart size is mildly enlarged.', 'No pneumothorax is seen.', 'Mild pulmonary vascular congestion.',
            'Right lower lobe opacity may reflect atelectasis.', 'Endotracheal tube terminates 4 cm above the carina.']
IMPRESSIONS = ['No acute cardiopulmonary process.', 'Small left pleural effusion.', 'Mild cardiomegaly without edema.',
               'Right lower lobe pneumonia is not excluded.', 'Support devices in standard position.']


def make_mimic_tables(root: Path, n_images: int, n_studies: int, seed: int = 0) -> None:
    "Write a synthetic MIMIC-CXR-JPG metadata/split/chexpert table set and a mimic-cxr-reports.zip of that size."
    rng = np.random.default_rng(seed)
    n_subjects = max(1, n_studies * 65_379 // 227_827)  # MIMIC's patients per study
    subj_of_study = np.sort(rng.integers(0, n_subjects, n_studies))
    study_ids = 50_000_000 + rng.choice(9_999_999, n_studies, replace=False)
    subject_ids = 10_000_000 + subj_of_study * 137
    per_study = np.ones(n_studies, int)
    extra = rng.choice(n_studies, n_images - n_studies, replace=True)
    np.add.at(per_study, extra, 1)
    st_idx = np.repeat(np.arange(n_studies), per_study)
    first = np.r_[True, st_idx[1:] != st_idx[:-1]]
    view = np.where(first, rng.choice(['PA', 'AP'], len(st_idx), p=[0.45, 0.55]), rng.choice(['LATERAL', 'LL', 'AP', ''], len(st_idx), p=[.7, .1, .15, .05]))
    dicom = [f"{h:016x}"[:8] + "-" + f"{h:016x}"[8:] for h in rng.choice(2**62, len(st_idx), replace=False)]
    meta = pd.DataFrame({'dicom_id': dicom, 'subject_id': subject_ids[st_idx], 'study_id': study_ids[st_idx],
                         'PerformedProcedureStepDescription': 'CHEST (PA AND LAT)', 'ViewPosition': view, 'Rows': 3056, 'Columns': 2544,
                         'StudyDate': 21800506, 'StudyTime': 213014.531, 'ProcedureCodeSequence_CodeMeaning': 'CHEST (PA AND LAT)',
                         'ViewCodeSequence_CodeMeaning': 'postero-anterior', 'PatientOrientationCodeSequence_CodeMeaning': 'Erect'})
    assert list(meta.columns) == MIMIC_METADATA_COLUMNS
    meta.to_csv(root/'mimic-cxr-2.0.0-metadata.csv.gz', index=False, compression={'method': 'gzip', 'compresslevel': 1})
    u = (subj_of_study * 2654435761 % 1000) / 1000  # patient-level split
    split_of_study = np.where(u < 0.98, 'train', np.where(u < 0.99, 'validate', 'test'))
    pd.DataFrame({'dicom_id': dicom, 'study_id': meta['study_id'], 'subject_id': meta['subject_id'], 'split': split_of_study[st_idx]}) \
        .to_csv(root/'mimic-cxr-2.0.0-split.csv.gz', index=False, compression={'method': 'gzip', 'compresslevel': 1})
    lab = rng.choice(np.array([1.0, 0.0, -1.0, np.nan]), (n_studies, 14), p=[.1, .1, .05, .75])
    labdf = pd.DataFrame(lab, columns=CHEXPERT_LABELS); labdf.insert(0, 'study_id', study_ids); labdf.insert(0, 'subject_id', subject_ids)
    labdf.to_csv(root/'mimic-cxr-2.0.0-chexpert.csv.gz', index=False, compression={'method': 'gzip', 'compresslevel': 1})
    with zipfile.ZipFile(root/'mimic-cxr-reports.zip', 'w', compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for s, t in zip(subject_ids, study_ids):
            f = ' '.join(random.Random(int(t)).sample(FINDINGS, 3)); i = IMPRESSIONS[int(t) % len(IMPRESSIONS)]
            z.writestr(f"mimic-cxr-reports/files/p{str(s)[:2]}/p{s}/s{t}.txt",
                       f"                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___ with cough\n\n"
                       f" FINDINGS:\n\n {f}\n\n IMPRESSION:\n\n {i}\n")


def bench_manifest(n_images: int, n_studies: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t0 = time.perf_counter(); make_mimic_tables(root, n_images, n_studies); t_gen = time.perf_counter() - t0
        t0 = time.perf_counter(); ref = pd.read_csv(root/'mimic-cxr-2.0.0-metadata.csv.gz', dtype=str); t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        df, qc = build_manifest('mimic', root, check_images=False, frontal_only=False)
        t_build = time.perf_counter() - t0
        assert len(df) == len(ref) == n_images and df['study_id'].nunique() == n_studies, (len(df), qc)
    print(f"[manifest] {n_images:,} images / {n_studies:,} studies: build_manifest {t_build:.1f} s on one core "
          f"({n_images / t_build:,.0f} images/s); reference pandas.read_csv(metadata) {t_ref:.1f} s -> ratio {t_build / t_ref:.1f}x; "
          f"target < 60 s: {'PASS' if t_build < 60 else 'FAIL'}   (table generation {t_gen:.0f} s, not counted)")
    return {'manifest_build_s': t_build, 'read_csv_s': t_ref}


def _radiograph(h: int, w: int, rng, noise: float = 2.5) -> np.ndarray:
    "A smooth, textured grayscale image (JPEG q95 size close to a MIMIC-CXR-JPG file's ~1.5 MB at 2500x3000)."
    y, x = np.ogrid[0:h, 0:w]
    base = 120 + 60 * np.sin(x / w * 6) * np.cos(y / h * 4) - 40 * ((x - w / 2) ** 2 / (w / 2) ** 2)
    return np.clip(base + rng.normal(0, noise, (h, w)).astype(np.float32), 0, 255).astype(np.uint8)


def bench_decode_and_loader(n: int, workers: int = 2) -> dict:
    from torchvision.io import decode_jpeg, ImageReadMode
    from torchvision.transforms.v2 import functional as TF
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i in range(n): Image.fromarray(_radiograph(512, 512, rng)).save(root/f"{i}.jpg", quality=95)
        paths = [str(root/f"{i}.jpg") for i in range(n)]
        def rate(fn):
            t0 = time.perf_counter()
            for p in paths: fn(p)
            return n / (time.perf_counter() - t0)
        pil_full = rate(lambda p: Image.open(p).convert('L').resize((224, 224), Image.BILINEAR))
        pil_draft = rate(lambda p: load_image(p, min_size=224).resize((224, 224), Image.BILINEAR))
        def tv(p):
            x = decode_jpeg(torch.frombuffer(bytearray(open(p, 'rb').read()), dtype=torch.uint8), mode=ImageReadMode.GRAY)
            return TF.resize(x, [224, 224], antialias=True)
        tv_rate = rate(tv)
        # correctness: all three paths decode the same picture
        a = np.asarray(Image.open(paths[0]).convert('L'), np.float32)
        b = decode_jpeg(torch.frombuffer(bytearray(open(paths[0], 'rb').read()), dtype=torch.uint8), mode=ImageReadMode.GRAY)[0].numpy().astype(np.float32)
        c = np.asarray(load_image(paths[0], min_size=224).resize((512, 512), Image.BILINEAR), np.float32)
        print(f"[decode] 512x512 JPEG -> 224, one core: PIL full {pil_full:.0f} img/s | PIL draft (cxrlab.load_image) {pil_draft:.0f} img/s "
              f"| torchvision.io.decode_jpeg {tv_rate:.0f} img/s; draft/full {pil_draft / pil_full:.2f}x, draft/torchvision {pil_draft / tv_rate:.2f}x; "
              f"max |PIL - torchvision| = {np.abs(a - b).max():.0f}/255, mean |draft(upsampled) - full| = {np.abs(c - a).mean():.1f}/255")
        df = pd.DataFrame({'dataset': 'bench', 'subject_id': [str(i) for i in range(n)], 'study_id': [str(i) for i in range(n)],
                           'image_id': [str(i) for i in range(n)], 'image_path': [f"{i}.jpg" for i in range(n)], 'view': 'PA',
                           'is_frontal': True, 'split': 'train', 'findings': '', 'impression': 'No acute process.', 'report': 'No acute process.',
                           **{l: np.nan for l in CHEXPERT_LABELS}})
        ds = CXRDataset(df, 'pair', make_transforms('biomedclip', train=True), data_root=root)
        decode_only = rate(lambda p: load_image(p, min_size=224))
        def loader_rate(w):
            dl = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=w, collate_fn=make_collate(), persistent_workers=w > 0)
            for _ in dl: pass  # warm-up epoch (worker start-up excluded from the figure)
            t0 = time.perf_counter(); seen = sum(len(b['image_id']) for b in dl); return seen / (time.perf_counter() - t0)
        loader, loader0 = loader_rate(workers), loader_rate(0)
        print(f"[loader] CXRDataset(pair, biomedclip train transform 224) + DataLoader({workers} workers, batch 32), steady state: "
              f"{loader:.0f} img/s vs in-process loader {loader0:.0f} img/s ({loader / loader0:.2f}x) vs decode-only (one core) "
              f"{decode_only:.0f} img/s ({loader / decode_only:.2f}x); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return {'pil_full': pil_full, 'pil_draft': pil_draft, 'torchvision': tv_rate, 'loader': loader, 'loader_in_process': loader0, 'decode_only': decode_only}


def bench_cache(n: int, size: int = 512) -> dict:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i in range(n): Image.fromarray(_radiograph(3000, 2500, rng)).save(root/f"{i}.jpg", quality=95)
        mb = np.mean([os.path.getsize(root/f"{i}.jpg") for i in range(n)]) / 1e6
        df = pd.DataFrame({'image_path': [f"{i}.jpg" for i in range(n)]})
        t0 = time.perf_counter()
        for i in range(n): Image.open(root/f"{i}.jpg").convert('L').load()
        full = n / (time.perf_counter() - t0)
        res = {}
        for w in (1, 2):
            out = root/f"cache{w}"
            t0 = time.perf_counter(); c, qc = build_image_cache(df, out, size=size, data_root=root, num_workers=w, progress=False)
            res[w] = n / (time.perf_counter() - t0); assert len(c) == n and qc.total == 0
        print(f"[cache] {n} x 2500x3000 JPEG ({mb:.1f} MB each) -> shorter side {size}: 1 worker {res[1]:.1f} img/s/core, 2 workers "
              f"{res[2]:.1f} img/s ({res[2] / 2:.1f} per core); reference plain full decode {full:.1f} img/s/core -> {res[1] / full:.2f}x; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return {'cache_1': res[1], 'cache_2': res[2], 'full_decode': full}


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small sizes (smoke run)')
    ap.add_argument('--skip', default='', help='comma list of parts to skip: manifest,loader,cache')
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(',')))
    if 'manifest' not in skip: bench_manifest(*((20_000, 12_083) if a.quick else (377_110, 227_827)))
    if 'loader' not in skip: bench_decode_and_loader(64 if a.quick else 512)
    if 'cache' not in skip: bench_cache(4 if a.quick else 24)
