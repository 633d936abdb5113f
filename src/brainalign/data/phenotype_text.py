"""Phenotype rows → templated text, with the character span of every attribute's value.

NeuroLIP describes each scan with the template (:data:`NEUROLIP_TEMPLATE`)::

    diagnostic group: {dx}, sex: {sex}, age: {age}, social responsiveness scale version: {srs}

Each ``{attribute}`` placeholder is filled by an :class:`AttributeSpec`, which says which phenotype column(s) it
reads and how a raw value becomes a word:

* ``kind="category"``: a mapping from raw values to words (``{1: "autism", "ASD": "autism", ...}``).
  String keys match case- and whitespace-insensitively; integral numbers match whatever their type
  (``1``, ``1.0``, ``np.int64(1)`` and the string ``"1"`` are the same key).
* ``kind="numeric"``: the value is rounded **half up** (half away from zero: 12.5 → 13, 12.49 → 12) to
  ``decimals`` places.  Python's ``round`` rounds halves to even (``round(12.5) == 12``), which would put
  12.5-year-olds and 11.5-year-olds into the same age word; half up is the school rule readers expect.
  Rounding is done in decimal on the shortest repr of the float, so 2.675 → "2.68" at 2 decimals.
* ``kind="text"``: the value's string, stripped.
* derived attributes: when none of the spec's columns is in the table, ``derive(source)`` computes the raw value
  from another attribute's raw value (``derive_from``).  The default ``srs`` attribute is derived from the
  *unrounded* age (child if age < 18 else adult, :func:`srs_version`), so age 17.9 renders as
  ``age: 18`` with ``srs: child`` — the SRS form is chosen by true age, not by the printed one.

Unknown categories, NaN/empty values, non-numbers in numeric columns and missing columns are
:class:`~brainalign.errors.BrainAlignError` errors that name the scan (``scan_id``, or the row), the column and
the allowed values.  Nothing is silently dropped.

Rendering returns :class:`PhenotypeText`: the string plus ``spans[attribute] = (start, end)``, the character
range of the attribute's *value* (``text[start:end] == "autism"``).  :func:`token_positions` turns a span into
token indices using a tokenizer's offset mapping (METHODS §1, *Text side*: s_a is the mean of the value's
sub-word tokens; spans come from offsets, never from counting words).

At prediction time :meth:`PhenotypeTemplate.prompt` fills some attributes from ``overrides`` (e.g. ``dx`` set to
each class in turn) and the rest from the row — only attributes flagged ``known_at_test`` may come from the row,
so a prompt can never leak the label.
"""

from __future__ import annotations

import math
import numbers
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd

from brainalign.errors import BrainAlignError

NEUROLIP_TEMPLATE = (
    "diagnostic group: {dx}, sex: {sex}, age: {age}, social responsiveness scale version: {srs}"
)
KINDS = ("category", "numeric", "text")
_WHERE = "\x00where\x00"  # placeholder for the scan names in per-value errors of a whole table


# ----------------------------------------------------------------------------------------------- value helpers
def round_half_up(value: float, decimals: int = 0) -> Decimal:
    """Round half away from zero (12.5 → 13, -0.5 → -1), exactly, in decimal.

    Parameters
    ----------
    value : float
        Finite number.
    decimals : int
        Digits after the decimal point (>= 0).

    Returns
    -------
    decimal.Decimal
        The rounded value; ``str()`` of it has exactly ``decimals`` digits after the point.
    """
    quantum = Decimal(1).scaleb(-decimals)
    # repr() is the shortest string that round-trips, so 2.675 is rounded as the 2.675 the user typed.
    return Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP)


def format_number(value: float, decimals: int = 0) -> str:
    """Half-up rounded number as text: ``format_number(12.5) == "13"``, ``format_number(3.14159, 2) == "3.14"``."""
    rounded = round_half_up(value, decimals)
    if rounded == 0:
        rounded = abs(rounded)  # no "-0"
    return str(rounded)


def srs_version(age: float) -> str:
    """Social responsiveness scale form for an (unrounded) age in years: ``"child"`` if age < 18 else ``"adult"``."""
    return "child" if float(age) < 18 else "adult"


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT, pd.NA and blank strings."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, numbers.Real):
        return math.isnan(float(value))
    return False


def _show(value: Any) -> str:
    """repr of a value for messages, without numpy's ``np.float64(...)`` wrapper."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _key(value: Any) -> Any:
    """Normalised lookup key: stripped lower-case strings, integral numbers as int, other numbers as float."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            number = float(text)
        except ValueError:
            return text
        return _key(number) if math.isfinite(number) else text
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return int(value) if value.is_integer() else value
    return value


# ------------------------------------------------------------------------------------------------- data types
@dataclass(frozen=True)
class AttributeSpec:
    """How one ``{attribute}`` placeholder is filled from a phenotype row.

    Parameters
    ----------
    name : str
        Placeholder name in the template.
    column : str or tuple of str, optional
        Phenotype column(s) to read; the first one present in the table is used.  Defaults to ``name``.
    values : mapping, optional
        Raw value → word, for ``kind="category"``.  Keys are matched after normalisation (see module docstring).
    kind : {"category", "numeric", "text"}, optional
        Inferred when omitted: "category" if ``values`` is given, else "text".
    decimals : int
        Digits after the point for ``kind="numeric"`` (rounded half up).
    derive : callable, optional
        ``derive(source_raw_value) -> raw value`` used when none of ``column`` is present.
    derive_from : str, optional
        Name of the attribute whose raw value feeds ``derive`` (its unrounded number for numeric attributes,
        its word for categories).
    known_at_test : bool
        Whether the value may be read from the row when building prediction prompts (False for the target).
    """

    name: str
    column: str | tuple[str, ...] | None = None
    values: Mapping[Any, str] | None = None
    kind: str | None = None
    decimals: int = 0
    derive: Callable[[Any], Any] | None = None
    derive_from: str | None = None
    known_at_test: bool = True
    _lookup: dict[Any, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = self.column if self.column is not None else self.name
        columns = (columns,) if isinstance(columns, str) else tuple(columns)
        kind = self.kind or ("category" if self.values is not None else "text")
        if kind not in KINDS:
            raise BrainAlignError(f"attribute '{self.name}': kind must be one of {KINDS}, got {kind!r}")
        if kind == "category" and not self.values:
            raise BrainAlignError(f"attribute '{self.name}': a category needs a non-empty 'values' mapping")
        if (self.derive is None) != (self.derive_from is None):
            raise BrainAlignError(f"attribute '{self.name}': give both 'derive' and 'derive_from', or neither")
        if not isinstance(self.decimals, int) or self.decimals < 0:
            raise BrainAlignError(f"attribute '{self.name}': decimals must be an integer >= 0, got {self.decimals!r}")
        lookup = {_key(k): str(v) for k, v in (self.values or {}).items()}
        bad = [k for k, v in lookup.items() if not v.strip()]
        if bad:
            raise BrainAlignError(f"attribute '{self.name}': empty word for value(s) {bad}")
        object.__setattr__(self, "column", columns)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "_lookup", lookup)

    @property
    def allowed(self) -> str:
        """Human-readable description of the accepted raw values (for error messages)."""
        if self.kind == "category":
            return "allowed: " + ", ".join(sorted({repr(k) for k in self.values}))
        return "allowed: a number" if self.kind == "numeric" else "allowed: any non-empty text"

    def word(self, value: Any, where: str, column: str) -> str:
        """The word for one raw value; ``where`` and ``column`` name the scan and column in errors."""
        if is_missing(value):
            raise BrainAlignError(
                f"{where}: column '{column}' (attribute '{self.name}') is missing/NaN; {self.allowed}"
            )
        if self.kind == "numeric":
            return format_number(self.number(value, where, column), self.decimals)
        if self.kind == "text":
            return str(value).strip()
        word = self._lookup.get(_key(value))
        if word is None:
            raise BrainAlignError(
                f"{where}: column '{column}' (attribute '{self.name}') has unknown value {_show(value)}; {self.allowed}"
            )
        return word

    def number(self, value: Any, where: str, column: str) -> float:
        """Raw value as a finite float, or a clear error."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise BrainAlignError(
                f"{where}: column '{column}' (attribute '{self.name}') must be a finite number, got {_show(value)}"
            )
        return number

    def raw(self, value: Any, where: str, column: str) -> Any:
        """The value handed to a derived attribute: the unrounded number, or the word."""
        if self.kind == "numeric" and not is_missing(value):
            return self.number(value, where, column)
        return self.word(value, where, column)


@dataclass(frozen=True)
class PhenotypeText:
    """Rendered text with the character span of each attribute's value.

    Attributes
    ----------
    text : str
    spans : dict of str -> (int, int)
        ``text[start:end]`` is the value word of that attribute.
    """

    text: str
    spans: dict[str, tuple[int, int]]

    def value(self, attribute: str) -> str:
        """The value word of ``attribute`` (``text[start:end]``)."""
        start, end = self.spans[attribute]
        return self.text[start:end]

    def __str__(self) -> str:
        return self.text


def neurolip_attributes() -> dict[str, AttributeSpec]:
    """NeuroLIP's attributes: dx, sex, age, srs (a fresh dict; numeric codes are ABIDE's).

    Returns
    -------
    dict of str -> AttributeSpec
        ``dx`` reads ``dx``/``DX_GROUP`` (1 = autism, 2 = control; not known at test time); ``sex`` reads
        ``sex``/``SEX`` (1 = male, 2 = female, M/F); ``age`` reads ``age``/``AGE_AT_SCAN`` (integer years,
        half up); ``srs`` reads ``srs`` or is derived from the unrounded age.
    """
    return {
        "dx": AttributeSpec(
            "dx", column=("dx", "DX_GROUP"), known_at_test=False,
            values={"autism": "autism", "asd": "autism", 1: "autism",
                    "control": "control", "td": "control", "tdc": "control", "hc": "control", 2: "control"},
        ),
        "sex": AttributeSpec(
            "sex", column=("sex", "SEX"),
            values={"male": "male", "m": "male", 1: "male", "female": "female", "f": "female", 2: "female"},
        ),
        "age": AttributeSpec("age", column=("age", "AGE_AT_SCAN"), kind="numeric", decimals=0),
        "srs": AttributeSpec(
            "srs", column="srs", values={"child": "child", "adult": "adult"},
            derive=srs_version, derive_from="age",
        ),
    }


# ---------------------------------------------------------------------------------------------- the template
def _parse(template: str) -> tuple[list[str], list[str]]:
    """Split a template into literals (n+1) and placeholder names (n); ``{{``/``}}`` are literal braces."""
    literals, names, pending = [], [], ""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise BrainAlignError(f"template {template!r} is malformed: {err}") from None
    for literal, name, spec, conversion in parsed:
        pending += literal
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise BrainAlignError(
                f"template placeholder {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                " must be a plain {attribute} name; formatting belongs in the AttributeSpec"
            )
        if name in names:
            raise BrainAlignError(f"template uses placeholder {{{name}}} twice; each attribute may appear once")
        literals.append(pending)
        names.append(name)
        pending = ""
    literals.append(pending)
    return literals, names


def _where(row: Any, index: Any = None) -> str:
    """'scan <id>' when the row has a scan_id, else 'row <index>'."""
    scan_id = row.get("scan_id") if hasattr(row, "get") else None
    if scan_id is not None and not is_missing(scan_id):
        return f"scan '{scan_id}'"
    if index is None and isinstance(row, pd.Series):
        index = row.name
    return f"row {index}" if index is not None else "row"


class PhenotypeTemplate:
    """A text template over phenotype attributes.

    Parameters
    ----------
    template : str
        Text with ``{attribute}`` placeholders (``{{``/``}}`` for literal braces).  Defaults to NeuroLIP's.
    attributes : mapping or sequence of AttributeSpec, optional
        Specs by name; defaults to :func:`neurolip_attributes`.  Specs not used by the template are allowed
        (they may still feed derived attributes); every placeholder needs a spec.

    Examples
    --------
    >>> t = PhenotypeTemplate()
    >>> out = t.render({"scan_id": "s1", "dx": 1, "sex": "F", "age": 12.5})
    >>> out.text
    'diagnostic group: autism, sex: female, age: 13, social responsiveness scale version: child'
    >>> out.value("age")
    '13'
    """

    def __init__(self, template: str = NEUROLIP_TEMPLATE,
                 attributes: Mapping[str, AttributeSpec] | Sequence[AttributeSpec] | None = None):
        if attributes is None:
            attributes = neurolip_attributes()
        if not isinstance(attributes, Mapping):
            attributes = {spec.name: spec for spec in attributes}
        self.template = template
        self.specs: dict[str, AttributeSpec] = dict(attributes)
        self._literals, self._names = _parse(template)
        unknown = [n for n in self._names if n not in self.specs]
        if unknown:
            raise BrainAlignError(
                f"template placeholder(s) {unknown} have no AttributeSpec; known attributes: {sorted(self.specs)}"
            )
        for spec in self.specs.values():
            if spec.derive_from is not None and spec.derive_from not in self.specs:
                raise BrainAlignError(
                    f"attribute '{spec.name}' is derived from unknown attribute '{spec.derive_from}'"
                )

    def __repr__(self) -> str:
        return f"PhenotypeTemplate({self.template!r})"

    @property
    def attributes(self) -> tuple[str, ...]:
        """Placeholder names in the order they appear in the template."""
        return tuple(self._names)

    def require(self, attributes: str | Iterable[str]) -> PhenotypeTemplate:
        """Raise unless the template contains every one of ``attributes``; returns ``self`` for chaining."""
        wanted = [attributes] if isinstance(attributes, str) else list(attributes)
        missing = [a for a in wanted if a not in self._names]
        if missing:
            raise BrainAlignError(
                f"template {self.template!r} lacks attribute(s) {missing} needed here; "
                f"it contains {list(self._names)}"
            )
        return self

    def with_attributes(self, **specs: AttributeSpec) -> PhenotypeTemplate:
        """A copy with some attribute specs replaced or added (``t.with_attributes(dx=AttributeSpec(...))``)."""
        return PhenotypeTemplate(self.template, {**self.specs, **{k: replace(v, name=k) for k, v in specs.items()}})

    # ------------------------------------------------------------------------------------- one row
    def render(self, row: Mapping[str, Any] | pd.Series) -> PhenotypeText:
        """Fill every placeholder from one phenotype row.

        Parameters
        ----------
        row : mapping or pandas.Series
            Column name → raw value (a ``scan_id`` entry names the scan in errors).

        Returns
        -------
        PhenotypeText
        """
        return self._fill(row, {}, from_row=set(self._names))

    def prompt(self, row: Mapping[str, Any] | pd.Series | None = None,
               overrides: Mapping[str, Any] | None = None) -> PhenotypeText:
        """The template with ``overrides`` filled in and the remaining attributes taken from ``row``.

        Only attributes with ``known_at_test=True`` (and attributes derived from them) are read from the
        row; any other placeholder must be in ``overrides``, so the target label can never leak into a prompt.

        Parameters
        ----------
        row : mapping or pandas.Series, optional
            The test scan's phenotypes; may be omitted when ``overrides`` covers every placeholder.
        overrides : mapping of str -> raw value
            E.g. ``{"dx": "autism"}``; values go through the same mapping as table values (``1`` → "autism").

        Returns
        -------
        PhenotypeText
        """
        overrides = dict(overrides or {})
        return self._fill(row if row is not None else {}, overrides, self._prompt_sources(overrides))

    def class_prompts(self, row: Mapping[str, Any] | pd.Series | None, attribute: str,
                      classes: Sequence[Any]) -> list[PhenotypeText]:
        """One prompt per class: ``[prompt(row, {attribute: c}) for c in classes]`` (the template must contain it)."""
        self.require(attribute)
        return [self.prompt(row, {attribute: c}) for c in classes]

    # ------------------------------------------------------------------------------------- whole tables
    def render_frame(self, df: pd.DataFrame) -> list[PhenotypeText]:
        """Render every row of a phenotype table.

        Parameters
        ----------
        df : pandas.DataFrame, shape (n_scans, n_columns)

        Returns
        -------
        list of PhenotypeText, length n_scans
            Rows with identical words share one (immutable) object.

        Raises
        ------
        BrainAlignError
            Listing every unknown/missing value per column with example scans.
        """
        return self._fill_frame(df, {}, from_row=set(self._names))

    def prompt_frame(self, df: pd.DataFrame, overrides: Mapping[str, Any]) -> list[PhenotypeText]:
        """:meth:`prompt` for every row of ``df`` (same override for all rows), length n_scans."""
        overrides = dict(overrides)
        return self._fill_frame(df, overrides, self._prompt_sources(overrides))

    # ------------------------------------------------------------------------------------- internals
    def _prompt_sources(self, overrides: Mapping[str, Any]) -> set[str]:
        """Attributes a prompt takes from the table row: those not overridden that are known at test time."""
        self._check_overrides(overrides)
        from_row = {a for a in self._names if a not in overrides and self._known_at_test(a)}
        hidden = [a for a in self._names if a not in overrides and a not in from_row]
        if hidden:
            raise BrainAlignError(
                f"attribute(s) {hidden} are not known at test time; pass them in overrides to build a prompt"
            )
        return from_row

    def _check_overrides(self, overrides: Mapping[str, Any]) -> None:
        unknown = [a for a in overrides if a not in self.specs]
        if unknown:
            raise BrainAlignError(f"override(s) {unknown} are not attributes; known: {sorted(self.specs)}")

    def _known_at_test(self, name: str) -> bool:
        spec = self.specs[name]
        return spec.known_at_test and (spec.derive_from is None or self._known_at_test(spec.derive_from))

    def _column(self, spec: AttributeSpec, columns: Iterable[str]) -> str | None:
        present = set(columns)
        return next((c for c in spec.column if c in present), None)

    def _missing_column(self, spec: AttributeSpec, columns: Iterable[str], where: str) -> BrainAlignError:
        return BrainAlignError(
            f"{where}: attribute '{spec.name}' reads column {' or '.join(repr(c) for c in spec.column)}, "
            f"which is missing; columns present: {sorted(map(str, columns))}"
        )

    def _raw(self, name: str, row: Any, overrides: Mapping[str, Any], where: str) -> tuple[Any, str]:
        """Raw value of an attribute for one row (override, column, or derivation) and where it came from."""
        spec = self.specs[name]
        if name in overrides:
            return overrides[name], f"override '{name}'"
        keys = list(row.keys())
        column = self._column(spec, keys)
        if column is not None:
            return row[column], column
        if spec.derive is not None:
            source, source_col = self._raw(spec.derive_from, row, overrides, where)
            return spec.derive(self.specs[spec.derive_from].raw(source, where, source_col)), \
                f"{source_col} (derived)"
        raise self._missing_column(spec, keys, where)

    def _fill(self, row: Any, overrides: Mapping[str, Any], from_row: set[str]) -> PhenotypeText:
        where = _where(row)
        words = []
        for name in self._names:
            value, column = self._raw(name, row if name in from_row else {}, overrides, where)
            words.append(self.specs[name].word(value, where, column))
        return self._assemble(words)

    def _assemble(self, words: Sequence[str]) -> PhenotypeText:
        parts, spans, pos = [], {}, 0
        for literal, name, word in zip(self._literals, self._names, words):
            pos += len(literal)
            spans[name] = (pos, pos + len(word))
            pos += len(word)
            parts += [literal, word]
        parts.append(self._literals[-1])
        return PhenotypeText("".join(parts), spans)

    def _raw_column(self, name: str, df: pd.DataFrame, overrides: Mapping[str, Any], from_row: set[str],
                    errors: dict[str, set[int]]) -> tuple[pd.Series, str]:
        """Raw values of an attribute for all rows, (n,), and the column they came from.

        Rows whose value cannot be computed hold the BrainAlignError (recorded in ``errors``).
        """
        spec = self.specs[name]
        if name in overrides:
            return pd.Series([overrides[name]] * len(df), index=df.index, dtype=object), f"override '{name}'"
        column = self._column(spec, df.columns) if name in from_row else None
        if column is not None:
            return df[column], column
        if spec.derive is not None and name in from_row:
            source_spec = self.specs[spec.derive_from]
            source, col = self._raw_column(spec.derive_from, df, overrides, from_row | {spec.derive_from}, errors)
            raws = self._map_unique(source, lambda v, w: source_spec.raw(v, w, col), errors)
            derived = [v if isinstance(v, BrainAlignError) else spec.derive(v) for v in raws]
            return pd.Series(derived, index=df.index, dtype=object), f"{col} (derived)"
        raise self._missing_column(spec, df.columns, "phenotype table")

    @staticmethod
    def _map_unique(values: pd.Series, fn: Callable[[Any, str], Any], errors: dict[str, set[int]]) -> list[Any]:
        """``fn(value, where)`` computed once per distinct value, (n,) results.

        Failing rows hold the BrainAlignError and are recorded in ``errors`` (message → row positions);
        values that already are errors (a failed source of a derived attribute) pass through unrecorded.
        """
        codes, uniques = pd.factorize(values, use_na_sentinel=True)  # NaN/None -> code -1
        results = []
        for value in [None, *uniques.tolist()]:  # slot 0 holds the missing value
            if isinstance(value, BrainAlignError):
                results.append(value)
                continue
            try:
                results.append(fn(value, _WHERE))
            except BrainAlignError as err:
                rows = np.flatnonzero(codes == len(results) - 1)
                if rows.size:
                    errors.setdefault(str(err), set()).update(rows.tolist())
                results.append(err)
        return [results[c + 1] for c in codes.tolist()]

    @staticmethod
    def _frame_errors(problems: list[str], errors: dict[str, set[int]], df: pd.DataFrame) -> BrainAlignError:
        """One error listing every missing column and every bad value (with up to 5 example scans each)."""
        lines = list(dict.fromkeys(problems))  # a derived attribute repeats its source's missing column
        for message, rows in errors.items():
            rows = sorted(rows)
            names = [_where(df.iloc[i], df.index[i]) for i in rows[:5]]
            more = f" (+{len(rows) - 5} more)" if len(rows) > 5 else ""
            lines.append(message.replace(_WHERE, ", ".join(names) + more, 1))
        head = "the phenotype table cannot be rendered" if problems else (
            f"{len(set().union(*errors.values()))} of {len(df)} row(s) of the phenotype table cannot be rendered")
        return BrainAlignError(head + ":\n" + "\n".join(f"  - {x}" for x in lines))

    def _fill_frame(self, df: pd.DataFrame, overrides: Mapping[str, Any], from_row: set[str]) -> list[PhenotypeText]:
        problems: list[str] = []
        errors: dict[str, set[int]] = {}
        word_columns = []
        for name in self._names:
            try:
                values, column = self._raw_column(name, df, overrides, from_row, errors)
            except BrainAlignError as err:  # a missing column
                problems.append(str(err))
                continue
            spec = self.specs[name]
            word_columns.append(self._map_unique(values, lambda v, w, s=spec, c=column: s.word(v, w, c), errors))
        if problems or errors:
            raise self._frame_errors(problems, errors, df)
        cache: dict[tuple[str, ...], PhenotypeText] = {}
        out = []
        for words in zip(*word_columns) if word_columns else [()] * len(df):
            if words not in cache:
                cache[words] = self._assemble(words)
            out.append(cache[words])
        return out


def token_positions(text: PhenotypeText, offsets: Any, *, strict: bool = True) -> dict[str, list[int]]:
    """Token indices whose character range overlaps each attribute's value span.

    Parameters
    ----------
    text : PhenotypeText
        The rendered text that was tokenized (untruncated prefix at least).
    offsets : array-like, shape (S, 2)
        A tokenizer's ``offset_mapping`` for ``text.text``: (start, end) characters per token; special and
        padding tokens are (0, 0) and never match.
    strict : bool
        Raise when a value covers no token (e.g. the text was truncated) instead of returning an empty list.

    Returns
    -------
    dict of str -> list of int
        For each attribute in ``text.spans``, the ascending token indices (pool them to get token s_a).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise BrainAlignError(f"offsets must have shape (n_tokens, 2), got {offsets.shape}")
    starts, ends = offsets[:, 0], offsets[:, 1]
    real = ends > starts
    out = {}
    for name, (start, end) in text.spans.items():
        idx = np.flatnonzero(real & (starts < end) & (ends > start)).tolist()
        if strict and not idx:
            raise BrainAlignError(
                f"attribute '{name}' value {text.value(name)!r} at characters {start}-{end} covers no token; "
                f"was the text truncated (last token ends at {int(ends.max(initial=0))})?"
            )
        out[name] = idx
    return out


__all__ = [
    "NEUROLIP_TEMPLATE", "AttributeSpec", "PhenotypeTemplate", "PhenotypeText", "format_number",
    "is_missing", "neurolip_attributes", "round_half_up", "srs_version", "token_positions",
]
