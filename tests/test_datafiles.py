"""lossdsl.datafiles, the readers behind ``lossdsl eval``, against independent readers.

Each file is read through the table API (``open_table(...).chunks``) and compared with what
pandas, NumPy or pyarrow make of the same file; a row, a column or a type that cannot be read
as the numbers it should be is a :class:`DataError` naming where it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lossdsl.datafiles import DataError, check_output, csv_delimiter, open_table

pandas = pytest.importorskip("pandas")


def read(path: Path, columns: list[str], chunk_rows: int | None = None,
         delimiter: str | None = None) -> dict[str, np.ndarray]:
    """Every chunk of ``columns``, concatenated."""
    table = open_table(path, delimiter)
    parts = [chunk for chunk, _ in table.chunks(columns, chunk_rows, np.dtype(np.float64))]
    return {c: np.concatenate([part[c] for part in parts]) for c in columns}


# ------------------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("text, line, fields", [
    ("score,label\n1,2\n1,000,5\n4,4\n", 3, 3),            # an unquoted thousands separator
    ("score,label\n1,2\n4,4\n1\n", 4, 1),                   # a field missing
    ("score,label\n1,2\n4,4,\n", 3, 3),                     # a trailing delimiter
    ('score,label,note\n1,2,"a\nb"\n1,2,"x",9\n', 4, 4),    # quoted: a record spans lines
    ("score,label\n1,2\n\n  \n", 4, 1),                     # a line of spaces is no blank
])
@pytest.mark.parametrize("chunk_rows", [1, None])
def test_a_row_whose_field_count_is_not_the_headers_is_refused_at_its_line(
        tmp_path, text, line, fields, chunk_rows):
    """np.loadtxt(usecols=...) read the columns used and ignored extra fields: '1,000,5'
    became score 1, label 0 (a mean of 0.667 where pandas refuses the file)."""
    path = tmp_path / "rows.csv"
    path.write_text(text)
    # pandas agrees the file is broken (it counts records, not lines, after a quoted break)
    if fields > text.splitlines()[0].count(",") + 1 and '"' not in text:
        with pytest.raises(pandas.errors.ParserError, match=f"line {line}"):
            pandas.read_csv(path)
    with pytest.raises(DataError, match=rf"line {line} has {fields} fields?, but the header "
                                        rf"has \d"):
        read(path, ["score", "label"], chunk_rows)


def test_the_csv_forms_read_before_are_read_as_pandas_reads_them(tmp_path):
    """Quotes, line breaks in quotes, CRLF, Excel's byte-order mark, TSV, another delimiter,
    padded names and values, nan/inf and blank lines: the same numbers as pandas."""
    cases = {
        "quoted.csv": ('a,b,note\n"1.5","2",x\n3,-4,"say ""hi""\nthere"\n', None),
        "crlf.csv": ("a,b\r\n1,2\r\n\r\n3,4\r\n", None),
        "bom.csv": ("\ufeffa,b\n1,2\n3,4\n", None),
        "tabs.tsv": ("a\tb\n1\t2\n3\t4\n", None),
        "semi.csv": ("a;b\n1.5;2\n3;4\n", ";"),
        "tab_named.csv": ("a\tb\n1\t2\n", "\\t"),
        "padded.csv": (" a , b \n 1 , 2 \n3,4\n", None),
        "special.csv": ("a,b\nnan,inf\n-inf,1e308\n", None),
        "blank.csv": ("a,b\n1,2\n\n3,4\n", None),
    }
    for name, (text, delimiter) in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("utf-8"))
        separator = {"\\t": "\t", None: "\t" if name.endswith(".tsv") else ","}.get(
            delimiter, delimiter)
        expected = pandas.read_csv(path, sep=separator, encoding="utf-8-sig",
                                   skipinitialspace=False)
        expected.columns = [c.strip() for c in expected.columns]
        for chunk_rows in (1, None):
            found = read(path, ["a", "b"], chunk_rows, delimiter)
            for column in ("a", "b"):
                np.testing.assert_array_equal(found[column],
                                              expected[column].to_numpy(np.float64), name)


@pytest.mark.parametrize("value", ["", "#", "True", "0x10", "1_000", "1,5"])
def test_a_value_that_is_not_a_plain_number_names_its_line_and_column(tmp_path, value):
    path = tmp_path / "values.csv"
    path.write_text(f'a,b\n1,2\n3,"{value}"\n')
    with pytest.raises(DataError, match=r"line 3, column 2 \('b'\)"):
        read(path, ["a", "b"])


def test_a_parse_error_after_blank_lines_names_its_own_line(tmp_path):
    """NumPy counts the rows it parsed, not the blank lines it skipped: 'x' on line 5 was
    reported on line 3."""
    path = tmp_path / "blanks.csv"
    path.write_text("a,b\n1,2\n\n\n3,x\n")
    with pytest.raises(DataError, match=r"blanks.csv: line 5, column 2"):
        read(path, ["a", "b"])


def test_rows_are_placed_at_their_file_lines(tmp_path):
    """row_place (used for domain errors) counts blank lines and quoted line breaks."""
    path = tmp_path / "places.csv"
    path.write_text('a,b\n1,2\n\n3,"x\ny"\n5,6\n')
    table = open_table(path)
    for _ in table.chunks(["a"], None, np.dtype(np.float64)):
        assert [table.row_place(row) for row in range(3)] == [
            f"line {line} of {path}" for line in (2, 4, 6)]


@pytest.mark.parametrize("delimiter", [";;", "", '"', "\n"])
def test_a_delimiter_is_one_character_other_than_a_quote_or_line_break(tmp_path, delimiter):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="delimiter must be one character"):
        open_table(path, delimiter)
    assert csv_delimiter("\\t") == "\t" and csv_delimiter(";") == ";"


# ------------------------------------------------------------------------ glob selectors


def test_glob_columns_are_stacked_in_the_order_of_their_class_numbers(tmp_path):
    """A file sorted by name (logit_0, logit_1, logit_10, logit_2, ...) made class 2 the
    column logit_10."""
    names = sorted(f"logit_{k}" for k in range(12))  # lexicographic, as a sorted export
    assert names[2] == "logit_10"
    path = tmp_path / "logits.csv"
    path.write_text("y," + ",".join(names) + "\n0," + ",".join(
        str(int(name.rpartition("_")[2])) for name in names) + "\n")
    table = open_table(path)
    assert table.select("logit_*") == [f"logit_{k}" for k in range(12)]
    (tmp_path / "words.csv").write_text("y,p_cat,p_dog,p_ant\n0,1,2,3\n")
    assert open_table(tmp_path / "words.csv").select("p_*") == ["p_cat", "p_dog", "p_ant"]


@pytest.mark.parametrize("header, message", [
    ("z_0,z_1,z_3", "without 2"),
    ("z_0,z_1,z_01", "same class number 1"),
    ("z_0,z_1,z_max", "one that does not"),
])
def test_glob_columns_whose_classes_are_unclear_are_refused(tmp_path, header, message):
    path = tmp_path / "classes.csv"
    path.write_text(header + "\n1,2,3\n")
    with pytest.raises(DataError, match=message):
        open_table(path).select("z_*")


# ---------------------------------------------------------------- .npy, .npz and Parquet


def _refused(path: Path, columns: list[str], match: str) -> None:
    with pytest.raises(DataError, match=match):
        read(path, columns)


def test_text_dates_complex_and_object_columns_are_data_errors(tmp_path):
    np.savez(tmp_path / "text.npz", y=np.array(["a", "b"]), p=np.arange(2.0))
    _refused(tmp_path / "text.npz", ["y", "p"], r"column 'y' holds text \(<U1\)")
    np.save(tmp_path / "text.npy", np.array(["1", "2"]))
    _refused(tmp_path / "text.npy", ["0"], "holds text")
    np.savez(tmp_path / "dates.npz", y=np.array(["2020-01-01"], dtype="M8[D]"))
    _refused(tmp_path / "dates.npz", ["y"], "holds dates")
    np.savez(tmp_path / "complex.npz", y=np.array([1 + 2j]))
    _refused(tmp_path / "complex.npz", ["y"], "holds complex numbers")
    np.savez(tmp_path / "ragged.npz", y=np.array([[1.0], [1.0, 2.0]], dtype=object))
    _refused(tmp_path / "ragged.npz", ["y"], "'y' cannot be read")
    np.savez(tmp_path / "scalar.npz", y=np.float64(1.0))
    _refused(tmp_path / "scalar.npz", ["y"], "single number")


def test_numeric_npz_columns_are_read_as_numpy_converts_them(tmp_path):
    flags, counts = np.array([True, False, True]), np.array([3, 0, 7], dtype=np.int32)
    np.savez(tmp_path / "ok.npz", flags=flags, counts=counts)
    found = read(tmp_path / "ok.npz", ["flags", "counts"], chunk_rows=2)
    np.testing.assert_array_equal(found["flags"], flags.astype(np.float64))
    np.testing.assert_array_equal(found["counts"], counts.astype(np.float64))


def test_parquet_text_and_varying_lists_are_data_errors_fixed_lists_are_matrices(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    table = pyarrow.table({
        "text": ["a", "b"],
        "ragged": pyarrow.array([[1.0, 2.0], [3.0]]),
        "matrix": pyarrow.array([[1.0, 2.0], [3.0, 4.0]], pyarrow.list_(pyarrow.float64(), 2)),
        "holes": pyarrow.array([[1.0, None], [3.0, 4.0]], pyarrow.list_(pyarrow.float64(), 2)),
        "money": pyarrow.array([1, 2], pyarrow.decimal128(5, 2)),
    })
    path = tmp_path / "mixed.parquet"
    parquet.write_table(table, path)
    _refused(path, ["text"], r"column 'text' holds string")
    _refused(path, ["ragged"], "lists of varying length")
    _refused(path, ["holes"], "missing values")
    chunks = list(open_table(path).chunks(["matrix", "money"], 1, np.dtype(np.float64)))
    np.testing.assert_array_equal(np.concatenate([c["matrix"] for c, _ in chunks]),
                                  [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(np.concatenate([c["money"] for c, _ in chunks]), [1.0, 2.0])


def test_outputs_need_a_known_extension(tmp_path):
    with pytest.raises(DataError, match=r"one of \.csv, \.npy, \.npz, \.parquet"):
        check_output(tmp_path / "out.xlsx")
    assert not (tmp_path / "out.xlsx").exists()
    assert check_output(tmp_path / "out.CSV") == tmp_path / "out.CSV"


def test_a_column_named_twice_in_the_header_is_refused_where_it_is_read(tmp_path):
    """'p,q,p': p read silently as the first of the two columns (pandas names them p, p.1)."""
    path = tmp_path / "twice.csv"
    path.write_text("p,q,p,z_1,z_1\n1,5,2,0,1\n")
    table = open_table(str(path), None)
    for selector in ("p", "z_*"):
        with pytest.raises(DataError, match=r"names column '(p|z_1)' 2 times \(columns "):
            table.select(selector)
    assert table.select("q") == ["q"]  # the other columns are read as before
