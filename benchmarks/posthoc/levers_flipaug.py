"""Issue 29 small-data lever, post hoc on accuracy.py's recipe cache (see benchmarks/README.md,
'Levers for small data'). Run as it was: paths are those of the 2026-12-07 runs."""
import sys, warnings, numpy as np, tensorflow as tf
sys.path.insert(0, '/work/main')
from pathlib import Path
from autotransfer.data import load_data
from autotransfer.backbones import HubBackbone
from autotransfer.probe.featurize import extract_features, feature_dataset
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
warnings.simplefilter("ignore")
base='/work/benchruns/accuracy'
ZOO=[('efficientnet_lite0',224),('efficientnet_lite1',240),('efficientnet_lite2',260)]
for sub in sys.argv[1:]:
    tr = load_data(f'{base}/{sub}/train'); te = load_data(f'{base}/{sub}/test')
    fp = f"{tr.fingerprint()[:16]}-{te.fingerprint()[:16]}"
    ytr, yte = np.asarray(tr.labels), np.asarray(te.labels)
    P = {}
    for n, s in ZOO:
        z = np.load(f'{base}/recipe-cache/{fp}-{n}-{s}.npz'); a, b = z['train'], z['test']
        fpath = Path(f'/work/exp/flip-{fp}-{n}.npz')
        if fpath.is_file():
            f = np.load(fpath); fa, fb = f['train'], f['test']
        else:
            bb = HubBackbone(f"zoo://{n}/feature_vector", input_size=s)
            fa = extract_features(bb, feature_dataset(tr, np.arange(len(tr)), s).map(lambda x: tf.reverse(x, axis=[2])))
            fb = extract_features(bb, feature_dataset(te, np.arange(len(te)), s).map(lambda x: tf.reverse(x, axis=[2])))
            np.savez(fpath, train=fa, test=fb)
        m = make_pipeline(StandardScaler(), LogisticRegressionCV(max_iter=3000)).fit(a, ytr)
        ma = make_pipeline(StandardScaler(), LogisticRegressionCV(max_iter=3000)).fit(np.vstack([a, fa]), np.concatenate([ytr, ytr]))
        P[n] = {'base': m.predict_proba(b), 'tta': (m.predict_proba(b)+m.predict_proba(fb))/2,
                'aug': ma.predict_proba(b), 'aug_tta': (ma.predict_proba(b)+ma.predict_proba(fb))/2}
    out = {}
    for v in ['base','tta','aug','aug_tta']:
        for n,_ in ZOO: out[f'{n[-5:]}_{v}'] = np.mean(P[n][v].argmax(1)==yte)
        out[f'avg3_{v}'] = np.mean(sum(P[n][v] for n,_ in ZOO).argmax(1)==yte)
    print(sub, {k: round(float(v),4) for k,v in out.items()}, flush=True)
