"""Training step time under bf16 autocast vs fp32 on this CPU, for the `tiny` and `demo` backbones, in one run.

Each step is forward + symmetric InfoNCE + backward + AdamW on a fixed random batch (images at `--image-size`, real
SynthCXR-style report lengths). fp32 and bf16 steps alternate (ABAB...) so that load on a shared machine hits both alike;
the ratio is median(bf16) / median(fp32) with a bootstrap 95% CI over steps. `cxrlab.core.cpu_bf16_native()` says whether
this CPU computes bf16 natively (where `precision='auto'` picks bf16).

    OMP_NUM_THREADS=1 python benchmarks/bf16_bench.py --steps 6 --image-size 128 --batch-size 32
"""
import argparse, json, platform, time, warnings

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.core import autocast, cpu_bf16_native
from cxrlab.models import create_model

REPORT = ('The cardiomediastinal silhouette is normal. There is a small left pleural effusion with adjacent '
          'atelectasis at the left lung base. No pneumothorax. Mild cardiomegaly.')


def step_fn(bundle, batch, opt, precision):
    model = bundle.model.train()
    def step():
        with autocast('cpu', precision):
            out = model(batch)
            logits = out['logit_scale'] * out['image_embeds'] @ out['text_embeds'].float().T
            t = torch.arange(logits.shape[0])
            loss = (F.cross_entropy(logits.float(), t) + F.cross_entropy(logits.float().T, t)) / 2
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def bench(name, a):
    torch.manual_seed(0)
    words = REPORT.split()
    texts = [' '.join(words[i % 7:] + words[:i % 7]) for i in range(a.batch_size)]
    b = create_model(name, corpus=texts * 2, image_size=a.image_size)
    batch = dict(image=torch.randn(a.batch_size, 3, a.image_size, a.image_size), **b.tokenizer(texts))
    opt = torch.optim.AdamW(b.model.parameters(), lr=1e-4)
    steps = {p: step_fn(b, batch, opt, p) for p in ('fp32', 'bf16')}
    for p in steps: steps[p]()  # warm-up (allocations, oneDNN kernel selection)
    times = {'fp32': [], 'bf16': []}
    for _ in range(a.steps):
        for p in ('fp32', 'bf16'):
            t0 = time.perf_counter(); steps[p](); times[p].append(time.perf_counter() - t0)
    f, h = np.array(times['fp32']), np.array(times['bf16'])
    rng = np.random.default_rng(0)
    boot = [np.median(rng.choice(h, len(h))) / np.median(rng.choice(f, len(f))) for _ in range(2000)]
    return dict(backbone=name, image_size=a.image_size, batch_size=a.batch_size, steps=a.steps,
                fp32_s=float(np.median(f)), bf16_s=float(np.median(h)), ratio_bf16_over_fp32=float(np.median(h) / np.median(f)),
                ratio_ci=[float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))])


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--backbones', default='tiny,demo')
    p.add_argument('--steps', type=int, default=6)
    p.add_argument('--image-size', type=int, default=128)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads); warnings.simplefilter('ignore')
    info = dict(cpu=platform.processor() or platform.machine(), torch=torch.__version__, threads=a.threads,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu_bf16_native=cpu_bf16_native())
    print(json.dumps(info), flush=True)
    for name in a.backbones.split(','):
        print(json.dumps(bench(name, a)), flush=True)
