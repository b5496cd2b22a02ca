"""GPU smoke benchmark: every method stage on this checkout, a fixed number of training steps at the `gpu` profile's sizes.

Each stage (the `clip` baseline, Patch-IB Models A-E, and whatever else registers in cxrlab.models.METHOD_MODULES;
missing modules are skipped with a line) is built by `setup_experiment` exactly as its notebook builds it, on
BiomedCLIP-sized towers (ViT-B/16 at 224 px + a BERT-base text tower, random weights: nothing is downloaded), and
trained for `--steps` optimizer steps on one fixed SynthCXR batch of 64 already on the device, in bf16 autocast
(fp16 + gradient scaler where the GPU has no bf16 tensor cores). It prints per stage:

* images/s (median step time over the timed steps, after `--warmup` steps) and peak device memory;
* training GFLOPs per image, counted by torch's FlopCounterMode over one forward + backward of the same batch;
* the achieved TFLOP/s as a share of the device's datasheet dense bf16/fp16 peak (table below, or --peak-tflops) and
  of a large matmul measured on the same device in the same run (the practical ceiling; also what CPU runs compare to).

Data loading is not timed: this measures the model step. On a CPU the script runs a tiny version (tiny_vit towers at
64 px, batch 8, 3 steps) and says so; its numbers say that every stage runs, not how fast a GPU is.

    python benchmarks/gpu_smoke.py                       # GPU: ViT-B/16 + BERT-base, batch 64, 20 steps per stage
    python benchmarks/gpu_smoke.py --stages clip,patch_ib:E --steps 50 --compile true
    python benchmarks/gpu_smoke.py --device cpu          # the tiny CPU version
"""
from __future__ import annotations

import argparse, contextlib, gc, math, os, statistics, sys, tempfile, time, warnings

import torch

# dense (no sparsity) tensor-core peaks from the vendors' datasheets, TFLOP/s: name fragment -> {precision: peak}
DEVICE_PEAKS = [
    ('B200', {'bf16': 2250, 'fp16': 2250}), ('H200', {'bf16': 989, 'fp16': 989}), ('GH200', {'bf16': 989, 'fp16': 989}),
    ('H100 PCIe', {'bf16': 756, 'fp16': 756}), ('H100 NVL', {'bf16': 835, 'fp16': 835}), ('H100', {'bf16': 989, 'fp16': 989}),
    ('A100', {'bf16': 312, 'fp16': 312}), ('A800', {'bf16': 312, 'fp16': 312}), ('L40S', {'bf16': 362, 'fp16': 362}),
    ('L40', {'bf16': 181, 'fp16': 181}), ('L4', {'bf16': 121, 'fp16': 121}), ('A10', {'bf16': 125, 'fp16': 125}),
    ('RTX 6000 Ada', {'bf16': 364, 'fp16': 364}), ('RTX A6000', {'bf16': 155, 'fp16': 155}),
    ('RTX 4090', {'bf16': 165, 'fp16': 165}), ('RTX 3090', {'bf16': 71, 'fp16': 71}),
    ('V100', {'fp16': 125}), ('T4', {'fp16': 65}), ('P100', {'fp16': 19}),
    ('MI300X', {'bf16': 1307, 'fp16': 1307}), ('MI250X', {'bf16': 383, 'fp16': 383}),
]


def datasheet_peak(device: torch.device, precision: str) -> float | None:
    "Datasheet dense peak TFLOP/s of `device` in `precision` (None when unknown)."
    if device.type != 'cuda' or precision == 'fp32':
        return None
    name = torch.cuda.get_device_name(device)
    return next((p.get(precision) for frag, p in DEVICE_PEAKS if frag in name), None)


def sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str, n: int, repeats: int = 5) -> float:
    "Best TFLOP/s of an n x n matmul in `precision` on `device` (the practical ceiling, same run)."
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}[precision]
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b; sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter(); a @ b; sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12


def discover_stages(wanted: set[str] | None) -> tuple[list[tuple[str, dict]], list[str]]:
    "[(method, model options)] for every registered method stage, and a line per stage that is not on this checkout."
    from cxrlab.models import METHOD_MODULES, get_method
    stages, skipped = [], []
    for name, module in METHOD_MODULES.items():
        try:
            method = get_method(name)
        except KeyError as e:
            skipped.append(f"skip {name}: {e.args[0] if e.args else e}")
            continue
        if name == 'patch_ib':
            from cxrlab.patch_ib import VARIANTS
            stages += [(name, {'variant': v}) for v in sorted(VARIANTS)]
        else:
            stages.append((name, {}))
    label = lambda s: s[0] + (f":{s[1]['variant']}" if 'variant' in s[1] else '')
    if wanted:
        unknown = wanted - {label(s) for s in stages} - {s[0] for s in stages}
        if unknown:
            skipped += [f"skip {u}: not a registered stage here" for u in sorted(unknown)]
        stages = [s for s in stages if label(s) in wanted or s[0] in wanted]
    return [(label(s), s[0], s[1]) for s in stages], skipped


def fixed_batch(exp, batch_size: int, device: torch.device) -> dict:
    "One training batch of `batch_size` samples (the split's rows, repeated if it has fewer) on `device`."
    from cxrlab.train import to_device
    ds = exp.datasets['train']
    if len(ds) == 0:
        raise ValueError('the training split is empty')
    return to_device(exp.collate([ds[i % len(ds)] for i in range(batch_size)]), device)


def count_train_flops(step_module, batch) -> float:
    "FLOPs of one forward + backward of `step_module` on `batch` (attention through the math kernel so it is counted)."
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            _, terms = step_module(batch)
            terms['loss'].backward()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    step_module.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def run_stage(label, method, options, a, device, precision, out_dir) -> dict:
    "Build one stage as its notebook does, then time `a.steps` optimizer steps on a fixed batch."
    from cxrlab.core import autocast, maybe_compile, to_channels_last, use_channels_last
    from cxrlab.train import TrainProgress, TrainStep, make_param_groups, set_progress, setup_experiment
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # random-init BERT towers fall back to the BPE vocabulary (same compute)
        exp = setup_experiment(method, prefix=f'smoke-{label.replace(":", "-")}', model_options=options,
                               backbone=a.backbone, image_size=a.image_size, n_patients=a.n_patients,
                               device=str(device), precision=precision, batch_size=a.batch_size, epochs=1,
                               out_dir=out_dir, progress=False, save_checkpoints=False)
    model, loss_fn = exp.model.to(device), exp.loss.to(device)
    channels_last = use_channels_last(model, device, precision, a.channels_last)
    if channels_last:
        to_channels_last(model)
    step_module = TrainStep(model, loss_fn).train()
    groups = make_param_groups(step_module, 1e-5, 0.1, 10.)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != 'param_names'} for g in groups], lr=1e-5,
                            **({'fused': True} if device.type == 'cuda' else {}))
    scaler = torch.amp.GradScaler(device.type) if precision == 'fp16' else None
    post = [m.post_step for m in model.modules() if callable(getattr(m, 'post_step', None))]
    batch = fixed_batch(exp, a.batch_size, device)
    tokens = int(batch['input_ids'].shape[1]) if 'input_ids' in batch else 0
    total = 1000  # progress mid-run: every scheduled loss term is on
    set_progress(step_module, TrainProgress(total // 2, 0, total, total))
    with autocast(device, precision):
        flops = count_train_flops(step_module, batch) / a.batch_size
    runner = maybe_compile(step_module, a.compile)

    def step(i):
        set_progress(step_module, TrainProgress(total // 2 + i, 0, total, total))
        with autocast(device, precision):
            _, terms = runner(batch)
        if scaler is not None:
            scaler.scale(terms['loss']).backward(); scaler.step(opt); scaler.update()
        else:
            terms['loss'].backward(); opt.step()
        opt.zero_grad(set_to_none=True)
        for fn in post: fn()
        return terms['loss']

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(a.warmup):
        step(i)
    sync(device)
    times = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        loss = step(a.warmup + i)
        sync(device)
        times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss.detach().float()):
        raise FloatingPointError(f'{label}: the loss became {float(loss)}')
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:  # the process's high-water mark (Linux reports KiB)
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    t = statistics.median(times)
    res = dict(stage=label, images_per_s=a.batch_size / t, step_ms=1000 * t, peak_gib=peak, train_gflops=flops / 1e9,
               tflops=flops * a.batch_size / t / 1e12, tokens=tokens, channels_last=channels_last,
               params_M=sum(p.numel() for p in model.parameters()) / 1e6)
    del exp, model, loss_fn, step_module, runner, opt, batch
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='auto', help='auto | cuda | cuda:N | cpu')
    ap.add_argument('--precision', default='auto', help='auto (bf16 where native, else fp16) | bf16 | fp16 | fp32')
    ap.add_argument('--stages', default=None, help='comma-separated, e.g. clip,patch_ib:C (default: every stage)')
    ap.add_argument('--steps', type=int, default=None, help='timed optimizer steps per stage (GPU 20, CPU 3)')
    ap.add_argument('--warmup', type=int, default=None, help='untimed steps first (GPU 3, CPU 1)')
    ap.add_argument('--batch-size', type=int, default=None, help='GPU 64, CPU 8')
    ap.add_argument('--backbone', default=None, help='GPU biomedclip (ViT-B/16 + BERT-base), CPU tiny_vit')
    ap.add_argument('--image-size', type=int, default=None, help="GPU: the gpu profile's (224), CPU 64")
    ap.add_argument('--n-patients', type=int, default=None, help='SynthCXR patients to draw the batch from')
    ap.add_argument('--compile', default='false', help='torch.compile mode: false | true | max-autotune | ...')
    ap.add_argument('--channels-last', default='auto')
    ap.add_argument('--peak-tflops', type=float, default=None, help='the device peak to compare with (overrides the table)')
    ap.add_argument('--out-dir', default=None, help='run folders of the stages (default: a temporary folder)')
    a = ap.parse_args(argv)
    from cxrlab.core import get_device, get_precision
    from cxrlab.report import PROFILES
    device = get_device(a.device)
    precision = get_precision(a.precision, device)
    gpu = device.type == 'cuda'
    a.steps = a.steps or (20 if gpu else 3)
    a.warmup = a.warmup if a.warmup is not None else (3 if gpu else 1)
    a.batch_size = a.batch_size or (64 if gpu else 8)
    a.backbone = a.backbone or ('biomedclip' if gpu else 'tiny_vit')
    a.image_size = a.image_size or (PROFILES['gpu']['image_size'] if gpu else 64)
    a.n_patients = a.n_patients or (64 if gpu else 24)
    if gpu:
        name = torch.cuda.get_device_name(device)
        cap = '.'.join(map(str, torch.cuda.get_device_capability(device)))
        print(f"device: {name} (compute capability {cap}, {torch.cuda.get_device_properties(device).total_memory / 2 ** 30:.0f} GiB), "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"device: CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch {torch.__version__}")
        print("NO GPU: this is the tiny CPU version (it shows that every stage runs; GPU throughput needs a GPU: "
              "python benchmarks/gpu_smoke.py on a CUDA machine)")
    peak = a.peak_tflops or datasheet_peak(device, precision)
    ceiling = matmul_peak(device, precision, 8192 if gpu else 1024)
    print(f"precision {precision}; backbone {a.backbone} (random weights) at {a.image_size} px, batch {a.batch_size}, "
          f"{a.warmup} warm-up + {a.steps} timed steps per stage, compile={a.compile}, channels_last={a.channels_last}")
    print(f"peak: datasheet {f'{peak:.0f} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}; "
          f"measured {8192 if gpu else 1024}^2 matmul {ceiling:.2f} TFLOP/s (same run)")
    stages, skipped = discover_stages(set(a.stages.split(',')) if a.stages else None)
    for line in skipped:
        print(line)
    rows, t_start = [], time.time()
    with contextlib.ExitStack() as stack:
        out_dir = a.out_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix='gpu-smoke-'))
        for label, method, options in stages:
            try:
                rows.append(run_stage(label, method, options, a, device, precision, out_dir))
                r = rows[-1]
                print(f"  {label}: {r['images_per_s']:.1f} images/s", flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"  {label}: out of memory at batch {a.batch_size} (try --batch-size {a.batch_size // 2})")
                torch.cuda.empty_cache()
    mem = 'peak GiB' if gpu else 'max RSS GiB'
    head = f"| stage | params M | tokens | images/s | step ms | {mem} | train GFLOPs/img | TFLOP/s | % datasheet peak | % matmul |"
    print('\n' + head + '\n' + '|---' * (head.count('|') - 1) + '|')
    for r in rows:
        pct = f"{100 * r['tflops'] / peak:.1f}" if peak else 'n/a'
        print(f"| {r['stage']} | {r['params_M']:.0f} | {r['tokens']} | {r['images_per_s']:.1f} | {r['step_ms']:.1f} | "
              f"{r['peak_gib']:.2f} | {r['train_gflops']:.1f} | {r['tflops']:.2f} | {pct} | {100 * r['tflops'] / ceiling:.1f} |")
    print(f"\n{len(rows)} stages in {time.time() - t_start:.0f} s. Train FLOPs = forward + backward of one step "
          f"(FlopCounterMode); % = achieved TFLOP/s over the peak. The machine may be shared: step times are medians.")
    return rows


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
