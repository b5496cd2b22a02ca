"""The explorer as a person uses it: JupyterLab on localhost, the notebook opened in headless Chromium, a sentence typed,
Search pressed, images appear. Needs Debian's chromium and chromium-driver (.ci/run installs them); skips with a
message saying so when they are absent. The screenshots are kept in reports/browser-test/ (and the query view in
/tmp/explorer_evidence.png): under each hit its study, first finding sentences and positive labels, the hits with the
query's finding marked, the map opacity slider moved, and the image -> reports view with the true report's rank."""
import json, os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = shutil.which('chromium') or shutil.which('chromium-browser'), shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason='needs a real browser: apt-get install -y chromium chromium-driver '
                                                                     '(Debian packages; .ci/run installs them)')


def _port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _explorer_notebook(folder: Path, run_dir: Path) -> Path:
    cells = [f"RUN = {str(run_dir)!r}",
             "from cxrlab.train import load_run\nfrom cxrlab.data import build_manifest\n"
             "from cxrlab.evaluate import run_data, run_embeddings\nfrom cxrlab.viz import Explorer",
             "lr = load_run(RUN)\nm, _ = build_manifest(**run_data([RUN]))\n"
             "rows = m[m['split'] == 'test'].reset_index(drop=True); rows.attrs['meta'] = dict(m.attrs['meta'])\n"
             "ex = Explorer(lr, rows, run_embeddings(lr, rows, 'test', progress=False), k=4)",
             "ex.widget(example='')"]
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    path = folder / 'explorer.ipynb'; nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    from cxrlab.train import setup_experiment
    exp = setup_experiment('clip', n_patients=48, image_size=64, epochs=1, batch_size=16, device='cpu',
                           out_dir=str(tmp_path_factory.mktemp('runs')), run_name='explorer-run')
    exp.fit()
    return exp.run.dir


def test_explorer_in_jupyterlab_and_chromium(trained_run, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    _explorer_notebook(tmp_path, trained_run)
    port, token = _port(), 'cxrlab-test-token'
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path / 'jcfg'), 'JUPYTER_DATA_DIR': str(tmp_path / 'jdata'),
           'JUPYTER_RUNTIME_DIR': str(tmp_path / 'jrt')}
    env.pop('JUPYTER_PLATFORM_DIRS', None)
    server = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
                               f'--ServerApp.token={token}', f'--ServerApp.root_dir={tmp_path}', '--LabApp.expose_app_in_browser=True',
                               *(['--allow-root'] if hasattr(os, 'geteuid') and os.geteuid() == 0 else []),
                               '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / 'server.log', 'w'))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-sync',
                 '--disable-background-networking', '--disable-component-update', '--window-size=1400,1000',
                 f'--user-data-dir={tmp_path / "chrome"}'):
        opts.add_argument(flag)
    driver = None
    try:
        deadline = time.time() + 60
        while True:  # the server is up when its API answers
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=2); break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        driver.get(f'http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}')
        wait = WebDriverWait(driver, 180)
        wait.until(lambda d: d.execute_script("return !!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))"))
        # the notebook panel among the main-area widgets (shell.currentWidget is null while focus is elsewhere, e.g. the file browser)
        panel = ("const w = Array.from(window.jupyterapp.shell.widgets('main')).find(x => x.sessionContext && x.title.label === 'explorer.ipynb');")
        wait.until(lambda d: d.execute_script(
            panel + "return !!(w && w.sessionContext.session && w.sessionContext.session.kernel "
            "&& w.sessionContext.session.kernel.status === 'idle')"))
        driver.execute_script(panel + "window.jupyterapp.shell.activateById(w.id); window.jupyterapp.commands.execute('notebook:run-all-cells')")
        box = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '.widget-text input')))
        box.clear(); box.send_keys('small right pleural effusion')
        driver.find_element(By.XPATH, "//button[contains(., 'Search')]").click()
        result = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, 'img.cxrlab-explorer-result')))
        assert result.get_attribute('src').startswith('data:image/png;base64,') and result.size['width'] > 100
        timing = driver.find_element(By.XPATH, "//small[contains(., 'images in')]").text
        # the evidence under each hit: study id, first finding sentences, positive labels; hits with the query's finding marked
        hits = driver.find_elements(By.CSS_SELECTOR, '.cxrlab-hit')
        assert len(hits) == 4
        for h in hits:
            study, findings, labels = (h.find_element(By.CSS_SELECTOR, c).text for c in ('.cxrlab-study', '.cxrlab-findings', '.cxrlab-labels'))
            assert study.startswith('study ') and len(study) > 6 and findings and labels
            assert ('cxrlab-hit-match' in h.get_attribute('class')) == ('Pleural Effusion' in labels.split(', ')), (labels, h.get_attribute('class'))
        assert 'Pleural Effusion' in driver.find_element(By.CSS_SELECTOR, '.cxrlab-query-findings').text
        evidence = [{'study': h.find_element(By.CSS_SELECTOR, '.cxrlab-study').text, 'labels': h.find_element(By.CSS_SELECTOR, '.cxrlab-labels').text,
                     'marked': 'cxrlab-hit-match' in h.get_attribute('class')} for h in hits]
        # the map opacity slider re-draws the same hits: the images change, the studies do not
        srcs, studies = ("return [...document.querySelectorAll('img.cxrlab-explorer-result')].map(i => i.src)",  # read in one
                         "return [...document.querySelectorAll('.cxrlab-hit .cxrlab-study')].map(e => e.innerText)")  # go: no stale elements
        before = driver.execute_script(srcs)
        handle = driver.find_element(By.CSS_SELECTOR, '.widget-slider .noUi-handle')
        handle.click()
        for _ in range(5): handle.send_keys(Keys.ARROW_LEFT)
        wait.until(lambda d: len(d.execute_script(srcs)) == len(before) and d.execute_script(srcs) != before)
        assert driver.execute_script(studies) == [e['study'] for e in evidence]
        opacity = driver.find_element(By.CSS_SELECTOR, '.widget-slider .widget-readout').text
        shots = ROOT / 'reports' / 'browser-test'; shots.mkdir(parents=True, exist_ok=True)
        driver.execute_script("document.querySelectorAll('.Toastify').forEach(e => e.remove())")  # JupyterLab's news prompt
        driver.execute_script("arguments[0].scrollIntoView()", handle)  # the opacity slider, the status and the hits with their evidence
        driver.save_screenshot(str(shots / 'explorer.png'))
        driver.save_screenshot('/tmp/explorer_evidence.png')
        # image -> reports: the true report marked where it ranks
        driver.find_element(By.XPATH, "//button[contains(., 'Reports for image')]").click()
        rank = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '.cxrlab-true-rank'))).text
        assert 'its true report ranks #' in rank
        r = int(rank.split('#')[1].split()[0])
        assert len(driver.find_elements(By.CSS_SELECTOR, '.cxrlab-true-report')) == (1 if r <= 4 else 0)
        driver.save_screenshot(str(shots / 'explorer_image.png'))
        (shots / 'explorer.json').write_text(json.dumps({'query': 'small right pleural effusion', 'status': timing, 'hits': evidence,
                                                         'opacity': opacity, 'image_query': rank}))
    except Exception:
        if driver is not None:  # what the browser showed when it failed, for the person reading the failure
            shots = ROOT / 'reports' / 'browser-test'; shots.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(shots / 'failure.png'))
            print('browser state:', driver.execute_script(
                "const w = window.jupyterapp && Array.from(window.jupyterapp.shell.widgets('main')).find(x => x.sessionContext); const s = w && w.sessionContext;"
                "return {widget: w && w.constructor.name, title: w && w.title.label, kernel: s && s.session && s.session.kernel"
                " && s.session.kernel.status, outputs: document.querySelectorAll('.jp-OutputArea-output').length,"
                " errors: [...document.querySelectorAll('.jp-RenderedText[data-mime-type=\"application/vnd.jupyter.stderr\"]')].map(e => e.innerText.slice(-500))}"))
        raise
    finally:
        if driver is not None: driver.quit()
        server.terminate()
        try: server.wait(20)
        except subprocess.TimeoutExpired: server.kill()
