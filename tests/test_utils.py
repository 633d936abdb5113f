import pytest

from brainalign.errors import BrainAlignError
from brainalign.evaluation.volume_run import resolve_config
from brainalign.models.tokenizer import TokenizerConfig
from brainalign.utils import parse_scalar


@pytest.mark.parametrize("text,value", [("5", 5), ("0.5", 0.5), ("1e-3", 1e-3), ("5E4", 5e4), ("-2e-1", -0.2),
                                        ("true", True), ("null", None), ("[1, 2]", [1, 2]), ("gram", "gram"),
                                        ("nan", "nan"), ("[1,", "[1,")])
def test_parse_scalar(text, value):
    assert parse_scalar(text) == value and type(parse_scalar(text)) is type(value)


def test_set_values_in_exponent_form_are_numbers():
    cfg = resolve_config({}, ["vit.lr=1e-3", "vit.min_lr=1e-5", "mlp.lr=2e-4"], "vit,mlp", False, None)
    assert cfg["vit"]["lr"] == pytest.approx(1e-3) and cfg["mlp"]["lr"] == pytest.approx(2e-4)


def test_wrong_value_types_are_clear_errors():
    with pytest.raises(BrainAlignError, match="volume aligner options have a value of the wrong type"):
        resolve_config({}, ["vit.lr=fast"], "vit", False, None)
    with pytest.raises(BrainAlignError, match="tokenizer options have a value of the wrong type"):
        TokenizerConfig.from_dict({"ema_decay": "high"})
