"""Evaluation: classification, fairness and retrieval metrics with bootstrap intervals
(:mod:`~brainalign.evaluation.metrics`), the person-grouped held-out + K-fold protocol
(:mod:`~brainalign.evaluation.protocol`) and the benchmark runner (:mod:`~brainalign.evaluation.benchmark`)."""
