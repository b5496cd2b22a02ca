"""SynthCXR throughput: images/s with masks and reports written to disk, at 224 and 512, one process and all cores,
against PNG-encoding the same images (measured in the same run). Images counted are all images written: the
manifest's and the test split's counterfactuals (contrast.jsonl).

    python benchmarks/synth_bench.py [--patients 150] [--sizes 224,512] [--workers N]

Prints, per size: generator images/s (1 process: wall clock and per CPU-second of this process, which is robust to
other jobs sharing the machine; N processes and the scaling), PNG-encode-only images/s for the same images, and the
ratio generator / PNG-encode (1.0 = generating an image with its mask and report costs as much as PNG-encoding it).
The machine's load average is printed because wall-clock numbers on a shared machine understate per-core speed.
"""
import argparse, io, json, os, resource, shutil, tempfile, time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
from PIL import Image

from cxrlab import synth as S


def bench_generate(out: Path, n_patients: int, size: int, workers: int) -> tuple[float, float, int]:
    "Wall time, this process' CPU time and image count of generate_synthcxr (render + masks + reports + PNG writes + manifest)."
    if out.exists(): shutil.rmtree(out)
    S._vessel_bank(); S._field_bank(); S._noise_bank()  # one-off bank construction excluded (cached per process)
    cpu = lambda: time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    t, c = time.perf_counter(), cpu()
    m = S.generate_synthcxr(out, n_patients=n_patients, image_size=size, seed=0, num_workers=workers, progress=False)
    n = sum(1 for _ in open(m)) + sum(1 for _ in open(m.parent / 'contrast.jsonl'))
    return time.perf_counter() - t, cpu() - c, n


def bench_png(out: Path, compress: int) -> tuple[float, float, int]:
    "Wall and CPU time to PNG-encode the already generated images (decoded into memory first), same compression level."
    imgs = [np.asarray(Image.open(p)) for p in sorted(out.rglob('*.png')) if 'masks' not in p.relative_to(out).parts]
    t, c = time.perf_counter(), time.process_time()
    for a in imgs:
        buf = io.BytesIO(); Image.fromarray(a).save(buf, format='PNG', compress_level=compress)
    return time.perf_counter() - t, time.process_time() - c, len(imgs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--patients', type=int, default=150)
    ap.add_argument('--sizes', default='224,512')
    ap.add_argument('--workers', type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size in (int(s) for s in args.sizes.split(',')):
            t1, c1, n1 = bench_generate(Path(d) / f's{size}', args.patients, size, 1)
            tp, cp, npng = bench_png(Path(d) / f's{size}', S.DEFAULT_CONFIG['png_compress'])
            tn, cn, nn = bench_generate(Path(d) / f'm{size}', args.patients, size, args.workers)
            r = dict(size=size, images=n1, gen_1proc_img_s=n1 / t1, gen_1proc_img_per_cpu_s=n1 / c1, gen_nproc_img_s=nn / tn, gen_nproc_img_per_cpu_s=nn / cn,
                     workers=args.workers, scaling=(nn / tn) / (n1 / t1), png_encode_img_s=npng / tp,
                     png_encode_img_per_cpu_s=npng / cp, ratio_gen_to_png=(n1 / t1) / (npng / tp),
                     load_avg_1min=os.getloadavg()[0], cpus=os.cpu_count())
            rows.append(r)
            print(f"{size:4d}px  {n1} images | generate 1 proc {r['gen_1proc_img_s']:7.1f} img/s wall, "
                  f"{r['gen_1proc_img_per_cpu_s']:7.1f} img per CPU-second | {args.workers} procs {r['gen_nproc_img_s']:7.1f} img/s "
                  f"(x{r['scaling']:.2f}; {r['gen_nproc_img_per_cpu_s']:.1f} per CPU-s incl. workers) | PNG-encode only {r['png_encode_img_s']:7.1f} img/s wall, "
                  f"{r['png_encode_img_per_cpu_s']:7.1f} per CPU-s | generate/PNG ratio {r['ratio_gen_to_png']:.3f} "
                  f"| load avg {r['load_avg_1min']:.1f} on {r['cpus']} CPUs", flush=True)
    print(json.dumps(rows, indent=1))
    return rows


if __name__ == '__main__':
    main()
