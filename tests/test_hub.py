"""Hub weights on request: an explicit `hf-hub:` source downloads through huggingface_hub when online, and stays
cache-only with HF_HUB_OFFLINE=1. No real network: a fake hub (a local HTTP server speaking the endpoints
huggingface_hub uses) is reached through HF_ENDPOINT from subprocesses with a clean environment, as on Colab."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from cxrlab.models import (SMALL_OVERRIDES, HubRepo, PretrainedWeightsError, create_model, hub_cache_folder,
                           parse_pretrained, resolve_hub_dir, save_open_clip_checkpoint, write_wordpiece_vocab)

REPO = 'cxrlab-test/biomedclip-small'
COMMIT = 'c0ffee' + '0' * 34
WORDS = 'small left pleural effusion no acute cardiopulmonary process'.split()


class FakeHub:
    "A local HTTP server answering huggingface_hub's repo-info, tree, HEAD and GET requests for in-memory repos."

    def __init__(self, repos: dict):  # {repo_id: {path: bytes}}
        self.repos, self.requests = repos, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass

            def do_HEAD(self): hub._answer(self, body=False)

            def do_GET(self): hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown(); self.server.server_close()

    def downloads(self):
        "Files fetched with GET (the file downloads, not the metadata calls)."
        return [p.split('/resolve/', 1)[1].split('/', 1)[1] for m, p in self.requests if m == 'GET' and '/resolve/' in p]

    @staticmethod
    def _entry(path, data):
        sha = hashlib.sha256(data).hexdigest()
        return {'type': 'file', 'path': path, 'size': len(data), 'oid': hashlib.sha1(data).hexdigest(),
                'lfs': {'oid': sha, 'size': len(data), 'pointerSize': 134}}

    def _send(self, h, status, payload=b'', headers=(), body=True):
        h.send_response(status)
        for k, v in headers: h.send_header(k, v)
        h.send_header('Content-Length', str(len(payload)))
        h.end_headers()
        if body: h.wfile.write(payload)

    def _answer(self, h, body):
        path = urllib.parse.urlparse(h.path).path
        self.requests.append((h.command, path))
        parts = [urllib.parse.unquote(p) for p in path.strip('/').split('/')]
        api = parts[:2] == ['api', 'models']
        repo_id = '/'.join(parts[2:4] if api else parts[0:2])
        files = self.repos.get(repo_id)
        if files is None:
            return self._send(h, 404, b'{"error": "Repository not found"}', [('X-Error-Code', 'RepoNotFound'),
                                                                             ('Content-Type', 'application/json')], body)
        if api and (len(parts) == 4 or parts[4] == 'revision'):  # repo_info / model_info
            info = {'id': repo_id, 'modelId': repo_id, 'sha': COMMIT, 'private': False,
                    'siblings': [{'rfilename': p} for p in sorted(files)]}
            return self._send(h, 200, json.dumps(info).encode(), [('Content-Type', 'application/json')], body)
        if api and parts[4] == 'tree':  # list_repo_tree / list_repo_files
            listing = [self._entry(p, d) for p, d in sorted(files.items())]
            return self._send(h, 200, json.dumps(listing).encode(), [('Content-Type', 'application/json')], body)
        if not api and len(parts) > 4 and parts[2] == 'resolve':
            name = '/'.join(parts[4:])
            if name not in files:
                return self._send(h, 404, b'', [('X-Error-Code', 'EntryNotFound')], body)
            data = files[name]
            sha = hashlib.sha256(data).hexdigest()
            return self._send(h, 200, data, [('ETag', f'"{sha}"'), ('X-Linked-Etag', f'"{sha}"'),
                                             ('X-Repo-Commit', COMMIT), ('X-Linked-Size', str(len(data))),
                                             ('Content-Type', 'application/octet-stream')], body)
        return self._send(h, 404, b'', (), body)


def _fingerprint(model) -> float:
    "A number that identifies a model's weights (the same sum is computed in the subprocesses)."
    return sum(p.detach().double().sum().item() for p in model.parameters())


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    "A small BiomedCLIP release: open_clip weights twice (safetensors and .bin), config, vocabulary, README."
    from safetensors.torch import save_file
    from cxrlab.models import to_open_clip_state_dict
    root = tmp_path_factory.mktemp('release')
    vocab = write_wordpiece_vocab(root / 'vocab', WORDS)
    torch.manual_seed(1)
    b = create_model('biomedclip', tokenizer_dir=vocab, **SMALL_OVERRIDES['biomedclip'])
    d = save_open_clip_checkpoint(b, root / 'repo')
    save_file({k: v.contiguous() for k, v in to_open_clip_state_dict(b.model).items()}, str(d / 'open_clip_model.safetensors'))
    (d / 'vocab.txt').write_text((vocab / 'vocab.txt').read_text())
    (d / 'README.md').write_text('a test release\n')
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    ref = _fingerprint(b.model)
    return files, ref


def _run(code: str, env_extra: dict, hf_home: Path, timeout=300) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter with a Colab-like environment (no HF_HUB_OFFLINE unless given)."
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'TRANSFORMERS_', 'HUGGINGFACE_'))}
    env.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY='1', NO_PROXY='127.0.0.1,localhost',
               no_proxy='127.0.0.1,localhost', OMP_NUM_THREADS='1', **env_extra)
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=timeout)


LOAD = f"""
import json, torch
from cxrlab.models import SMALL_OVERRIDES, create_model, PretrainedWeightsError
try:
    b = create_model('biomedclip', pretrained={{source!r}}, **SMALL_OVERRIDES['biomedclip'])
    out = dict(loaded=b.config['loaded'], tokenizer=type(b.tokenizer).__name__,
               ref=sum(p.detach().double().sum().item() for p in b.model.parameters()))
except PretrainedWeightsError as e:
    out = dict(error=str(e))
print('RESULT ' + json.dumps(out))
"""


def _result(proc):
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    assert lines, f"no result (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len('RESULT '):])


def test_hf_hub_source_downloads_when_online_then_loads_offline_from_the_cache(release, tmp_path):
    files, ref = release
    hf_home = tmp_path / 'hf'
    with FakeHub({REPO: files}) as hub:
        proc = _run(LOAD.format(source=f'hf-hub:{REPO}'), {'HF_ENDPOINT': hub.url}, hf_home)
        res = _result(proc)
        assert 'error' not in res, res['error']
        snap = hf_home / 'hub' / f"models--{REPO.replace('/', '--')}" / 'snapshots' / COMMIT
        assert res['loaded'] == {'model': str(snap / 'open_clip_model.safetensors')}  # the standard HF cache layout
        assert res['tokenizer'] == 'WordPieceTokenizer' and res['ref'] == pytest.approx(ref, rel=1e-12)
        fetched = hub.downloads()
        assert 'open_clip_model.safetensors' in fetched and 'vocab.txt' in fetched
        assert 'open_clip_pytorch_model.bin' not in fetched and 'README.md' not in fetched  # one weights file only
        assert 'Download complete' in proc.stderr or 'Fetching' in proc.stderr, proc.stderr[-2000:]  # progress bar
        assert f'downloading {REPO}' in proc.stderr  # cxrlab says what it fetches and where
        n = len(hub.requests)
        # the same cache, offline: no request reaches the hub and the snapshot loads
        res = _result(_run(LOAD.format(source=f'hf-hub:{REPO}'), {'HF_ENDPOINT': hub.url, 'HF_HUB_OFFLINE': '1'}, hf_home))
        assert 'error' not in res, res['error']
        assert res['ref'] == pytest.approx(ref, rel=1e-12) and len(hub.requests) == n
        # a bare hub id is the same request
        res = _result(_run(LOAD.format(source=REPO), {'HF_ENDPOINT': hub.url, 'HF_HUB_OFFLINE': '1'}, hf_home))
        assert res.get('ref') == pytest.approx(ref, rel=1e-12)


def test_offline_hub_source_is_a_clear_error_naming_the_folder_to_fill(release, tmp_path):
    files, _ = release
    hf_home = tmp_path / 'hf'
    with FakeHub({REPO: files}) as hub:
        res = _result(_run(LOAD.format(source=f'hf-hub:{REPO}'), {'HF_ENDPOINT': hub.url, 'HF_HUB_OFFLINE': '1'}, hf_home))
        assert hub.requests == []  # offline means offline
    msg = res['error']
    assert str(hf_home / 'hub' / f"models--{REPO.replace('/', '--')}") in msg  # the folder to fill
    assert 'HF_HUB_OFFLINE is set' in msg and f'hf download {REPO}' in msg and 'local-dir:/path' in msg


def test_online_defaults_and_registry_ids_never_download(release, tmp_path):
    "pretrained=False (random init) and pretrained=True (registry ids) touch only the cache, online or not."
    files, _ = release
    code = """
import json, warnings
from cxrlab.models import SMALL_OVERRIDES, create_model, PretrainedWeightsError
warnings.simplefilter('ignore')
b = create_model('rclip_mini', **SMALL_OVERRIDES['rclip_mini'])  # its tokenizer probe looks up distilbert-base-uncased
out = dict(random_init_tokenizer=b.config['tokenizer']['kind'])
try: create_model('biomedclip', pretrained=True, **SMALL_OVERRIDES['biomedclip'])
except PretrainedWeightsError as e: out['default_error'] = str(e)
print('RESULT ' + json.dumps(out))
"""
    with FakeHub({REPO: files, 'distilbert-base-uncased': files,
                  'microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224': files}) as hub:
        res = _result(_run(code, {'HF_ENDPOINT': hub.url}, tmp_path / 'hf'))
        assert hub.requests == []
    assert res['random_init_tokenizer'] == 'clip_bpe_fallback'
    assert "pretrained='hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224' downloads it" in res['default_error']


def test_online_errors_unknown_repo_unreachable_hub_and_missing_weights(release, tmp_path):
    files, _ = release
    code = """
import json
from cxrlab.models import SMALL_OVERRIDES, create_model, PretrainedWeightsError
out = {}
for key, source in [('unknown', 'hf-hub:cxrlab-test/no-such-repo'), ('bare', 'models/biomedclip'),
                    ('no_weights', 'hf-hub:cxrlab-test/vocab-only')]:
    try: create_model('biomedclip', pretrained=source, **SMALL_OVERRIDES['biomedclip']); out[key] = 'loaded'
    except PretrainedWeightsError as e: out[key] = str(e)
print('RESULT ' + json.dumps(out))
"""
    with FakeHub({REPO: files, 'cxrlab-test/vocab-only': {'vocab.txt': files['vocab.txt']}}) as hub:
        res = _result(_run(code, {'HF_ENDPOINT': hub.url}, tmp_path / 'hf'))
        assert not hub.downloads()  # a repo without the weights is refused before anything is fetched
    assert 'the hub refused' in res['unknown'] and 'HF_TOKEN' in res['unknown']
    assert 'meant as a folder, it does not exist' in res['bare']
    assert "has no model (open_clip_model.safetensors | open_clip_pytorch_model.bin)" in res['no_weights']
    # a hub that cannot be reached: the cache is tried, and the error says both
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); closed = f'http://127.0.0.1:{s.getsockname()[1]}'  # nothing listens here
    res = _result(_run(LOAD.format(source=f'hf-hub:{REPO}'), {'HF_ENDPOINT': closed}, tmp_path / 'hf2', timeout=600))
    assert 'could not be reached' in res['error'] and 'not in the local Hugging Face cache' in res['error']


def test_offline_in_process_never_opens_a_socket(monkeypatch, tmp_path):
    "The test session runs with HF_HUB_OFFLINE=1: resolving a named repo reads the cache and nothing else."
    import huggingface_hub.constants as C
    monkeypatch.setattr(C, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setattr(socket.socket, 'connect', lambda *a, **k: pytest.fail('network access attempted'))
    source, repo = parse_pretrained(f'hf-hub:{REPO}')
    assert source == 'hf-hub' and isinstance(repo, HubRepo)
    with pytest.raises(PretrainedWeightsError, match='HF_HUB_OFFLINE is set') as e:
        resolve_hub_dir(repo)
    assert str(hub_cache_folder(REPO)) in str(e.value) and str(tmp_path / 'hub') in str(e.value)
