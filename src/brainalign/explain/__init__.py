"""Explanations: which brain regions a model uses, and how well that matches planted truth.

Models produce per-scan maps (e.g. NeuroLIP's token→ROI attention rows, IB-BA, RISE, Grad-CAM, Chefer
attributions); this package aggregates them, scores them against the truth of simulated cohorts and
writes them in the run-folder format (CSV with rows = tokens and columns = ROIs, NIfTI when an atlas
label image is known).

Modules
-------
token_maps
    :func:`~brainalign.explain.token_maps.mean_token_maps` (per-token mean maps),
    :func:`~brainalign.explain.token_maps.write_token_maps` / :func:`~brainalign.explain.token_maps.read_token_maps`
    (CSV + NIfTI), :func:`~brainalign.explain.token_maps.roi_values_to_nifti` (paint ROI values into an
    atlas), :func:`~brainalign.explain.token_maps.score_against_truth` and
    :func:`~brainalign.explain.token_maps.score_token_maps` (AUROC / top-k against planted ROIs).
"""
