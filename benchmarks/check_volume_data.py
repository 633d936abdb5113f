"""Is the planted truth of a simulated volume cohort where it should be, and do real study maps carry their task?

Usage: .venv/bin/python benchmarks/check_volume_data.py SIMULATED_COHORT STUDYSET_COHORT
(ridge retrieval with all, planted-only and non-planted voxels; a 5-fold n-back vs flanker classifier on the studyset)."""

import sys

import nibabel as nib
import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import StratifiedKFold, cross_val_score
from brainalign.data.volumes import VolumeCohort
from brainalign.evaluation.metrics import recall_at_k

sim, studies = sys.argv[1], sys.argv[2]
c = VolumeCohort.load(sim)
X = np.asarray(c.masked_stack())
truth = (np.asarray(nib.load(f"{sim}/truth_mask.nii.gz").dataobj) > 0)[c.mask]
stim = c.stimulus_ids
test_stim = np.unique(stim)[np.random.default_rng(0).permutation(len(np.unique(stim)))[:20]]
te = np.isin(stim, test_stim)
tr = ~te
emb, ids = c.embeddings("text")
Y = c.scan_embeddings("text")
for name, cols in (("all voxels", slice(None)), ("planted voxels", truth), ("other voxels", ~truth)):
    pred = Ridge(alpha=1e3).fit(X[tr][:, cols], Y[tr]).predict(X[te][:, cols])
    items = emb[np.isin(ids, test_stim)]
    item_ids = ids[np.isin(ids, test_stim)]
    pred /= np.linalg.norm(pred, axis=1, keepdims=True)
    target = np.array([np.flatnonzero(item_ids == s)[0] for s in stim[te]])
    print(f"simulated brain->text, {name}: {recall_at_k(pred @ items.T, target, ks=(1, 5))} "
          f"({te.sum()} test scans, {len(item_ids)} candidate captions)")
s = VolumeCohort.load(studies)
Xs = np.asarray(s.masked_stack())
yl = (s.phenotypes["task"] == "flanker").to_numpy()
auc = cross_val_score(LogisticRegression(C=0.01, max_iter=2000), Xs, yl,
                      cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="roc_auc")
print(f"nimare-studyset n-back vs flanker from study maps: ROC AUC {auc.mean():.3f} ± {auc.std():.3f} (5-fold, {len(yl)} studies)")
