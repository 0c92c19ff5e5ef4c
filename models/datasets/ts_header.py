"""Header section of the UCR/UEA ``.ts`` format (pure, no I/O).

Theory of operation: :class:`TsHeaderBuilder` receives the ``@`` lines one at
a time (``feed(line, lineno)``), rejects unknown, duplicated or ill-typed
tags at the line where they occur, and ``finish(lineno)`` (called on the
``@data`` line) checks that the tags agree with each other and returns a
frozen :class:`TsHeader`. Tag names are case-insensitive, as in sktime.

Supported tags: ``@problemName``, ``@timeStamps``, ``@missing``,
``@univariate``, ``@dimensions`` (also ``@dimension``), ``@equalLength``,
``@seriesLength``, ``@classLabel``, ``@targetLabel``, ``@data``.
Not supported, rejected with a clear error: ``@timeStamps true`` (irregular
``(t,v)`` samples) and ``@targetLabel true`` (regression targets).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.datasets.errors import DatasetFormatError

_BOOL = {"true": True, "false": False}


@dataclass(frozen=True, slots=True, kw_only=True)
class TsHeader:
    """What the header of a ``.ts`` file declares.

    ``dimensions`` is ``None`` when the file is multivariate and does not say
    how many dimensions it has (the first data line decides).
    ``class_labels`` is empty when the file has no class labels.
    """

    problem_name: str | None
    missing: bool | None
    dimensions: int | None
    equal_length: bool | None
    series_length: int | None
    has_labels: bool
    class_labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError("dimensions must be >= 1")
        if self.has_labels != bool(self.class_labels):
            raise ValueError("class_labels must be non-empty exactly when has_labels")


class TsHeaderBuilder:
    """Accumulates header tags; see the module docstring."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._seen: set[str] = set()
        self._problem_name: str | None = None
        self._missing: bool | None = None
        self._univariate: bool | None = None
        self._dimensions: int | None = None
        self._equal_length: bool | None = None
        self._series_length: int | None = None
        self._has_labels: bool | None = None
        self._class_labels: tuple[str, ...] = ()

    def _fail(self, lineno: int, reason: str) -> DatasetFormatError:
        return DatasetFormatError(self._source, lineno, reason)

    def _bool(self, tag: str, args: list[str], lineno: int) -> bool:
        if len(args) != 1 or args[0].lower() not in _BOOL:
            raise self._fail(lineno, f"{tag} needs exactly one value, true or false")
        return _BOOL[args[0].lower()]

    def _positive_int(self, tag: str, args: list[str], lineno: int) -> int:
        if len(args) != 1:
            raise self._fail(lineno, f"{tag} needs exactly one positive integer")
        try:
            value = int(args[0])
        except ValueError:
            raise self._fail(lineno, f"{tag} needs a positive integer, got {args[0]!r}") from None
        if value < 1:
            raise self._fail(lineno, f"{tag} needs a positive integer, got {value}")
        return value

    def feed(self, line: str, lineno: int) -> None:
        """Apply one header line (it starts with ``@``; not ``@data``)."""
        tokens = line.split()
        tag, args = tokens[0], tokens[1:]
        key = tag.lower()
        if key == "@dimension":
            key = "@dimensions"
        if key in self._seen:
            raise self._fail(lineno, f"duplicate header tag {tag}")
        self._seen.add(key)
        if key == "@problemname":
            if not args:
                raise self._fail(lineno, "@problemName needs a name")
            self._problem_name = " ".join(args)
        elif key == "@timestamps":
            if self._bool(tag, args, lineno):
                raise self._fail(
                    lineno, "@timeStamps true is not supported: resample the series to an "
                    "even time grid and write them without timestamps")
        elif key == "@missing":
            self._missing = self._bool(tag, args, lineno)
        elif key == "@univariate":
            self._univariate = self._bool(tag, args, lineno)
        elif key == "@dimensions":
            self._dimensions = self._positive_int(tag, args, lineno)
        elif key == "@equallength":
            self._equal_length = self._bool(tag, args, lineno)
        elif key == "@serieslength":
            self._series_length = self._positive_int(tag, args, lineno)
        elif key == "@classlabel":
            self._class_label(tag, args, lineno)
        elif key == "@targetlabel":
            if self._bool(tag, args, lineno):
                raise self._fail(lineno, "@targetLabel true (regression) is not supported")
            self._label_decl(lineno, has_labels=False, labels=())
        else:
            raise self._fail(lineno, f"unknown header tag {tag}")

    def _class_label(self, tag: str, args: list[str], lineno: int) -> None:
        if not args or args[0].lower() not in _BOOL:
            raise self._fail(lineno, f"{tag} must start with true or false")
        if not _BOOL[args[0].lower()]:
            if len(args) > 1:
                raise self._fail(lineno, f"{tag} false takes no labels")
            self._label_decl(lineno, has_labels=False, labels=())
            return
        labels = args[1:]
        if not labels:
            raise self._fail(lineno, f"{tag} true needs at least one label")
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        if dupes:
            raise self._fail(lineno, f"{tag} declares label(s) twice: {' '.join(dupes)}")
        self._label_decl(lineno, has_labels=True, labels=tuple(labels))

    def _label_decl(self, lineno: int, *, has_labels: bool, labels: tuple[str, ...]) -> None:
        if self._has_labels is not None and (has_labels or self._has_labels):
            raise self._fail(lineno, "@classLabel and @targetLabel both declare labels")
        self._has_labels = has_labels
        self._class_labels = labels

    def finish(self, lineno: int) -> TsHeader:
        """Check the tags agree; ``lineno`` is the ``@data`` line."""
        if self._has_labels is None:
            raise self._fail(lineno, "missing @classLabel before @data")
        dims = self._dimensions
        if self._univariate is True:
            if dims is not None and dims != 1:
                raise self._fail(lineno, f"@univariate true contradicts @dimensions {dims}")
            dims = 1
        return TsHeader(
            problem_name=self._problem_name,
            missing=self._missing,
            dimensions=dims,
            equal_length=self._equal_length,
            series_length=self._series_length,
            has_labels=self._has_labels,
            class_labels=self._class_labels,
        )
