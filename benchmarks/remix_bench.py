"""ReMiX's sentence chunks: one batched text-tower forward over every real chunk of a batch (`cxrlab.remix.encode_chunks`)
against a Python loop over samples (one forward per report's chunks), and the padded forward that runs the tower on
padding too; plus the cost of one training step per loss combo relative to ig_tg (CLIP), in the same run.

    python benchmarks/remix_bench.py                       # tiny backbone, batch 32 x 16 chunk slots, 128 px
    python benchmarks/remix_bench.py --quick               # seconds
    python benchmarks/remix_bench.py --recipe              # cxrlab's recipe vs the seed's: sentence-query R@10 (minutes)

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


def recipe_comparison(a):
    "cxrlab's ReMiX recipe against the seed's (v2 + shared MLM + fixed-count chunks): sentence-query R@10, ig_tg vs a text-local combo."
    from cxrlab.evaluate import mean_ci, run_embeddings
    from cxrlab.metrics import recall_at_k
    from cxrlab.remix import resolve_remix_options, sentence_query_ranks, setup_remix
    from cxrlab.train import load_run
    setting = dict(n_patients=a.patients, epochs=a.epochs, image_size=a.image_size, batch_size=32, device='cpu', precision='fp32',
                   seed=0, section='findings', out_dir=a.out)
    print(f"SynthCXR {a.patients} patients, {a.image_size} px, tiny backbone from scratch, {a.epochs} epochs, batch 32, cxrlab's tiny "
          f"optimiser settings for both recipes (the seed's lr 1e-5 is for pretrained towers); test split, {a.resamples} patient resamples")
    hits, groups = {}, None
    for recipe in ('cxrlab', 'seed'):
        ro = resolve_remix_options(None if recipe == 'cxrlab' else recipe, {})
        for combo in ('ig_tg', a.local_combo):
            t0 = time.time()
            exp = setup_remix({'loss_combo': combo, 'mlm_probability': ro['mlm_probability'], 'mlm_shared_pass': ro['mlm_shared_pass']},
                              {'loss_form': ro['loss_form'], 'mlm_weight': ro['mlm_weight']}, max_chunks=ro['max_chunks'],
                              chunking=ro['chunking'], num_chunks=ro['num_chunks'], run_name=f'{recipe}-{combo}', **setting)
            exp.fit()
            rows = exp.manifest[exp.manifest['split'] == 'test'].reset_index(drop=True)
            lr = load_run(exp.run.dir)
            es = run_embeddings(lr, rows, 'test', 64, 'cpu', 'fp32', progress=False)
            rr, _, g, _ = sentence_query_ranks(lr.scorer(), lr.model, lr.tokenizer, es, rows)
            hits[(recipe, combo)], groups = recall_at_k(rr, 10), g
            print(f"  trained {recipe} {combo} in {time.time() - t0:.0f} s", flush=True)
    fmt = lambda r, k: f"{r[k]:.3f} [{r[k + '_ci_low']:.3f}, {r[k + '_ci_high']:.3f}]"
    print(f"\nsentence-query R@10 ({len(groups)} queries, chance-level depends on the number of relevant images)")
    for (recipe, combo), h in hits.items():
        print(f"  {recipe:7s} {combo:8s} {fmt(mean_ci({'R@10': h}, groups, a.resamples), 'R@10')}")
    for recipe in ('cxrlab', 'seed'):
        d = mean_ci({'d': hits[(recipe, a.local_combo)] - hits[(recipe, 'ig_tg')]}, groups, a.resamples)
        print(f"  {recipe:7s} {a.local_combo} − ig_tg: {fmt(d, 'd')}")
    for combo in ('ig_tg', a.local_combo):
        d = mean_ci({'d': hits[('seed', combo)] - hits[('cxrlab', combo)]}, groups, a.resamples)
        print(f"  {combo:8s} seed − cxrlab recipe: {fmt(d, 'd')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--chunks', type=int, default=16)
    ap.add_argument('--image-size', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--quick', action='store_true', help='batch 8, 2 repeats')
    ap.add_argument('--recipe', action='store_true', help="train cxrlab's and the seed's recipe, compare sentence-query R@10")
    ap.add_argument('--patients', type=int, default=800)
    ap.add_argument('--epochs', type=int, default=4)
    ap.add_argument('--local-combo', default='igl_tgl')
    ap.add_argument('--resamples', type=int, default=1000)
    ap.add_argument('--out', default='/tmp/remix_recipe_runs')
    a = ap.parse_args(argv)
    if a.recipe: a.image_size = 64 if a.image_size == 128 else a.image_size; torch.set_num_threads(1); return recipe_comparison(a)
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
