"""Training engine (cxrlab.train) on a toy dual encoder over random tensors: loss, schedule, accumulation,
resume, non-finite steps, early stopping, checkpoints and bad input. Fast (CPU, a few seconds)."""
import math
import os

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cxrlab.core import load_checkpoint, load_json, start_run
from cxrlab.train import (InfoNCELoss, NonFiniteLossError, TrainConfig, ToyDualEncoder, ToyPairs, WarmupCosine,
                          evaluate_retrieval, make_param_groups, make_train_config, relevance_from_keys, train)


# ---- the toy model and data are cxrlab.train's own (also used by test_distributed.py and benchmarks/) ----------


def cfg(**kw):
    return TrainConfig(**{'epochs': 2, 'batch_size': 16, 'lr': 3e-3, 'progress': False, 'device': 'cpu', **kw})


@pytest.fixture
def runs(tmp_path):
    return lambda name: start_run({'test': name}, out_dir=tmp_path, run_name=name)


# ---- loss ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scale', [1., 14.3, 100.])
def test_infonce_equals_open_clip_loss_and_gradients(scale):
    from open_clip.loss import ClipLoss
    g = torch.Generator().manual_seed(3)
    u0 = F.normalize(torch.randn(10, 32, generator=g), dim=-1)
    v0 = F.normalize(torch.randn(10, 32, generator=g), dim=-1)
    u1, v1, u2, v2 = (t.clone().requires_grad_() for t in (u0, v0, u0, v0))
    ours = InfoNCELoss()({'image_embeds': u1, 'text_embeds': v1, 'logit_scale': torch.tensor(scale)})['loss']
    ref = ClipLoss()(u2, v2, torch.tensor(scale))
    assert abs(ours.item() - ref.item()) < 1e-6
    ours.backward(); ref.backward()
    assert torch.allclose(u1.grad, u2.grad, atol=1e-6) and torch.allclose(v1.grad, v2.grad, atol=1e-6)


def test_infonce_terms_and_scale_is_not_clamped_in_the_forward_pass():
    "The bound on the scale is the model's post_step (in place, after the update); the loss uses what it is given."
    u = F.normalize(torch.randn(6, 8), dim=-1); v = F.normalize(torch.randn(6, 8), dim=-1)
    hi = InfoNCELoss()({'image_embeds': u, 'text_embeds': v, 'logit_scale': torch.tensor(1e4)})
    at = InfoNCELoss()({'image_embeds': u, 'text_embeds': v, 'logit_scale': torch.tensor(100.)})
    assert not torch.equal(hi['loss'], at['loss'])
    assert abs(hi['temperature'].item() - 1e-4) < 1e-9
    assert torch.allclose(hi['loss'], (hi['loss_i2t'] + hi['loss_t2i']) / 2)
    with pytest.raises(ValueError, match='differ'):
        InfoNCELoss()({'image_embeds': u, 'text_embeds': v[:5], 'logit_scale': torch.tensor(1.)})


def test_temperature_at_the_bound_recovers_under_the_engine(runs):
    "A scale that starts at 100 on data that wants a far lower one comes down (open_clip recovers to ~18 in 50 steps)."
    g = torch.Generator().manual_seed(0)
    class Noisy(ToyPairs):  # weak signal: the best temperature is high, the best scale low
        def __init__(self, n): super().__init__(n, noise=3.0)
    torch.manual_seed(0); m = ToyDualEncoder()
    with torch.no_grad(): m.logit_scale.fill_(math.log(100.))
    train(m, InfoNCELoss(), Noisy(800), None, cfg(epochs=1, batch_size=16, lr=1e-2, warmup_steps=0, weight_decay=0.), run=runs('temp'))
    assert m.logit_scale.exp().item() < 90, m.logit_scale.exp().item()  # a forward-pass clamp would leave it at exactly 100
    assert m.logit_scale.item() <= math.log(100.) + 1e-6


# ---- schedule, groups, config ---------------------------------------------------------------------------------
def test_lr_follows_schedule_per_optimizer_step_with_accumulation(runs):
    # 7 micro-batches of 16 per epoch, grad_accum=3 → 3 optimizer steps/epoch (windows 3, 3, 1); 3 epochs → 9 steps
    run = runs('lr')
    train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(112), None, cfg(epochs=3, grad_accum=3, lr=1e-2, warmup_steps=2), run=run)
    log = pd.read_csv(run.dir / 'train_log.csv')
    assert log['step'].tolist() == list(range(1, 10))
    expected = [1e-2 * WarmupCosine(9, 2)(s) for s in range(9)]
    assert log['lr'].tolist() == pytest.approx(expected, abs=1e-12)
    assert log['lr'].iloc[-1] < 1e-3  # decayed within the run, not once per epoch
    assert log['epoch'].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_warmup_ratio_resolves_in_optimizer_steps(runs):
    run = runs('ratio')
    train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(160), None, cfg(epochs=2, grad_accum=2, warmup_ratio=0.5), run=run)
    lr = pd.read_csv(run.dir / 'train_log.csv')['lr'].tolist()  # 10 batches → 5 steps/epoch → 10 steps, 5 warmup
    assert lr[:6] == pytest.approx([3e-3 * (s + 1) / 6 for s in range(6)])


def test_param_groups_heads_decay_and_layer_decay():
    m = ToyDualEncoder(depth=4)
    groups = make_param_groups(m, lr=1.0, weight_decay=0.2, head_lr_mult=5., layer_decay=0.8)
    lr = {n: g['lr'] for g in groups for n in g['param_names']}
    wd = {n: g['weight_decay'] for g in groups for n in g['param_names']}
    assert lr['text_tower.proj.weight'] == 5. and lr['logit_scale'] == 1. and wd['logit_scale'] == 0.
    assert lr['image_tower.blocks.3.1.weight'] == pytest.approx(0.8)
    assert lr['image_tower.blocks.0.1.weight'] == pytest.approx(0.8 ** 4)
    assert lr['image_tower.embed.weight'] == pytest.approx(0.8 ** 5)
    assert lr['image_tower.norm.weight'] == 1.0
    assert wd['image_tower.blocks.0.1.weight'] == 0.2 and wd['image_tower.blocks.0.1.bias'] == 0.


def test_param_groups_refuse_undeclared_parameters():
    "A module outside the towers must say what it is; nothing silently becomes a head."
    class WithHead(nn.Module):
        def __init__(self):
            super().__init__(); self.enc, self.extra = ToyDualEncoder(), nn.Linear(8, 8)
    with pytest.raises(ValueError, match=r"extra\.weight.*param_role"):
        make_param_groups(WithHead(), lr=1e-3)
    w = WithHead(); w.extra.param_role = 'head'
    lr = {n: g['lr'] for g in make_param_groups(w, lr=1e-3, head_lr_mult=10.) for n in g['param_names']}
    assert lr['extra.weight'] == pytest.approx(1e-2) and lr['enc.image_tower.blocks.0.1.weight'] == 1e-3


def test_make_train_config_presets_and_overrides():
    c = make_train_config('rclip_mini')
    assert (c.epochs, c.batch_size, c.lr, c.weight_decay, c.grad_clip) == (4, 16, 3e-4, 1e-4, 1.0)
    assert make_train_config('rclip_mini', epochs=1, lr=None).epochs == 1
    with pytest.raises(ValueError, match='early_stop_mode'): TrainConfig(early_stop_mode='best')


# ---- loop behaviour ---------------------------------------------------------------------------------------------
def test_training_improves_retrieval_and_writes_run(runs):
    torch.manual_seed(0); m = ToyDualEncoder()
    val = ToyPairs(40, seed=1)
    before = evaluate_retrieval(m, DataLoader(val, batch_size=16))
    run = runs('fit')
    res = train(m, InfoNCELoss(), ToyPairs(128), val, cfg(epochs=4), run=run)
    assert res['history'][-1]['val/rsum'] > before['rsum'] + 0.5
    assert res['best_epoch'] == max(range(1, 5), key=lambda e: res['history'][e - 1]['val/rsum'])
    metrics = load_json(run.metrics_path)
    assert metrics['train/steps'] == 32 and metrics['validate/best_epoch'] == res['best_epoch']
    for k in ('validate/t2i/R@1', 'validate/t2i/R@5', 'validate/t2i/R@10', 'validate/i2t/R@10', 'validate/t2i/MedR', 'validate/i2t/MedR'):
        assert k in metrics
    best = load_checkpoint(run.checkpoints / 'best')['state']
    assert best['epoch'] == res['best_epoch']
    assert (run.figures / 'training_curve.png').stat().st_size > 1000
    assert len(pd.read_csv(run.dir / 'epoch_log.csv')) == 4


def test_restore_best_loads_best_epoch_weights(runs):
    run = runs('best')
    torch.manual_seed(0); m = ToyDualEncoder()
    res = train(m, InfoNCELoss(), ToyPairs(64), ToyPairs(24, seed=1), cfg(epochs=3, early_stop_metric='loss', early_stop_mode='min'), run=run)
    best = load_checkpoint(run.checkpoints / 'best')['model']
    assert all(torch.equal(m.state_dict()[k], v) for k, v in best.items())
    assert res['best_value'] == min(h['val/loss'] for h in res['history'])


def test_resume_matches_uninterrupted_training(runs):
    train_ds, val_ds = ToyPairs(96), ToyPairs(30, seed=1)
    c = cfg(epochs=3, restore_best=False)
    torch.manual_seed(0); straight = ToyDualEncoder()
    r1 = runs('straight'); train(straight, InfoNCELoss(), train_ds, val_ds, c, run=r1)
    r2 = runs('pieces')
    torch.manual_seed(0); part = ToyDualEncoder()
    train(part, InfoNCELoss(), train_ds, val_ds, TrainConfig(**{**c.__dict__, 'stop_after_epochs': 1}), run=r2)
    torch.manual_seed(99); part = ToyDualEncoder()  # fresh object with other weights, as after a crash
    train(part, InfoNCELoss(), train_ds, val_ds, TrainConfig(**{**c.__dict__, 'stop_after_epochs': 1}), run=r2, resume=True)
    torch.manual_seed(98); part = ToyDualEncoder()
    out = train(part, InfoNCELoss(), train_ds, val_ds, c, run=r2, resume=True)
    for k, v in straight.state_dict().items():
        assert torch.allclose(part.state_dict()[k], v, atol=1e-6), k
    assert [h['val/rsum'] for h in out['history']] == pytest.approx([h['val/rsum'] for h in load_json_hist(r1)])
    assert pd.read_csv(r2.dir / 'train_log.csv')['loss'].tolist() == pd.read_csv(r1.dir / 'train_log.csv')['loss'].tolist()


def load_json_hist(run):
    return pd.read_csv(run.dir / 'epoch_log.csv').to_dict('records')


def test_resume_with_user_dataloader_and_workers(runs):
    "A user DataLoader with a random sampler and worker processes resumes exactly too."
    ds = ToyPairs(64)
    def loader(): return DataLoader(ds, batch_size=16, shuffle=True, num_workers=1, drop_last=True)
    c = cfg(epochs=2, restore_best=False)
    torch.manual_seed(0); a = ToyDualEncoder(); train(a, InfoNCELoss(), loader(), None, c, run=runs('u1'))
    r = runs('u2')
    torch.manual_seed(0); b = ToyDualEncoder()
    train(b, InfoNCELoss(), loader(), None, TrainConfig(**{**c.__dict__, 'stop_after_epochs': 1}), run=r)
    b = ToyDualEncoder(); train(b, InfoNCELoss(), loader(), None, c, run=r, resume=True)
    for k, v in a.state_dict().items(): assert torch.allclose(b.state_dict()[k], v, atol=1e-6), k


class NaNAt(InfoNCELoss):
    def __init__(self, calls, value=float('nan')):
        super().__init__(); self.calls, self.value, self.n = set(calls), value, 0
    def forward(self, outputs, batch):
        out = super().forward(outputs, batch)
        if self.training:
            self.n += 1
            if self.n in self.calls: out['loss'] = out['loss'] * self.value
        return out


def test_non_finite_loss_skips_step_and_is_counted(runs):
    run = runs('nan')
    torch.manual_seed(0); m = ToyDualEncoder()
    # grad_accum=2: a NaN in the 3rd micro-batch spoils the 2nd optimizer step only
    res = train(m, NaNAt({3}), ToyPairs(128), None, cfg(epochs=1, grad_accum=2, max_bad_steps=2), run=run)
    log = pd.read_csv(run.dir / 'train_log.csv')
    assert res['bad_steps'] == 1 and log['skipped'].tolist() == [0, 1, 0, 0]
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert load_json(run.metrics_path)['train/bad_steps'] == 1


def test_too_many_non_finite_losses_abort():
    with pytest.raises(NonFiniteLossError, match=r'3 optimizer steps .*max_bad_steps=2'):
        train(ToyDualEncoder(), NaNAt({1, 2, 4}, float('inf')), ToyPairs(96), None, cfg(epochs=1, max_bad_steps=2))


def test_early_stopping_and_frozen_tower():
    m = ToyDualEncoder(); frozen = {k: v.clone() for k, v in m.text_tower.state_dict().items()}
    res = train(m, InfoNCELoss(), ToyPairs(64), ToyPairs(20, seed=1),
                cfg(epochs=6, early_stop_patience=2, early_stop_min_delta=1e9, freeze=['text']))
    assert (res['epochs_run'], res['stopped_early'], res['best_epoch']) == (3, 1, 1)
    assert all(torch.equal(v, frozen[k]) for k, v in m.text_tower.state_dict().items())


def test_relevance_key_counts_items_of_the_same_study():
    rel = relevance_from_keys(['a', 'a', 'b'], ['a', 'a', 'b'])
    assert rel.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    torch.manual_seed(0); m = ToyDualEncoder().eval()
    dl = DataLoader(ToyPairs(20, seed=1), batch_size=8)
    one, grouped = evaluate_retrieval(m, dl), evaluate_retrieval(m, dl, relevance_key='study_id')
    assert grouped['t2i/R@1'] >= one['t2i/R@1'] and grouped['n_samples'] == 20


# ---- bad input --------------------------------------------------------------------------------------------------
def test_bad_inputs_fail_clearly(runs, tmp_path):
    with pytest.raises(ValueError, match='training loader is empty'):
        train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(10), None, cfg(batch_size=16))
    with pytest.raises(KeyError, match="'t2i/R@3' is not among"):
        train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), ToyPairs(8), cfg(epochs=1, early_stop_metric='t2i/R@3'))
    with pytest.raises(FileNotFoundError, match='cannot resume'):
        train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), None, cfg(), run=runs('empty'), resume=True)
    with pytest.raises(FileNotFoundError, match='cannot resume'):
        train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), None, cfg(), resume=tmp_path / 'nowhere')
    with pytest.raises(KeyError, match="under 'loss'"):
        train(ToyDualEncoder(), lambda o, b: {'total': o['image_embeds'].sum()}, ToyPairs(32), None, cfg())
    with pytest.raises(ValueError, match='matched no parameter'):
        train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), None, cfg(freeze=['vision_tower']))
    with pytest.raises(ValueError, match='not supported on CPU'):
        train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), None, cfg(precision='fp16', device='cpu'))


# ---- with a cxrlab backbone ----------------------------------------------------------------------------------
def test_trains_a_cxrlab_backbone_with_its_own_param_groups():
    "The tiny registry backbone through make_collate: groups come from cxrlab.models.param_groups; frozen text stays put."
    from cxrlab.data import make_collate
    from cxrlab.models import create_model
    from cxrlab.train import make_param_groups
    b = create_model('tiny')
    g = torch.Generator().manual_seed(0)
    words = ['left', 'right', 'effusion', 'pneumothorax', 'small', 'large', 'no', 'acute', 'finding', 'opacity']
    ds = [{'image': torch.randn(3, 64, 64, generator=g), 'index': i,
           'text': ' '.join(words[j] for j in torch.randint(0, 10, (6,), generator=g).tolist())} for i in range(24)]
    groups = make_param_groups(b.model, 1e-3, layer_decay=0.7)
    assert any(gr['name'].startswith('image.layer') for gr in groups)
    text0 = {k: v.clone() for k, v in b.model.state_dict().items() if k.startswith('text')}
    image0 = {k: v.clone() for k, v in b.model.state_dict().items() if k.startswith('image')}
    res = train(b.model, InfoNCELoss(), ds, ds[:10], cfg(epochs=1, batch_size=4, layer_decay=0.7, freeze=['text_tower']),
                collate_fn=make_collate(b.tokenizer))
    sd = b.model.state_dict()
    assert res['steps'] == 6 and res['history'][-1]['val/n_samples'] == 10
    assert all(torch.equal(sd[k], v) for k, v in text0.items() if 'tower' in k)
    assert any(not torch.equal(sd[k], v) for k, v in image0.items())


def test_precision_can_change_between_calls_in_one_process():
    "accelerate's per-process state is reset when a later call asks for another precision (notebook sessions)."
    r1 = train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), None, cfg(epochs=1, precision='fp32'))
    r2 = train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), None, cfg(epochs=1, precision='bf16'))
    r3 = train(ToyDualEncoder(), InfoNCELoss(), ToyPairs(32), None, cfg(epochs=1, precision='fp32'))
    assert all(math.isfinite(r['loss']) and r['bad_steps'] == 0 for r in (r1, r2, r3))
    from accelerate.state import AcceleratorState
    assert AcceleratorState().mixed_precision == 'no'


# ---- a hard kill mid-epoch, then resume --------------------------------------------------------------------------
_KILL_CHILD = r'''
import sys, time, torch
from cxrlab.core import start_run
from cxrlab.train import InfoNCELoss, ToyDualEncoder, ToyPairs, TrainConfig, train
class Slow(InfoNCELoss):  # a slow step, so the parent can kill the process in the middle of an epoch
    def forward(self, o, b):
        if self.training: time.sleep(0.03)
        return super().forward(o, b)
torch.manual_seed(0)
run = start_run({'test': 'kill'}, out_dir=sys.argv[1], run_name='killed')
train(ToyDualEncoder(), Slow(), ToyPairs(128), ToyPairs(24, seed=1),
      TrainConfig(epochs=3, batch_size=16, lr=3e-3, device='cpu', progress=False, restore_best=False), run=run)
'''


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    "SIGKILL in epoch 2 leaves a complete checkpoint of epoch 1; resuming from it ends with the uninterrupted run's weights."
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, '-c', _KILL_CHILD, str(tmp_path)], env={**os.environ, 'OMP_NUM_THREADS': '1'})
    log, deadline = tmp_path / 'killed' / 'train_log.csv', time.time() + 120
    while time.time() < deadline and child.poll() is None:  # 8 steps per epoch: kill 3 steps into epoch 2
        if log.exists() and len(log.read_text().splitlines()) >= 1 + 8 + 3: break
        time.sleep(0.01)
    assert child.poll() is None, 'the child finished before it could be killed'
    child.send_signal(signal.SIGKILL); child.wait()
    last = tmp_path / 'killed' / 'checkpoints' / 'last'
    ck = load_checkpoint(last)  # complete and readable: weights and resume state of epoch 1
    assert ck['state']['epoch'] == 1 and ck['state']['step'] == 8
    cfgk = dict(epochs=3, batch_size=16, lr=3e-3, restore_best=False)
    torch.manual_seed(5); resumed = ToyDualEncoder()  # other weights: everything must come from the checkpoint
    run = start_run({'test': 'kill'}, out_dir=tmp_path, run_name='killed')
    res = train(resumed, InfoNCELoss(), ToyPairs(128), ToyPairs(24, seed=1), cfg(**cfgk), run=run, resume=True)
    torch.manual_seed(0); straight = ToyDualEncoder()
    train(straight, InfoNCELoss(), ToyPairs(128), ToyPairs(24, seed=1), cfg(**cfgk))
    assert res['epochs_run'] == 3 and res['steps'] == 24
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, atol=1e-6, rtol=1e-6)
    steps = pd.read_csv(log)['step'].tolist()
    assert steps == list(range(1, 25))  # the killed epoch's partial rows were replaced, not duplicated
