"""Data from Parquet files without loading the table on the driver.

`cg.Data.from_parquet(path, y=("y", "row"), X=(["x0", "x1"], "row", "feature"),
g=cg.parquet.index_column("product_id", "row", into="product"))` reads the files' metadata (row
counts per row group, column types) and the index columns, which the layout of a group split
needs; every other array stays a shape plus a `ParquetSource`. A Ray worker reads only the row
groups that hold its rows and, under a feature split, only its columns (`read_block`); a local
runtime reads the whole table (`Data.load`).

Every process that reads appends what it read to `READ_LOG` (file, row groups, rows, columns, layout),
which tests and `claygraph inspect` use to show who read what.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from claygraph.errors import DataError

READ_LOG: list[dict] = []
BATCH_ROWS = 1 << 18  # rows per batch read from a row group: what a reading process holds beyond its result


@dataclass(frozen=True, slots=True)
class Fragment:
    """One row group of one file, at global rows [start, start + rows)."""

    file: str
    group: int
    start: int
    rows: int


@dataclass(frozen=True, slots=True, eq=False)
class ParquetSource:
    """Where an array's values are: table columns; a 2-D array takes one column per entry of axis 1."""

    name: str
    columns: tuple[str, ...]
    two_d: bool
    fragments: tuple[Fragment, ...]
    dtype: str

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.fragments)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, len(self.columns)) if self.two_d else (self.rows,)


@dataclass(frozen=True, slots=True)
class IndexColumn:
    """An integer column pointing into another dim (read on the driver: the layout needs it)."""

    column: str
    dim: str
    into: str
    size: int | None = None


def index_column(column: str, dim: str, *, into: str, size: int | None = None) -> IndexColumn:
    """Spec for `Data.from_parquet`: column `column` along `dim`, values in [0, size of `into`)."""
    return IndexColumn(column, dim, into, size)


def _is_url(path: str) -> bool:
    """A URL with a scheme (s3://, gs://, hdfs://, file://, ...): read through pyarrow's file systems."""
    return "://" in path


def _filesystem(url: str):
    """(pyarrow file system, path within it) of a URL; a DataError naming it where none applies."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(url)
    except (ValueError, OSError) as exc:  # (pyarrow's ArrowInvalid is a ValueError)
        raise DataError(f"cannot open {url!r}: {exc}") from exc


def _open(file: str):
    """A ParquetFile for a local path or a URL (the same on the driver and on every worker)."""
    import pyarrow.parquet as pq

    if not _is_url(file):
        return pq.ParquetFile(file)
    fs, path = _filesystem(file)
    return pq.ParquetFile(fs.open_input_file(path))


def _url_files(url: str) -> list[str]:
    """The *.parquet files of a URL that names a file or a folder (recursively), as URLs."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(url)
    info = fs.get_file_info(path)
    scheme = url.split("://", 1)[0]
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(".parquet"))
        if not files:
            raise DataError(f"no *.parquet files under {url}")
        return [f"{scheme}://{f}" for f in files]
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"Parquet file {url} does not exist")
    return [url]


def _files(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        if _is_url(str(path)):
            return _url_files(str(path))
        p = Path(path)
        if p.is_dir():
            files = sorted(str(f) for f in p.rglob("*.parquet"))
            if not files:
                raise DataError(f"no *.parquet files under {p}")
            return files
        if not p.exists():
            raise DataError(f"Parquet file {p} does not exist")
        return [str(p)]
    files = [str(f) for f in path]
    for f in files:
        if _is_url(f):
            if _url_files(f) != [f]:
                raise DataError(f"{f} is a folder; a list names Parquet files")
        elif not Path(f).exists():
            raise DataError(f"Parquet file {f} does not exist")
    if not files:
        raise DataError("from_parquet got an empty list of files")
    return files


def _scan(files: list[str]) -> tuple[tuple[Fragment, ...], dict[str, Any]]:
    """Row-group fragments of every file in order, and the schema (column -> arrow type)."""
    frags, schema, start = [], None, 0
    for f in files:
        meta = _open(f).metadata
        this = meta.schema.to_arrow_schema()
        if schema is None:
            schema = this
        elif not this.equals(schema):
            raise DataError(f"Parquet file {f} has schema {this} but {files[0]} has {schema}; the files of one "
                            f"table must share a schema")
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            frags.append(Fragment(f, g, start, n))
            start += n
    return tuple(frags), {name: schema.field(name).type for name in schema.names}


def _dtype(types: Mapping[str, Any], columns: Sequence[str], name: str, where: str) -> np.dtype:
    missing = [c for c in columns if c not in types]
    if missing:
        raise DataError(f"Data field {name!r}: column(s) {missing} not in {where}; columns: {sorted(types)}")
    kinds = {np.dtype(types[c].to_pandas_dtype()) for c in columns}
    if len(kinds) != 1:
        raise DataError(f"Data field {name!r}: columns {list(columns)} have different types {sorted(map(str, kinds))}")
    dt = kinds.pop()
    if not (np.issubdtype(dt, np.number) or dt == np.bool_):
        raise DataError(f"Data field {name!r}: column type {dt} is not numeric")
    return dt


@dataclass(frozen=True, slots=True)
class Column:
    """One array of a Parquet-backed Data: its shape and dtype, the source it is read from later, and an
    index column's rows per target (counted as `columns` streamed it)."""

    values: Any  # jax.ShapeDtypeStruct
    dims: tuple[str, ...]
    into: str | None = None
    size: int | None = None
    source: ParquetSource | None = None
    counts: np.ndarray | None = None  # an index column's rows per target (counted as it was read)


def columns(path, **specs) -> dict[str, Column]:
    """The arrays `Data.from_parquet` builds (see there): every array left in the files; an index column's
    values counted per target (one streamed pass: the layout of a group split needs the counts only)."""
    import jax

    files = _files(path)
    frags, types = _scan(files)
    where = files[0] if len(files) == 1 else f"{len(files)} files under {files[0].rsplit('/', 1)[0]}"
    arrays = {}
    for name, spec in specs.items():
        if isinstance(spec, IndexColumn):
            dt = _dtype(types, [spec.column], name, where)
            if not np.issubdtype(dt, np.integer):
                raise DataError(f"index {name!r} (column {spec.column!r}) has dtype {dt}; an index column must "
                                f"hold integers")
            src = ParquetSource(name, (spec.column,), False, frags, np.dtype(np.int32).str)
            counts = index_counts(src, spec.into, spec.size)
            arrays[name] = Column(jax.ShapeDtypeStruct(src.shape, np.int32), (spec.dim,), spec.into, spec.size,
                                  source=src, counts=counts)
            continue
        if not (isinstance(spec, tuple) and len(spec) >= 2):
            raise DataError(f"Data field {name!r}: give (column, dim) or ([columns], row_dim, dim), or "
                            f"cg.parquet.index_column(...), not {spec!r}")
        cols, dims = spec[0], tuple(spec[1:])
        two_d = not isinstance(cols, str)
        cols = (cols,) if not two_d else tuple(cols)
        if len(dims) != (2 if two_d else 1):
            raise DataError(f"Data field {name!r}: {'a list of columns' if two_d else 'one column'} needs "
                            f"{2 if two_d else 1} dim name(s), got {dims}")
        dt = _dtype(types, cols, name, where)
        dt = np.dtype(np.float32) if np.issubdtype(dt, np.floating) or dt == np.bool_ else dt
        src = ParquetSource(name, cols, two_d, frags, dt.str)
        arrays[name] = Column(jax.ShapeDtypeStruct(src.shape, dt), dims, source=src)
    return arrays


def stream_ints(src: ParquetSource):
    """(global row of the first, values) of every batch of a one-column source, in row order: a reader holds
    one batch (BATCH_ROWS values), never the column. Values as the file has them (any integer type)."""
    (column,) = src.columns
    by_file: dict[str, list[Fragment]] = {}
    for f in src.fragments:
        by_file.setdefault(f.file, []).append(f)
    for file, frags in by_file.items():
        spent, t0, reader = 0.0, time.perf_counter(), _open(file)
        for f in frags:
            offset, batches = f.start, reader.iter_batches(batch_size=BATCH_ROWS, row_groups=[f.group],
                                                           columns=[column])
            while True:  # (the seconds logged are the reads' own, not what the caller does between batches)
                batch = next(batches, None)
                if batch is None:
                    break
                col = batch.column(0)
                if col.null_count:
                    raise DataError(f"index {src.name!r}: column {column!r} has {col.null_count} missing (null) "
                                    f"values (file {file}, row group {f.group}); claygraph needs complete data")
                values = col.to_numpy(zero_copy_only=False)
                spent += time.perf_counter() - t0
                yield offset, values
                t0 = time.perf_counter()
                offset += batch.num_rows
        READ_LOG.append({"pid": os.getpid(), "file": file, "row_groups": [f.group for f in frags],
                         "rows": sum(f.rows for f in frags), "columns": [column], "array": src.name,
                         "feature_major": False, "seconds": spent + time.perf_counter() - t0})


INT32_MAX = np.iinfo(np.int32).max


def index_counts(src: ParquetSource, into: str, size: int | None) -> np.ndarray:
    """Rows per target of an index column in files, in one streamed pass (the driver never holds the
    column); every value checked to lie in [0, size) (size None: [0, 2^31 - 1)), the first bad one named by
    its row, file and row group. The length of the result is `size`, else the largest id + 1."""
    bound = INT32_MAX if size is None else int(size)
    counts = np.zeros(0 if size is None else bound, dtype=np.int64)
    for offset, values in stream_ints(src):
        if not values.size:
            continue
        bad = np.flatnonzero((values < 0) | (values >= bound))
        if bad.size:
            frag = next(f for f in src.fragments if f.start <= offset < f.start + f.rows)
            raise DataError(f"index {src.name!r} (column {src.columns[0]!r}) has value {values[bad[0]]} at row "
                            f"{offset + int(bad[0])} (file {frag.file}, row group {frag.group}), outside "
                            f"[0, {bound}) of dim {into!r} ({bad.size} such values in its batch)")
        part = np.bincount(values.astype(np.int64, copy=False))  # (NumPy < 2.2.4 refuses uint64 here)
        if part.size > counts.size:
            counts = np.concatenate([counts, np.zeros(part.size - counts.size, np.int64)])
        counts[:part.size] += part  # (a batch's own ids only: no work per group per batch)
    return counts


def _check_batch(values: np.ndarray, src: ParquetSource, column: str, frag: Fragment, local: np.ndarray | None,
                 offset: int) -> None:
    """One column of one batch of a row group finite (`local`: the rows within the group that were asked
    for; None: the batch's rows from `offset` on), the first bad value named by its global row, file and
    row group."""
    if not np.issubdtype(values.dtype, np.inexact):
        return
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = frag.start + int(offset + bad[0] if local is None else local[bad[0]])
        raise DataError(f"Data field {src.name!r}: column {column!r} has a non-finite value {values[bad[0]]} at row "
                        f"{row} (file {frag.file}, row group {frag.group}); claygraph needs finite data")


ALIGN = 64  # bytes: a host array this aligned is used in place by XLA's CPU client (jax.device_put copies no data)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-ordered array whose data start on an ALIGN-byte boundary (NumPy's own start on
    16 here), so that a worker's block read from files becomes its device array without a second copy."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    skip = (-raw.ctypes.data) % ALIGN
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


@dataclass(frozen=True, slots=True, eq=False)
class RowPlan:
    """Requested rows in file order: `order` the result's positions sorted by row (stable), `rows` the rows
    in that order, `spans` each needed row group's (first, end) in them; `size` the result's rows (positions
    no row goes to are left for the caller: a shard's padding)."""

    rows: np.ndarray
    order: np.ndarray
    spans: dict[int, tuple[int, int]]
    size: int


def _spans(ordered: np.ndarray, starts: np.ndarray, total: int) -> dict[int, tuple[int, int]]:
    ends = np.searchsorted(ordered, starts[1:].tolist() + [total])
    return {i: (int(lo), int(hi)) for i, (lo, hi) in enumerate(zip([0, *ends[:-1]], ends)) if hi > lo}


def row_plan(rows: np.ndarray, starts: np.ndarray, total: int) -> RowPlan:
    """The plan for `rows` over row groups starting at `starts` (`total` rows in all)."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    return RowPlan(ordered, order, _spans(ordered, starts, total), rows.size)


def routed_plan(lay, shard: int, starts: np.ndarray, total: int) -> RowPlan:
    """The plan for shard `shard` of a group split's rows (`lay.route`): its rows found in two streamed passes
    over the index column, already in file order (no sort); its padding is filled by `read_block`. A shard
    without rows reads row 0 (its padding copies it, as `DimLayout.fill_slots` does)."""
    rows, slots = lay.route.shard_rows(shard)
    if rows.size != int(lay.counts[shard]):
        where = getattr(lay.route.index, "name", "in memory")
        raise DataError(f"index column {where!r} does not match the layout made from it (shard "
                        f"{shard} has {rows.size} rows in the files, {int(lay.counts[shard])} when the driver "
                        f"counted them): a file changed after it was counted? Make the Data again")
    if not rows.size:
        rows, slots = np.zeros(1, np.int64), np.zeros(1, np.int32)
    return RowPlan(rows, slots, _spans(rows, starts, total), lay.local)


# the last shard plan made by read_block, as (layout, shard or -1 where the rows are not split, shards, row-group
# starts, rows, plan): kept while a reader reads several arrays of one dim (a shard's X, y, price: 16 bytes per
# row once, not again per array); the entry holds the layout itself, so that its identity is not another's
_SHARD_PLANS: list[tuple[object, int, int, bytes, int, RowPlan]] = []


def forget_row_plans() -> None:
    """Drop the kept plan (a reader calls this when it has read all its arrays)."""
    _SHARD_PLANS.clear()


def read(src: ParquetSource, rows: np.ndarray | None = None, columns: np.ndarray | None = None,
         transposed: bool = False, plan: RowPlan | None = None) -> np.ndarray:
    """The values at global `rows` (any order, repeats allowed; None: all) and, for a 2-D source,
    column positions `columns` (None: all), reading only the row groups that hold those rows;
    `transposed` (2-D): the same values feature-major, (columns, rows), as a program that holds the
    array feature-major reads it (storage.py), filled column by column from the file's own layout;
    `plan`: `row_plan(rows, ...)` made already (several arrays read for the same rows), or a `routed_plan`
    (then `rows` is not needed).

    Streamed: the result is allocated once and filled one row group at a time, each group's requested
    columns read, checked and copied into the result's rows that take them, then dropped; a process
    holds its result plus one row group's columns, never the whole table (nor a whole file)."""

    picked = np.arange(len(src.columns)) if columns is None else np.unique(np.asarray(columns, dtype=np.int64))
    cols = [src.columns[int(c)] for c in picked]
    starts = np.array([f.start for f in src.fragments], dtype=np.int64)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= src.rows):
            raise DataError(f"rows outside [0, {src.rows}) requested from {src.name!r}")
    if transposed and not src.two_d:
        raise DataError(f"Data field {src.name!r} is one column: there is no feature-major layout to read")
    n_out = plan.size if plan is not None else src.rows if rows is None else rows.size
    out = _aligned_empty((len(cols), n_out) if transposed else (n_out, len(cols)), np.dtype(src.dtype))
    if rows is None and plan is None:
        spans = {i: None for i in range(len(src.fragments))}
    else:
        plan = plan if plan is not None else row_plan(rows, starts, src.rows)
        order, ordered = plan.order, plan.rows
        spans = plan.spans
    by_file: dict[str, list[int]] = {}
    for i in spans:
        by_file.setdefault(src.fragments[i].file, []).append(i)
    for file, ids in by_file.items():
        t0, reader, read_rows = time.perf_counter(), _open(file), 0
        for i in ids:
            f = src.fragments[i]
            pos = local = None
            if spans[i] is not None:  # this group's positions in the result and rows within the group
                pos = order[spans[i][0]:spans[i][1]]
                local = ordered[spans[i][0]:spans[i][1]] - f.start
            offset = 0
            for batch in reader.iter_batches(batch_size=BATCH_ROWS, row_groups=[f.group], columns=cols):
                n = batch.num_rows
                if local is None:
                    into, take, at = slice(f.start + offset, f.start + offset + n), None, None
                else:
                    lo, hi = np.searchsorted(local, [offset, offset + n])
                    into, take, at = pos[lo:hi], local[lo:hi] - offset, local[lo:hi]
                for j, c in enumerate(cols):
                    column = batch.column(c)
                    if column.null_count:
                        raise DataError(f"Data field {src.name!r}: column {c!r} has {column.null_count} missing "
                                        f"(null) values (file {file}, row group {f.group}); claygraph needs "
                                        f"complete data")
                    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=src.dtype)
                    values = values if take is None else values[take]
                    _check_batch(values, src, c, f, at, offset)
                    if transposed:
                        out[j, into] = values
                    else:
                        out[into, j] = values
                offset += n
                read_rows += n
        READ_LOG.append({"pid": os.getpid(), "file": file, "row_groups": [src.fragments[i].group for i in ids],
                         "rows": read_rows, "columns": cols, "array": src.name, "feature_major": transposed,
                         "seconds": time.perf_counter() - t0})
    if columns is not None and not np.array_equal(np.asarray(columns), picked):
        which = np.searchsorted(picked, np.asarray(columns, dtype=np.int64))
        out = out[which] if transposed else out[:, which]
    return out if src.two_d else out[:, 0]


def read_block(src: ParquetSource, dims: tuple[str, ...], layout: Mapping[str, Any], split_axis: int | None,
               shard: int, shards: int, remap: np.ndarray | None, transposed: bool = False) -> np.ndarray:
    """This shard's block of the array in the internal layout, the same as
    `shard_blocks(relayout(values))[shard]` but reading only the rows (and columns) it holds;
    `transposed`: that block's transpose, read feature-major (no row-major copy is made)."""
    picks: list[np.ndarray | None] = []
    plan, real = None, None
    starts = np.array([f.start for f in src.fragments], dtype=np.int64)
    for axis, d in enumerate(dims):
        lay = layout.get(d)
        mine = axis == split_axis and lay is not None and lay.shards == shards
        if axis == 0 and mine and lay.route is not None:  # rows that follow their groups: no table anywhere
            plan = _kept_plan(lay, shard, shards, starts, src.rows, partial(routed_plan, lay, shard, starts, src.rows))
            real = int(lay.counts[shard])
            picks.append(None)
            continue
        if mine:  # this shard's slots alone
            idx = lay.shard_fill_slots(shard)
        else:
            idx = lay.fill_slots() if lay is not None else None
            if axis == split_axis:
                n = (idx.size if idx is not None else src.shape[axis]) // shards
                idx = (idx if idx is not None else np.arange(src.shape[axis]))[shard * n:(shard + 1) * n]
        if axis == 0 and idx is not None:
            idx = np.asarray(idx, dtype=np.int64)
            plan = _kept_plan(lay, shard if split_axis == 0 else -1, shards, starts, src.rows,
                              partial(row_plan, idx, starts, src.rows))
        picks.append(idx)
    x = read(src, rows=picks[0], columns=picks[1] if src.two_d else None, transposed=transposed, plan=plan)
    if real is not None and real < plan.size:  # a routed shard's padding: copies of its last real row
        last = max(real, 1) - 1
        if transposed:
            x[:, last + 1:] = x[:, last:last + 1]
        else:
            x[last + 1:] = x[last]
    if remap is not None:
        x = remap.astype(x.dtype)[x]
    return np.ascontiguousarray(x)


def _kept_plan(lay, shard: int, shards: int, starts: np.ndarray, total: int, make) -> RowPlan:
    """The plan kept for (layout, shard) while a reader reads several arrays of one dim, else a new one."""
    key = (shard, shards, starts.tobytes(), total)
    kept = next((e for e in _SHARD_PLANS if e[0] is lay and e[1:5] == key), None)
    if kept is None:
        _SHARD_PLANS.clear()
        kept = (lay, *key, make())
        _SHARD_PLANS.append(kept)
    return kept[5]
