"""Sharding states of a value, and the split that a plan applies."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Replicated:
    """Every shard holds the whole value (in the internal layout of any split dim it has)."""

    def __str__(self) -> str:
        return "R"


@dataclass(frozen=True, slots=True)
class Sharded:
    """Split along the axis whose dim is `dim`; each shard holds its block."""

    dim: str

    def __str__(self) -> str:
        return f"S({self.dim})"


@dataclass(frozen=True, slots=True)
class Partial:
    """Each shard holds a partial result; the true value is the `op` (sum, max, min) over shards."""

    op: str = "sum"

    def __str__(self) -> str:
        return f"P({self.op})"


Sharding = Replicated | Sharded | Partial
REPLICATED = Replicated()
PARTIAL_SUM = Partial("sum")


@dataclass(frozen=True, slots=True)
class Split:
    """A set of dims sharded together over one mesh axis.

    `name` is what users write (`("group",)`); `dims` also holds co-partitioned dims (the rows of
    each group live on the group's shard): `copartition` maps such a row dim to its group dim, and
    `router` names the index column that routes rows to groups.
    """

    name: tuple[str, ...]
    dims: frozenset[str] = field(default_factory=frozenset)
    copartition: tuple[tuple[str, str], ...] = ()
    router: str | None = None

    @property
    def kind(self) -> str:
        if not self.name:
            return "none"
        return "group" if self.copartition else "dim"

    def copartitioned(self, row_dim: str, group_dim: str) -> bool:
        return (row_dim, group_dim) in self.copartition

    def __str__(self) -> str:
        if not self.name:
            return "none"
        extra = "".join(f" (+{r} co-partitioned)" for r, _ in self.copartition)
        return ",".join(self.name) + extra
