"""Two CPU processes (gloo) through HF accelerate, launched with torchrun and with notebook_launcher.

After training, both ranks must hold identical weights (they start from different random inits: DDP broadcasts
rank 0's), the ranks must have trained on disjoint halves of each epoch, and the validation metrics must be
computed over the whole split exactly once (13 samples with batch 4 on 2 ranks: the last batch is padded by
accelerate and the padding dropped by gather_for_metrics) — equal to a single-process evaluation of the final model.

This file is also the worker script: `python tests/test_distributed.py torchrun|notebook OUT_DIR`.
"""
import json, os, socket, subprocess, sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
N_TRAIN, N_VAL, BATCH = 64, 13, 4


def worker(out_dir: str, mode: str = 'local'):
    "Runs on every rank: train the toy model for 2 epochs, dump weights, seen indices and history."
    sys.path.insert(0, str(HERE))
    from cxrlab.train import ToyDualEncoder, ToyPairs
    from cxrlab.core import start_run
    from cxrlab.train import InfoNCELoss, TrainConfig, train

    class Recording(ToyDualEncoder):
        def __init__(self): super().__init__(dropout=0. if mode == 'gather' else 0.1); self.seen = []
        def forward(self, batch):
            if self.training: self.seen.append(batch['index'].tolist())
            return super().forward(batch)

    rank = int(os.environ.get('RANK', 0))
    torch.manual_seed(100 + rank)  # different inits on purpose
    model = Recording()
    run = start_run({'test': 'ddp'}, out_dir=out_dir, run_name='ddp') if rank == 0 else None  # only the main process needs one
    cfg = TrainConfig(epochs=2, batch_size=BATCH, lr=3e-3, device='cpu', progress=False, restore_best=False,
                      eval_batch_size=BATCH)
    res = train(model, InfoNCELoss(gather_distributed=mode == 'gather'), ToyPairs(N_TRAIN), ToyPairs(N_VAL, seed=1), cfg, run=run)
    torch.save({'state': model.state_dict(), 'seen': model.seen, 'history': res['history'],
                'num_processes': res['num_processes']}, Path(out_dir) / f'rank{rank}.pt')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _launch(kind: str, out: Path, mode: str = 'local'):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo', 'PYTHONPATH': str(HERE)}
    if kind == 'torchrun':
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(_free_port()), __file__, 'torchrun', str(out), mode]
    else:
        cmd = [sys.executable, __file__, 'notebook', str(out), mode]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"{kind} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"


@pytest.mark.parametrize('kind', ['torchrun', 'notebook'])
def test_two_cpu_processes(kind, tmp_path):
    _launch(kind, tmp_path)
    r0, r1 = (torch.load(tmp_path / f'rank{i}.pt', weights_only=False) for i in (0, 1))
    assert r0['num_processes'] == r1['num_processes'] == 2
    # identical weights on both ranks after training (despite different inits)
    for k, v in r0['state'].items():
        assert torch.equal(v, r1['state'][k]), k
    # each epoch: the ranks trained on disjoint halves covering the training set
    steps = N_TRAIN // (2 * BATCH)
    for e in range(2):
        a = [i for b in r0['seen'][e * steps:(e + 1) * steps] for i in b]
        b = [i for b in r1['seen'][e * steps:(e + 1) * steps] for i in b]
        assert sorted(a + b) == list(range(N_TRAIN)), f"epoch {e + 1}"
    # the same epoch order on a second epoch would mean the sampler generator is not advancing
    assert r0['seen'][:steps] != r0['seen'][steps:2 * steps]
    # validation metrics gathered over the whole split exactly once == single-process evaluation of the final model
    from cxrlab.train import ToyDualEncoder, ToyPairs
    from torch.utils.data import DataLoader
    from cxrlab.train import evaluate_retrieval
    m = ToyDualEncoder(); m.load_state_dict(r0['state'])
    ref = evaluate_retrieval(m, DataLoader(ToyPairs(N_VAL, seed=1), batch_size=BATCH))
    last = r0['history'][-1]
    assert last['val/n_samples'] == N_VAL
    for k in ('t2i/R@1', 't2i/R@5', 't2i/R@10', 'i2t/R@1', 'i2t/MedR', 't2i/MedR', 'rsum'):
        assert last[f'val/{k}'] == pytest.approx(ref[k], abs=1e-6), k
    val = lambda h: [{k: v for k, v in e.items() if k.startswith('val/') or k in ('epoch', 'step', 'best')} for e in h]
    assert val(r0['history']) == val(r1['history'])  # same validation numbers → same early-stopping decisions
    # the main process wrote the run; checkpoints hold the final weights
    from cxrlab.core import load_checkpoint
    ck = load_checkpoint(tmp_path / 'ddp' / 'checkpoints' / 'last')
    assert all(torch.equal(ck['model'][k], v) for k, v in r0['state'].items())
    assert len(ck['state']['rng']) == 2 and ck['state']['world_size'] == 2


def test_global_batch_negatives_match_one_process_with_double_batch(tmp_path):
    "InfoNCELoss(gather_distributed=True) on 2 ranks × B == 1 process × 2B (same samples per step, same loss, same updates)."
    _launch('torchrun', tmp_path, 'gather')
    r0 = torch.load(tmp_path / 'rank0.pt', weights_only=False)
    from cxrlab.train import ToyDualEncoder, ToyPairs
    from cxrlab.train import InfoNCELoss, TrainConfig, train
    torch.manual_seed(100); ref = ToyDualEncoder(dropout=0.)
    train(ref, InfoNCELoss(), ToyPairs(N_TRAIN), None, TrainConfig(epochs=2, batch_size=2 * BATCH, lr=3e-3, device='cpu',
                                                                    progress=False, restore_best=False))
    for k, v in ref.state_dict().items():
        assert torch.allclose(r0['state'][k], v, atol=1e-5), k


if __name__ == '__main__':
    kind, out, mode = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else 'local')
    if kind == 'torchrun':
        worker(out, mode)
    else:
        from accelerate import notebook_launcher
        notebook_launcher(worker, (out, mode), num_processes=2, use_port=str(_free_port()))
