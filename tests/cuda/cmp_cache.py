# usage: cmp_cache.py CACHE_A CACHE_B  (each a <cache-dir>/<dataset>/<model> folder or a parent of one)
import sys, glob, os, numpy as np, pyarrow.parquet as pq, pyarrow as pa
def load(d, kind):
    fs = sorted(glob.glob(os.path.join(d, '**', kind), recursive=True))
    t = pa.concat_tables([pq.read_table(f) for f in fs])
    keycols = [c for c in (['path', 'view'] if 'path' in t.column_names else ['label', 'template', 'domain', 'prompt'])]
    keys = list(zip(*[t.column(c).to_pylist() for c in keycols]))
    emb = np.asarray(t.column('embedding').combine_chunks().flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(keys), -1)
    return dict(zip(keys, emb))
worst = 1.0
for kind in ['part-*.parquet', 'texts.parquet']:
    a, b = load(sys.argv[1], kind), load(sys.argv[2], kind)
    assert a.keys() == b.keys(), f'{kind}: row keys differ'
    x = np.stack([a[k] for k in a]); y = np.stack([b[k] for k in a])
    cos = (x*y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    print(f'{kind}: rows={len(x)} dim={x.shape[1]} min_cos={cos.min():.7f} mean_cos={cos.mean():.7f} max_abs_diff={np.abs(x-y).max():.3g}')
    worst = min(worst, cos.min())
print('WORST_COS', worst, 'PASS' if worst >= 0.999 else 'FAIL')
