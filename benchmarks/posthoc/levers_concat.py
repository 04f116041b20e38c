"""Issue 29 small-data lever, post hoc on accuracy.py's recipe cache (see benchmarks/README.md,
'Levers for small data'). Run as it was: paths are those of the 2026-12-07 runs."""
import sys, glob, warnings, numpy as np
sys.path.insert(0, '/work/main')
from autotransfer.data import load_data
from sklearn.linear_model import LogisticRegressionCV, LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
from sklearn.model_selection import StratifiedKFold, cross_val_predict
warnings.simplefilter("ignore")
base='/work/benchruns/accuracy'
for sub in ['fashion-mnist-25-200-s0','fashion-mnist-25-200-s1','fashion-mnist-25-200-s2','fashion-mnist-100-200-s0']:
    tr = load_data(f'{base}/{sub}/train'); te = load_data(f'{base}/{sub}/test')
    fp = f"{tr.fingerprint()[:16]}-{te.fingerprint()[:16]}"
    X = {}
    for n, s in [('efficientnet_lite0',224),('efficientnet_lite1',240),('efficientnet_lite2',260)]:
        z = np.load(f'{base}/recipe-cache/{fp}-{n}-{s}.npz'); X[n]=(z['train'], z['test'])
    ytr, yte = np.asarray(tr.labels), np.asarray(te.labels)
    res = {}; probs = {}
    for n,(a,b) in X.items():
        m = make_pipeline(StandardScaler(), LogisticRegressionCV(max_iter=3000)).fit(a, ytr)
        probs[n] = m.predict_proba(b); res[n] = np.mean(probs[n].argmax(1)==yte)
    res['avg3'] = np.mean(sum(probs.values()).argmax(1)==yte)
    # concat with per-source standardisation
    A = np.hstack([StandardScaler().fit(a).transform(a) for a,_ in X.values()])
    B = np.hstack([StandardScaler().fit(a).transform(b) for a,b in X.values()])
    m = LogisticRegressionCV(max_iter=3000).fit(A, ytr); res['concat3'] = np.mean(m.predict(B)==yte); res['concat3_C']=float(m.C_[0])
    print(sub, {k: round(float(v),4) for k,v in res.items()}, flush=True)
