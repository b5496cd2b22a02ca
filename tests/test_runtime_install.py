"""The Colab / Kaggle path: a fresh virtual environment with only the runtime requirements (no dev extra, no nbdev),
cxrlab installed from a git URL of a clone, and papermill running an experiment notebook from another working
directory with `-p epochs 1`, as a notebook cell on Colab would.

Slow: it runs only when asked for, `pytest -m slow tests/test_runtime_install.py` (or CXRLAB_SLOW=1). It installs
the committed HEAD (git clones what is committed, not the working tree).

Installed distributions are not copied where that can be avoided: the new environment sees a folder of links to
this interpreter's copies through a `.pth` file, and only those distributions are linked:
* CXRLAB_RUNTIME_INSTALL=linked (default, about a minute, a few MB of disk): torch, torchvision and every runtime
  requirement of settings.ini, each with its own dependencies (markers evaluated, extras left out). pip then installs
  cxrlab from the git URL and finds every requirement satisfied by those links: a module that imports something
  outside the declared runtime requirements fails here just as it would on Colab;
* CXRLAB_RUNTIME_INSTALL=full (about three minutes, about a gigabyte): only torch and torchvision are linked (their
  multi-GB install); pip resolves and installs every other runtime requirement from the package index.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = 'nbs/02b_train.ipynb'


@pytest.fixture(autouse=True)
def _only_when_asked(request):
    expr = request.config.option.markexpr or ''
    if not (os.environ.get('CXRLAB_SLOW') == '1' or ('slow' in expr and 'not slow' not in expr)):
        pytest.skip('slow (minutes): run with `pytest -m slow tests/test_runtime_install.py` or CXRLAB_SLOW=1')


def _closure(names) -> list:
    "The installed distributions `names` need, with their requirements (markers evaluated, requested extras followed)."
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    seen, todo = {}, [(n, ()) for n in names]
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), tuple(sorted(extras)))
        if key in seen:
            continue
        try:
            dist = metadata.distribution(key[0])
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed here
        seen[key] = dist
        for r in map(Requirement, dist.requires or []):
            if r.marker is None or any(r.marker.evaluate({'extra': e}) for e in ('',) + tuple(extras)):
                todo.append((r.name, tuple(r.extras)))
    return list({d.metadata['Name']: d for d in seen.values()}.values())


def runtime_requirements() -> list[str]:
    "Names of the runtime requirements in settings.ini."
    from configparser import ConfigParser
    from packaging.requirements import Requirement
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini', encoding='utf-8')
    return [Requirement(r).name for r in cfg['DEFAULT']['requirements'].split()]


def _overlay(folder: Path, names) -> list:
    "Link the installed distributions `names` and their dependencies (packages and dist-info) into `folder`."
    folder.mkdir(parents=True)
    linked = set()
    for dist in _closure(names):
        site = Path(dist.locate_file(''))
        for f in dist.files or []:
            top = f.parts[0]
            if top in linked or top.endswith('.pth') or top == '..' or top == '__pycache__' or not (site / top).exists():
                continue
            (folder / top).symlink_to(site / top)
            linked.add(top)
    return sorted(linked)


def _run(cmd, cwd, env, timeout):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_runtime_only_install_runs_an_experiment_notebook_with_papermill(tmp_path):
    t0 = time.time()
    work = tmp_path / 'content'  # Colab's working folder: not the clone
    work.mkdir()
    clone, venv = tmp_path / 'cxrlab', tmp_path / 'venv'
    try:
        subprocess.run(['git', 'clone', '--quiet', str(ROOT), str(clone)], check=True, timeout=120)
        subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=120)
        py, bindir = venv / 'bin' / 'python', venv / 'bin'
        site = Path(subprocess.check_output([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                            text=True).strip())
        mode = os.environ.get('CXRLAB_RUNTIME_INSTALL', 'linked')
        assert mode in ('linked', 'full'), f"CXRLAB_RUNTIME_INSTALL={mode!r}: expected linked or full"
        linked = _overlay(tmp_path / 'linked-site', ['torch', 'torchvision'] + (runtime_requirements() if mode == 'linked' else []))
        assert 'torch' in linked and 'torchvision' in linked and 'nbdev' not in linked
        (site / 'cxrlab_test_linked.pth').write_text(str(tmp_path / 'linked-site') + '\n')
        env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
        env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
                   MPLBACKEND='Agg', OMP_NUM_THREADS='1', CXRLAB_CACHE=str(tmp_path / 'cache'),
                   JUPYTER_DATA_DIR=str(tmp_path / 'jupyter'), PIP_DISABLE_PIP_VERSION_CHECK='1')
        t_venv = time.time()
        pip = _run([str(py), '-m', 'pip', 'install', f'git+file://{clone}'], work, env, 1800)
        assert re.search(r'Successfully installed .*\bcxrlab-0', pip.stdout), pip.stdout[-2000:]
        t_install = time.time()
        # only the runtime requirements: the dev tools are absent, cxrlab is the installed copy
        probe = _run([str(py), '-c', "import importlib.util as u, json, cxrlab, torch; print(json.dumps({"
                      "'cxrlab': cxrlab.__file__, 'torch': torch.__version__, "
                      "'dev': [m for m in ('nbdev', 'jupytext', 'pytest', 'execnb') if u.find_spec(m)]}))"], work, env, 120)
        facts = json.loads(probe.stdout.strip().splitlines()[-1])
        assert facts['dev'] == [], f"dev tools in the runtime environment: {facts['dev']}"
        assert Path(facts['cxrlab']).is_relative_to(venv), facts['cxrlab']
        # a kernel of this environment under a name no user-level kernelspec can shadow
        _run([str(py), '-m', 'ipykernel', 'install', '--sys-prefix', '--name', 'cxrlab-runtime'], work, env, 120)
        out = work / '02b_train.out.ipynb'
        _run([str(py), '-m', 'papermill', str(clone / NOTEBOOK), str(out), '-k', 'cxrlab-runtime', '-p', 'epochs', '1',
              '--log-level', 'WARNING'], work, env, 1800)
        t_run = time.time()
        runs = [p for p in (work / 'runs').iterdir() if not p.is_symlink() and (p / 'metrics.json').exists()]  # not runs/latest
        assert len(runs) == 1, f"expected one run under {work / 'runs'}, found {sorted(p.name for p in (work / 'runs').iterdir())}"
        params, metrics = (json.loads((runs[0] / f).read_text()) for f in ('params.json', 'metrics.json'))
        assert params['params']['train']['epochs'] == 1 and metrics['train/epochs_run'] == 1
        assert any(k.startswith('test/') for k in metrics), sorted(metrics)  # the notebook evaluated its test split
        assert not (clone / 'runs').exists() and not (clone / 'nbs' / 'runs').exists()  # outputs went to the cwd
        print(f"\nruntime install test ({mode}): venv + clone {t_venv - t0:.0f} s, pip install {t_install - t_venv:.0f} s, "
              f"papermill {t_run - t_install:.0f} s, total {time.time() - t0:.0f} s")
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about a gigabyte: do not leave it to pytest's tmp retention
        shutil.rmtree(tmp_path / 'linked-site', ignore_errors=True)
