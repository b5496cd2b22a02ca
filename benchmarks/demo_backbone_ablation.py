"""Ablation behind the `demo` backbone: text tower x image tower x batch size, trained from scratch on SynthCXR.

Each arm trains the global CLIP baseline (02b's engine, the `tiny` training preset: AdamW lr 1e-3, cosine with 10% warmup,
grad clip 1) on the same data and reports study-level report->image R@10 on the test split with its patient-bootstrap
95% CI (07's `evaluate_run`), plus the wall time. Run (reduced setting, as in 02b_train's table):

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/demo_backbone_ablation.py --n-patients 800 --image-size 64 --epochs 3 \\
        --arms tiny_b32,cnn_wp_b64,r18_bpe_b64,r18_bow_b64,r18_wp_b64,r18_wp_b32 --out /tmp/ablation.jsonl
"""
import argparse, copy, json, time, warnings
from pathlib import Path

import torch

from cxrlab.models import MODEL_CONFIGS, model_config
from cxrlab.train import setup_experiment
from cxrlab.evaluate import evaluate_run


def arm_configs() -> dict:
    "name -> (registry entry, batch size): the arms differ from `demo` in one tower (or the batch) at a time."
    demo, tiny = MODEL_CONFIGS['demo'], MODEL_CONFIGS['tiny']
    def variant(image=None, text=None, tokenizer=None):
        c = copy.deepcopy(demo)
        if image: c['image'] = copy.deepcopy(image)
        if text: c['text'] = copy.deepcopy(text)
        if tokenizer: c['tokenizer'] = copy.deepcopy(tokenizer)
        return c
    bow = dict(kind='bow', vocab_size=4096, width=256, proj='linear')
    return {
        'tiny_b32': (copy.deepcopy(tiny), 32),  # the old demo backbone and batch
        'cnn_wp_b64': (variant(image=tiny['image']), 64),  # tiny CNN + demo text
        'r18_bpe_b64': (variant(text=tiny['text'], tokenizer=tiny['tokenizer']), 64),  # ResNet-18 + tiny text (CLIP BPE, EOT)
        'r18_bow_b64': (variant(text=bow), 64),  # ResNet-18 + bag of learned WordPiece tokens
        'r18_wp_b64': (variant(), 64),  # demo: ResNet-18 + 2-layer BERT over learned WordPiece, mean-pooled
        'r18_wp_b32': (variant(), 32),
        'cnn_wp_b32': (variant(image=tiny['image']), 32),  # tiny CNN + demo text, the old batch: text effect alone
        'cnn_bow_b32': (variant(image=tiny['image'], text=bow), 32),
    }


def run_arm(name: str, cfg: dict, batch_size: int, a) -> dict:
    MODEL_CONFIGS[f'abl_{name}'] = cfg
    t0 = time.time()
    exp = setup_experiment('clip', prefix=f'abl_{name}', backbone=f'abl_{name}', preset='tiny', n_patients=a.n_patients,
                           image_size=a.image_size, epochs=a.epochs, batch_size=batch_size, precision=a.precision,
                           device='cpu', seed=a.seed, out_dir=a.runs, progress=False)
    exp.fit()
    train_s = time.time() - t0
    ev = evaluate_run(exp.run.dir, exp.manifest, families='retrieval', extras=False, n_resamples=1000, device='cpu',
                      precision=a.precision, out_dir=a.runs, log=False, figures=False)
    m = ev.metrics
    return dict(arm=name, batch_size=batch_size, n_patients=a.n_patients, image_size=a.image_size, epochs=a.epochs,
                t2i_R10=m['t2i/R@10'], ci_low=m['t2i/R@10_ci_low'], ci_high=m['t2i/R@10_ci_high'],
                i2t_R10=m['i2t/R@10'], chance_R10=m.get('t2i/chance_R@10'), vocab=exp.tokenizer.vocab_size,
                params_M=sum(p.numel() for p in exp.model.parameters()) / 1e6, wall_s=round(time.time() - t0, 1),
                train_s=round(train_s, 1), threads=torch.get_num_threads())


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arms', default='tiny_b32,cnn_wp_b64,r18_bpe_b64,r18_bow_b64,r18_wp_b64,r18_wp_b32')
    p.add_argument('--n-patients', type=int, default=800)
    p.add_argument('--image-size', type=int, default=64)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--precision', default='fp32')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--runs', default='/tmp/cxrlab_ablation_runs')
    p.add_argument('--out', default='ablation.jsonl')
    a = p.parse_args()
    torch.set_num_threads(1); warnings.simplefilter('ignore')
    arms = arm_configs()
    for name in a.arms.split(','):
        if name not in arms: raise SystemExit(f"unknown arm {name!r}; choose from {', '.join(arms)}")
        row = run_arm(name, *arms[name], a)
        print(json.dumps(row), flush=True)
        with open(a.out, 'a') as f: f.write(json.dumps(row) + '\n')
