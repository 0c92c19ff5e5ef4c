"""UCR/UEA ``.ts`` time-series classification files.

Theory of operation: :func:`parse_ts` is a pure, one-pass parser over the
lines of a file. Before ``@data`` it feeds ``@`` tags to
:class:`~models.datasets.ts_header.TsHeaderBuilder`; after ``@data`` every
non-empty, non-comment line is one series: dimensions separated by ``:``,
comma-separated values inside a dimension, then ``:label`` when the header
says ``@classLabel true``. ``?`` (or ``NaN``) is a missing value and becomes
``NaN`` (see :func:`models.datasets.windows.fill_missing`). Every problem is
raised as :class:`DatasetFormatError` naming the file and the 1-based line.
:func:`load_ts` / :func:`load_split` are the thin file adapters.

Accepted: univariate and multivariate, equal and unequal length (all
dimensions of one series must have the same length), ``#`` comments anywhere,
blank lines, UTF-8 with or without BOM, LF or CRLF line endings. Class labels
are whitespace-separated in ``@classLabel``, so a label cannot contain spaces;
surrounding whitespace of a label on a data line is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.datasets.errors import DatasetError, DatasetFormatError
from models.datasets.ts_header import TsHeader, TsHeaderBuilder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TsDataset:
    """A loaded classification dataset.

    ``series[i]`` is float32 of shape ``(dimensions, length_i)``; ``labels``
    are int64 indices into ``class_names`` (``-1`` for every series when the
    file has no labels and ``class_names`` is empty). ``equal_length`` says
    whether all series have the same length (from the data, not the
    header). ``has_missing`` is true when some value was ``?``/``NaN``.
    """

    name: str
    series: list[np.ndarray]
    labels: np.ndarray
    class_names: tuple[str, ...]
    equal_length: bool
    dimensions: int
    has_missing: bool = False

    def __post_init__(self) -> None:
        if self.dimensions < 1:
            raise DatasetError(f"{self.name}: dimensions must be >= 1")
        if self.labels.ndim != 1 or self.labels.dtype != np.int64:
            raise DatasetError(f"{self.name}: labels must be a 1-D int64 array")
        if len(self.series) != len(self.labels):
            raise DatasetError(
                f"{self.name}: {len(self.series)} series but {len(self.labels)} labels")
        low = 0 if self.class_names else -1
        high = len(self.class_names) - 1 if self.class_names else -1
        if self.labels.size and (self.labels.min() < low or self.labels.max() > high):
            raise DatasetError(f"{self.name}: label index outside class_names")
        lengths = set()
        for s in self.series:
            if s.dtype != np.float32 or s.ndim != 2 or s.shape[0] != self.dimensions:
                raise DatasetError(
                    f"{self.name}: each series must be float32 (dimensions, length)")
            lengths.add(s.shape[1])
        if self.equal_length and len(lengths) > 1:
            raise DatasetError(f"{self.name}: equal_length but lengths differ")

    def __len__(self) -> int:
        return len(self.series)

    @property
    def lengths(self) -> np.ndarray:
        """Length of every series, int64."""
        return np.array([s.shape[1] for s in self.series], dtype=np.int64)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _DataParser:
    """Parses the lines after ``@data`` (state: dimensions and length seen so far)."""

    def __init__(self, source: str, header: TsHeader, index: dict[str, int]) -> None:
        self.source = source
        self.header = header
        self.index = index
        self.dims = header.dimensions
        self.length = header.series_length if header.equal_length else None
        self.series: list[np.ndarray] = []
        self.labels: list[int] = []
        self.missing = False

    def fail(self, lineno: int, reason: str) -> DatasetFormatError:
        return DatasetFormatError(self.source, lineno, reason)

    def line(self, text: str, lineno: int) -> None:
        body = text
        label_index = -1
        if self.header.has_labels:
            if ":" not in text:
                raise self.fail(lineno, "missing class label (expected ':<label>' at the end)")
            body, label = text.rsplit(":", 1)
            label_index = self._label(label.strip(), lineno)
        parts = body.split(":")
        if self.dims is None:
            self.dims = len(parts)
        if len(parts) != self.dims:
            raise self.fail(
                lineno, f"expected {_plural(self.dims, 'dimension')}, got {len(parts)}")
        rows = [self._values(part, d + 1, lineno) for d, part in enumerate(parts)]
        n = rows[0].size
        for d, row in enumerate(rows[1:], start=2):
            if row.size != n:
                raise self.fail(lineno, f"dimension {d} has {row.size} values, dimension 1 has {n}")
        if self.header.equal_length:
            if self.length is None:
                self.length = n
            elif n != self.length:
                raise self.fail(lineno, f"expected series length {self.length}, got {n}")
        self.series.append(np.stack(rows).astype(np.float32))
        self.labels.append(label_index)

    def _label(self, label: str, lineno: int) -> int:
        if label not in self.header.class_labels:
            declared = " ".join(self.header.class_labels[:20])
            more = " ..." if len(self.header.class_labels) > 20 else ""
            raise self.fail(
                lineno, f"class label {label!r} not declared in @classLabel ({declared}{more})")
        if label not in self.index:
            raise self.fail(lineno, f"class label {label!r} is not among the given class_names")
        return self.index[label]

    def _values(self, part: str, dim: int, lineno: int) -> np.ndarray:
        text = part.strip()
        if not text:
            raise self.fail(lineno, f"dimension {dim} is empty")
        if text.startswith("("):
            raise self.fail(lineno, "timestamped values '(t,v)' are not supported")
        tokens = text.split(",")
        try:
            row = np.array(tokens, dtype=np.float64) if "?" not in text else None
        except ValueError:
            row = None
        if row is None:
            row = self._slow_values(tokens, dim, lineno)
        nan = np.isnan(row)
        if nan.any():
            self.missing = True
        if np.isinf(row).any():
            pos = int(np.flatnonzero(np.isinf(row))[0]) + 1
            raise self.fail(lineno, f"value {pos} of dimension {dim} is infinite")
        return row

    def _slow_values(self, tokens: list[str], dim: int, lineno: int) -> np.ndarray:
        out = np.empty(len(tokens), dtype=np.float64)
        for i, tok in enumerate(tokens):
            t = tok.strip()
            if t == "?":
                out[i] = np.nan
                continue
            try:
                out[i] = float(t)
            except ValueError:
                shown = t if len(t) <= 30 else t[:27] + "..."
                raise self.fail(
                    lineno, f"value {i + 1} of dimension {dim} is not a number: {shown!r}"
                ) from None
        return out


def parse_ts(
    lines: Iterable[str | bytes],
    *,
    source: str,
    class_names: Sequence[str] | None = None,
) -> TsDataset:
    """Parse the lines of a ``.ts`` file (pure). ``source`` names it in errors.

    ``class_names`` fixes the label -> index mapping (pass the TRAIN list when
    parsing TEST); by default it is the order of the header's ``@classLabel``.
    """
    builder = TsHeaderBuilder(source)
    parser: _DataParser | None = None
    lineno = 0
    for lineno, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetFormatError(source, lineno, f"not UTF-8 text ({exc.reason})") from exc
        else:
            text = raw
        if lineno == 1:
            text = text.lstrip("\ufeff")
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        if parser is not None:
            if text.startswith("@"):
                raise DatasetFormatError(source, lineno, "header tag after @data")
            parser.line(text, lineno)
        elif text.lower() == "@data" or text.lower().startswith("@data "):
            header = builder.finish(lineno)
            names = tuple(class_names) if class_names is not None else header.class_labels
            if len(set(names)) != len(names):
                raise DatasetError(f"{source}: class_names contain duplicates")
            parser = _DataParser(source, header, {n: i for i, n in enumerate(names)})
        elif text.startswith("@"):
            builder.feed(text, lineno)
        else:
            raise DatasetFormatError(source, lineno, "data line before @data")
    if parser is None:
        what = "file is empty" if lineno == 0 else "no @data line"
        raise DatasetFormatError(source, max(lineno, 1), what)
    if not parser.series:
        raise DatasetFormatError(source, max(lineno, 1), "no series after @data")
    names = tuple(class_names) if class_names is not None else parser.header.class_labels
    if not parser.header.has_labels:
        names = ()
    if parser.missing and parser.header.missing is False:
        log.debug("%s: missing values present although @missing is false", source)
    lengths = {s.shape[1] for s in parser.series}
    return TsDataset(
        name=parser.header.problem_name or Path(source).stem,
        series=parser.series,
        labels=np.array(parser.labels, dtype=np.int64),
        class_names=names,
        equal_length=len(lengths) == 1,
        dimensions=parser.dims or 1,
        has_missing=parser.missing,
    )


def load_ts(path: str | Path, *, class_names: Sequence[str] | None = None) -> TsDataset:
    """Load one ``.ts`` file; see :func:`parse_ts` for ``class_names``.

    Raises :class:`DatasetFormatError` (with path and line) for a malformed
    file and :class:`DatasetError` when the file cannot be read.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = parse_ts(
                (ln.rstrip(b"\r\n") for ln in fh), source=str(p), class_names=class_names)
    except OSError as exc:
        raise DatasetError(f"cannot read {p}: {exc.strerror or exc}") from exc
    log.debug("loaded %s: %d series, %d dimension(s)", p.name, len(data), data.dimensions)
    return data


def load_split(data_dir: Path, name: str) -> tuple[TsDataset, TsDataset]:
    """Load ``NAME_TRAIN.ts`` and ``NAME_TEST.ts`` with the TRAIN class index."""
    train = load_ts(Path(data_dir) / f"{name}_TRAIN.ts")
    test = load_ts(Path(data_dir) / f"{name}_TEST.ts", class_names=train.class_names)
    if test.dimensions != train.dimensions:
        raise DatasetError(
            f"{name}: TRAIN has {train.dimensions} dimension(s), TEST {test.dimensions}")
    return train, test


def available_splits(data_dir: Path) -> list[str]:
    """Names ``NAME`` for which both ``NAME_TRAIN.ts`` and ``NAME_TEST.ts`` exist, sorted."""
    d = Path(data_dir)
    return sorted(
        p.name[: -len("_TRAIN.ts")] for p in d.glob("*_TRAIN.ts")
        if (d / p.name.replace("_TRAIN.ts", "_TEST.ts")).is_file()
    )
