"""Named-dim data: `cg.array`, `cg.index` and the `Data` container handed to a model."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import numpy as np

from claygraph.errors import DataError

_RESERVED = frozenset({"size", "dims", "arrays", "names", "abstract", "with_values", "index_columns", "load",
                       "from_parquet", "from_ray_dataset", "stand_in", "has_sources", "has_values"})


@dataclass(frozen=True, slots=True)
class Array:
    """An array whose axes have dim names; an index column also names the dim it points into."""

    values: Any = field(compare=False)  # np.ndarray, jax.Array or jax.ShapeDtypeStruct
    dims: tuple[str, ...] = ()
    into: str | None = None
    into_size: int | None = None
    # rows per target (abstract index columns), for load-balance planning
    counts: Any = field(default=None, compare=False)
    # where the values are when they are not here (claygraph.frontend.parquet.ParquetSource)
    source: Any = field(default=None, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.values.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.values.dtype)

    @property
    def is_abstract(self) -> bool:
        return isinstance(self.values, jax.ShapeDtypeStruct)

    @property
    def is_index(self) -> bool:
        return self.into is not None

    @property
    def has_values(self) -> bool:
        """Values here, or readable from a source (a file), as opposed to a shape only."""
        return not self.is_abstract or self.source is not None


def _as_values(values: Any) -> Any:
    if isinstance(values, (jax.ShapeDtypeStruct, jax.Array, np.ndarray)):
        return values
    return np.asarray(values)


def array(values: Any, *dims: str) -> Array:
    """An array with one dim name per axis, e.g. `cg.array(X, "row", "feature")`."""
    return Array(_as_values(values), tuple(dims))


def index(values: Any, dim: str, *, into: str, size: int | None = None, counts: Any = None) -> Array:
    """An integer column along `dim` whose values point into `into` (e.g. each row's group id).

    `size` is the size of `into` (needed when no other array has that dim). For abstract
    values, `counts` (rows per target) lets the planner balance shards; uniform otherwise.
    """
    return Array(_as_values(values), (dim,), into=into, into_size=None if size is None else int(size),
                 counts=None if counts is None else np.asarray(counts))


def _check_dims(name: str, arr: Array) -> None:
    if not isinstance(arr, Array):
        raise DataError(f"Data field {name!r} is a {type(arr).__name__}; wrap it with cg.array(values, *dims) "
                        f"or cg.index(values, dim, into=...) so that its axes have names")
    if len(arr.dims) != len(arr.shape):
        raise DataError(f"Data field {name!r} has shape {arr.shape} ({len(arr.shape)} axes) but "
                        f"{len(arr.dims)} dim names {arr.dims}; give one name per axis")
    for d in arr.dims + ((arr.into,) if arr.into else ()):
        if not isinstance(d, str) or not d.isidentifier():
            raise DataError(f"Data field {name!r}: dim name {d!r} must be an identifier string")
    if not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise DataError(f"Data field {name!r} has dtype {arr.dtype}; claygraph data must be numeric or boolean "
                        f"(encode strings and categories as integer index columns with cg.index)")
    empty = [d for d, n in zip(arr.dims, arr.shape) if n == 0]
    if empty:
        raise DataError(f"Data field {name!r} has shape {arr.shape}: dim {empty[0]!r} is empty; a model needs "
                        f"at least one entry along every dim")


def _sizes(arrays: Mapping[str, Array]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    where: dict[str, str] = {}
    for name, arr in arrays.items():
        pairs = list(zip(arr.dims, arr.shape))
        if arr.into and arr.into_size is not None:
            pairs.append((arr.into, arr.into_size))
        for axis, (d, n) in enumerate(pairs):
            label = f"{name} axis {axis}" if axis < len(arr.dims) else f"{name} (size= of {arr.into!r})"
            if d in sizes and sizes[d] != n:
                raise DataError(f"dim {d!r} has size {sizes[d]} in {where[d]} but {n} in {label}; "
                                f"every axis named {d!r} must have the same size")
            sizes.setdefault(d, n)
            where.setdefault(d, label)
    for name, arr in arrays.items():
        if arr.into and arr.into not in sizes:
            raise DataError(f"index {name!r} points into {arr.into!r}, whose size is unknown; "
                            f"pass cg.index(..., into={arr.into!r}, size=N)")
    return sizes


BLOCK_BYTES = 1 << 22  # validation reads arrays in blocks of about this size: no full-size temporaries


def _blocks(v: np.ndarray):
    """(offset, flat view) pieces of `v` along its first axis, each about BLOCK_BYTES; views, not copies."""
    if v.ndim == 0:
        yield 0, v.reshape(1)
        return
    row = max(1, v[:1].nbytes)
    step = max(1, BLOCK_BYTES // row)
    for i in range(0, v.shape[0], step):
        yield i * (v.size // max(1, v.shape[0])), v[i:i + step].reshape(-1)


def _first_bad(v: np.ndarray, bad) -> tuple[int, int] | None:
    """(flat position of the first entry where bad(block) is True, how many there are), one pass in blocks."""
    first, count = None, 0
    for offset, block in _blocks(v):
        hits = bad(block)
        if hits.any():
            if first is None:
                first = offset + int(np.argmax(hits))
            count += int(np.count_nonzero(hits))
    return None if first is None else (first, count)


def _check_values(name: str, arr: Array, sizes: Mapping[str, int]) -> None:
    """Index ranges and finite values, each checked in one read (blocks or one BLAS pass; never copied)."""
    if arr.is_index and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"index {name!r} has dtype {arr.dtype}; an index column must hold integers")
    if arr.is_abstract:
        if arr.is_index and arr.source is not None and arr.counts is not None and arr.counts.size > sizes[arr.into]:
            # an index column in files, counted as it was read: its ids must fit the size another field gives
            raise DataError(f"index {name!r} (column {arr.source.columns[0]!r}) has value {arr.counts.size - 1}, "
                            f"outside [0, {sizes[arr.into]}) of dim {arr.into!r}")
        return
    v = np.asarray(arr.values)
    if arr.is_index and v.size:
        n = sizes[arr.into]
        hit = _first_bad(v, lambda b: (b < 0) | (b >= n))
        if hit is not None:
            raise DataError(f"index {name!r} has value {v.flat[hit[0]]} at position {hit[0]}, outside "
                            f"[0, {n}) of dim {arr.into!r} ({hit[1]} such values)")
    if np.issubdtype(v.dtype, np.inexact) and v.size and not _all_finite(v):
        hit = _first_bad(v, lambda b: ~np.isfinite(b))
        if hit is not None:
            pos = np.unravel_index(hit[0], v.shape)
            raise DataError(f"Data field {name!r} has a non-finite value {v.flat[hit[0]]} at {tuple(map(int, pos))} "
                            f"({hit[1]} such values); claygraph needs finite data")


def _all_finite(v: np.ndarray) -> bool:
    """One read of `v`: a sum of finite numbers is finite, barring overflow (a False here is then cleared by
    the exact pass). A matrix goes through BLAS matrix-vector products of 64 MiB of rows each (every core;
    a temporary of one number per row of the chunk)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if v.ndim >= 2 and v.flags.c_contiguous and v.dtype.kind == "f":
            rows = v.reshape(v.shape[0], -1)
            ones = np.ones(rows.shape[1], rows.dtype)
            step = max(1, (16 * BLOCK_BYTES) // max(1, rows[:1].nbytes))  # 64 MiB per BLAS call
            return all(np.isfinite(rows[i:i + step] @ ones).all() for i in range(0, rows.shape[0], step))
        return all(np.isfinite(np.sum(block)) for _, block in _blocks(v))


@jax.tree_util.register_pytree_node_class
class Data:
    """Named arrays for a model: `data.X` gives the values, `data.size("row")` a dim's size."""

    __slots__ = ("_arrays", "_sizes")

    def __init__(self, **arrays: Array):
        for name, arr in arrays.items():
            if name in _RESERVED or name.startswith("_"):
                raise DataError(f"Data field name {name!r} is reserved; choose another name")
            _check_dims(name, arr)
        sizes = _sizes(arrays)
        for name, arr in arrays.items():
            _check_values(name, arr, sizes)
        object.__setattr__(self, "_arrays", dict(arrays))
        object.__setattr__(self, "_sizes", sizes)

    @classmethod
    def _unchecked(cls, arrays: Mapping[str, Array], sizes: Mapping[str, int]) -> Data:
        self = object.__new__(cls)
        object.__setattr__(self, "_arrays", dict(arrays))
        object.__setattr__(self, "_sizes", dict(sizes))
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._arrays[name].values
        except KeyError:
            raise AttributeError(f"Data has no field {name!r}; fields: {sorted(self._arrays)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Data is immutable")

    def __reduce__(self):
        return (Data._unchecked, (self._arrays, self._sizes))

    def size(self, dim: str) -> int:
        try:
            return self._sizes[dim]
        except KeyError:
            raise DataError(f"no data array has dim {dim!r}; known dims: {sorted(self._sizes)}") from None

    @property
    def dims(self) -> dict[str, int]:
        return dict(self._sizes)

    @property
    def arrays(self) -> dict[str, Array]:
        return dict(self._arrays)

    @property
    def names(self) -> list[str]:
        return list(self._arrays)

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def abstract(self) -> Data:
        """The same data as shapes only (what lowering traces with)."""
        arrs = {k: replace(a, values=jax.ShapeDtypeStruct(a.shape, a.dtype)) for k, a in self._arrays.items()}
        return Data._unchecked(arrs, self._sizes)

    @property
    def has_sources(self) -> bool:
        """Some arrays are in files (`from_parquet`), not in memory."""
        return any(a.source is not None for a in self._arrays.values())

    @property
    def has_values(self) -> bool:
        """Every array is in memory or readable from a file: the data can be compiled, not only planned."""
        return all(a.has_values for a in self._arrays.values())

    def load(self) -> Data:
        """The same data with every file-backed array read into memory (the whole table)."""
        from claygraph.frontend.parquet import read

        if not self.has_sources:
            return self
        arrs = {k: replace(a, values=read(a.source), source=None) if a.source is not None else a
                for k, a in self._arrays.items()}
        return Data._unchecked(arrs, self._sizes)

    def stand_in(self) -> Data:
        """File-backed arrays replaced by zero-stride zeros of their shape: for tracing code that needs
        arrays but not their values (constraining draws); nothing is read or allocated."""
        arrs = {k: replace(a, values=np.broadcast_to(np.zeros((), a.dtype), a.shape), source=None)
                if a.source is not None else a for k, a in self._arrays.items()}
        return Data._unchecked(arrs, self._sizes)

    @classmethod
    def from_parquet(cls, path, **arrays) -> Data:
        """Data whose arrays are columns of a Parquet table (a file, a folder of files, or a list).

        Each keyword names an array: `y=("y", "row")` for one column, `X=(["x0", "x1"], "row",
        "feature")` for several columns as the second axis, `g=cg.parquet.index_column("product_id",
        "row", into="product")` for an index column. Only the metadata is read here, and each index
        column is counted in one streamed pass (rows per target: what a group split's layout needs); the
        columns are read by whoever holds their rows (a Ray worker reads its rows only).
        An index column's target dim has size `size=` if given, else the size another field gives it,
        else the column's largest id + 1 (pass `size=` when groups past the largest id have no rows).
        """
        from claygraph.frontend.parquet import columns

        cols = columns(path, **arrays)
        known = {d for c in cols.values() if c.into is None for d in c.dims} | \
                {c.into for c in cols.values() if c.into is not None and c.size is not None}

        def size(name, c) -> int | None:
            # an index column whose target no other field sizes points into [0, its largest id]: the driver
            # has counted the column already (ids past the largest, groups without rows, need size=)
            if c.size is not None or c.into in known:
                return c.size
            if not c.counts.size:
                raise DataError(f"index {name!r} points into {c.into!r}, whose size is unknown, and its column is "
                                f"empty; pass cg.parquet.index_column(..., into={c.into!r}, size=N)")
            return int(c.counts.size)

        return cls(**{k: Array(c.values, c.dims, into=c.into, into_size=size(k, c), counts=c.counts, source=c.source)
                      if c.into is not None else Array(c.values, c.dims, source=c.source) for k, c in cols.items()})

    @classmethod
    def from_ray_dataset(cls, dataset, folder: str, *, ray_remote_args: Mapping[str, Any] | None = None,
                         **arrays) -> Data:
        """Data from a `ray.data.Dataset`: Ray's tasks write it as Parquet under `folder` (a path every
        worker can read: a shared file system or object store), then as `from_parquet`.

        The write tasks ask for no CPU by default (`ray_remote_args={"num_cpus": 0}`): claygraph's
        workers may hold every CPU of the cluster, and a write waiting for a CPU would never run.
        """
        dataset.write_parquet(str(folder), ray_remote_args=dict(ray_remote_args or {"num_cpus": 0}))
        return cls.from_parquet(folder, **arrays)

    def with_values(self, values: Mapping[str, Any]) -> Data:
        """Same names and dims, new values (tracers or shard-local arrays); not re-validated."""
        arrs = {k: replace(a, values=values[k]) for k, a in self._arrays.items()}
        return Data._unchecked(arrs, self._sizes)

    def __repr__(self) -> str:
        parts = []
        for k, a in self._arrays.items():
            extra = f" -> {a.into}" if a.into else ""
            parts.append(f"{k}: {a.dtype}[{', '.join(f'{d}={n}' for d, n in zip(a.dims, a.shape))}]{extra}")
        return "Data(" + "; ".join(parts) + ")"

    # pytree: values are the leaves, names and dims the static part
    def tree_flatten(self):
        keys = tuple(self._arrays)
        meta = tuple(replace(self._arrays[k], values=None) for k in keys)
        return tuple(self._arrays[k].values for k in keys), (keys, meta, tuple(self._sizes.items()))

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        keys, meta, sizes = aux
        arrs = {k: replace(m, values=v) for k, m, v in zip(keys, meta, leaves)}
        return cls._unchecked(arrs, dict(sizes))
