"""Chunked readers and writers of tabular data for ``lossdsl eval``.

Sources: CSV/TSV (read line by line, parsed a chunk at a time), ``.npy`` (memory-mapped),
``.npz`` (each array used is read once, then sliced) and Parquet (record batches, needs
pyarrow). Sinks for per-sample outputs: CSV, ``.npy`` (a structured array, written as it
comes and its header patched at the end), ``.npz`` and Parquet. Nothing here holds more than
one chunk of rows in memory, except ``.npz`` sources (a zip member cannot be sliced).

Columns are float64 (or the dtype asked for). A *column selector* names one column, or is a
glob pattern (``logit_*``) selecting several, in file order, that form a matrix ``(N, K)``.
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
        """The columns a selector names: itself, or the columns its glob pattern matches."""
        if selector in self.columns:
            return [selector]
        if any(ch in selector for ch in "*?["):
            matched = [c for c in self.columns if fnmatch.fnmatchcase(c, selector)]
            if matched:
                return matched
            raise DataError(f"{self.path}: no column matches {selector!r} "
                            f"(columns: {_listing(self.columns)})")
        hint = did_you_mean(selector, self.columns)
        raise DataError(f"{self.path}: no column {selector!r} (columns: {_listing(self.columns)})"
                        + (f"; {hint}" if hint else ""))

    def chunks(self, columns: list[str], chunk_rows: int | None,
               dtype: np.dtype) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Yield ``(arrays by column, progress made)`` for chunks of ``chunk_rows`` rows
        (all rows at once when None)."""
        raise NotImplementedError


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
        self.delimiter = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
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

    @property
    def progress_total(self) -> int | None:
        return self.size

    def chunks(self, columns, chunk_rows, dtype):
        indices = [self.columns.index(c) for c in columns]
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
                try:
                    block = np.loadtxt(text, delimiter=self.delimiter, usecols=indices,
                                       dtype=dtype, ndmin=2, quotechar='"', comments=None)
                except ValueError as error:
                    raise DataError(self._where(str(error), first_row, len(lines))) from None
                first_row += len(lines)
                yield {c: block[:, j] for j, c in enumerate(columns)}, size


    def _where(self, message: str, first_row: int, count: int) -> str:
        """NumPy's parse error with the file's own line number and column name."""
        found = re.search(r" at row (\d+), column (\d+)\.?$", message)
        if found:
            line, column = first_row + int(found.group(1)), int(found.group(2))
            name = self.columns[column - 1] if 0 < column <= len(self.columns) else "?"
            return (f"{self.path}: line {line}, column {column} ({name!r}): "
                    f"{message[:found.start()]}")
        return f"{self.path}: lines {first_row}-{first_row + count - 1}: {message}"


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
            yield ({c: np.asarray(self._column(c, rows), dtype=dtype) for c in columns},
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
        arrays = {c: np.asarray(self.archive[c], dtype=dtype) for c in columns}
        lengths = {c: a.shape[0] if a.ndim else 1 for c, a in arrays.items()}
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
            arrays = {}
            for c in columns:
                column = batch.column(c)
                if column.null_count:
                    raise DataError(f"{self.path}: column {c!r} has missing values")
                if hasattr(column, "flatten") and hasattr(column.type, "list_size"):
                    width = column.type.list_size  # fixed-size list: a matrix column
                    values = column.flatten().to_numpy(zero_copy_only=False)
                    arrays[c] = values.reshape(len(column), width).astype(dtype)
                else:
                    arrays[c] = column.to_numpy(zero_copy_only=False).astype(dtype)
            yield arrays, batch.num_rows


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
    """A :class:`Writer` for per-sample outputs, chosen by the file's extension."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise DataError(f"{path}: the folder {path.parent} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpyWriter(path)
    if suffix == ".npz":
        return NpzWriter(path)
    if suffix in (".parquet", ".pq"):
        return ParquetWriter(path)
    return CsvWriter(path)


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
