"""Partitioning: sharding rules, candidate splits, the cost model, plans and emission."""
from claygraph.partition.cluster import ClusterSpec
from claygraph.partition.plan import Plan, partition
from claygraph.partition.shardings import Partial, Replicated, Sharded, Split

__all__ = ["ClusterSpec", "Partial", "Plan", "Replicated", "Sharded", "Split", "partition"]
