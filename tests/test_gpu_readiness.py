"""GPU readiness without a GPU. Two kinds of checks:

* decisions, against a faked CUDA device (torch.cuda's query functions answer as on a T4, an A100 or an H100):
  every place that picks a device, a precision, a memory format, pinned memory or torch.compile;
* the code paths those decisions switch on, run for real on this CPU: bf16 autocast training of every registered
  method stage, channels-last convolution towers, and a torch.compile'd training step.
"""
import re
import warnings
from pathlib import Path

import pytest
import torch

from cxrlab import core
from cxrlab.core import (autocast, compile_mode, cuda_bf16_native, environment_info, get_device, get_precision,
                         is_conv_net, load_checkpoint, maybe_compile, save_checkpoint, to_channels_last,
                         use_channels_last, use_pin_memory)
from cxrlab.models import METHOD_MODULES, SMALL_OVERRIDES, create_model, get_method

torch.set_num_threads(1)
PACKAGE = Path(core.__file__).parent

GPUS = {  # what torch.cuda reports on these devices: (compute capability, name, the precision 'auto' must pick)
    'T4': ((7, 5), 'Tesla T4', 'fp16'),  # Colab / Kaggle free tier: bf16 only emulated
    'V100': ((7, 0), 'Tesla V100-SXM2-16GB', 'fp16'),
    'A100': ((8, 0), 'NVIDIA A100-SXM4-80GB', 'bf16'),
    'H100': ((9, 0), 'NVIDIA H100 80GB HBM3', 'bf16'),
}


@pytest.fixture(params=sorted(GPUS))
def fake_gpu(request, monkeypatch):
    "torch.cuda answering as one GPU of a given kind; yields (name, expected auto precision)."
    capability, name, expected = GPUS[request.param]
    cuda_rng = {'state': [torch.zeros(16, dtype=torch.uint8)]}
    for attr, fn in dict(is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
                         get_device_capability=lambda d=None: capability, get_device_name=lambda d=None: name,
                         is_bf16_supported=lambda including_emulation=True: capability >= (8, 0) or including_emulation,
                         get_rng_state_all=lambda: list(cuda_rng['state']),
                         set_rng_state_all=lambda s: cuda_rng.update(state=list(s))).items():
        monkeypatch.setattr(torch.cuda, attr, fn)
    monkeypatch.setattr(torch.version, 'hip', None)
    yield name, expected


@pytest.fixture
def record_accelerator(monkeypatch):
    "Replace accelerate.Accelerator by a recorder of its arguments (no device is touched)."
    import accelerate
    calls = []

    class Recorder:
        def __init__(self, **kw): calls.append(kw)
    monkeypatch.setattr(accelerate, 'Accelerator', Recorder)
    return calls


# ---------------------------------------------------------------- decisions, on a faked GPU

def test_device_precision_and_autocast(fake_gpu):
    name, expected = fake_gpu
    assert get_device('auto') == torch.device('cuda') and get_device('cuda:0') == torch.device('cuda:0')
    with pytest.raises(RuntimeError, match='only 1 CUDA device'):
        get_device('cuda:3')
    assert get_precision('auto', 'auto') == expected == get_precision('auto', 'cuda:0')
    assert cuda_bf16_native('cuda') == (expected == 'bf16')
    assert get_precision('fp16', 'cuda') == 'fp16' and get_precision('fp32', 'cuda') == 'fp32'
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert get_precision('bf16', 'cuda') == 'bf16'  # asked for explicitly: honoured, with a warning if emulated
    assert any('no bf16 tensor cores' in str(x.message) for x in w) == (expected == 'fp16')
    ac = autocast('auto', 'auto')
    assert isinstance(ac, torch.autocast) and ac.device == 'cuda'
    assert ac.fast_dtype == {'bf16': torch.bfloat16, 'fp16': torch.float16}[expected]
    # a CPU run on a GPU machine stays fp32 and unpinned
    assert get_precision('auto', 'cpu') == 'fp32' and not use_pin_memory('cpu') and use_pin_memory('auto')


def test_rocm_gpus_use_bf16(fake_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, 'hip', '6.2')
    assert get_precision('auto', 'cuda') == 'bf16'


@pytest.fixture(scope='module')
def towers():
    "Small random-init models of a ResNet, the small CNN, a CLIP ViT and a timm ViT backbone."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # random-init BERT towers fall back to the BPE vocabulary, loudly
        return {n: create_model(n, **SMALL_OVERRIDES[n]).model for n in ('rclip_mini', 'tiny', 'tiny_vit', 'biomedclip')}


def test_channels_last_only_for_conv_towers_in_mixed_precision(fake_gpu, towers):
    resnet, cnn, vit, timm_vit = (towers[n] for n in ('rclip_mini', 'tiny', 'tiny_vit', 'biomedclip'))
    assert is_conv_net(resnet) and is_conv_net(cnn) and not is_conv_net(vit) and not is_conv_net(timm_vit)
    assert use_channels_last(resnet) and use_channels_last(cnn.image_tower)
    assert not use_channels_last(vit) and not use_channels_last(timm_vit)
    assert not use_channels_last(resnet, precision='fp32') and not use_channels_last(resnet, device='cpu')
    assert use_channels_last(vit, channels_last='true') and not use_channels_last(resnet, channels_last='false')


def test_compile_is_opt_in(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, 'compile', lambda m, **kw: seen.append(kw) or m)
    net = torch.nn.Linear(2, 2)
    for off in (False, None, 'false', 'False', '0', ''):
        assert maybe_compile(net, off) is net
    assert seen == []
    maybe_compile(net, 'true'); maybe_compile(net, True); maybe_compile(net, 'max-autotune', backend='aot_eager')
    assert seen == [dict(mode=None, backend='inductor')] * 2 + [dict(mode='max-autotune', backend='aot_eager')]
    with pytest.raises(ValueError, match='torch.compile mode'):
        compile_mode('turbo')


def test_training_engine_on_a_fake_gpu(fake_gpu, record_accelerator):
    from cxrlab.train import ToyPairs, TrainConfig, make_accelerator, make_loader
    _, expected = fake_gpu
    make_accelerator(TrainConfig(device='auto', precision='auto'))
    make_accelerator(TrainConfig(device='cuda', precision='fp32'))
    assert [(c['cpu'], c['mixed_precision']) for c in record_accelerator] == [(False, expected), (False, 'no')]
    assert make_loader(ToyPairs(8), 4, True).pin_memory  # batches bound for the GPU are pinned


def test_gpu_profile_resolves_on_a_fake_gpu(fake_gpu, record_accelerator):
    "The pipeline's `gpu` profile, as an experiment notebook receives it, turns into a CUDA accelerator."
    from cxrlab.report import PROFILES
    from cxrlab.train import EXPERIMENT_PARAMS, make_accelerator, make_train_config, resolve_experiment_params
    _, expected = fake_gpu
    params = {k: v for k, v in PROFILES['gpu'].items() if k in EXPERIMENT_PARAMS}
    assert params['device'] == 'cuda'
    P = resolve_experiment_params({**params, 'backbone': 'biomedclip'})
    cfg = make_train_config(P['preset'], **P['train'])
    assert (cfg.device, cfg.precision, cfg.batch_size, cfg.num_workers) == ('cuda', 'auto', 128, 8)
    make_accelerator(cfg)
    assert (record_accelerator[-1]['cpu'], record_accelerator[-1]['mixed_precision']) == (False, expected)


def test_run_records_and_rng_state_on_a_fake_gpu(fake_gpu):
    from cxrlab.train import rng_state, set_rng_state
    name, _ = fake_gpu
    info = environment_info('cuda')
    assert info['device'] == 'cuda' and info['device_name'] == name and info['cuda_devices'] == 1
    st = rng_state()
    assert 'cuda' in st
    st['cuda'] = [torch.full((16,), 7, dtype=torch.uint8)]
    set_rng_state(st)
    assert torch.equal(torch.cuda.get_rng_state_all()[0], st['cuda'][0])


def test_every_device_choice_goes_through_core():
    """Inventory: direct device / precision / memory-format code outside cxrlab.core must be one of the places these
    tests cover. A new one is a reason to use the core helpers (get_device, get_precision, autocast, use_pin_memory,
    use_channels_last, maybe_compile) or to add a test here."""
    patterns = r'torch\.cuda\.\w+|\.cuda\(|torch\.autocast\(|torch\.channels_last|torch\.compile\(|is_bf16_supported'
    covered = {  # file: the uses, each checked above or below
        'train.py': {'torch.cuda.is_available',  # make_loader's pin_memory default: test_training_engine_on_a_fake_gpu
                     'torch.cuda.get_rng_state_all', 'torch.cuda.set_rng_state_all'},  # test_run_records_and_rng_state_*
        'models.py': {'torch.channels_last'},  # ResNet towers follow their weights' memory format: test_channels_last_*
        'core.py': None,  # the helpers themselves (tested in 00_core and here)
    }
    found = {}
    for f in sorted(PACKAGE.glob('*.py')):
        if f.name == '_modidx.py':
            continue
        uses = set(re.findall(patterns, f.read_text()))
        if uses:
            found[f.name] = uses
    stray = {f: u for f, u in found.items() if f not in covered or (covered[f] is not None and u - covered[f])}
    assert not stray, (f"device/precision/memory-format code outside cxrlab.core that no GPU-readiness test covers: "
                       f"{stray}. Route it through the cxrlab.core helpers or cover it in tests/test_gpu_readiness.py")


# ---------------------------------------------------------------- the same code paths, for real on this CPU

def _stages():
    "(method, backbone, model options) for every method stage registered on this checkout."
    out = []
    for name in sorted(METHOD_MODULES):
        try:
            m = get_method(name)
        except KeyError:
            continue  # its module is not on this checkout yet
        if name == 'patch_ib':
            from cxrlab.patch_ib import VARIANTS
            out += [(name, 'tiny_vit' if v == 'E' else 'tiny', {'variant': v}) for v in sorted(VARIANTS)]
        elif m.retrieval:
            out.append((name, 'tiny', {}))
    return out


@pytest.mark.parametrize('method, backbone, options', _stages(), ids=lambda v: str(v.get('variant', '')) if isinstance(v, dict) else str(v))
def test_bf16_autocast_training_of_every_stage(method, backbone, options, tmp_path):
    "One bf16-autocast epoch through the engine (accelerate's autocast, as on a GPU): finite loss, finite weights."
    from cxrlab.train import setup_experiment
    torch.manual_seed(0)
    exp = setup_experiment(method, prefix='bf16', model_options=options, backbone=backbone, device='cpu', precision='bf16',
                           epochs=1, batch_size=16, max_samples=96, out_dir=tmp_path, progress=False, save_checkpoints=False)
    dtypes = set()
    hooks = [m.register_forward_hook(lambda mod, a, out: dtypes.add(out.dtype))
             for m in exp.model.modules() if isinstance(m, torch.nn.Linear)]
    res = exp.fit()
    for h in hooks: h.remove()
    assert torch.bfloat16 in dtypes  # the linear layers really ran in bf16
    assert res['steps'] >= 2 and res['bad_steps'] == 0 and torch.isfinite(torch.tensor(res['loss']))
    assert all(torch.isfinite(p).all() for p in exp.model.parameters())
    assert exp.run.params['train']['precision'] == 'bf16'


@pytest.mark.parametrize('name', ['rclip_mini', 'tiny'])
def test_channels_last_conv_towers_compute_the_same(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        b = create_model(name, **SMALL_OVERRIDES[name])
    m = b.model.eval()
    s = b.config['image_size']
    x = torch.randn(2, 3, s, s)
    with torch.no_grad():
        ref = m.encode_image(x)['embeds']
        to_channels_last(m)
        seen = []
        first_conv = next(c for c in m.image_tower.modules() if isinstance(c, torch.nn.Conv2d))
        hook = first_conv.register_forward_pre_hook(lambda mod, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
        out = m.encode_image(x)['embeds']
        hook.remove()
        with autocast('cpu', 'bf16'):
            mixed = m.encode_image(x)['embeds']
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(mixed).all() and (mixed.float() - ref).abs().max() < 0.1
    if name == 'rclip_mini':
        assert seen == [True]  # the ResNet tower hands its convolutions channels-last inputs


def test_compiled_training_step_matches_eager_and_checkpoints_load_bare(tmp_path):
    "torch.compile (aot_eager: dynamo + AOTAutograd, no C++ toolchain needed) on the model + loss the engine trains."
    from cxrlab.train import InfoNCELoss, TrainStep
    torch.manual_seed(0)
    b = create_model('tiny', **SMALL_OVERRIDES['tiny'])
    s = b.config['image_size']
    batch = {'image': torch.randn(4, 3, s, s), **b.tokenizer(['left effusion', 'no acute process', 'cardiomegaly', 'small nodule'])}
    eager = TrainStep(b.model, InfoNCELoss())
    compiled = maybe_compile(eager, True, backend='aot_eager')
    loss_eager = eager(batch)[1]['loss']
    loss_eager.backward()
    g_eager = {n: p.grad.clone() for n, p in eager.named_parameters() if p.grad is not None}
    eager.zero_grad()
    loss_compiled = compiled(batch)[1]['loss']
    loss_compiled.backward()
    torch.testing.assert_close(loss_compiled, loss_eager, atol=1e-5, rtol=1e-5)
    for n, p in eager.named_parameters():
        if n in g_eager:
            torch.testing.assert_close(p.grad, g_eager[n], atol=1e-5, rtol=1e-4)
    save_checkpoint(tmp_path / 'ck', compiled)  # keys carry '_orig_mod.' on a compiled module
    bare = TrainStep(create_model('tiny', **SMALL_OVERRIDES['tiny']).model, InfoNCELoss())
    load_checkpoint(tmp_path / 'ck', bare)
    torch.testing.assert_close(bare(batch)[1]['loss'], loss_eager, atol=1e-5, rtol=1e-5)


def test_gpu_smoke_benchmark_runs_its_cpu_version(capsys, tmp_path):
    "benchmarks/gpu_smoke.py discovers the stages, skips missing ones with a line, and prints its table."
    import importlib.util
    spec = importlib.util.spec_from_file_location('gpu_smoke', PACKAGE.parent / 'benchmarks' / 'gpu_smoke.py')
    smoke = importlib.util.module_from_spec(spec); spec.loader.exec_module(smoke)
    rows = smoke.main(['--device', 'cpu', '--stages', 'clip,patch_ib:E,nonesuch', '--steps', '1', '--warmup', '0',
                       '--batch-size', '4', '--out-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert [r['stage'] for r in rows] == ['clip', 'patch_ib:E'] and 'tiny CPU version' in out
    assert 'skip nonesuch: not a registered stage here' in out and '| patch_ib:E |' in out
    assert all(r['images_per_s'] > 0 and r['train_gflops'] > 0 for r in rows)
    for name in set(METHOD_MODULES) - {'clip', 'patch_ib'}:  # stages whose modules are not on this checkout yet
        try:
            get_method(name)
        except KeyError:
            assert f'skip {name}:' in out


def test_train_config_compile_and_channels_last():
    from cxrlab.train import TrainConfig, resolve_experiment_params
    with pytest.raises(ValueError, match='torch.compile mode'): TrainConfig(compile='turbo')
    P = resolve_experiment_params({'compile': 'max-autotune', 'channels_last': 'true'})
    assert (P['train']['compile'], P['train']['channels_last']) == ('max-autotune', 'true')
