"""Local-shape rewrites for emission: an op's static sizes become the shard-local ones.

Each takes (params, input values, local input shapes, local output shapes) and returns the params
the shard-local op is bound with; a registry entry names its rewrite (`Primitive.local_params`).
"""
from __future__ import annotations


def local_out_shape(params, ins, local_ins, local_outs):
    return {**params, "shape": local_outs[0]} if "shape" in params else params


def local_new_sizes(params, ins, local_ins, local_outs):
    return {**params, "new_sizes": local_outs[0]}


def local_limits(params, ins, local_ins, local_outs):
    """Only axes kept whole may be split: their limit is the local size."""
    limits = tuple(loc if (lim == full and loc != full) else lim
                   for lim, full, loc in zip(params["limit_indices"], ins[0].shape, local_ins[0]))
    return {**params, "limit_indices": limits}


def local_slice_sizes(params, ins, local_ins, local_outs):
    """A slice that takes a whole (split) axis takes the whole local axis; a collapsed axis keeps its
    slice of 1 (also where the axis has one entry, which a padded local axis outgrows)."""
    dn = params.get("dimension_numbers")
    one = set(getattr(dn, "collapsed_slice_dims", ())) | set(getattr(dn, "operand_batching_dims", ()))
    sizes = tuple(loc if (n == full and loc != full and i not in one) else n
                  for i, (n, full, loc) in enumerate(zip(params["slice_sizes"], ins[0].shape, local_ins[0])))
    return {**params, "slice_sizes": sizes}
