"""Patch-IB variant E (token dropping inside the ViT) against variant C (mask after the full ViT) at the same keep ratio.

Both run `PatchIBModel.encode_image` on the same random images with the same ViT-B/16 image tower (BiomedCLIP's,
random weights: nothing is downloaded). C runs every block on all 196 patch tokens and masks afterwards; E runs the
first `drop_after` blocks (default: half of them, the seed's drop point) on all tokens and the rest on the kept ones;
both also project their patches through the local-alignment head (`patch_proj`), E only the kept ones. The ideal speed-up is the ratio of their forward
FLOPs (torch's FlopCounterMode, the same run); the measured one is the ratio of their best wall times over
`--repeats` alternating runs (least disturbed on a shared machine). Target: measured >= 85 % of ideal (CPU, batch 8).

    OMP_NUM_THREADS=2 python benchmarks/patch_ib_bench.py                      # ViT-B/16, batch 8, keep 0.5 after block 6
    python benchmarks/patch_ib_bench.py --keep-ratio 0.25 --drop-after 3 --backbone tiny_vit --image-size 64
"""
import argparse, time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cxrlab.models import build_model, model_config
from cxrlab.patch_ib import PatchIBModel


def flops(model, x) -> float:
    "Forward FLOPs of encode_image; attention through the math kernel so that FlopCounterMode sees its matmuls."
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model.encode_image(x)
    return fc.get_total_flops()


def wall_time(model, x) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter(); model.encode_image(x)
        return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbone', default='biomedclip')
    ap.add_argument('--image-size', type=int, default=None)
    ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--keep-ratio', type=float, default=0.5)
    ap.add_argument('--drop-after', type=int, default=None, help='blocks before the drop (default: half)')
    ap.add_argument('--repeats', type=int, default=7)
    ap.add_argument('--threads', type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    cfg = model_config(a.backbone, **({'image_size': a.image_size} if a.image_size else {}))
    torch.manual_seed(0)
    dual = build_model(cfg).eval()
    C = PatchIBModel(dual, 'C', heads=0).eval()
    E = PatchIBModel(dual, 'E', heads=0, keep_ratio=a.keep_ratio, drop_after=a.drop_after).eval()
    S = cfg['image_size']
    x = torch.randn(a.batch_size, 3, S, S)
    fc, fe = flops(C, x[:1]), flops(E, x[:1])
    n_patches = dual.image_tower.grid[0] * dual.image_tower.grid[1]
    print(f"{a.backbone} ViT: {dual.image_tower.num_layers} blocks, {n_patches} patches, image {S}px, batch {a.batch_size}, "
          f"threads {torch.get_num_threads()}; E keeps {round(a.keep_ratio * n_patches)} tokens after block {E.drop_after}")
    for m in (C, E): wall_time(m, x)  # warm-up
    tc, te = [], []
    for _ in range(a.repeats):  # alternate so both see the same machine load
        tc.append(wall_time(C, x)); te.append(wall_time(E, x))
    ideal, measured = fc / fe, min(tc) / min(te)
    print(f"forward GFLOPs per image: C {fc / 1e9:.2f}, E {fe / 1e9:.2f}  -> ideal speed-up {ideal:.2f}x")
    print(f"best wall time per batch: C {1000 * min(tc):.1f} ms, E {1000 * min(te):.1f} ms  -> measured speed-up {measured:.2f}x "
          f"({a.batch_size / min(tc):.1f} vs {a.batch_size / min(te):.1f} images/s)")
    print(f"measured / ideal = {100 * measured / ideal:.1f} % (target >= 85 %)")


if __name__ == '__main__':
    main()
