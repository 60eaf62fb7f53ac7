"""Chunked readers and writers of tabular data for ``lossdsl eval``.

Sources: CSV/TSV (read line by line, parsed a chunk at a time), ``.npy`` (memory-mapped),
``.npz`` (each array used is read once, then sliced) and Parquet (record batches, needs
pyarrow). Sinks for per-sample outputs: CSV, ``.npy`` (a structured array, written as it
comes and its header patched at the end), ``.npz`` and Parquet. Nothing here holds more than
one chunk of rows in memory, except ``.npz`` sources (a zip member cannot be sliced).

Columns are float64 (or the dtype asked for); a column of text, dates or lists of varying
length is a :class:`DataError`, and so is a CSV row whose number of fields is not the
header's. A *column selector* names one column, or is a glob pattern (``logit_*``) selecting
several that form a matrix ``(N, K)``: when every matched name ends in a number they are
stacked in the order of those numbers (``logit_2`` before ``logit_10``), which must run
without gaps or repeats; when none does, in file order; a mix is refused.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import itertools
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import did_you_mean


class DataError(Exception):
    """A data file cannot be read or written as asked (missing column, bad value, ...)."""


PARQUET_HINT = ("Parquet needs pyarrow, which is not installed: "
                "pip install 'lossdsl[cli]' (or pip install pyarrow)")


def _pyarrow():
    """Import pyarrow and pyarrow.parquet, or fail with an install hint."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError(PARQUET_HINT) from None
    return pyarrow, pyarrow.parquet


# ---------------------------------------------------------------------------------- sources


class Table:
    """A data source read in chunks of rows.

    ``columns`` lists the selectable names; ``progress_total`` (with ``progress_unit``) is the
    amount of work ``chunks`` reports as it goes, None when unknown.
    """

    path: Path
    columns: list[str]
    rows: int | None = None
    progress_unit: str = "rows"

    @property
    def progress_total(self) -> int | None:
        return self.rows

    def select(self, selector: str) -> list[str]:
        """The columns a selector names: itself, or the columns its glob pattern matches (in
        the order of the numbers their names end in, see :func:`class_order`). A name the
        header gives twice is an error: which of the two columns is meant cannot be told."""
        if selector in self.columns:
            self._refuse_repeated([selector])
            return [selector]
        if any(ch in selector for ch in "*?["):
            matched = [c for c in self.columns if fnmatch.fnmatchcase(c, selector)]
            if matched:
                self._refuse_repeated(matched)
                return class_order(matched, f"{self.path}: {selector!r}")
            raise DataError(f"{self.path}: no column matches {selector!r} "
                            f"(columns: {_listing(self.columns)})")
        hint = did_you_mean(selector, self.columns)
        raise DataError(f"{self.path}: no column {selector!r} (columns: {_listing(self.columns)})"
                        + (f"; {hint}" if hint else ""))

    def _refuse_repeated(self, names: list[str]) -> None:
        for name in names:
            places = [str(i + 1) for i, c in enumerate(self.columns) if c == name]
            if len(places) > 1:
                raise DataError(f"{self.path}: the header names column {name!r} "
                                f"{len(places)} times (columns {', '.join(places)}); rename "
                                "them so that each name says which column it is")

    def chunks(self, columns: list[str], chunk_rows: int | None,
               dtype: np.dtype) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Yield ``(arrays by column, progress made)`` for chunks of ``chunk_rows`` rows
        (all rows at once when None)."""
        raise NotImplementedError

    def row_place(self, row: int) -> str:
        """Where data row ``row`` (counted from 0 over the whole file) is, for messages."""
        return f"row index {row} of {self.path}"


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def class_order(names: list[str], selector: str) -> list[str]:
    """The columns a glob matched, in class order: by the number each name ends in when all
    do (``logit_2`` before ``logit_10``, whatever the file's order), in the given order when
    none does. A mix, a repeated number or a gap would pair a class with another class's
    column without a sign of it, so they are a :class:`DataError`."""
    numbers = [_TRAILING_NUMBER.search(name) for name in names]
    if not any(numbers):
        return names
    if not all(numbers):
        plain = next(name for name, number in zip(names, numbers, strict=True) if not number)
        raise DataError(f"{selector} matches columns that end in a class number and one that "
                        f"does not ({plain!r}): the class of each column is unclear; use a "
                        "pattern that matches only the class columns")
    by_number: dict[int, str] = {}
    for name, number in zip(names, numbers, strict=True):
        value = int(number.group(1))
        if value in by_number:
            raise DataError(f"{selector} matches {by_number[value]!r} and {name!r}, which "
                            f"end in the same class number {value}; use a pattern that "
                            "matches one column per class")
        by_number[value] = name
    low, high = min(by_number), max(by_number)
    missing = sorted(set(range(low, high + 1)) - set(by_number))
    if missing:
        raise DataError(f"{selector} matches columns numbered {low} to {high} without "
                        f"{', '.join(map(str, missing[:5]))}: a class column is missing, so "
                        "the classes after it would shift")
    return [by_number[value] for value in sorted(by_number)]


def _numbers(values: np.ndarray, dtype: np.dtype, path: Path, column: str,
             stored: str | None = None) -> np.ndarray:
    """``values`` (a column as read) as ``dtype``, or a :class:`DataError` when they are not
    numbers: text, dates, complex numbers or Python objects (a ragged list) would fail to
    convert, or convert to something else (a date's day count, a complex number's real
    part). ``stored`` describes the file's own type of the column, when it has one."""
    if values.dtype.kind not in "biuf":
        found = stored or {"U": "text", "S": "bytes", "M": "dates", "m": "durations",
                           "c": "complex numbers", "O": "Python objects",
                           "V": "records"}.get(values.dtype.kind, str(values.dtype))
        raise DataError(f"{path}: column {column!r} holds {found} ({values.dtype}), not "
                        "numbers: encode it as numbers (class indices, 0/1, ...) first")
    return np.asarray(values, dtype=dtype)


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class CsvTable(Table):
    """A CSV (or TSV) file with a header line, parsed ``chunk_rows`` lines at a time."""

    progress_unit = "bytes"

    def __init__(self, path: Path, delimiter: str | None = None):
        self.path = path
        self.delimiter = (csv_delimiter(delimiter) if delimiter is not None else
                          "\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
        with open(path, "rb") as stream:
            line = stream.readline()
        try:
            header = line.decode("utf-8-sig")  # the byte-order mark Excel writes is no name
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: the header line is not UTF-8 text ({error}); save the "
                            "file as UTF-8") from None
        if not header.strip():
            raise DataError(f"{path}: empty file (a CSV needs a header line naming the columns)")
        self.columns = [name.strip() for name in next(csv.reader([header],
                                                                 delimiter=self.delimiter))]
        self.size = path.stat().st_size
        # the file line of each row of the chunk read last, and that chunk's first row
        self._row_lines = np.zeros(0, dtype=np.int64)
        self._first_row_of_chunk = 0

    @property
    def progress_total(self) -> int | None:
        return self.size

    def chunks(self, columns, chunk_rows, dtype):
        indices = [self.columns.index(c) for c in columns]
        rows_before = 0
        with open(self.path, "rb") as stream:
            consumed = len(stream.readline())
            first_row = 2  # 1-based line number of the first data line
            while True:
                lines = list(itertools.islice(stream, chunk_rows)) if chunk_rows else list(stream)
                if not lines:
                    return
                # a quoted field may hold line breaks: a chunk ends where no quote is open
                # (an odd number of quote characters so far; "" inside a field counts two)
                open_quote = sum(line.count(b'"') for line in lines) % 2
                while open_quote:
                    line = stream.readline()
                    if not line:
                        break
                    lines.append(line)
                    open_quote ^= line.count(b'"') % 2
                size = sum(len(line) for line in lines)
                consumed += size
                try:
                    text = [line.decode("utf-8") for line in lines]
                except UnicodeDecodeError:
                    row = next(number for number, line in enumerate(lines, first_row)
                               if not _is_utf8(line))
                    raise DataError(f"{self.path}: line {row} is not UTF-8 text; save the "
                                    "file as UTF-8") from None
                # np.loadtxt reads only the columns used: a row with more or fewer fields
                # than the header (an unquoted 1,000) would shift its values unseen
                self._row_lines = self._check_fields(lines, text, first_row)
                self._first_row_of_chunk = rows_before
                try:
                    # blank lines alone: no rows (np.loadtxt would warn that it read none)
                    block = (np.loadtxt(text, delimiter=self.delimiter, usecols=indices,
                                        dtype=dtype, ndmin=2, quotechar='"', comments=None)
                             if len(self._row_lines) else
                             np.empty((0, len(indices)), dtype=dtype))
                except ValueError as error:
                    raise DataError(self._where(str(error), first_row, len(lines))) from None
                first_row += len(lines)
                rows_before += len(block)
                yield {c: block[:, j] for j, c in enumerate(columns)}, size

    def _check_fields(self, lines: list[bytes], text: list[str], first_row: int) -> np.ndarray:
        """The file line of each data row of a chunk (its ``lines``, decoded as ``text``,
        starting at line ``first_row``; blank lines hold no row, a quoted field may span
        lines), after checking that every row has as many fields as the header."""
        separator = self.delimiter.encode("utf-8")
        data = b"".join(lines)
        if b'"' not in data and len(separator) == 1:
            # no quotes: each non-blank line is a row, its fields one more than its delimiters
            # (counted over the whole chunk at once: a loop over lines costs more than the
            # parse)
            lengths = np.fromiter(map(len, lines), np.int64, len(lines))
            ends = np.cumsum(lengths)
            buffer = np.frombuffer(data, np.uint8)
            newline = buffer[ends - 1] == ord("\n")
            carriage = newline & (lengths >= 2) & (buffer[np.maximum(ends - 2, 0)] == ord("\r"))
            blank = lengths - newline - carriage == 0
            at = np.flatnonzero(buffer == separator[0])
            fields = np.bincount(np.searchsorted(ends, at, side="right"),
                                 minlength=len(lines)) + 1
            wrong = np.flatnonzero(~blank & (fields != len(self.columns)))
            if len(wrong):
                self._wrong_fields(first_row + int(wrong[0]), int(fields[wrong[0]]))
            return np.flatnonzero(~blank) + first_row
        starts = []
        reader = csv.reader(text, delimiter=self.delimiter, quotechar='"')
        consumed = 0
        try:
            for record in reader:
                start, consumed = first_row + consumed, reader.line_num
                if not record:  # a blank line
                    continue
                if len(record) != len(self.columns):
                    self._wrong_fields(start, len(record))
                starts.append(start)
        except csv.Error as error:  # a NUL byte, a quote left open at the end of the file
            raise DataError(f"{self.path}: line {first_row + consumed}: {error}") from None
        return np.array(starts, dtype=np.int64)

    def _wrong_fields(self, line: int, fields: int) -> None:
        """Refuse a row of ``fields`` fields at file line ``line`` (not the header's count)."""
        expected = len(self.columns)
        hint = (" (a number written with a thousands separator, such as 1,000? quote it or "
                "drop the separator)" if fields > expected else "")
        raise DataError(f"{self.path}: line {line} has {fields} field{'s' * (fields != 1)}, "
                        f"but the header has {expected}{hint}; every row needs one value per "
                        "column")

    def row_place(self, row: int) -> str:
        """``line L of FILE`` for a row of the chunk read last (else the row's index)."""
        index = row - self._first_row_of_chunk
        if 0 <= index < len(self._row_lines):
            return f"line {int(self._row_lines[index])} of {self.path}"
        return super().row_place(row)

    def _where(self, message: str, first_row: int, count: int) -> str:
        """NumPy's parse error with the file's own line number and column name."""
        found = re.search(r" at row (\d+), column (\d+)\.?$", message)
        if found:
            row, column = int(found.group(1)), int(found.group(2))
            # NumPy counts the rows it read (blank lines are none), from 0
            line = (int(self._row_lines[row]) if row < len(self._row_lines)
                    else first_row + row)
            name = self.columns[column - 1] if 0 < column <= len(self.columns) else "?"
            return (f"{self.path}: line {line}, column {column} ({name!r}): "
                    f"{message[:found.start()]}")
        return f"{self.path}: lines {first_row}-{first_row + count - 1}: {message}"


def csv_delimiter(text: str) -> str:
    """A CSV field separator as given on the command line: one character (``\\t`` written
    out means a tab), not a quote or a line break; anything else is a :class:`DataError`."""
    if text == "\\t":
        return "\t"
    if len(text) != 1 or text in "\"\r\n":
        raise DataError(f"the CSV delimiter must be one character other than a quote or a line "
                        f"break, got {text!r} (for a tab, give \\t or name the file .tsv)")
    return text


class NpyTable(Table):
    """A ``.npy`` file, memory-mapped: a structured array (fields are columns), a 2-D array
    (columns ``"0"``, ``"1"``, ...) or a 1-D array (the single column ``"0"``)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise DataError(f"{path}: not a readable .npy file ({error})") from None
        if self.array.dtype.names:
            self.columns = list(self.array.dtype.names)
        elif self.array.ndim == 2:
            self.columns = [str(j) for j in range(self.array.shape[1])]
        elif self.array.ndim == 1:
            self.columns = ["0"]
        else:
            raise DataError(f"{path}: a {self.array.ndim}-d array; expected a table (1-d, 2-d "
                            "or structured)")
        self.rows = int(self.array.shape[0])

    def _column(self, name: str, rows: slice) -> np.ndarray:
        if self.array.dtype.names:
            return self.array[name][rows]
        if self.array.ndim == 1:
            return self.array[rows]
        return self.array[rows, int(name)]

    def chunks(self, columns, chunk_rows, dtype):
        step = chunk_rows or max(self.rows, 1)
        for start in range(0, self.rows, step):
            rows = slice(start, min(start + step, self.rows))
            yield ({c: _numbers(self._column(c, rows), dtype, self.path, c) for c in columns},
                   rows.stop - rows.start)


class NpzTable(Table):
    """A ``.npz`` archive: each array is a column (a 2-D array is a whole matrix input)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a readable .npz file ({error})") from None
        self.columns = list(self.archive.files)
        self.rows = None

    def chunks(self, columns, chunk_rows, dtype):
        arrays = {c: _numbers(self._read(c), dtype, self.path, c) for c in columns}
        single = next((c for c, a in arrays.items() if a.ndim == 0), None)
        if single is not None:
            raise DataError(f"{self.path}: {single!r} is a single number (a 0-d array), not a "
                            "column with one value per row")
        lengths = {c: a.shape[0] for c, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{c!r} has {n}" for c, n in lengths.items())
            raise DataError(f"{self.path}: the arrays used have different numbers of rows "
                            f"({detail})")
        rows = next(iter(lengths.values()), 0)
        self.rows = rows
        step = chunk_rows or max(rows, 1)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            yield {c: a[start:stop] for c, a in arrays.items()}, stop - start


    def _read(self, name: str) -> np.ndarray:
        """The archive's array ``name`` (an array of Python objects cannot be read)."""
        try:
            return self.archive[name]
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{self.path}: {name!r} cannot be read ({error})") from None


class ParquetTable(Table):
    """A Parquet file, read in record batches (pyarrow)."""

    def __init__(self, path: Path):
        self.path = path
        _, parquet = _pyarrow()
        try:
            self.file = parquet.ParquetFile(path)
        except Exception as error:  # pyarrow raises its own exception types
            raise DataError(f"{path}: not a readable Parquet file ({error})") from None
        self.columns = list(self.file.schema_arrow.names)
        self.rows = int(self.file.metadata.num_rows)

    def chunks(self, columns, chunk_rows, dtype):
        batches = self.file.iter_batches(batch_size=chunk_rows or max(self.rows, 1),
                                         columns=columns)
        for batch in batches:
            yield {c: self._column(batch.column(c), c, dtype) for c in columns}, batch.num_rows

    def _column(self, column, name: str, dtype: np.dtype) -> np.ndarray:
        """One column of a record batch as numbers: a vector, or a matrix ``(N, K)`` from a
        fixed-size list column."""
        pyarrow, _ = _pyarrow()
        kinds = pyarrow.types
        if column.null_count:
            raise DataError(f"{self.path}: column {name!r} has missing values")
        if kinds.is_list(column.type) or kinds.is_large_list(column.type):
            raise DataError(f"{self.path}: column {name!r} holds lists of varying length "
                            f"({column.type}); a matrix input needs K values in every row: "
                            "store it as a fixed-size list (pyarrow.list_(pyarrow.float64(), "
                            "K))")
        width = None
        if kinds.is_fixed_size_list(column.type):  # a matrix column
            width, column = column.type.list_size, column.flatten()
            if column.null_count:
                raise DataError(f"{self.path}: column {name!r} has missing values")
        if kinds.is_decimal(column.type):  # NumPy would get Python Decimal objects
            column = column.cast(pyarrow.float64())
        values = _numbers(column.to_numpy(zero_copy_only=False), dtype, self.path, name,
                          str(column.type))
        return values if width is None else values.reshape(-1, width)


def open_table(path: str | os.PathLike, delimiter: str | None = None) -> Table:
    """A :class:`Table` for a data file, chosen by its extension."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpyTable(path)
    if suffix == ".npz":
        return NpzTable(path)
    if suffix in (".parquet", ".pq"):
        return ParquetTable(path)
    return CsvTable(path, delimiter)


# ------------------------------------------------------------------------------------ sinks


def _flat_columns(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split matrix outputs into one column per class: ``grad_z`` → ``grad_z_0``, ..."""
    flat = {}
    for name, values in outputs.items():
        if values.ndim == 2:
            for j in range(values.shape[1]):
                flat[f"{name}_{j}"] = values[:, j]
        else:
            flat[name] = values
    return flat


class Writer:
    """Per-sample outputs, written chunk by chunk: ``write`` each chunk, then ``close``."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, outputs: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class CsvWriter(Writer):
    """CSV with a header line; numbers printed with enough digits to read back exactly."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.stream = open(path, "w", newline="", encoding="utf-8")
        self.header_written = False

    def write(self, outputs):
        flat = _flat_columns(outputs)
        if not self.header_written:
            self.stream.write(",".join(flat) + "\n")
            self.header_written = True
        block = np.column_stack(list(flat.values()))
        digits = "%.9g" if block.dtype == np.float32 else "%.17g"
        buffer = io.StringIO()
        np.savetxt(buffer, block, fmt=digits, delimiter=",")
        self.stream.write(buffer.getvalue())

    def close(self):
        self.stream.close()


class NpyWriter(Writer):
    """A structured ``.npy`` (one field per output), streamed: the header is rewritten with
    the final row count when the file is closed."""

    _HEADER_BYTES = 512  # reserved for the header (a multiple of 64, as the format asks)

    def __init__(self, path: Path):
        super().__init__(path)
        self.stream = open(path, "wb")
        self.stream.write(b"\0" * self._HEADER_BYTES)
        self.dtype: np.dtype | None = None
        self.rows = 0

    def write(self, outputs):
        if self.dtype is None:
            self.dtype = np.dtype([(name, values.dtype, values.shape[1:])
                                   for name, values in outputs.items()])
        n = len(next(iter(outputs.values())))
        record = np.empty(n, dtype=self.dtype)
        for name, values in outputs.items():
            record[name] = values
        self.stream.write(record.tobytes())
        self.rows += n

    def _header(self) -> dict:
        dtype = self.dtype if self.dtype is not None else np.dtype([("loss", np.float64)])
        return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": (self.rows,)}

    def close(self):
        text = repr(self._header()).encode("latin1")
        prefix = b"\x93NUMPY\x01\x00"
        room = self._HEADER_BYTES - len(prefix) - 2
        if len(text) + 1 > room:
            raise DataError(f"{self.path}: too many output columns for a .npy header")
        text = text + b" " * (room - len(text) - 1) + b"\n"
        self.stream.seek(0)
        self.stream.write(prefix + len(text).to_bytes(2, "little") + text)
        self.stream.close()


class NpzWriter(Writer):
    """A ``.npz`` with one array per output: each streamed to a temporary ``.npy``, zipped
    (uncompressed, as ``numpy.savez``) when closed."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.directory = Path(tempfile.mkdtemp(prefix="lossdsl-npz-", dir=path.parent))
        self.writers: dict[str, NpyWriter] = {}

    def write(self, outputs):
        for name, values in outputs.items():
            if name not in self.writers:
                self.writers[name] = _PlainNpyWriter(self.directory / f"{name}.npy")
            self.writers[name].write({name: values})

    def close(self):
        try:
            with zipfile.ZipFile(self.path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, writer in self.writers.items():
                    writer.close()
                    archive.write(writer.path, f"{name}.npy")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class _PlainNpyWriter(NpyWriter):
    """A plain (not structured) ``.npy`` of one output, shape ``(N,)`` or ``(N, K)``."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.inner: tuple = ()

    def write(self, outputs):
        (values,) = outputs.values()
        values = np.ascontiguousarray(values)
        if self.dtype is None:
            self.dtype, self.inner = values.dtype, values.shape[1:]
        self.stream.write(values.tobytes())
        self.rows += len(values)

    def _header(self) -> dict:
        return {"descr": np.lib.format.dtype_to_descr(self.dtype or np.dtype(np.float64)),
                "fortran_order": False, "shape": (self.rows, *self.inner)}


class ParquetWriter(Writer):
    """A Parquet file, one row group per chunk (pyarrow)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.pyarrow, self.parquet = _pyarrow()
        self.writer = None

    def write(self, outputs):
        flat = _flat_columns(outputs)
        table = self.pyarrow.table({name: np.asarray(v) for name, v in flat.items()})
        if self.writer is None:
            self.writer = self.parquet.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self):
        if self.writer is not None:
            self.writer.close()


def open_writer(path: str | os.PathLike) -> Writer:
    """A :class:`Writer` for per-sample outputs, chosen by the file's extension (one of
    :data:`OUTPUT_SUFFIXES`)."""
    path = check_output(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpyWriter(path)
    if suffix == ".npz":
        return NpzWriter(path)
    if suffix in (".parquet", ".pq"):
        return ParquetWriter(path)
    return CsvWriter(path)


#: The file types :func:`open_writer` writes, by extension.
OUTPUT_SUFFIXES = (".csv", ".npy", ".npz", ".parquet", ".pq")


def check_output(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` if :func:`open_writer` can write it there (a
    known extension, an existing folder), else a :class:`DataError`; nothing is created."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"{path}: the output format comes from the extension, one of "
                        f"{', '.join(OUTPUT_SUFFIXES)}; got {path.suffix or 'none'}")
    if path.parent and not path.parent.exists():
        raise DataError(f"{path}: the folder {path.parent} does not exist")
    return path


# --------------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr (redrawn at most ten times a second)."""

    def __init__(self, total: int | None, unit: str, enabled: bool, stream=None):
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.rows = 0
        self.start = time.perf_counter()
        self.last_draw = 0.0

    def update(self, amount: int, rows: int) -> None:
        """Record ``amount`` units of progress covering ``rows`` more rows."""
        self.done += amount
        self.rows += rows
        now = time.perf_counter()
        if self.enabled and now - self.last_draw >= 0.1:
            self.last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        tail = f"{self.rows:,} rows  {elapsed:5.1f} s  {rate:,.0f} rows/s"
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(30 * fraction)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\r[{bar}] {100 * fraction:5.1f}%  {tail}")
        else:
            self.stream.write(f"\r{tail}")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
