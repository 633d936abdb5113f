"""Figures and the self-contained HTML report of a run folder.

Modules
-------
figures
    matplotlib / nilearn figures built on :class:`matplotlib.figure.Figure` objects (rendered with Agg, never
    touching pyplot's global state): :func:`~brainalign.report.figures.roc_figure`,
    :func:`~brainalign.report.figures.fairness_figure`, :func:`~brainalign.report.figures.brain_map_figure`,
    :func:`~brainalign.report.figures.figure_to_base64`, and the tables behind them
    (:func:`~brainalign.report.figures.fold_averaged_scores`, :func:`~brainalign.report.figures.per_group_metrics`).
html
    :func:`~brainalign.report.html.write_report` writes ``RUN/report.html`` (images embedded as base64 PNG)
    from ``results.json``, ``predictions.csv`` and token maps; the Jinja2 template is package data
    (``brainalign/report/templates/report.html.j2``).
"""
