"""The .ts parser on small written files: valid variants and every kind of malformed file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.datasets.errors import DatasetError, DatasetFormatError
from models.datasets.ucr import load_split, load_ts, parse_ts

UNI = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 3
@classLabel true a b
@data
1,2,3:a
4,5,6:b
"""


def write(tmp_path: Path, text: str | bytes, name: str = "X_TRAIN.ts") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_univariate_equal(tmp_path: Path) -> None:
    ds = load_ts(write(tmp_path, UNI))
    assert ds.name == "Tiny" and ds.dimensions == 1 and ds.equal_length
    assert ds.class_names == ("a", "b") and ds.labels.tolist() == [0, 1]
    assert ds.series[1].tolist() == [[4.0, 5.0, 6.0]]


def test_multivariate_unequal_missing_comments_crlf(tmp_path: Path) -> None:
    text = "\r\n".join([
        "\ufeff# exported by a tool",
        "@problemName Multi",
        "@timeStamps false",
        "@missing true",
        "@univariate false",
        "@dimensions 2",
        "@equalLength false",
        "@classLabel true run stop",
        "",
        "@DATA",
        "1,2,3:4,5,6:run",
        "# a comment between series",
        "",
        "7,?,9,10:1.5e1,-2,?,0: stop ",
        "0.5:0.25:run",
    ]) + "\r\n"
    ds = load_ts(write(tmp_path, text))
    assert ds.dimensions == 2 and not ds.equal_length and ds.has_missing
    assert ds.lengths.tolist() == [3, 4, 1]
    assert ds.labels.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(ds.series[1], [[7, np.nan, 9, 10], [15, -2, np.nan, 0]])
    assert ds.series[2].shape == (2, 1)


def test_multivariate_without_dimensions_tag_and_unlabelled(tmp_path: Path) -> None:
    text = "@problemName U\n@univariate false\n@classLabel false\n@data\n1,2:3,4:5,6\n7:8:9\n"
    ds = load_ts(write(tmp_path, text))
    assert ds.dimensions == 3 and ds.class_names == () and ds.labels.tolist() == [-1, -1]


def test_test_split_uses_train_class_index(tmp_path: Path) -> None:
    write(tmp_path, UNI, "T_TRAIN.ts")
    write(tmp_path, UNI.replace("@classLabel true a b", "@classLabel true b a")
          .replace("1,2,3:a", "1,2,3:b"), "T_TEST.ts")
    train, test = load_split(tmp_path, "T")
    assert train.labels.tolist() == [0, 1]
    assert test.class_names == ("a", "b") and test.labels.tolist() == [1, 1]
    with pytest.raises(DatasetFormatError, match=r"T_TEST.ts:10: .*not among the given"):
        load_ts(tmp_path / "T_TEST.ts", class_names=["a"])


HEAD = "@problemName M\n@univariate true\n@classLabel true a b\n@data\n"  # @data on line 4


@pytest.mark.parametrize(("text", "line", "message"), [
    ("@problemName M\n@univariate maybe\n@classLabel true a\n@data\n1:a\n", 2,
     "@univariate needs exactly one value, true or false"),
    ("@problemName M\n@seriesLength -3\n@classLabel true a\n@data\n1:a\n", 2, "positive integer"),
    ("@problemName M\n@colour blue\n", 2, "unknown header tag @colour"),
    ("@problemName M\n@classLabel true a a\n@data\n", 2, "declares label(s) twice: a"),
    ("@problemName M\n@univariate true\n@data\n1:a\n", 3, "missing @classLabel before @data"),
    ("@problemName M\n@timeStamps true\n", 2, "@timeStamps true is not supported"),
    ("@problemName M\n@targetLabel true\n", 2, "regression"),
    (HEAD + "1,2\n", 5, "missing class label"),
    (HEAD + "1,2,3:a\n1,2:3,4:b\n", 6, "expected 1 dimension, got 2"),
    ("@univariate false\n@dimensions 3\n@classLabel true a\n@data\n1:2:a\n", 5,
     "expected 3 dimensions, got 2"),
    (HEAD + "1,2,3:a\n\n1,x,3:a\n", 7, "value 2 of dimension 1 is not a number: 'x'"),
    (HEAD + "1,,3:a\n", 5, "value 2 of dimension 1 is not a number: ''"),
    (HEAD + "1,inf,3:a\n", 5, "value 2 of dimension 1 is infinite"),
    (HEAD + ":a\n", 5, "dimension 1 is empty"),
    (HEAD + "(0,1),(1,2):a\n", 5, "timestamped values"),
    (HEAD + "1,2,3:z\n", 5, "class label 'z' not declared in @classLabel (a b)"),
    (HEAD + "1,2,3:a b\n", 5, "class label 'a b' not declared"),
    ("@problemName M\n1,2,3:a\n@data\n", 2, "data line before @data"),
    ("", 1, "file is empty"),
    ("# only\n# comments\n", 2, "no @data line"),
    (HEAD, 4, "no series after @data"),
    (HEAD + "1,2:a\n@missing true\n", 6, "header tag after @data"),
    ("@problemName M\n@equalLength true\n@classLabel true a\n@data\n1,2:a\n1,2,3:a\n", 6,
     "expected series length 2, got 3"),
    ("@equalLength true\n@seriesLength 3\n@classLabel true a\n@data\n1,2:a\n", 5,
     "expected series length 3, got 2"),
    ("@univariate false\n@classLabel true a\n@data\n1,2:3:a\n", 4,
     "dimension 2 has 1 values, dimension 1 has 2"),
    ("@univariate true\n@dimensions 2\n@classLabel true a\n@data\n", 4,
     "@univariate true contradicts @dimensions 2"),
    ("@problemName M\n@problemName N\n", 2, "duplicate header tag"),
])
def test_malformed_names_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text, "BAD_TRAIN.ts")
    with pytest.raises(DatasetFormatError) as info:
        load_ts(path)
    err = info.value
    assert err.line == line and err.path == str(path)
    assert str(err).startswith(f"BAD_TRAIN.ts:{line}: ")
    assert message in str(err)


def test_not_utf8_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"@problemName M\n@classLabel true a\n@data\n1,2:\xff\n")
    with pytest.raises(DatasetFormatError, match=r"X_TRAIN.ts:4: not UTF-8"):
        load_ts(path)


def test_missing_file_is_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_ts(tmp_path / "nope.ts")


labels_st = st.lists(st.from_regex(r"[A-Za-z0-9_.\-]{1,6}", fullmatch=True),
                     min_size=1, max_size=4, unique=True)
values_st = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[list[np.ndarray], list[str], list[str], int]:
    names = draw(labels_st)
    dims = draw(st.integers(1, 3))
    n = draw(st.integers(1, 5))
    series, labels = [], []
    for _ in range(n):
        length = draw(st.integers(1, 6))
        vals = draw(st.lists(values_st, min_size=dims * length, max_size=dims * length))
        series.append(np.array(vals, dtype=np.float32).reshape(dims, length))
        labels.append(draw(st.sampled_from(names)))
    return series, labels, names, dims


@settings(max_examples=60, deadline=None)
@given(data=datasets(), crlf=st.booleans(), comments=st.booleans())
def test_roundtrip_any_valid_file(
    data: tuple[list[np.ndarray], list[str], list[str], int], crlf: bool, comments: bool
) -> None:
    series, labels, names, dims = data
    lines = ["@problemName Gen", "@timeStamps false",
             f"@univariate {'true' if dims == 1 else 'false'}", f"@dimensions {dims}",
             f"@classLabel true {' '.join(names)}", "@data"]
    for s, y in zip(series, labels, strict=True):
        if comments:
            lines.append("# c")
        lines.append(":".join(",".join(repr(float(v)) for v in row) for row in s) + f":{y}")
    text = ("\r\n" if crlf else "\n").join(lines)
    with tempfile.TemporaryDirectory() as d:
        ds = load_ts(write(Path(d), text))
    assert ds.dimensions == dims and ds.class_names == tuple(names)
    assert [ds.class_names[i] for i in ds.labels] == labels
    for got, want in zip(ds.series, series, strict=True):
        np.testing.assert_array_equal(got, want)


def test_parse_ts_accepts_str_lines() -> None:
    ds = parse_ts(UNI.splitlines(), source="mem.ts")
    assert len(ds) == 2


MULTI = (b"@problemName F\n@univariate false\n@dimensions 2\n@equalLength false\n"
         b"@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,?,9:1,2,3:b\n0.5:1e-3:a\n")


@settings(max_examples=200, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, len(MULTI)), st.integers(0, 2),
                                st.sampled_from([b":", b",", b"@", b"#", b"?", b"x", b" ",
                                                 b"\n", b"\r\n", b"1", b"(", b"\xff", b""])),
                      min_size=1, max_size=4))
def test_corrupted_file_parses_or_names_a_line(edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(MULTI)
    for pos, drop, ins in edits:
        data[pos:pos + drop] = ins
    lines = [ln.rstrip(b"\r") for ln in bytes(data).split(b"\n")]
    try:
        ds = parse_ts(lines, source="F_TRAIN.ts")
    except DatasetFormatError as err:  # anything else escaping is a bug
        assert 1 <= err.line <= len(lines)
        assert str(err).startswith(f"F_TRAIN.ts:{err.line}: ")
    else:
        assert len(ds) >= 1 and all(s.shape[0] == ds.dimensions for s in ds.series)
