"""ReMiX's sentence chunks: one batched text-tower forward over every real chunk of a batch (`cxrlab.remix.encode_chunks`)
against a Python loop over samples (one forward per report's chunks), and the padded forward that runs the tower on
padding too; plus the cost of one training step per loss combo relative to ig_tg (CLIP), in the same run.

    python benchmarks/remix_bench.py                       # tiny backbone, batch 32 x 16 chunk slots, 128 px
    python benchmarks/remix_bench.py --quick               # seconds

Times are process CPU time (the machine is shared; wall time is noisy) over `--repeats` repetitions, best of 3;
ratios are to the batched forward / to ig_tg measured in this run. The loop and the padded forward give the same
embeddings as the batched one (checked before timing).
"""
import argparse, time

import torch
import torch.nn.functional as F

from cxrlab.models import create_model
from cxrlab.remix import LOSS_COMBOS, ReMiXLoss, ReMiXModel, encode_chunks

SENTENCES = ['Small left pleural effusion.', 'No pneumothorax.', 'Heart size is normal.', 'There is a 1.2 cm nodule in the right upper lobe.',
             'Mild bibasilar atelectasis.', 'The endotracheal tube tip is 4 cm above the carina.', 'Lungs are otherwise clear.']


def cpu_time(fn, repeats):
    best = float('inf')
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(repeats): fn()
        best = min(best, (time.process_time() - t0) / repeats)
    return best


def make_batch(tokenizer, B, S, gen, image_size):
    n = torch.randint(3, S // 2 + 1, (B,), generator=gen)  # real chunks per report: a typical section fills a third of the slots
    texts = [[SENTENCES[int(i)] for i in torch.randint(0, len(SENTENCES), (int(k),), generator=gen)] + [''] * (S - int(k)) for k in n]
    tok = tokenizer([t for ts in texts for t in ts])
    mask = torch.tensor([[t != '' for t in ts] for ts in texts])
    reports = tokenizer([' '.join(t for t in ts if t) for ts in texts])
    return {'image': torch.randn(B, 3, image_size, image_size, generator=gen), 'input_ids': reports['input_ids'],
            'attention_mask': reports['attention_mask'], 'sentences_input_ids': tok['input_ids'].view(B, S, -1),
            'sentences_attention_mask': tok['attention_mask'].view(B, S, -1), 'sentence_mask': mask}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--chunks', type=int, default=16)
    ap.add_argument('--image-size', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--quick', action='store_true', help='batch 8, 2 repeats')
    a = ap.parse_args(argv)
    if a.quick: a.batch_size, a.repeats = 8, 2
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    bundle = create_model('tiny')
    dual = bundle.model.eval()
    b = make_batch(bundle.tokenizer, a.batch_size, a.chunks, gen, a.image_size)
    ids, am, cm = b['sentences_input_ids'], b['sentences_attention_mask'], b['sentence_mask']

    def batched(): return encode_chunks(dual.encode_text, ids, am, cm, 128)[0]
    def loop():  # one forward per report over its real chunks
        out = torch.zeros(*cm.shape, 128)
        for i in range(len(cm)):
            keep = cm[i].nonzero().flatten()
            L = int(am[i, keep].sum(1).max())
            out[i, keep] = dual.encode_text(ids[i, keep, :L], am[i, keep, :L])['embeds']
        return out
    def padded():  # every slot, padding included, in one forward
        return dual.encode_text(ids.flatten(0, 1), am.flatten(0, 1))['embeds'].view(*cm.shape, -1) * cm[..., None]
    with torch.no_grad():
        ref = batched()
        for name, fn in (('loop', loop), ('padded', padded)):
            err = (fn() - ref).abs().max().item()
            assert err < 1e-5, f'{name} disagrees with the batched forward by {err}'
        t = {name: cpu_time(fn, a.repeats) for name, fn in (('batched', batched), ('loop', loop), ('padded', padded))}
    real = int(cm.sum())
    print(f"{a.batch_size} reports x {a.chunks} chunk slots ({real} real chunks, {cm.numel() - real} padded); tiny text tower, "
          f"CPU time per batch, best of 3 x {a.repeats}")
    print(f"{'chunk encoding':40s} {'ms':>8s} {'x batched':>10s}")
    for name, label in (('batched', 'batched real chunks (encode_chunks)'), ('loop', 'loop over reports'), ('padded', 'all slots incl. padding')):
        print(f"{label:40s} {1e3 * t[name]:8.1f} {t[name] / t['batched']:10.2f}")

    print(f"\ntraining step (forward + backward), {a.image_size} px images")
    print(f"{'loss_combo':12s} {'ms':>8s} {'x ig_tg':>8s}")
    times = {}
    for combo in LOSS_COMBOS:
        model, loss = ReMiXModel(dual, combo).train(), ReMiXLoss()
        def step():
            l = loss(model(b))['loss']; l.backward(); model.zero_grad(set_to_none=True)
        times[combo] = cpu_time(step, a.repeats)
        print(f"{combo:12s} {1e3 * times[combo]:8.1f} {times[combo] / times['ig_tg']:8.2f}")


if __name__ == '__main__':
    main()
