"""claygraph: split a NumPyro model across devices along the axis a cost model picks.

The public API is the list below; everything else is internal.
"""
from claygraph import errors, glm, infer, runtime
from claygraph.frontend.data import Data, array, index
from claygraph.ir.lower import lower
from claygraph.partition.cluster import ClusterSpec
from claygraph.partition.plan import partition
from claygraph.partition.program import compile  # noqa: A004 - the public name

__version__ = "0.1.0"

__all__ = ["ClusterSpec", "Data", "array", "compile", "errors", "glm", "index", "infer", "lower", "partition", "runtime", "__version__"]
