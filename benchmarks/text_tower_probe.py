"""How fast each candidate text tower learns at the demo's learning rate, with the image side taken out.

The "image" of a study is a learnable linear embedding of its 14 CheXpert labels (the label-only oracle's information),
so the probe measures only whether a text tower can learn to read the findings from the report at lr 1e-3 (AdamW,
cosine with 10% warmup, grad clip 1, batch 64), the `tiny` preset the demo trains with. Reported: validation InfoNCE
loss (batch 64, chance = ln 64 = 4.16) after each epoch, and report->label-embedding R@10 on the validation split
where every study with the same label vector counts as relevant.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/text_tower_probe.py --n-patients 800 --epochs 4
"""
import argparse, copy, json, math, time, warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cxrlab.core import CHEXPERT_LABELS
from cxrlab.data import build_manifest
from cxrlab.models import MODEL_CONFIGS, build_model, create_model
from cxrlab.train import WarmupCosine


def arms() -> dict:
    demo, tiny = MODEL_CONFIGS['demo'], MODEL_CONFIGS['tiny']
    clip_mean = dict(kind='clip_text', vocab_size=4096, width=256, heads=4, layers=2, pool='mean')
    return {'bert_mean_wp': (demo['text'], demo['tokenizer']),  # demo as first registered (post-LN BERT)
            'clip_mean_wp': (clip_mean, demo['tokenizer']),  # pre-LN transformer, same vocabulary and pooling
            'bow_wp': (dict(kind='bow', vocab_size=4096, width=256, proj='linear'), demo['tokenizer']),
            'tiny_text': (tiny['text'], tiny['tokenizer'])}  # CLIP BPE 49k, EOT pooling


def label_matrix(rows) -> torch.Tensor:
    v = rows[CHEXPERT_LABELS].to_numpy(dtype=float)
    return torch.tensor(np.nan_to_num(v, nan=0.0), dtype=torch.float32)  # 1 / 0 / -1 (uncertain) / 0 (unmentioned)


def run(name, text, tok, man, a):
    cfg = copy.deepcopy(MODEL_CONFIGS['demo']); cfg['text'], cfg['tokenizer'] = copy.deepcopy(text), copy.deepcopy(tok)
    MODEL_CONFIGS['probe_' + name] = cfg
    tr, va = man[man.split == 'train'], man[man.split == 'validate']
    torch.manual_seed(a.seed)
    b = create_model('probe_' + name, corpus=tr['report'].tolist())
    text_tower = b.model.text_tower
    label_side = nn.Sequential(nn.Linear(14 * 3, 256), nn.ReLU(), nn.Linear(256, cfg['embed_dim']))
    scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(text_tower.parameters()) + list(label_side.parameters()) + [scale]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-6)
    per_epoch = len(tr) // a.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(per_epoch * a.epochs, int(0.1 * per_epoch * a.epochs)))
    def onehot(L): return torch.cat([(L == 1).float(), (L == 0).float(), (L == -1).float()], 1)
    def enc(rows):
        e = b.tokenizer(rows['report'].tolist())
        return F.normalize(text_tower(e['input_ids'], e['attention_mask'])['global'], dim=-1)
    def lab(rows): return F.normalize(label_side(onehot(label_matrix(rows))), dim=-1)
    hist, t0 = [], time.time()
    g = np.random.default_rng(a.seed)
    for ep in range(a.epochs):
        text_tower.train()
        order = g.permutation(len(tr))
        for s in range(per_epoch):
            rows = tr.iloc[order[s * a.batch_size:(s + 1) * a.batch_size]]
            logits = scale.exp().clamp(max=100) * enc(rows) @ lab(rows).T
            t = torch.arange(len(rows))
            loss = (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2
            opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step()
        text_tower.eval()
        with torch.no_grad():
            vl = []
            for s in range(len(va) // a.batch_size):
                rows = va.iloc[s * a.batch_size:(s + 1) * a.batch_size]
                logits = scale.exp().clamp(max=100) * enc(rows) @ lab(rows).T; t = torch.arange(len(rows))
                vl.append(((F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2).item())
            T, Lb = enc(va), lab(va)
            key = [tuple(r) for r in label_matrix(va).tolist()]
            rel = torch.tensor([[ki == kj for kj in key] for ki in key])
            top = (T @ Lb.T).topk(10, dim=1).indices
            hit = rel.gather(1, top).any(1).float().numpy()
        boot = [g.choice(hit, len(hit)).mean() for _ in range(1000)]
        hist.append(dict(epoch=ep + 1, val_loss=round(float(np.mean(vl)), 4), R10=round(float(hit.mean()), 3),
                         ci=[round(float(np.quantile(boot, .025)), 3), round(float(np.quantile(boot, .975)), 3)],
                         wall_s=round(time.time() - t0, 1)))
    return dict(arm=name, vocab=b.tokenizer.vocab_size, history=hist)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arms', default='bert_mean_wp,clip_mean_wp,bow_wp,tiny_text')
    p.add_argument('--n-patients', type=int, default=800)
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1); warnings.simplefilter('ignore')
    man, _ = build_manifest(dataset='synth', n_patients=a.n_patients, image_size=64, seed=0)
    A = arms()
    for name in a.arms.split(','):
        print(json.dumps(run(name, *A[name], man, a)), flush=True)
