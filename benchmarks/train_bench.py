"""Training-engine overhead: steps/s of `cxrlab.train.train` vs a bare PyTorch loop, same run, same model/data/optimizer.

Both loops use the same model weights at start, the same in-memory batches (DataLoader over pre-built tensors, so
loading costs the same in both), AdamW with the same parameter groups, the same warmup+cosine schedule, gradient
clipping and InfoNCE. The engine additionally runs through accelerate (device placement, autocast context,
look-ahead loader), checks for non-finite losses, and writes a per-step CSV log. Runs alternate (engine, bare,
engine, ...); on a shared machine the fastest run of each (least disturbed) is compared, and the median is shown
next to it. Target: overhead <= 5 %.

Next to the step rate it reports how fast the real data path (SynthCXR manifest → CXRDataset → transforms →
collate/tokenizer) delivers images, so one can see whether loading would be the bottleneck; and parameter counts
and forward FLOPs per image of the registry backbones (built with random weights; nothing is downloaded).

    OMP_NUM_THREADS=1 python benchmarks/train_bench.py                 # tiny backbone, CPU
    python benchmarks/train_bench.py --backbone rclip_mini --image-size 320 --batch-size 16 --steps 20
    python benchmarks/train_bench.py --model toy                       # engine overhead without cxrlab.models/data
"""
import argparse, copy, math, statistics, tempfile, time

import torch
from torch.utils.data import DataLoader, Dataset

from cxrlab.core import seed_everything, start_run
from cxrlab.train import InfoNCELoss, ToyDualEncoder, ToyPairs, TrainConfig, make_param_groups, make_scheduler, train


class TensorPairs(Dataset):
    "Pre-built batches' worth of tensors (images + token ids), so loading costs the same in both loops."
    def __init__(self, n, image_size, vocab, seq_len, channels=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, channels, image_size, image_size, generator=g)
        self.ids = torch.randint(1, vocab, (n, seq_len), generator=g)
    def __len__(self): return len(self.images)
    def __getitem__(self, i):
        return {'image': self.images[i], 'input_ids': self.ids[i], 'attention_mask': torch.ones_like(self.ids[i])}


def build_model(args):
    "(model, data) for the timed loops: cxrlab's toy dual encoder over vectors, or a registry backbone over tensors."
    n = args.batch_size * args.steps
    if args.model == 'toy':  # the toy of cxrlab.train (shared with the tests), widened so a step does real work
        return ToyDualEncoder(d_img=256, d_txt=256, dim=128, hidden=512, depth=4), ToyPairs(n, d_img=256, d_txt=256)
    from cxrlab.models import create_model
    b = create_model(args.backbone, pretrained=False)
    ids = b.tokenizer(['a chest radiograph'])['input_ids']
    vocab = getattr(b.tokenizer, 'vocab_size', None) or 1000
    return b.model, TensorPairs(n, args.image_size, min(int(vocab), 30000), ids.shape[1])


def bare_loop(model, data, cfg):
    "The reference: the same work written out by hand, no accelerate."
    loss_fn = InfoNCELoss()
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    groups = make_param_groups(model, cfg.lr, cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = make_scheduler(opt, len(loader), max(1, len(loader) // 20))
    model.train()
    t0 = time.perf_counter()
    for batch in loader:
        loss = loss_fn(model(batch), batch)['loss']
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step(); opt.zero_grad(set_to_none=True); sched.step()
        model.post_step()  # the temperature clamp, as the engine does
    return (time.perf_counter() - t0) / len(loader)


def engine_loop(model, data, cfg, out_dir, i):
    run = start_run({'bench': i}, out_dir=out_dir, run_name=f'engine{i}')
    res = train(model, InfoNCELoss(), data, None, cfg, run=run)
    return res['train_time_s'] / res['steps']


def loader_rate(args, batches=8):
    "Images/s of the real data path on SynthCXR (manifest → CXRDataset → transforms → collate), or None."
    from cxrlab.data import CXRDataset, build_manifest, make_collate, make_transforms
    from cxrlab.models import create_model
    try:
        df, _ = build_manifest('synth', n_patients=max(64, args.batch_size * batches), image_size=args.image_size)
    except ImportError as e:  # cxrlab.synth not installed
        print(f"loader: skipped, no SynthCXR ({e})"); return None
    df = df[df['split'] == 'train']
    bundle = create_model(args.backbone, pretrained=False)
    ds = CXRDataset(df, transform=make_transforms(args.backbone, train=True, image_size=args.image_size))
    dl = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                    collate_fn=make_collate(bundle.tokenizer), drop_last=True)
    n, t0 = 0, time.perf_counter()
    for j, b in enumerate(dl):
        if j == 0: n, t0 = 0, time.perf_counter()  # exclude worker start-up
        else: n += len(b['image'])
        if j == batches: break
    return n / (time.perf_counter() - t0) if n else None


def flops_table(names):
    "Parameters and forward FLOPs per image/report from cxrlab.models.profile_model (random weights, full size)."
    from cxrlab.models import profile_model
    for name in names:
        p = profile_model(name)
        print(f"  {name:12s} params {p['params_M']:7.2f} M (image {p['image_params_M']:.2f} M, text {p['text_params_M']:.2f} M)  "
              f"image {p['image_size']}px: {p['image_GFLOPs']:7.2f} GFLOP/image   text {p['text_length']} tokens: "
              f"{p['text_GFLOPs']:6.2f} GFLOP/report")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', choices=['registry', 'toy'], default='registry')
    ap.add_argument('--backbone', default='tiny')
    ap.add_argument('--image-size', type=int, default=64)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--steps', type=int, default=40, help='optimizer steps per timed run')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--num-workers', type=int, default=0)
    ap.add_argument('--flops', default='rclip_mini,biomedclip', help='backbones for the params/FLOPs table ("" = skip)')
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model0, data = build_model(args)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, grad_clip=1.0, warmup_ratio=0.05, device='cpu',
                      precision='fp32', progress=False, restore_best=False, save_checkpoints=False)
    print(f"model {args.model}:{args.backbone}  params {sum(p.numel() for p in model0.parameters()) / 1e6:.2f} M  "
          f"batch {args.batch_size}  image {args.image_size}  steps {args.steps}  threads {torch.get_num_threads()}")
    out = tempfile.mkdtemp()
    engine, bare = [], []
    for i in range(args.repeats + 1):  # the first pair warms up caches and is not counted
        e = engine_loop(copy.deepcopy(model0), data, cfg, out, i)
        seed_everything(0)
        b = bare_loop(copy.deepcopy(model0), data, cfg)
        if i: engine.append(e); bare.append(b)
        print(f"  run {i}{' (warm-up)' if not i else ''}: engine {1 / e:7.2f} steps/s   bare {1 / b:7.2f} steps/s")
    e, b = min(engine), min(bare)
    em, bm = statistics.median(engine), statistics.median(bare)
    print(f"engine {1 / e:.2f} steps/s ({args.batch_size / e:.1f} img/s), bare loop {1 / b:.2f} steps/s "
          f"({args.batch_size / b:.1f} img/s): engine overhead {100 * (e / b - 1):+.1f} % = {1000 * (e - b):+.2f} ms/step "
          f"(fastest runs; medians: {100 * (em / bm - 1):+.1f} %) (target <= 5 %)")
    if args.model == 'registry':
        rate = loader_rate(args)
        if rate: print(f"loader (SynthCXR → CXRDataset → transforms → collate, {args.num_workers} workers): {rate:.1f} img/s "
                       f"= {rate / (args.batch_size / e):.1f}× the training step's consumption")
        if args.flops:
            print("parameters and forward FLOPs per image (random weights, nothing downloaded):")
            flops_table([n for n in args.flops.split(',') if n])


if __name__ == '__main__':
    main()
