"""Every shipped experiment config is a valid BenchmarkConfig whose methods accept their parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brainalign.evaluation.benchmark import BenchmarkConfig
from brainalign.models import get_method

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_is_valid(path):
    config = BenchmarkConfig(**yaml.safe_load(path.read_text()))
    for name in config.methods:
        get_method(name, **config.method_params.get(name, {}))
    assert set(config.method_params) <= set(config.methods)


def test_configs_exist():
    assert {"neurolip-abide.yaml", "neurolip-adhd.yaml"} <= {p.name for p in CONFIGS}
