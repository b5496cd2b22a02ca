"""Explorer query latency on a ~10k-image gallery: a typed sentence -> top-k images (and their heat maps).

The gallery is real: SynthCXR (all splits, about 1.75 images per patient) embedded by a `tiny` run trained for one
epoch (quality does not matter for latency; nothing is downloaded). Three timings per query, median over
`--queries` sentences: text encoding + FAISS exact search (what the widget does), the same with the method's scorer
over the whole gallery (the reference a non-dot method would use), and the full text view (search + heat maps for
the k hits + the figure). Target: well under a second.

    OMP_NUM_THREADS=2 python benchmarks/explorer_bench.py                  # ~10k images at 64 px
    python benchmarks/explorer_bench.py --patients 1000 --queries 5        # quick
"""
import argparse, statistics, tempfile, time

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import torch

from cxrlab.data import build_manifest
from cxrlab.evaluate import encode_texts, run_embeddings
from cxrlab.train import load_run, setup_experiment
from cxrlab.viz import Explorer

SENTENCES = ['small right pleural effusion', 'left upper lobe consolidation', 'moderate cardiomegaly', 'no acute findings',
             'right apical pneumothorax', 'left basilar atelectasis', 'endotracheal tube in place', 'pulmonary edema']


def median_ms(fn, items):
    out = []
    for it in items:
        t0 = time.perf_counter(); fn(it); out.append(1000 * (time.perf_counter() - t0))
    return statistics.median(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--patients', type=int, default=5800)
    ap.add_argument('--image-size', type=int, default=64)
    ap.add_argument('--k', type=int, default=6)
    ap.add_argument('--queries', type=int, default=8)
    a = ap.parse_args(argv)
    out = tempfile.mkdtemp()
    exp = setup_experiment('clip', n_patients=a.patients, image_size=a.image_size, epochs=1, device='cpu', out_dir=out,
                           run_name='bench', progress=False)
    exp.fit()
    lr = load_run(exp.run.dir)
    m = exp.manifest.reset_index(drop=True); m.attrs['meta'] = dict(exp.manifest.attrs['meta'])
    t0 = time.perf_counter(); es = run_embeddings(lr, m, 'all', batch_size=128, progress=False); t_embed = time.perf_counter() - t0
    ex = Explorer(lr, m, es, k=a.k)
    texts = (SENTENCES * (a.queries // len(SENTENCES) + 1))[:a.queries]
    ex.search_text(texts[0]); plt.close(ex.text_figure(texts[0]))  # warm-up
    t_faiss = median_ms(ex.search_text, texts)
    sc = lr.scorer()
    dense = lambda t: sc.score(es.image, encode_texts(lr.model, lr.tokenizer, [t], sc.text_keys))[:, 0].topk(a.k)
    t_dense = median_ms(dense, texts)
    t_view = median_ms(lambda t: plt.close(ex.text_figure(t)), texts)
    print(f"gallery: {len(es)} images ({a.patients} SynthCXR patients, {a.image_size} px), embedded in {t_embed:.1f} s; "
          f"FAISS index: {ex.index is not None}; threads {torch.get_num_threads()}")
    print(f"sentence -> top-{a.k}: FAISS search {t_faiss:.1f} ms, dense scorer over the gallery {t_dense:.1f} ms "
          f"(ratio {t_dense / t_faiss:.2f}x); full text view with {a.k} heat maps and the figure {t_view:.0f} ms (target < 1000 ms)")


if __name__ == '__main__':
    main()
